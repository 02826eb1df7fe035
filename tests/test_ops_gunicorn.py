"""The bridge as operators run it: the console script starting gunicorn and a delivery worker in subprocesses.

Checks what only a real gunicorn shows: its access log is JSON without the token, /metrics adds up every web
worker and the delivery worker, the container health check works, and a stop leaves no metrics files behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TOKEN, USER

BIN = Path(sys.executable).parent
DD_KEY_IN_HEADER = "fedcba9876543210fedcba9876543210"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout} s")
        time.sleep(0.1)


class Server:
    """One bridge process group started from the command line, its output kept in files."""

    def __init__(self, command: list[str], workdir: Path, **env: str) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmpdir = workdir / "tmp"
        self.tmpdir.mkdir()
        self.stdout_path, self.stderr_path = workdir / "stdout.log", workdir / "stderr.log"
        self.env = {
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(workdir),
            "TMPDIR": str(self.tmpdir),
            "PORT": str(self.port),
            "DATABASE_URL": f"sqlite:///{workdir / 'bridge.db'}",
            "BRIDGE_TOKENS": f"{USER}:{TOKEN}",
            "BRIDGE_SINK_PATH": str(workdir / "sink.jsonl"),
            **env,
        }
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(command, env=self.env, cwd=workdir, stdout=out, stderr=err)
        _wait_until(self._answers)

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"exited with {self.process.returncode}: {self.output()[-2000:]}")
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return False

    def output(self) -> str:
        return self.stdout_path.read_text() + self.stderr_path.read_text()

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.output().splitlines() if line.strip()]

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = requests.get(f"{self.url}/metrics", timeout=5).text
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metrics_dirs(self) -> list[Path]:
        return sorted(self.tmpdir.glob("pipeline-bridge-metrics-*"))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=40)


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``pipeline-bridge serve``: two gunicorn workers and one delivery worker writing to the file sink."""
    server = Server([str(BIN / "pipeline-bridge"), "serve"], tmp_path_factory.mktemp("serve"), WEB_CONCURRENCY="2")
    yield server
    if server.process.poll() is None:
        server.stop()


def test_access_log_is_json_with_the_request_id_and_without_the_token(bridge: Server) -> None:
    response = requests.put(
        f"{bridge.url}/{USER}/apps/gunicorn-app/events/pushEvent",
        params={"apiToken": TOKEN, "note": "x"},
        json={"branch": "main"},
        headers={
            "X-Request-ID": "access-log-1",
            "Authorization": f"Bearer {TOKEN}",
            "DD-API-KEY": DD_KEY_IN_HEADER,
            "X-Forwarded-For": "203.0.113.9",  # not believed: BRIDGE_PROXY_HOPS is 0
        },
        timeout=10,
    )
    assert response.status_code == 200

    _wait_until(lambda: "access-log-1" in bridge.stdout_path.read_text())
    lines = bridge.log_lines()  # every line of stdout and stderr parses as JSON
    (access,) = [line for line in lines if line["event"] == "http.access" and line["request_id"] == "access-log-1"]
    assert access["method"] == "PUT"
    assert access["path"] == f"/{USER}/apps/gunicorn-app/events/pushEvent"
    assert access["status"] == 200
    assert access["query"] == "apiToken=[REDACTED]&note=x"
    assert access["logger"] == "gunicorn.access"
    assert access["remote_addr"] == "127.0.0.1"
    output = bridge.output()
    assert TOKEN not in output
    assert DD_KEY_IN_HEADER not in output


def test_metrics_add_up_every_web_worker_and_the_delivery_worker(bridge: Server) -> None:
    health = ("bridge_http_requests_total", frozenset({"route": "/healthz", "method": "GET", "status": "200"}.items()))
    before = bridge.metrics().get(health, 0.0)
    for _ in range(20):
        with requests.Session() as fresh_connection:
            assert fresh_connection.get(f"{bridge.url}/healthz", timeout=5).status_code == 200
    assert bridge.metrics()[health] == before + 20
    assert list(bridge.metrics_dirs()[0].glob("*.db"))

    created = requests.put(
        f"{bridge.url}/{USER}/apps/gunicorn-app/events/buildEvent",
        params={"apiToken": TOKEN},
        json={"build_status": "Running"},
        timeout=10,
    )
    assert created.status_code == 200

    def delivered() -> float:
        samples = bridge.metrics()
        return sum(
            v
            for (name, labels), v in samples.items()
            if name == "bridge_deliveries_total" and ("result", "delivered") in labels
        )

    _wait_until(lambda: delivered() >= 2)
    samples = bridge.metrics()
    assert samples[("bridge_outbox_depth", frozenset())] == 0
    accepted = ("bridge_events_accepted_total", frozenset({"source": "distelli", "event_type": "BUILD"}.items()))
    assert samples[accepted] == 1


def _web_workers(server: Server) -> list[int]:
    """The gunicorn workers under ``serve``: the master's children, less the delivery worker."""
    master = server.process.pid
    workers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                command = (entry / "cmdline").read_bytes()
            except (OSError, ValueError, IndexError):
                continue
            if parent == master and b"worker" not in command.split(b"\0")[-2:-1][0]:
                workers.append(int(entry.name))
    return workers


def _connections_held(pid: int, port: int, established_only: bool = True) -> int:
    """How many TCP connections to ``port`` process ``pid`` holds open (from /proc): established ones, or any but
    the listener (a connection its client closed stays open until the worker has read the end)."""
    established = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        state = fields[3]
        if int(fields[1].rsplit(":", 1)[1], 16) == port and (state == "01" if established_only else state != "0A"):
            established.add(f"socket:[{fields[9]}]")
    held = 0
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        try:
            held += os.readlink(descriptor) in established
        except OSError:
            continue
    return held


