"""The operator console in a real headless Chromium, against a real ``pipeline-bridge serve`` on a real port.

The bridge delivers to the strict stand-in intake (tests/intake_server.py); Chromium is Debian's ``chromium``
(``make test`` installs it), driven by Playwright's Python package without any browser download of its own. Under
CI=true these tests run or fail, never skip. Screenshots of the overview and of a build's timeline go to
``$CONSOLE_SCREENSHOT_DIR`` (default: the test's temporary directory); docs/images/ holds one of each.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from bridge.config import load_config
from bridge.web.app import create_app
from tests.intake_server import IntakeServer
from tests.reliability.harness import APP, DD_API_KEY, TOKEN, USER, BridgeProcess, bridge_env, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_TOKEN = "console-admin-token-4f1b9c2e7d"
# Generous: the page refreshes every 5 s and the machine may be loaded; "eventually" must not flake.
EVENTUALLY_MS = 30_000


def _browser_problem() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (make test installs Debian's chromium package when run as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    problem = _browser_problem()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {problem}")
        pytest.skip(problem)
    from playwright.sync_api import expect as playwright_expect
    from playwright.sync_api import sync_playwright

    playwright_expect.set_options(timeout=EVENTUALLY_MS)

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def intake() -> Iterator[IntakeServer]:
    with IntakeServer(DD_API_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, intake: IntakeServer) -> Iterator[BridgeProcess]:
    """One complete bridge (gunicorn web workers plus the delivery worker) with the console enabled."""
    directory = tmp_path_factory.mktemp("console")
    env = bridge_env(f"sqlite:///{directory / 'bridge.db'}", intake.url, free_port(), BRIDGE_ADMIN_TOKEN=ADMIN_TOKEN)
    with BridgeProcess("serve", env, directory / "serve.log") as bridge:
        yield bridge.start(ready_timeout=60)


def expect(actual: Any) -> Any:
    """Playwright's retrying assertions (imported late: the module must load where Playwright is missing)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(actual)


