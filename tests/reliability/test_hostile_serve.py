"""``pipeline-bridge serve`` against an operator's mistakes and an attacker's spellings.

PostgreSQL with migrations pending must say so (503, and the worker's log), not answer 500 and log a bare
ProgrammingError. Every spelling of a secret that authenticates (the bridge decodes the query string before it
compares) must be redacted in every line the processes write.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from bridge.storage.migrate import MIGRATIONS_PENDING
from tests.intake_server import IntakeServer
from tests.reliability.harness import (
    APP,
    CONSOLE_SCRIPT,
    DD_API_KEY,
    TOKEN,
    USER,
    BridgeProcess,
    bridge_env,
    create_url,
    free_port,
    running_body,
)
from tests.test_adapter_samples import body

HOOK_SECRET = "jenkins-hook-secret-that-must-not-leak"


def percent_all(text: str) -> str:
    return "".join(f"%{ord(char):02X}" for char in text)


# Each spelling of ?apiToken=TOKEN that the bridge reads as that token: (query string, the value as written).
TOKEN_SPELLINGS = {
    "plain": f"apiToken={TOKEN}",
    "encoded_name_and_value": f"api%54oken=%61{TOKEN[1:]}",
    "all_encoded": f"{percent_all('apiToken')}={percent_all(TOKEN)}",
    "lowercase_hex": f"apiToken={percent_all(TOKEN).lower()}",
    "after_other_params": f"max_results=1&order=desc&api%54oken={quote(TOKEN, safe='')}%",
}


def test_postgresql_with_migrations_pending_answers_503_and_the_worker_logs_why(
    tmp_path: Path, postgres_url: str
) -> None:
    env = bridge_env(postgres_url, None, free_port(), LOG_LEVEL="INFO", BRIDGE_SINK_PATH=str(tmp_path / "sink"))
    log = tmp_path / "bridge.log"
    with BridgeProcess("serve", env, log) as bridge:
        bridge.start()

        created = requests.put(create_url(bridge.base_url), json=running_body(1), timeout=10)
        ready = requests.get(bridge.base_url + "/readyz", timeout=10)
        listed = requests.get(create_url(bridge.base_url).replace("/buildEvent", ""), timeout=10)

        for answer in (created, listed):
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["message"] == MIGRATIONS_PENDING
        assert ready.status_code == 503 and ready.json()["reason"].startswith(MIGRATIONS_PENDING)
        deadline = time.monotonic() + 15
        while not worker_said(log, MIGRATIONS_PENDING):
            assert time.monotonic() < deadline, bridge.log_tail()
            time.sleep(0.5)
        subprocess.run([CONSOLE_SCRIPT, "db", "upgrade"], env=env, check=True, capture_output=True)
        assert requests.put(create_url(bridge.base_url), json=running_body(2), timeout=10).status_code == 200
    # No bare ProgrammingError: every line that names one says what to do about it.
    assert all(MIGRATIONS_PENDING in line for line in log.read_text().splitlines() if "ProgrammingError" in line)


def worker_said(log: Path, text: str) -> bool:
    return any("worker.database_error" in line and text in line for line in log.read_text().splitlines())


@pytest.fixture
def logged_bridge(tmp_path: Path, sqlite_url: str, intake: IntakeServer) -> BridgeProcess:
    secrets = f"jenkins:{HOOK_SECRET}"
    env = bridge_env(sqlite_url, intake.url, free_port(), LOG_LEVEL="DEBUG", BRIDGE_HOOK_SECRETS=secrets)
    return BridgeProcess("serve", env, tmp_path / "bridge.log")


def test_every_spelling_of_a_secret_that_authenticates_is_redacted_in_every_log_line(
    logged_bridge: BridgeProcess,
) -> None:
    written: list[str] = []
    with logged_bridge as bridge:
        bridge.start()
        base = f"{bridge.base_url}/{USER}/apps/{APP}/events"
        for name, query in TOKEN_SPELLINGS.items():
            query = query.rstrip("%")
            listed = requests.get(f"{base}?{query}", timeout=10)
            assert listed.status_code == 200, (name, listed.text)
            written.append(query.split("=")[-1])
        # A 404 and a 405 that carry the token: every error line goes through the same redaction.
        requests.get(f"{bridge.base_url}/{percent_all(TOKEN)}?{TOKEN_SPELLINGS['all_encoded']}", timeout=10)
        requests.delete(f"{base}?{TOKEN_SPELLINGS['encoded_name_and_value']}", timeout=10)
        # Jenkins' hook secret in its query parameter, plain and encoded, and DD_API_KEY in a query.
        jenkins = body("jenkins", "started")
        for query in (f"token={HOOK_SECRET}", f"%74oken={percent_all(HOOK_SECRET)}"):
            answer = requests.post(f"{bridge.base_url}/hooks/jenkins?{query}", data=jenkins, timeout=10)
            assert answer.status_code in (200, 202), (query, answer.text)
            written.append(query.split("=")[-1])
        requests.get(f"{bridge.base_url}/readyz?dd_api_key={DD_API_KEY}&x={percent_all(DD_API_KEY)}", timeout=10)
        written.append(percent_all(DD_API_KEY))
        time.sleep(1)
    text = logged_bridge.log_path.read_text()
    assert "http.access" in text and "REDACTED" in text
    for secret in (TOKEN, HOOK_SECRET, DD_API_KEY, *written):
        assert secret not in text, secret
    assert percent_all(TOKEN).lower() not in text.lower()
