"""What a newcomer sees first: ``serve``'s start-up line and its warning without tokens, a quiet migration,
``--version``, and commands that say when they have nothing to show."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import TOKEN, USER
from tests.reliability.harness import free_port
from tests.test_ops_gunicorn import BIN

CONSOLE_SCRIPT = str(BIN / "pipeline-bridge")
ALEMBIC_NOISE = ("setup plugin", "Context impl", "Will assume")
START_SECONDS = 90  # generous: the machine may be busy


class Serve:
    """``pipeline-bridge serve`` in a subprocess, its stderr on a terminal (as ``make run`` in a shell) or not."""

    def __init__(self, workdir: Path, *args: str, terminal: bool = False, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.chunks: list[bytes] = []
        environment = {
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(workdir),
            "PORT": str(self.port),
            "DATABASE_URL": f"sqlite:///{workdir / 'bridge.db'}",
            "BRIDGE_TOKENS": f"{USER}:{TOKEN}",
            "BRIDGE_SINK_PATH": str(workdir / "sink.jsonl"),
            **env,
        }
        reader, writer = pty.openpty() if terminal else os.pipe()
        self.process = subprocess.Popen(
            [CONSOLE_SCRIPT, "serve", *args], env=environment, cwd=workdir, stdout=writer, stderr=writer
        )
        os.close(writer)
        self.drain = threading.Thread(target=self._read, args=(reader,), daemon=True)
        self.drain.start()
        deadline = time.monotonic() + START_SECONDS
        while not self._answers():
            assert time.monotonic() < deadline, f"no /healthz after {START_SECONDS} s: {self.output()[-2000:]}"
            time.sleep(0.2)

    def _read(self, fd: int) -> None:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the terminal closes when the last process holding it exits
                chunk = b""
            if not chunk:
                os.close(fd)
                return
            self.chunks.append(chunk)

    def _answers(self) -> bool:
        assert self.process.poll() is None, f"exited with {self.process.returncode}: {self.output()[-2000:]}"
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def output(self) -> str:
        return b"".join(self.chunks).decode().replace("\r\n", "\n")

    def plain_lines(self) -> list[str]:
        return [line for line in self.output().splitlines() if line.strip() and not line.startswith("{")]

    def events(self, logger: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.output().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("logger") == logger]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.drain.join(timeout=10)
        return code


@pytest.mark.slow  # a whole serve process tree
def test_serve_at_a_terminal_says_where_it_listens_what_it_stores_in_and_where_events_go(tmp_path: Path) -> None:
    server = Serve(tmp_path, terminal=True, BRIDGE_HOOK_SECRETS="github:hook-secret-1,nosuch:x")
    try:
        assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 200
    finally:
        assert server.stop() == 0
    lines = server.plain_lines()
    assert lines[0] == (
        f"pipeline-bridge {version('pipeline-bridge')} listening on http://127.0.0.1:{server.port} | "
        f"database sqlite:///{tmp_path / 'bridge.db'} | "
        f"events to file sink {tmp_path / 'sink.jsonl'} (DD_API_KEY is unset) | "
        "1 user with an apiToken | webhooks: github"
    )
    assert lines[1:] == ["WARNING: BRIDGE_HOOK_SECRETS names no installed webhook source: nosuch"]
    noise = [line for line in server.output().splitlines() if any(word in line for word in ALEMBIC_NOISE)]
    assert noise == []
    assert "Running upgrade  -> 0001" in server.output()  # what the migration did is still said
    assert "hook-secret-1" not in server.output()


@pytest.mark.slow  # a whole serve process tree
def test_serve_without_tokens_warns_at_start_and_is_not_ready(tmp_path: Path) -> None:
    server = Serve(tmp_path, "--no-worker", terminal=True, BRIDGE_TOKENS="")
    try:
        ready = requests.get(f"{server.url}/readyz", timeout=5)
        refused = requests.get(f"{server.url}/{USER}/apps/app/events?apiToken={TOKEN}", timeout=5)
    finally:
        assert server.stop() == 0
    lines = server.plain_lines()
    assert lines[0].endswith(" | 0 users with an apiToken | webhooks: none enabled (BRIDGE_HOOK_SECRETS)")
    assert lines[1].startswith("WARNING: BRIDGE_TOKENS is empty: every Distelli API request will be refused")
    assert ready.status_code == 503
    assert ready.json()["reason"] == "BRIDGE_TOKENS is empty: every Distelli API request is refused"
    assert refused.status_code == 401


@pytest.mark.slow  # a whole serve process tree
def test_serve_into_a_log_pipe_keeps_every_line_json_and_binds_where_told(tmp_path: Path) -> None:
    server = Serve(tmp_path, "--no-worker", BRIDGE_BIND_ADDRESS="0.0.0.0", BRIDGE_TOKENS="")
    assert server.stop() == 0
    assert server.plain_lines() == []  # docker logs, a dyno, a file: log pipelines parse every line
    said = [(event["level"], event["event"]) for event in server.events("bridge.operations.startup")]
    assert said[0][0] == "info"
    assert f"listening on http://localhost:{server.port} (every interface, 0.0.0.0:{server.port})" in said[0][1]
    assert said[1][0] == "warning" and said[1][1].startswith("WARNING: BRIDGE_TOKENS is empty")
    assert f"Listening at: http://0.0.0.0:{server.port}" in server.output()


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONSOLE_SCRIPT, *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_version_is_the_installed_package_version(tmp_path: Path) -> None:
    done = _run(tmp_path, "--version", DD_SITE="not-even-read")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"pipeline-bridge {version('pipeline-bridge')}\n", "")


def test_dead_letters_list_says_when_there_are_none(tmp_path: Path) -> None:
    database = {"DATABASE_URL": f"sqlite:///{tmp_path / 'bridge.db'}"}
    assert _run(tmp_path, "db", "upgrade", **database).returncode == 0

    done = _run(tmp_path, "dead-letters", "list", **database)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "no dead letters\n")


def test_db_upgrade_prints_no_alembic_noise(tmp_path: Path) -> None:
    done = _run(tmp_path, "db", "upgrade", DATABASE_URL=f"sqlite:///{tmp_path / 'bridge.db'}")
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if any(word in line for word in ALEMBIC_NOISE)] == []
    assert "Running upgrade 0001 -> 0002" in done.stderr
    assert done.stdout == "database is at the newest revision\n"
