"""What a newcomer sees first: ``serve``'s start-up line and its warning without tokens, a quiet migration,
``--version``, and commands that say when they have nothing to show."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import requests

from tests.conftest import TOKEN, USER
from tests.test_ops_gunicorn import BIN, Server

CONSOLE_SCRIPT = str(BIN / "pipeline-bridge")
ALEMBIC_NOISE = ("setup plugin", "Context impl", "Will assume")


def _startup_lines(server: Server) -> list[str]:
    """The plain (not JSON) lines of stderr: what serve says to a person."""
    return [line for line in server.stderr_path.read_text().splitlines() if not line.startswith("{")]


def test_serve_says_where_it_listens_what_it_stores_in_and_where_events_go(tmp_path: Path) -> None:
    server = Server([CONSOLE_SCRIPT, "serve"], tmp_path, BRIDGE_HOOK_SECRETS="github:hook-secret-1,nosuch:x")
    try:
        lines = _startup_lines(server)
        summary = next(line for line in lines if line.startswith("pipeline-bridge "))
        assert f"listening on http://127.0.0.1:{server.port} ·" in summary
        assert f"database sqlite:///{tmp_path / 'bridge.db'} ·" in summary
        assert f"events to file sink {tmp_path / 'sink.jsonl'} (DD_API_KEY is unset)" in summary
        assert "1 user with an apiToken" in summary
        assert summary.endswith("webhooks: github")
        assert "WARNING: BRIDGE_HOOK_SECRETS names no installed webhook source: nosuch" in lines
        assert not any(line.startswith("WARNING: BRIDGE_TOKENS") for line in lines)
        assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 200
        noise = [line for line in server.output().splitlines() if any(word in line for word in ALEMBIC_NOISE)]
        assert noise == []
        assert "Running upgrade  -> 0001" in server.output()  # what the migration did is still said
        assert "hook-secret-1" not in server.output()
    finally:
        assert server.stop() == 0


def test_serve_without_tokens_warns_at_start_and_is_not_ready(tmp_path: Path) -> None:
    server = Server([CONSOLE_SCRIPT, "serve", "--no-worker"], tmp_path, BRIDGE_TOKENS="")
    try:
        lines = _startup_lines(server)
        assert "0 users with an apiToken" in lines[0]
        assert lines[1].startswith("WARNING: BRIDGE_TOKENS is empty: every Distelli API request will be refused")
        ready = requests.get(f"{server.url}/readyz", timeout=5)
        assert ready.status_code == 503
        assert ready.json()["reason"] == "BRIDGE_TOKENS is empty: every Distelli API request is refused"
        refused = requests.get(f"{server.url}/{USER}/apps/app/events?apiToken={TOKEN}", timeout=5)
        assert refused.status_code == 401
    finally:
        assert server.stop() == 0


def test_serve_listens_on_the_bind_address_it_is_given(tmp_path: Path) -> None:
    server = Server([CONSOLE_SCRIPT, "serve", "--no-worker"], tmp_path, BRIDGE_BIND_ADDRESS="0.0.0.0")
    try:
        summary = _startup_lines(server)[0]
        assert f"listening on http://localhost:{server.port} (every interface, 0.0.0.0:{server.port})" in summary
        assert f"Listening at: http://0.0.0.0:{server.port}" in server.output()
    finally:
        assert server.stop() == 0


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
    from importlib.metadata import version

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
