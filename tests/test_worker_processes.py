"""Real ``python -m bridge worker`` processes, configured by environment: crashes, stops, restarts, two at once.

The intake can hold requests on the wire, so a test knows a worker is mid-batch before it kills or stops it.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.delivery.worker import BATCH_LINGER_SECONDS
from bridge.storage import outbox
from bridge.storage.store import Store
from tests.intake_server import IntakeServer
from tests.sender_support import (
    accepted_ids,
    add_event,
    deliver_all,
    fill,
    pipeline_outbound,
    rows,
    sent_by,
    start_worker,
    states,
    wait_until,
)

FAST_LEASE = {"BRIDGE_SENDER_LEASE_SECONDS": "2"}


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Workers a test started; any still running at the end are killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


def test_a_worker_killed_mid_batch_has_its_rows_delivered_once_after_its_lease(
    store: Store, intake: IntakeServer, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    unique_ids = fill(store, 200)
    intake.hold()
    first = start_worker(
        store.database_url, intake.url, tmp_path / "a.log", BRIDGE_SENDER_BATCH_SIZE="100", **FAST_LEASE
    )
    processes.append(first)
    wait_until(lambda: intake.held == 1)

    first.kill()
    first.wait()
    intake.release()
    wait_until(lambda: intake.statuses() == [499])
    leased = {row.unique_id: row.lease_until for row in rows(store) if row.lease_until is not None}
    assert len(leased) == 100

    second = start_worker(store.database_url, intake.url, tmp_path / "b.log", **FAST_LEASE)
    processes.append(second)
    wait_until(lambda: states(store) == {outbox.DELIVERED: 200})

    assert sorted(accepted_ids(intake)) == sorted(unique_ids)
    assert len(accepted_ids(intake)) == 200
    lease_end = max(leased.values())
    for request in intake.requests[1:]:
        carried = {event["attributes"]["resource"]["unique_id"] for event in request.body["data"]}
        if carried & leased.keys():
            assert request.at >= lease_end.timestamp()
    assert _stop(second) == 0
    assert sent_by(tmp_path / "b.log") == 200


def test_two_workers_share_the_outbox_and_deliver_each_event_once(
    store: Store, intake: IntakeServer, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    unique_ids = fill(store, 2000)
    intake.hold()
    env = {"BRIDGE_SENDER_BATCH_SIZE": "100", **FAST_LEASE}
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    processes.extend(start_worker(store.database_url, intake.url, log, **env) for log in logs)
    wait_until(lambda: intake.held == 2)  # both are mid-batch at once

    intake.release()
    wait_until(lambda: states(store) == {outbox.DELIVERED: 2000}, timeout=60)

    assert [_stop(process) for process in processes] == [0, 0]
    assert sorted(accepted_ids(intake)) == sorted(unique_ids)
    assert len(accepted_ids(intake)) == 2000
    delivered = [sent_by(log) for log in logs]
    assert sum(delivered) == 2000
    assert min(delivered) > 0


def test_sigterm_during_a_batch_finishes_it_releases_the_rest_and_exits_0(
    store: Store, intake: IntakeServer, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    unique_ids = fill(store, 30, padding=300_000)  # one claim, two requests by size
    intake.hold()
    worker = start_worker(store.database_url, intake.url, tmp_path / "w.log")
    processes.append(worker)
    wait_until(lambda: intake.held == 1)

    worker.send_signal(signal.SIGTERM)
    intake.release()

    assert worker.wait(timeout=30) == 0
    assert intake.statuses() == [202]
    sent = len(accepted_ids(intake))
    assert 0 < sent < 30
    assert states(store) == {outbox.DELIVERED: sent, outbox.PENDING: 30 - sent}
    assert all(row.lease_until is None for row in rows(store))  # released now, not when a lease runs out

    deliver_all(Sender(store, HttpIntake(intake.url, intake.api_key)), store)
    assert accepted_ids(intake) == unique_ids


def test_a_restarted_worker_keeps_the_retry_schedule_and_delivers_the_backlog(
    store: Store, intake: IntakeServer, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    unique_ids = fill(store, 500)
    intake.then(503, {"Retry-After": "2"})
    first = start_worker(store.database_url, intake.url, tmp_path / "a.log", BRIDGE_SENDER_BATCH_SIZE="100")
    processes.append(first)
    wait_until(lambda: intake.statuses() == [503])
    assert _stop(first) == 0
    retried = [row for row in rows(store) if row.attempts == 1]
    assert len(retried) == 100
    due = max(row.next_attempt_at for row in retried)

    second = start_worker(store.database_url, intake.url, tmp_path / "b.log", BRIDGE_SENDER_BATCH_SIZE="100")
    processes.append(second)
    wait_until(lambda: states(store) == {outbox.DELIVERED: 500})

    assert _stop(second) == 0
    assert sorted(accepted_ids(intake)) == sorted(unique_ids)
    assert len(accepted_ids(intake)) == 500
    assert all(request.at >= due.timestamp() for request in intake.requests[1:])


def test_sigterm_while_the_intake_never_answers_releases_the_batch_and_exits_0(
    store: Store, intake: IntakeServer, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    unique_ids = fill(store, 50)
    intake.hold()
    script = "import os; from bridge.config import load_config; from bridge.delivery.worker import run_worker; "
    script += "run_worker(load_config(os.environ), stop_grace=1.0)"  # the 25 s grace, shortened
    worker = start_worker(store.database_url, intake.url, tmp_path / "w.log", command=["-c", script])
    processes.append(worker)
    wait_until(lambda: intake.held == 1)

    worker.send_signal(signal.SIGTERM)

    assert worker.wait(timeout=30) == 0
    assert {(row.state, row.lease_until) for row in rows(store)} == {(outbox.PENDING, None)}
    intake.release()
    wait_until(lambda: intake.statuses() == [499])
    deliver_all(Sender(store, HttpIntake(intake.url, intake.api_key)), store)
    assert accepted_ids(intake) == unique_ids


def test_a_steady_trickle_of_events_goes_out_in_a_few_batches_not_one_request_per_event(
    store: Store, intake: IntakeServer, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """While events keep arriving, the worker waits a moment after a part-full batch (``BATCH_LINGER_SECONDS``)
    so they reach the intake as a few requests a second rather than one small request per pass."""
    worker = start_worker(store.database_url, intake.url, tmp_path / "worker.log")
    processes.append(worker)
    wait_until(lambda: (tmp_path / "worker.log").exists() and "worker.started" in (tmp_path / "worker.log").read_text())

    unique_ids = []
    for _ in range(300):
        outbound = pipeline_outbound()
        add_event(store, [outbound])
        unique_ids.append(outbound.unique_id)
        time.sleep(0.005)  # a trickle that lasts a few passes, however fast the machine
    wait_until(lambda: states(store) == {outbox.DELIVERED: 300})

    assert sorted(accepted_ids(intake)) == sorted(unique_ids)
    arrivals = [request.at for request in intake.requests]
    assert 2 <= len(arrivals) < 100
    assert min(later - earlier for earlier, later in itertools.pairwise(arrivals)) >= BATCH_LINGER_SECONDS * 0.9
    assert _stop(worker) == 0
