"""The intake answers 503 for a while, then recovers: everything arrives, once, after retries spaced by the policy."""

from __future__ import annotations

import itertools
from pathlib import Path

from bridge.delivery.sender import RetryPolicy
from tests.intake_server import PIPELINE_PATH, IntakeServer
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

OUTAGE_ANSWERS = 3  # the intake refuses this many requests with 503 before it recovers
BUILDS = 30


def test_everything_accepted_during_an_intake_outage_arrives_once_after_spaced_retries(
    tmp_path: Path, sqlite_url: str, intake: IntakeServer
) -> None:
    for _ in range(OUTAGE_ANSWERS):
        intake.then(503, body='{"errors":["Service Unavailable"]}')
    env = bridge_env(sqlite_url, intake.url, free_port())
    with BridgeProcess("serve", env, tmp_path / "bridge.log") as bridge:
        bridge.start()
        accepted = WebhookLoad(bridge.base_url, BUILDS, threads=3).start().join()
        assert len(accepted.final) == BUILDS
        policy = RetryPolicy()
        outage = sum(policy.first * 2**attempt for attempt in range(OUTAGE_ANSWERS))
        assert wait_until_drained(sqlite_url, timeout=outage * (1 + policy.jitter) + 30) == 0, bridge.log_tail()

    delivered = delivered_keys(intake)
    assert missing_deliveries(accepted, delivered) == []
    assert duplicates(delivered) == {}
    attempts = [request for request in intake.requests if request.path == PIPELINE_PATH]
    assert [request.status for request in attempts[:OUTAGE_ANSWERS]] == [503] * OUTAGE_ANSWERS
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts[: OUTAGE_ANSWERS + 1])]
    shortest = [min(policy.ceiling, policy.first * 2**n) * (1 - policy.jitter) for n in range(OUTAGE_ANSWERS)]
    assert all(gap >= least for gap, least in zip(gaps, shortest, strict=True)), (gaps, shortest)
