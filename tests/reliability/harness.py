"""The real bridge in subprocesses, a webhook load that remembers what was accepted, and the delivery check.

Shared by the reliability suite and the ``bench/`` scripts: both must drive the same console script a user runs
(``pipeline-bridge serve`` or ``worker``), in its own process group so a test can ``kill -9`` the gunicorn master,
its workers and the delivery worker at once, exactly as a crashed dyno would lose them.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import requests

from adapters.base import MappingContext
from bridge.storage.outbox import PENDING, counts_by_state
from bridge.storage.store import Store
from tests.intake_server import PIPELINE_PATH, IntakeServer

CONSOLE_SCRIPT = str(Path(sys.executable).with_name("pipeline-bridge"))
USER, TOKEN = "jdoe", "abcdefghijklmnopqrstuvwxyz0123456789z"
APP = "example-node"
DD_API_KEY = "test-dd-api-key"
INSTALLATION_ID = "pipeline-bridge"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bridge_env(database_url: str, intake_url: str | None, port: int, **extra: str) -> dict[str, str]:
    """The environment of a bridge process: the caller's, plus the bridge's own variables."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DD_", "BRIDGE_"))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "BRIDGE_TOKENS": f"{USER}:{TOKEN}",
            "PORT": str(port),
            "WEB_CONCURRENCY": "2",
            "LOG_LEVEL": "WARNING",
            "BRIDGE_INSTALLATION_ID": INSTALLATION_ID,
        }
    )
    if intake_url:
        env.update({"DD_API_KEY": DD_API_KEY, "DD_INTAKE_URL": intake_url})
    env.update(extra)
    return env


