"""SIGTERM to ``pipeline-bridge serve`` during a webhook load: it exits in time and loses nothing it accepted."""

from __future__ import annotations

import time
from pathlib import Path

from tests.intake_server import IntakeServer
from tests.reliability.harness import (
    BridgeProcess,
    WebhookLoad,
    bridge_env,
    delivered_keys,
    duplicates,
    free_port,
    missing_deliveries,
    wait_until_drained,
)

BUILDS = 300
PLATFORM_GRACE_SECONDS = 30  # Heroku, Kubernetes and systemd kill the process this long after SIGTERM


def test_sigterm_during_load_exits_in_time_and_every_accepted_webhook_is_delivered(
    tmp_path: Path, sqlite_url: str, intake: IntakeServer
) -> None:
    env = bridge_env(sqlite_url, intake.url, free_port())
    log = tmp_path / "bridge.log"
    with BridgeProcess("serve", env, log) as bridge:
        bridge.start()
        load = WebhookLoad(bridge.base_url, BUILDS, retry_seconds=1).start()
        while load.answered() < BUILDS // 2 and load.running():
            time.sleep(0.05)
        assert load.running(), "the load finished before the crash it was meant to span"
        exit_code = bridge.stop(timeout=PLATFORM_GRACE_SECONDS)
        accepted = load.stop()
    assert exit_code == 0, bridge.log_tail()
    assert accepted.running, "the load was stopped before anything was accepted"

    with BridgeProcess("serve", env, log) as restarted:
        restarted.start()
        assert wait_until_drained(sqlite_url, timeout=60) == 0, restarted.log_tail()

    delivered = delivered_keys(intake)
    assert missing_deliveries(accepted, delivered) == []
    assert duplicates(delivered) == {}
