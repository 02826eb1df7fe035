"""What the sender does with each failure the intake documents, observed at a real local intake and in the DB."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import socket

import pytest
from sqlalchemy import update
from structlog.testing import capture_logs

from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import RetryPolicy, Sender, SenderSettings
from bridge.operations import metrics
from bridge.storage import outbox
from bridge.storage.models import OutboxItem
from bridge.storage.store import Store
from tests.intake_server import PIPELINE_PATH, IntakeServer
from tests.sender_support import accepted_ids, add_event, deliver_all, fill, pipeline_outbound, rows, states

FAST = SenderSettings(retry=RetryPolicy(first=0.2, ceiling=1.0), probe_every=dt.timedelta(seconds=0.3))


def _sender(store: Store, intake: IntakeServer, settings: SenderSettings = FAST, api_key: str | None = None) -> Sender:
    return Sender(store, HttpIntake(intake.url, api_key or intake.api_key), settings)


@pytest.mark.parametrize("status", [503, 500, 408])
def test_a_retryable_answer_is_retried_later_and_then_delivered(
    store: Store, intake: IntakeServer, status: int
) -> None:
    unique_ids = fill(store, 5)
    intake.then(status, body='{"errors":[{"detail":"try later"}]}')
    sender = _sender(store, intake)

    first = sender.run_once()
    (waiting,) = {(row.state, row.attempts, row.next_attempt_at) for row in rows(store)}
    assert first.retried == 5
    assert waiting[:2] == (outbox.PENDING, 1)
    assert f"{status}: try later" in str(rows(store)[0].reason)

    deliver_all(sender, store)
    assert intake.statuses() == [status, 202]
    assert accepted_ids(intake) == unique_ids
    assert intake.requests[1].at >= waiting[2].timestamp()  # nothing went before the stored schedule


def test_a_429_holds_every_request_until_the_rate_limit_resets(store: Store, intake: IntakeServer) -> None:
    unique_ids = fill(store, 300)
    intake.then(429, {"X-RateLimit-Reset": "1", "X-RateLimit-Limit": "10"})

    deliver_all(_sender(store, intake, dataclasses.replace(FAST, batch_size=100)), store)

    first, *later = intake.requests
    assert first.status == 429
    assert len(later) == 3
    assert all(request.at >= first.at + 1 for request in later)
    assert sorted(accepted_ids(intake)) == sorted(unique_ids)


def test_a_refused_connection_is_retried_until_the_intake_is_up(store: Store) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unique_ids = fill(store, 3)
    sender = Sender(store, HttpIntake(f"http://127.0.0.1:{port}", "test-dd-api-key"), FAST)

    assert sender.run_once().retried == 3
    assert {(row.state, row.attempts) for row in rows(store)} == {(outbox.PENDING, 1)}
    assert "no answer from the intake (ConnectionError)" in str(rows(store)[0].reason)

    with IntakeServer(port=port) as intake:
        deliver_all(sender, store)
        assert accepted_ids(intake) == unique_ids


def test_a_413_splits_the_batch_and_sends_each_half(store: Store, intake: IntakeServer) -> None:
    unique_ids = fill(store, 10)
    intake.then(413)

    _sender(store, intake).run_once()

    assert intake.statuses() == [413, 202, 202]
    assert [len(request.body["data"]) for request in intake.requests[1:]] == [5, 5]
    assert accepted_ids(intake) == unique_ids


def test_an_event_too_big_even_alone_goes_to_dead_letters(store: Store, intake: IntakeServer) -> None:
    (too_big,) = fill(store, 1, padding=6_000_000)
    (fine,) = fill(store, 1)

    deliver_all(_sender(store, intake), store)

    assert accepted_ids(intake) == [fine]
    dead = [row for row in rows(store) if row.state == outbox.DEAD]
    assert [row.unique_id for row in dead] == [too_big]
    assert "413" in str(dead[0].reason)


def test_one_poison_event_in_a_batch_of_1000_is_the_only_dead_letter(store: Store, intake: IntakeServer) -> None:
    unique_ids = fill(store, 1000)
    poison = unique_ids[617]
    intake.reject.add(poison)

    result = _sender(store, intake).run_once()

    assert result.delivered == 999
    assert result.dead == 1
    assert sorted(accepted_ids(intake)) == sorted(set(unique_ids) - {poison})
    assert len(accepted_ids(intake)) == 999
    (dead,) = [row for row in rows(store) if row.state == outbox.DEAD]
    assert dead.unique_id == poison
    assert "400: poison event refused" in str(dead.reason)
    assert len(intake.requests) <= 2 * 10 + 1  # a bisection, not one request per event


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_pauses_delivery_without_losing_or_burning_anything(
    store: Store, intake: IntakeServer, status: int
) -> None:
    unique_ids = fill(store, 4)
    if status == 401:
        for _ in range(3):
            intake.then(401, body='{"errors":[{"detail":"Unauthorized"}]}')
        sender = _sender(store, intake)
    else:
        sender = _sender(store, intake, api_key="revoked-key")

    with capture_logs() as logs:
        first = sender.run_once()
        with store.transaction() as session:
            shown = metrics.delivery_paused(session)
        while len(intake.requests) < 3:  # two probes more, both refused
            sender.run_once()

    assert first.paused
    assert shown["paused"] is True
    assert str(status) in shown["reason"]
    assert intake.statuses() == [status] * 3
    probes = [request.at for request in intake.requests]
    assert all(later - earlier >= 0.3 for earlier, later in itertools.pairwise(probes))
    assert {(row.state, row.attempts, row.lease_until) for row in rows(store)} == {(outbox.PENDING, 0, None)}
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == ["delivery.paused"]

    intake.api_key = sender.intake.session.headers["DD-API-KEY"]  # type: ignore[attr-defined]
    deliver_all(sender, store)

    assert accepted_ids(intake) == unique_ids
    with store.transaction() as session:
        assert metrics.delivery_paused(session) == {"paused": False}


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_is_not_followed_and_the_key_goes_nowhere_else(store: Store, status: int) -> None:
    fill(store, 2)
    with IntakeServer() as elsewhere, IntakeServer() as intake:
        intake.then(status, {"Location": elsewhere.url + PIPELINE_PATH})

        result = _sender(store, intake).run_once()

        assert elsewhere.requests == []
        assert intake.statuses() == [status]
    assert result.paused
    assert {(row.state, row.attempts) for row in rows(store)} == {(outbox.PENDING, 0)}
    with store.transaction() as session:
        assert "redirected to 127.0.0.1" in metrics.delivery_paused(session)["reason"]


def test_an_event_whose_retry_would_pass_the_18_hour_window_is_expired(store: Store, intake: IntakeServer) -> None:
    now = dt.datetime.now(dt.UTC)
    (old,) = fill(store, 1, end=now - dt.timedelta(hours=17, minutes=59))
    (fresh,) = fill(store, 1)
    intake.then(503, {"Retry-After": "120"})

    result = _sender(store, intake).run_once()

    assert (result.expired, result.retried) == (1, 1)
    by_id = {row.unique_id: row for row in rows(store)}
    assert by_id[old].state == outbox.EXPIRED
    assert "18-hour window" in str(by_id[old].reason)
    assert (by_id[fresh].state, by_id[fresh].attempts) == (outbox.PENDING, 1)


def test_an_event_already_past_the_window_is_expired_not_sent(store: Store, intake: IntakeServer) -> None:
    now = dt.datetime.now(dt.UTC)
    add_event(store, [pipeline_outbound(end=now - dt.timedelta(hours=17, minutes=59, seconds=59))])
    with store.transaction() as session:  # it waited in the outbox (say, the key was refused) past the window
        session.execute(update(OutboxItem).values(end_time=now - dt.timedelta(hours=18, seconds=1)))

    result = _sender(store, intake).run_once()

    assert result.expired == 1
    assert intake.requests == []
    assert states(store) == {outbox.EXPIRED: 1}
