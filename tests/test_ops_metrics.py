"""/metrics after traffic: request, acceptance and delivery counters move, and the outbox is read at scrape time."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import requests
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from bridge.config import Config
from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.operations.multiproc import make_metrics_dir, remove_metrics_dir
from bridge.storage import migrate
from bridge.storage.store import Store
from bridge.web.app import create_app
from tests.conftest import TOKEN, USER
from tests.intake_server import IntakeServer
from tests.sender_support import wait_until

BUILD_ROUTE = "/<username>/apps/<app_name>/events/buildEvent"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every label set that includes ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, got), v in samples.items() if n == name and wanted <= got)


def _put_running_build(client: FlaskClient) -> None:
    response = client.put(
        f"/{USER}/apps/metrics-app/events/buildEvent?apiToken={TOKEN}",
        json={"build_status": "Running", "build_start": dt.datetime.now(dt.UTC).isoformat()},
    )
    assert response.status_code == 200


def test_a_request_is_counted_by_route_method_and_status(client: FlaskClient) -> None:
    before = scrape(client)
    _put_running_build(client)
    client.put(f"/{USER}/apps/metrics-app/events/buildEvent?apiToken=wrong", json={})
    after = scrape(client)

    labels = {"route": BUILD_ROUTE, "method": "PUT"}
    assert value(after, "bridge_http_requests_total", **labels, status="200") == (
        value(before, "bridge_http_requests_total", **labels, status="200") + 1
    )
    assert value(after, "bridge_http_requests_total", **labels, status="401") == (
        value(before, "bridge_http_requests_total", **labels, status="401") + 1
    )
    latency = "bridge_http_request_seconds_count"
    assert value(after, latency, **labels) == value(before, latency, **labels) + 2


def test_unknown_paths_share_one_route_label(client: FlaskClient) -> None:
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")
    samples = scrape(client)

    routes = {dict(labels)["route"] for name, labels in samples if name == "bridge_http_requests_total"}
    assert "unmatched" in routes
    assert not any(route.startswith("/no/such") for route in routes)


def test_an_accepted_event_is_counted_by_type_and_waits_in_the_outbox(client: FlaskClient) -> None:
    before = scrape(client)
    _put_running_build(client)
    after = scrape(client)

    accepted = "bridge_events_accepted_total"
    labels = {"source": "distelli", "event_type": "BUILD"}
    assert value(after, accepted, **labels) == value(before, accepted, **labels) + 1
    assert value(before, "bridge_outbox_depth") == 0
    assert value(after, "bridge_outbox_depth") == 2  # the running pipeline and its job
    assert value(after, "bridge_outbox_rows", state="pending") == 2
    assert value(after, "bridge_outbox_oldest_pending_age_seconds") >= 0
    assert value(after, "bridge_outbox_up") == 1


def test_deliveries_retries_and_intake_latency_move_and_the_outbox_drains(
    client: FlaskClient, store: Store, intake: IntakeServer
) -> None:
    _put_running_build(client)
    sender = Sender(store, HttpIntake(intake.url, intake.api_key))
    before = scrape(client)

    intake.then(503)
    sender.run_once()
    retried = scrape(client)
    sender.run_once(now=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10))
    after = scrape(client)

    assert total(retried, "bridge_delivery_retries_total", status="503") > total(
        before, "bridge_delivery_retries_total", status="503"
    )
    assert total(after, "bridge_deliveries_total", result="delivered") >= (
        total(before, "bridge_deliveries_total", result="delivered") + 2
    )
    assert (
        total(after, "bridge_intake_request_seconds_count") >= total(before, "bridge_intake_request_seconds_count") + 2
    )
    assert value(after, "bridge_outbox_depth") == 0
    assert value(after, "bridge_outbox_rows", state="delivered") == 2


def test_a_refused_api_key_raises_the_paused_flag(client: FlaskClient, store: Store, intake: IntakeServer) -> None:
    _put_running_build(client)
    assert value(scrape(client), "bridge_delivery_paused") == 0

    Sender(store, HttpIntake(intake.url, "not-the-key")).run_once()

    samples = scrape(client)
    assert value(samples, "bridge_delivery_paused") == 1
    assert value(samples, "bridge_outbox_depth") == 2


def test_a_worker_run_on_its_own_serves_its_delivery_counters(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = make_config()
    store = Store(config.database_url)
    migrate.upgrade(store)
    _put_running_build(create_app(config, store).test_client())
    port = _free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": config.database_url,
        "BRIDGE_SINK_PATH": config.sink_path,
        "BRIDGE_WORKER_METRICS_PORT": str(port),
    }
    with (tmp_path / "worker.log").open("wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "bridge", "worker"], env=env, stdout=log, stderr=log)
    try:
        wait_until(lambda: _delivered(f"http://127.0.0.1:{port}/metrics") == 2)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        store.dispose()


def _delivered(url: str) -> float:
    try:
        text = requests.get(url, timeout=2).text
    except requests.ConnectionError:
        return -1
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "bridge_deliveries_total" and sample.labels.get("result") == "delivered"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_a_configured_metrics_directory_is_emptied_at_start_and_kept_at_stop(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_4242.db").write_bytes(b"from the last run")
    (directory / "README").write_text("the operator's", encoding="utf-8")
    config = make_config(PROMETHEUS_MULTIPROC_DIR=str(directory))
    environ: dict[str, str] = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}

    made = make_metrics_dir(config, environ)
    remove_metrics_dir(config, made, environ)

    assert made.metrics_dir == str(directory)
    assert sorted(path.name for path in directory.iterdir()) == ["README"]
    assert environ == {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
