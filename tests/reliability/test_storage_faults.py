"""Broken storage under ``pipeline-bridge serve`` on SQLite: a 503 with the reason, /readyz agreeing, and recovery.

The SQLite file deleted while the bridge runs, a disk that fills up and is freed again, a lock file that cannot be
opened. The full disk is an 8 MiB tmpfs mounted for the test (root is needed; CI runs as root, so under CI=true a
failed mount fails the test instead of skipping it).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.intake_server import IntakeServer
from tests.reliability.harness import (
    BridgeProcess,
    bridge_env,
    create_url,
    free_port,
    running_body,
    wait_until_drained,
)


def create(bridge: BridgeProcess, number: int) -> requests.Response:
    return requests.put(create_url(bridge.base_url), json=running_body(number), timeout=30)


def readyz(bridge: BridgeProcess) -> requests.Response:
    return requests.get(bridge.base_url + "/readyz", timeout=10)


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.2)


@contextlib.contextmanager
def small_disk(path: Path, size: str = "8m") -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode:
        reason = f"cannot mount a tmpfs ({mounted.stderr.decode().strip()}); the disk-full test needs root"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_deleting_the_sqlite_file_under_serve_refuses_writes_until_restarted(
    tmp_path: Path, sqlite_url: str, intake: IntakeServer
) -> None:
    database = Path(sqlite_url.split("///", 1)[1])
    env = bridge_env(sqlite_url, intake.url, free_port())
    with BridgeProcess("serve", env, tmp_path / "bridge.log") as bridge:
        bridge.start()
        assert create(bridge, 1).status_code == 200
        database.unlink()

        answers = [create(bridge, number) for number in range(2, 42)]

        assert {answer.status_code for answer in answers} == {503}, [answer.text for answer in answers]
        assert all("deleted or replaced" in answer.json()["error"]["message"] for answer in answers)
        ready = readyz(bridge)
        assert ready.status_code == 503
        assert "deleted or replaced" in ready.json()["reason"]
    # Nothing was answered 200 into the unlinked file: the restarted bridge starts from an empty database.
    with BridgeProcess("serve", env, tmp_path / "bridge.log") as restarted:
        restarted.start()
        assert readyz(restarted).status_code == 200
        assert create(restarted, 100).status_code == 200


def test_a_full_disk_fails_readyz_and_the_bridge_recovers_without_a_restart_once_space_is_freed(
    tmp_path: Path, intake: IntakeServer
) -> None:
    disk = small_disk(tmp_path / "disk")
    with disk as mount:
        database_url = f"sqlite:///{mount / 'bridge.db'}"
        env = bridge_env(database_url, intake.url, free_port())
        with BridgeProcess("serve", env, tmp_path / "bridge.log") as bridge:
            bridge.start()
            assert create(bridge, 0).status_code == 200
            free = os.statvfs(mount)
            filler = mount / "filler"
            filler.write_bytes(b"\0" * max(0, free.f_bavail * free.f_frsize - 1280 * 1024))
            accepted, refused = [0], None
            for number in range(1, 3000):
                answer = create(bridge, number)
                if answer.status_code == 503:
                    refused = answer
                    break
                assert answer.status_code == 200, answer.text
                accepted.append(number)
            assert refused is not None, "the disk never filled"
            assert "disk" in refused.json()["error"]["message"], refused.text
            wait_for(lambda: readyz(bridge).status_code == 503, 10, "/readyz reports the full disk")
            assert "disk" in readyz(bridge).json()["reason"]

            filler.unlink()

            wait_for(lambda: readyz(bridge).status_code == 200, 15, "/readyz ready again once space is freed")
            burst = [create(bridge, number) for number in range(5000, 5200)]
            assert {answer.status_code for answer in burst} == {200}, {answer.text for answer in burst}
            assert wait_until_drained(database_url, timeout=60) == 0, bridge.log_tail()


def test_a_lock_file_that_cannot_be_opened_is_a_503_with_the_reason_on_readyz_list_and_create(
    tmp_path: Path, sqlite_url: str
) -> None:
    lock = Path(sqlite_url.split("///", 1)[1] + ".lock")
    env = bridge_env(sqlite_url, None, free_port(), BRIDGE_SINK_PATH=str(tmp_path / "sink.jsonl"))
    with BridgeProcess("serve", env, tmp_path / "bridge.log") as bridge:
        bridge.start()
        assert create(bridge, 1).status_code == 200
    immutable = subprocess.run(["chattr", "+i", str(lock)], capture_output=True)
    if immutable.returncode:
        reason = f"cannot make the lock file immutable ({immutable.stderr.decode().strip()})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    try:
        with BridgeProcess("serve", env, tmp_path / "bridge.log") as bridge:
            bridge.start()
            answers = {
                "readyz": readyz(bridge),
                "list": requests.get(create_url(bridge.base_url).replace("/buildEvent", ""), timeout=10),
                "create": create(bridge, 2),
            }
            for name, answer in answers.items():
                assert answer.status_code == 503, (name, answer.text)
                assert "lock file" in answer.text and "cannot be opened" in answer.text, (name, answer.text)
    finally:
        subprocess.run(["chattr", "-i", str(lock)], check=False)


def test_a_read_only_database_is_a_503_with_the_reason_on_readyz_and_create_and_still_lists(
    tmp_path: Path, make_config: Any, sqlite_url: str
) -> None:
    from bridge.storage import migrate
    from bridge.storage.store import Store
    from bridge.web.app import create_app
    from tests.conftest import TOKEN, USER
    from tests.reliability.harness import APP

    config = make_config()
    migrated = Store(sqlite_url)
    migrate.upgrade(migrated)
    migrated.dispose()
    database = Path(sqlite_url.split("///", 1)[1])
    immutable = subprocess.run(["chattr", "+i", str(database)], capture_output=True)
    if immutable.returncode:
        reason = f"cannot make the database file immutable ({immutable.stderr.decode().strip()})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    store = Store(config.database_url)
    try:
        client = create_app(config, store).test_client()
        base = f"/{USER}/apps/{APP}/events"
        answers = {
            "readyz": client.get("/readyz"),
            "create": client.put(f"{base}/buildEvent?apiToken={TOKEN}", json=running_body(1)),
        }
        for name, answer in answers.items():
            assert answer.status_code == 503, (name, answer.get_data(as_text=True))
            assert "read-only" in answer.get_data(as_text=True), (name, answer.get_data(as_text=True))
        # Reading needs no write: what is stored stays listable.
        listed = client.get(f"{base}?apiToken={TOKEN}")
        assert listed.status_code == 200 and listed.get_json()["events"] == [], listed.get_data(as_text=True)
    finally:
        store.dispose()
        subprocess.run(["chattr", "-i", str(database)], check=False)