def test_keep_alive_connections_opened_at_once_are_spread_over_the_web_workers(bridge: Server) -> None:
    """A proxy's or a load generator's connections, opened together and kept: each web worker gets its share,
    rather than the first to wake taking them all and serving every request on one core (bridge/web/balance.py)."""
    # Both started and waiting for connections (a worker still starting gets none, and is left none).
    _wait_until(lambda: len(_web_workers(bridge)) == 2)
    workers = _web_workers(bridge)
    _wait_until(lambda: all(Path(f"/proc/{pid}/wchan").read_text() == "do_epoll_wait" for pid in workers))
    _wait_until(lambda: sum(_connections_held(pid, bridge.port, established_only=False) for pid in workers) == 0)
    for _round in range(3):
        clients = [socket.create_connection(("127.0.0.1", bridge.port), timeout=10) for _ in range(16)]
        try:
            for client in clients:
                client.sendall(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
            for client in clients:
                assert client.recv(65536).startswith(b"HTTP/1.1 200 ")
            held = [_connections_held(pid, bridge.port) for pid in workers]
        finally:
            for client in clients:
                client.close()
        assert sum(held) == 16
        assert min(held) >= 4, f"round {_round}: connections per web worker: {held}"
        _wait_until(lambda: sum(_connections_held(pid, bridge.port, established_only=False) for pid in workers) == 0)


def test_a_stopped_web_worker_leaves_no_new_client_waiting(bridge: Server) -> None:
    """A worker that holds fewer connections but does not accept them (stopped here, stuck in real life): the
    others leave it new connections only for a moment, then take them themselves."""
    _wait_until(lambda: len(_web_workers(bridge)) == 2)
    stopped, _running = _web_workers(bridge)
    os.kill(stopped, signal.SIGSTOP)
    kept = socket.create_connection(("127.0.0.1", bridge.port), timeout=10)  # the running worker holds one more
    try:
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
        assert kept.recv(65536).startswith(b"HTTP/1.1 200 ")
        for _ in range(10):
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", bridge.port), timeout=10) as client:
                client.sendall(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n")
                assert client.recv(65536).startswith(b"HTTP/1.1 200 ")
            assert time.monotonic() - started < 1.0
    finally:
        kept.close()
        os.kill(stopped, signal.SIGCONT)


def test_the_container_health_check_command(bridge: Server, tmp_path: Path) -> None:
    env = {**bridge.env, "PORT": str(bridge.port)}
    healthy = subprocess.run([str(BIN / "pipeline-bridge"), "healthcheck"], env=env, capture_output=True, timeout=30)
    env["PORT"] = str(_free_port())
    unhealthy = subprocess.run([str(BIN / "pipeline-bridge"), "healthcheck"], env=env, capture_output=True, timeout=30)

    assert healthy.returncode == 0
    assert unhealthy.returncode == 1


@pytest.mark.parametrize(
    "command",
    [
        ["pipeline-bridge", "serve", "--no-worker"],
        ["gunicorn", "-c", "python:bridge.web.gunicorn_conf", "bridge.web.wsgi:app"],
    ],
    ids=["serve", "gunicorn"],
)
def test_a_stopped_server_leaves_no_metrics_directory(tmp_path: Path, command: list[str]) -> None:
    server = Server([str(BIN / command[0]), *command[1:]], tmp_path, WEB_CONCURRENCY="1")
    assert requests.get(f"{server.url}/metrics", timeout=5).status_code == 200
    assert len(server.metrics_dirs()) == 1
    # Both commands run the buffering worker: what gunicorn's parser refuses is answered in the JSON shape.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
        client.sendall(b"NOT HTTP\r\n\r\n")
        answer = client.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "invalid_request_line"

    assert server.stop() == 0
    assert server.metrics_dirs() == []
    assert all(line["level"] for line in server.log_lines())


def test_a_web_worker_that_dies_leaves_the_others_and_its_replacement_answering(tmp_path: Path) -> None:
    server = Server([str(BIN / "pipeline-bridge"), "serve"], tmp_path, WEB_CONCURRENCY="2")
    try:
        _wait_until(lambda: len(_web_workers(server)) == 2)
        first = _web_workers(server)
        # SIGABRT is what gunicorn's master sends a worker past its timeout; the worker exits, the master stays.
        os.kill(first[0], signal.SIGABRT)
        _wait_until(lambda: len(set(_web_workers(server)) - set(first)) == 1)
        for number in range(20):  # fresh connections, so both live workers serve some
            with requests.Session() as fresh_connection:
                created = fresh_connection.put(
                    f"{server.url}/{USER}/apps/after-a-crash/events/buildEvent",
                    params={"apiToken": TOKEN},
                    json={"build_status": "Running", "build_id": str(number)},
                    timeout=10,
                )
                assert created.status_code == 200, created.text
                missing = fresh_connection.get(f"{server.url}/no/such/path-{number}", timeout=10)
                assert missing.status_code == 404, missing.text
        metrics = server.metrics()
        unmatched = (
            "bridge_http_requests_total",
            frozenset({"route": "unmatched", "method": "GET", "status": "404"}.items()),
        )
        assert metrics[unmatched] == 20
        assert server.metrics_dirs(), "the metrics directory was removed while the server runs"
        # The delivery worker was left running: what was accepted reaches the sink.
        _wait_until(
            lambda: (tmp_path / "sink.jsonl").exists() and "after-a-crash" in (tmp_path / "sink.jsonl").read_text()
        )
    finally:
        assert server.stop() == 0
    assert server.metrics_dirs() == []
