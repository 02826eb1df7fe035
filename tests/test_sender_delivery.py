"""The sender against the strict local intake: batching, size limits, supersede, ordering and the file sink."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path

from adapters.base import DORA_DEPLOYMENT, Outbound
from bridge.config import Config
from bridge.delivery.intake import BATCH_LIMITS, MAX_BATCH_BYTES, HttpIntake
from bridge.delivery.sender import Sender
from bridge.delivery.worker import make_intake
from bridge.storage import outbox
from bridge.storage.store import Store
from tests.intake_server import DORA_PATH, MAX_BYTES, IntakeServer
from tests.sender_support import accepted_ids, add_event, deliver_all, fill, pipeline_outbound, rows, states

KINDS = list(BATCH_LIMITS)


def test_a_backlog_goes_in_batches_of_at_most_1000_each_event_once(store: Store, intake: IntakeServer) -> None:
    unique_ids = fill(store, 2100)

    result = Sender(store, HttpIntake(intake.url, intake.api_key)).run_once()
    result_rest = deliver_all(Sender(store, HttpIntake(intake.url, intake.api_key)), store)

    assert result.delivered == 1000
    assert sum(r.delivered for r in result_rest) == 1100
    assert intake.statuses() == [202, 202, 202]
    assert [len(r.body["data"]) for r in intake.requests] == [1000, 1000, 100]
    assert accepted_ids(intake) == unique_ids
    assert all(row.state == outbox.DELIVERED and row.delivered_at is not None for row in rows(store))


def test_big_events_are_split_by_size_and_compressed_under_the_intake_limit(store: Store, intake: IntakeServer) -> None:
    unique_ids = fill(store, 90, padding=100_000)  # about 9 MB in all

    deliver_all(Sender(store, HttpIntake(intake.url, intake.api_key)), store)

    assert accepted_ids(intake) == unique_ids
    assert len(intake.requests) >= 2
    for request in intake.requests:
        assert request.headers["Content-Encoding"] == "gzip"
        assert request.size < MAX_BYTES
        assert len(json.dumps(request.body).encode()) <= MAX_BATCH_BYTES


def test_a_small_batch_goes_uncompressed_with_the_key_and_json_type(store: Store, intake: IntakeServer) -> None:
    fill(store, 1)

    Sender(store, HttpIntake(intake.url, intake.api_key)).run_once()

    (request,) = intake.requests
    assert request.status == 202
    assert "Content-Encoding" not in request.headers
    assert request.headers["DD-API-KEY"] == intake.api_key
    assert request.headers["Content-Type"] == "application/json"


def test_a_running_event_whose_final_is_pending_is_superseded_not_sent(store: Store, intake: IntakeServer) -> None:
    running = pipeline_outbound(status="running")
    add_event(store, [running])
    add_event(store, [pipeline_outbound(unique_id=running.unique_id, status="success")])

    deliver_all(Sender(store, HttpIntake(intake.url, intake.api_key)), store)

    assert [r["status"] for r in intake.accepted_resources()] == ["success"]
    assert [row.state for row in rows(store)] == [outbox.SUPERSEDED, outbox.DELIVERED]


def test_no_event_is_sent_while_an_older_one_of_its_run_is_in_flight(store: Store, intake: IntakeServer) -> None:
    running = pipeline_outbound(status="running")
    add_event(store, [running])
    now = dt.datetime.now(dt.UTC)
    with store.transaction() as session:  # another worker has the running event on the wire
        (in_flight,) = outbox.claim(session, "w-other", now, now + dt.timedelta(minutes=1), 10, KINDS, False).to_send
    add_event(store, [pipeline_outbound(unique_id=running.unique_id, status="success")])
    sender = Sender(store, HttpIntake(intake.url, intake.api_key))

    assert sender.run_once().claimed == 0
    assert intake.requests == []

    with store.transaction() as session:
        outbox.finish(session, [in_flight.id], "w-other", outbox.DELIVERED, now)
    deliver_all(sender, store)
    assert [r["status"] for r in intake.accepted_resources()] == ["success"]


def test_without_an_api_key_deliveries_are_json_lines_in_the_sink(
    make_config: Callable[..., Config], store: Store, tmp_path: Path
) -> None:
    config = make_config(DATABASE_URL=store.database_url)
    assert config.dd_api_key is None
    unique_ids = fill(store, 3)

    Sender(store, make_intake(config)).run_once()

    lines = [json.loads(line) for line in Path(config.sink_path).read_text().splitlines()]
    assert [line["endpoint"] for line in lines] == ["/api/v2/ci/pipeline"] * 3
    assert [line["body"]["data"]["attributes"]["resource"]["unique_id"] for line in lines] == unique_ids
    assert states(store) == {outbox.DELIVERED: 3}


def test_deployments_go_one_per_request_to_the_dora_endpoint_with_their_remote_id(
    store: Store, intake: IntakeServer
) -> None:
    finished = time.time_ns()
    deployments = [
        Outbound(
            DORA_DEPLOYMENT,
            f"deploy-{number}",
            "deployment",
            True,
            {
                "data": {
                    "attributes": {"service": "example-node", "started_at": finished - 10**9, "finished_at": finished}
                }
            },
        )
        for number in range(2)
    ]
    add_event(store, deployments)
    pipelines = fill(store, 3)

    deliver_all(Sender(store, HttpIntake(intake.url, intake.api_key)), store)

    assert len(intake.accepted_events(DORA_PATH)) == 2
    assert [request.path for request in intake.requests].count(DORA_PATH) == 2
    assert accepted_ids(intake) == pipelines
    remote_ids = [row.remote_id for row in rows(store) if row.kind == DORA_DEPLOYMENT]
    assert len(set(remote_ids)) == 2
    assert None not in remote_ids
