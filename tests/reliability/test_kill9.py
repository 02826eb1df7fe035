"""kill -9 of the whole bridge (gunicorn master, web workers, delivery worker) in the middle of a webhook load.

Nothing a client was told is accepted may be lost. Delivery is at least once: the batch in flight at the crash
(taken by the intake, not yet recorded) is sent again, and nothing else is.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.intake_server import IntakeServer
from tests.reliability.harness import (
    BridgeProcess,
    WebhookLoad,
    batches_sent_again,
    bridge_env,
    delivered_keys,
    duplicates,
    free_port,
    missing_deliveries,
    wait_until_drained,
)

BUILDS = 500  # 1,000 accepted webhooks: a Running PUT and a Success POST each
LEASE_SECONDS = 3  # rows the killed worker had claimed wait this long before the new worker may take them


def test_every_accepted_webhook_reaches_the_intake_once_after_kill_9(
    tmp_path: Path, sqlite_url: str, intake: IntakeServer
) -> None:
    env = bridge_env(sqlite_url, intake.url, free_port(), BRIDGE_SENDER_LEASE_SECONDS=str(LEASE_SECONDS))
    log = tmp_path / "bridge.log"
    with BridgeProcess("serve", env, log) as first:
        first.start()
        load = WebhookLoad(first.base_url, BUILDS).start()
        while load.answered() < BUILDS and load.running():
            time.sleep(0.05)
        assert load.running(), "the load finished before the crash it was meant to span"
        first.kill9()
    with BridgeProcess("serve", env, log) as second:
        second.start()
        accepted = load.join(timeout=180)
        assert len(accepted.running) + len(accepted.final) >= BUILDS, second.log_tail()
        assert wait_until_drained(sqlite_url, timeout=LEASE_SECONDS + 90) == 0, second.log_tail()

    delivered = delivered_keys(intake)
    assert missing_deliveries(accepted, delivered) == []
    assert batches_sent_again(intake) <= 1, duplicates(delivered)