@pytest.fixture
def page(browser: Any, served: BridgeProcess) -> Iterator[Any]:
    """A fresh browser context (no cookies) whose Content-Security-Policy reports fail the test."""
    context = browser.new_context(base_url=served.base_url, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    page.set_default_timeout(EVENTUALLY_MS)
    yield page
    context.close()
    assert violations == []


def _screenshot_dir(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("CONSOLE_SCREENSHOT_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _log_in(page: Any, token: str = ADMIN_TOKEN) -> None:
    page.goto("/console/")
    page.fill("#token", token)
    page.click("button[type=submit]")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _create_build(served: BridgeProcess, **fields: Any) -> str:
    body = {
        "build_status": "Running",
        "build_start": _now(),
        "build_provider": "jenkins",
        "build_url": "https://jenkins.example.com/job/example-node/7/",
        "repo_url": "https://github.com/jdoe/example-node",
        "commit_id": "1234567890abcdef1234567890abcdef12345678",
        "commit_msg": "Ship the console",
        "author_username": "jdoe",
        "branch": "main",
        **fields,
    }
    body = {name: value for name, value in body.items() if value is not None}
    answer = requests.put(
        f"{served.base_url}/{USER}/apps/{APP}/events/buildEvent", params={"apiToken": TOKEN}, json=body, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["event_id"])


def _update_build(served: BridgeProcess, event_id: str, fields: dict[str, Any]) -> None:
    answer = requests.post(
        f"{served.base_url}/{USER}/apps/{APP}/events/{event_id}", params={"apiToken": TOKEN}, json=fields, timeout=10
    )
    assert answer.status_code == 200, answer.text


def _eventually(check: Callable[[], bool], what: str, timeout: float = EVENTUALLY_MS / 1000) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.2)


def _run_id(resource: dict[str, Any]) -> str:
    """The pipeline a resource belongs to: its own unique_id, or a job's pipeline_unique_id."""
    return str(resource.get("unique_id") or resource.get("pipeline_unique_id"))


def _sent(intake: IntakeServer, unique_ids: set[str]) -> list[dict[str, Any]]:
    return [resource for resource in intake.accepted_resources() if _run_id(resource) in unique_ids]


def _outbox_unique_ids(served: BridgeProcess, event_id: str) -> set[str]:
    path = served.env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT unique_id FROM outbox WHERE event_id = ?", (int(event_id),))}


def test_a_wrong_token_is_refused_and_the_admin_token_opens_the_overview(page: Any, tmp_path: Path) -> None:
    page.goto("/console/")
    assert page.url.endswith("/console/login?next=/console/")

    page.fill("#token", "not-the-admin-token-at-all")
    page.click("button[type=submit]")
    assert page.locator("p.error").inner_text() == "That is not the admin token."
    assert page.locator("h1").inner_text() == "pipeline-bridge console"

    page.fill("#token", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/")
    assert page.locator("main h1").inner_text() == "Overview"
    assert page.locator("#pause").inner_text() == "Delivery is running (not paused)."
    cookie = next(c for c in page.context.cookies() if c["name"] == "bridge_console")
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/console")
    assert page.locator("#chart polyline").count() == 2

    page.click("text=Log out")
    page.wait_for_url("**/console/login")
    page.goto("/console/apps")
    assert "/console/login" in page.url


def test_a_build_timeline_goes_from_running_to_success_while_the_page_is_open(
    page: Any, served: BridgeProcess, intake: IntakeServer, tmp_path: Path
) -> None:
    _log_in(page)
    event_id = _create_build(served, build_status="Queued", build_start=None)
    _update_build(served, event_id, {"build_status": "Running", "build_start": _now()})
    page.goto(f"/console/builds/{event_id}")
    assert page.locator("#build-status").inner_text() == "running"
    unique_ids = _outbox_unique_ids(served, event_id)
    _eventually(lambda: len(_sent(intake, unique_ids)) == 2, "the running pipeline and job delivered")

    _update_build(served, event_id, {"build_status": "Success", "build_end": _now()})
    # No reload: the page's own refresh (refresh.js, every few seconds) must bring the new state.
    expect(page.locator("#build-status")).to_have_text("success")
    expect(page.locator("#deliveries tbody tr")).to_have_count(4)
    expect(page.locator("#deliveries tbody .state", has_text=re.compile("^delivered$"))).to_have_count(4)
    assert "Ship the console" in page.locator("main").inner_text()
    assert page.locator("#lifecycle li.done").count() == 3
    assert [r["status"] for r in _sent(intake, unique_ids)] == ["running", "running", "success", "success"]
    page.screenshot(path=str(_screenshot_dir(tmp_path) / "console-timeline.png"), full_page=True)


def test_an_event_the_intake_refuses_is_a_dead_letter_and_redrive_delivers_it_once_fixed(
    page: Any, served: BridgeProcess, intake: IntakeServer
) -> None:
    _log_in(page)
    intake.hold()  # so the bridge cannot deliver the build before the intake is told to refuse it
    try:
        event_id = _create_build(served, commit_msg="poison")
        unique_ids = _outbox_unique_ids(served, event_id)
        intake.reject.update(unique_ids)
    finally:
        intake.release()

    page.goto("/console/dead-letters")
    rows = page.locator("#dead-letters tbody tr", has_text="the intake refused it: 400")
    rows.nth(1).wait_for()  # the pipeline and its job, each bisected out alone
    assert "poison event refused" in rows.first.inner_text()
    page.goto(f"/console/events/{event_id}")
    attempts = page.locator(".attempts tbody tr", has=page.locator("td:nth-child(3)", has_text=re.compile("^400$")))
    assert attempts.count() >= 2
    assert "/api/v2/ci/pipeline" in attempts.first.inner_text()
    assert "poison event refused" in attempts.first.inner_text()

    intake.reject.clear()
    page.goto("/console/dead-letters")
    first_id, second_id = (row.locator("td").nth(1).inner_text() for row in rows.all()[:2])
    page.locator(f"#dead-letters input[type=checkbox][value='{first_id}']").check()
    page.click("form#selection button")
    assert page.locator("p.ok[role=status]").inner_text() == "1 dead letter queued again."
    page.locator("#dead-letters tbody tr", has=page.locator(f"input[value='{second_id}']")).locator(
        "button", has_text="Redrive"
    ).click()
    assert page.locator("p.ok[role=status]").inner_text() == "1 dead letter queued again."

    _eventually(lambda: len(_sent(intake, unique_ids)) == 2, "both redriven events accepted by the intake")
    assert sorted(r["level"] for r in _sent(intake, unique_ids)) == ["job", "pipeline"]
    page.goto(f"/console/events/{event_id}")
    expect(page.locator(".outbox-row h2 .state", has_text=re.compile("^delivered$"))).to_have_count(2)
    accepted = page.locator(".attempts tbody td:nth-child(3)", has_text=re.compile("^202$"))
    assert accepted.count() == 2


def test_a_script_in_a_payload_is_shown_as_text_and_never_runs(page: Any, served: BridgeProcess) -> None:
    message = "<script>window.__pwned = 1</script><b id=injected>bold</b>"
    _log_in(page)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
    event_id = _create_build(
        served, commit_msg=message, build_status="Success", build_start=start.isoformat(), build_end=_now()
    )
    for path in (f"/console/builds/{event_id}", f"/console/events/{event_id}"):
        page.goto(path)
        assert message in page.locator("main").inner_text()
        assert page.evaluate("window.__pwned") is None
        assert page.locator("#injected").count() == 0
    page.goto(f"/console/search?q={event_id}")
    assert page.locator("main table tbody tr").count() == 1


def test_no_secret_is_shown_on_any_page(page: Any, served: BridgeProcess, tmp_path: Path) -> None:
    _log_in(page)
    event_id = _create_build(served, build_url=f"https://jenkins.example.com/job/7/?apiToken={TOKEN}")
    for path in ("/console/", "/console/apps", f"/console/builds/{event_id}", f"/console/events/{event_id}"):
        page.goto(path)
        html = page.content()
        assert TOKEN not in html and ADMIN_TOKEN not in html and DD_API_KEY not in html
        if path == "/console/":
            # By now the earlier tests have sent builds: the overview has something to show.
            expect(page.locator("#accepted-hour")).not_to_have_text("0")
            page.screenshot(path=str(_screenshot_dir(tmp_path) / "console-overview.png"), full_page=True)
    assert "[REDACTED]" in page.locator("main").inner_text()


def test_bearer_reads_every_page_but_changes_nothing(served: BridgeProcess) -> None:
    pages = ("/console/", "/console/apps", "/console/dead-letters", "/console/search?q=example-node")
    for path in pages:
        answer = requests.get(served.base_url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
        assert answer.status_code == 200, path
        assert "Set-Cookie" not in answer.headers
        assert "read-only (Bearer)" in answer.text
    wrong = requests.get(served.base_url + "/console/", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    refused = requests.post(
        served.base_url + "/console/dead-letters/redrive",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        data={"id": "1"},
        timeout=10,
        allow_redirects=False,
    )
    assert refused.status_code == 403
    assert "read-only" in refused.text


def test_without_an_admin_token_the_console_is_404(browser: Any, tmp_path: Path) -> None:
    config = load_config({"DATABASE_URL": f"sqlite:///{tmp_path / 'off.db'}", "BRIDGE_TOKENS": f"{USER}:{TOKEN}"})
    server = make_server("127.0.0.1", 0, create_app(config), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        context = browser.new_context()
        page = context.new_page()
        for path in ("/console/", "/console/login", "/console/static/console.css"):
            response = page.goto(f"http://127.0.0.1:{server.server_port}{path}")
            assert response is not None and response.status == 404, path
        assert re.search(r'"code":\s*"not_found"', page.content())
        context.close()
    finally:
        server.shutdown()