class BridgeProcess:
    """One ``pipeline-bridge <command>`` in its own process group, its output in ``log_path``.

    ``argv`` runs another server instead (the benchmarks' baselines); any process but a bare ``worker`` is ready
    when its ``/healthz`` answers 200.
    """

    def __init__(
        self,
        command: str,
        env: Mapping[str, str],
        log_path: Path,
        argv: list[str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.command = command
        self.cwd = cwd
        self.env = dict(env)
        self.log_path = log_path
        self.argv = argv or [CONSOLE_SCRIPT, *command.split()]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.env['PORT']}"

    def start(self, ready_timeout: float = 30.0) -> BridgeProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=log, start_new_session=True, cwd=self.cwd
            )
        if self.command != "worker":
            self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"pipeline-bridge {self.command} exited: {self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"pipeline-bridge {self.command} not ready after {timeout}s: {self.log_tail()}")

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to every process of the group: master, web workers and delivery worker."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def kill9(self) -> None:
        self.signal_group(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(timeout=10)
        self._reap_group()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM to the main process (as a platform does), then wait; returns the exit code, None if it hung."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.process.wait(timeout=10)
            return None
        self._reap_group()
        return code

    def pids(self) -> list[int]:
        """The main process and every descendant, from /proc."""
        assert self.process is not None
        children: dict[int, list[int]] = collections.defaultdict(list)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                children[parent].append(int(entry.name))
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def _reap_group(self) -> None:
        """Wait until no process of the group is left (a stray worker would hold the port or the database)."""
        assert self.process is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        self.signal_group(signal.SIGKILL)

    def __enter__(self) -> BridgeProcess:
        return self

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal_group(signal.SIGKILL)
            self.process.wait(timeout=10)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def running_body(build_number: int) -> dict[str, Any]:
    return {
        "build_status": "Running",
        "build_start": now_iso(),
        "build_id": f"J{build_number}",
        "build_provider": "jenkins",
        "build_url": f"http://jenkins.example.com/job/{build_number}",
        "repo_url": "https://github.com/jdoe/example-node",
        "commit_id": "1234567890123456789012345678901234567890",
        "author_username": "jdoe",
        "branch": "master",
    }


def success_body() -> dict[str, Any]:
    return {"build_status": "Success", "build_end": now_iso()}


def create_url(base_url: str) -> str:
    return f"{base_url}/{USER}/apps/{APP}/events/buildEvent?apiToken={TOKEN}"


def update_url(base_url: str, event_id: str) -> str:
    return f"{base_url}/{USER}/apps/{APP}/events/{event_id}?apiToken={TOKEN}"


@dataclasses.dataclass
class Accepted:
    """What the clients were told: builds whose Running PUT got 200, and those whose Success POST got 200."""

    running: dict[str, int] = dataclasses.field(default_factory=dict)
    final: set[str] = dataclasses.field(default_factory=set)
    refused: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class WebhookLoad:
    """``builds`` CI builds (PUT Running, then POST Success) sent from ``threads`` keep-alive clients.

    A request that fails to connect or gets no answer is retried for ``retry_seconds``, as a CI tool's retry
    would, so the load goes on after a restart; only an answered 200 counts as accepted.
    """

    def __init__(self, base_url: str, builds: int, threads: int = 6, retry_seconds: float = 30.0) -> None:
        self.base_url = base_url
        self.builds = builds
        self.threads = threads
        self.retry_seconds = retry_seconds
        self.accepted = Accepted()
        self._next = iter(range(builds))
        self._next_lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._stopped = threading.Event()

    def start(self) -> WebhookLoad:
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def join(self, timeout: float = 120.0) -> Accepted:
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return self.accepted

    def running(self) -> bool:
        return any(worker.is_alive() for worker in self._workers)

    def stop(self) -> Accepted:
        """No new builds, no more retries; waits for the clients to finish what they were doing."""
        self._stopped.set()
        return self.join(timeout=60)

    def answered(self) -> int:
        with self.accepted.lock:
            return len(self.accepted.running) + len(self.accepted.final) + self.accepted.refused

    def _take(self) -> int | None:
        with self._next_lock:
            return None if self._stopped.is_set() else next(self._next, None)

    def _run(self) -> None:
        session = requests.Session()
        while (number := self._take()) is not None:
            reply = self._send(session, "PUT", create_url(self.base_url), running_body(number))
            if reply is None or reply.status_code != 200:
                with self.accepted.lock:
                    self.accepted.refused += 1
                continue
            event_id = reply.json()["event_id"]
            with self.accepted.lock:
                self.accepted.running[event_id] = number
            reply = self._send(session, "POST", update_url(self.base_url, event_id), success_body())
            if reply is not None and reply.status_code == 200:
                with self.accepted.lock:
                    self.accepted.final.add(event_id)

    def _send(self, session: requests.Session, method: str, url: str, body: dict[str, Any]) -> requests.Response | None:
        deadline = time.monotonic() + self.retry_seconds
        while time.monotonic() < deadline:
            try:
                return session.request(method, url, json=body, timeout=30)
            except requests.RequestException:
                if self._stopped.wait(0.1):
                    break
        return None


def run_uuids(event_id: str) -> tuple[str, str]:
    """The pipeline and job ``unique_id`` the bridge gives a build event, through the adapters' own rule."""
    context = MappingContext(installation_id=INSTALLATION_ID, public_url="", received_at=dt.datetime.now(dt.UTC))
    return context.run_uuid(USER, APP, int(event_id)), context.run_uuid(USER, APP, int(event_id), "job")


Key = tuple[str, str, str]


def _key(event: dict[str, Any]) -> Key:
    resource = event["attributes"]["resource"]
    return (resource.get("unique_id") or resource["id"], resource["level"], resource["status"])


def accepted_batches(intake: IntakeServer) -> list[list[Key]]:
    """The (unique_id, level, status) of every event, per request the intake accepted, in arrival order."""
    with intake.lock:
        bodies = [
            request.body for request in intake.requests if request.path == PIPELINE_PATH and request.status == 202
        ]
    return [
        [_key(event) for event in (body["data"] if isinstance(body["data"], list) else [body["data"]])]
        for body in bodies
    ]


def delivered_keys(intake: IntakeServer) -> collections.Counter[Key]:
    """How many times the intake accepted each (unique_id, level, status)."""
    return collections.Counter(key for batch in accepted_batches(intake) for key in batch)


def batches_sent_again(intake: IntakeServer) -> int:
    """How many accepted requests had events that arrived again later.

    After a kill -9 the one batch in flight may be sent again: the intake took it, but the worker died before it
    could record that. Delivery is at least once, so at most that one batch may repeat per crash.
    """
    first_seen: dict[Key, int] = {}
    repeated: set[int] = set()
    for index, batch in enumerate(accepted_batches(intake)):
        for key in batch:
            if key in first_seen:
                repeated.add(first_seen[key])
            else:
                first_seen[key] = index
    return len(repeated)


def missing_deliveries(accepted: Accepted, delivered: collections.Counter[Key]) -> list[str]:
    """Accepted builds whose pipeline or job event never reached the intake in the state the client last set.

    A build whose Success was accepted must arrive as ``success``; one whose Success was never confirmed must
    arrive as ``running`` (or ``success`` when its Success was stored but the answer was lost).
    """
    missing = []
    for event_id in accepted.running:
        for unique_id, level in zip(run_uuids(event_id), ("pipeline", "job"), strict=True):
            final = delivered[(unique_id, level, "success")] > 0
            if event_id in accepted.final and not final:
                missing.append(f"event {event_id} {level}: success")
            elif not final and delivered[(unique_id, level, "running")] == 0:
                missing.append(f"event {event_id} {level}: running")
    return missing


def duplicates(delivered: collections.Counter[Key]) -> dict[Key, int]:
    return {key: count for key, count in delivered.items() if count > 1}


def pending_count(database_url: str) -> int:
    store = Store(database_url)
    try:
        with store.transaction() as session:
            return counts_by_state(session).get(PENDING, 0)
    finally:
        store.dispose()


def wait_until_drained(database_url: str, timeout: float) -> int:
    """Wait until no outbox row is pending (bounded); returns how many still are."""
    deadline = time.monotonic() + timeout
    pending = pending_count(database_url)
    while pending and time.monotonic() < deadline:
        time.sleep(0.5)
        pending = pending_count(database_url)
    return pending


@contextlib.contextmanager
def serving(command: str, env: Mapping[str, str], log_path: Path) -> Iterator[BridgeProcess]:
    with BridgeProcess(command, env, log_path) as bridge:
        yield bridge.start()
