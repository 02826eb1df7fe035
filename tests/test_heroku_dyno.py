"""The dyno contract, on this machine: each Procfile process type run as Heroku runs it, with app.json's
variables, PORT and a Heroku-style ``postgres://`` DATABASE_URL (a fresh PostgreSQL schema).

The release command runs first and must exit 0; then a web and a worker process start from ``bash -c`` in
sessions of their own, as dynos do. The web process must answer on PORT on every interface and be ready, a build
it accepts must reach the (stand-in) intake through the worker, and on SIGTERM to each process group both must
exit 0 within Heroku's 30 seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import TOKEN, USER
from tests.intake_server import IntakeServer
from tests.reliability.harness import free_port
from tests.test_deploy_files import procfile
from tests.test_ops_gunicorn import BIN

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HEROKU_STOP_SECONDS = 30


def _until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not so after {timeout} s")
        time.sleep(0.2)


def dyno_environment(tmp_path: Path, postgres_url: str, intake: IntakeServer) -> dict[str, str]:
    """What Heroku puts in a dyno's environment: app.json's values, what its required variables were given, the
    add-on's DATABASE_URL and the router's PORT."""
    app = json.loads((ROOT / "app.json").read_text(encoding="utf-8"))
    given = {
        "BRIDGE_TOKENS": f"{USER}:{TOKEN}",
        "DD_API_KEY": intake.api_key,
        "BRIDGE_PUBLIC_URL": "https://my-bridge.herokuapp.com",
    }
    values = {name: setting["value"] for name, setting in app["env"].items() if "value" in setting}
    required = {name for name, setting in app["env"].items() if setting.get("required")}
    assert required <= {*values, *given}, "app.json asks for a value this test does not know how to give"
    return {
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        **values,
        **given,
        "DD_INTAKE_URL": intake.url,  # the stand-in instead of api.<DD_SITE>
        "DATABASE_URL": postgres_url.replace("postgresql+psycopg://", "postgres://", 1),
        "PORT": str(free_port()),
    }


class Dyno:
    """One process type's command run by bash in a session of its own; output kept in a file."""

    def __init__(self, name: str, command: str, env: dict[str, str], workdir: Path) -> None:
        self.log = workdir / f"{name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                ["bash", "-c", command], env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> tuple[int, float]:
        """SIGTERM to every process of the dyno, as Heroku sends it; (exit code, seconds it took)."""
        began = time.monotonic()
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            code = self.process.wait(timeout=HEROKU_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError(
                f"not stopped {HEROKU_STOP_SECONDS} s after SIGTERM: {self.output()[-2000:]}"
            ) from None
        return code, time.monotonic() - began


@pytest.fixture
def dynos() -> Iterator[list[Dyno]]:
    started: list[Dyno] = []
    yield started
    for dyno in started:
        if dyno.process.poll() is None:
            os.killpg(dyno.process.pid, signal.SIGKILL)
            dyno.process.wait()


def test_release_then_web_and_worker_keep_the_dyno_contract(
    tmp_path: Path, postgres_url: str, intake: IntakeServer, dynos: list[Dyno]
) -> None:
    commands = procfile()
    env = dyno_environment(tmp_path, postgres_url, intake)

    release = subprocess.run(["bash", "-c", commands["release"]], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert release.returncode == 0, release.stdout + release.stderr

    web = Dyno("web", commands["web"], env, tmp_path)
    worker = Dyno("worker", commands["worker"], env, tmp_path)
    dynos.extend([web, worker])
    url = f"http://127.0.0.1:{env['PORT']}"

    def ready() -> bool:
        assert web.process.poll() is None, web.output()[-2000:]
        try:
            return requests.get(f"{url}/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    _until("the web dyno is ready", ready, timeout=60)
    assert f"(every interface, 0.0.0.0:{env['PORT']})" in web.output()
    assert "events to Datadog at" in web.output()

    start = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    body = {"build_status": "Running", "build_start": start, "build_id": "heroku-1"}
    created = requests.put(f"{url}/{USER}/apps/on-heroku/events/buildEvent?apiToken={TOKEN}", json=body, timeout=10)
    assert created.status_code == 200, created.text

    def delivered() -> bool:
        assert worker.process.poll() is None, worker.output()[-2000:]
        return any(resource["pipeline_id"] == "heroku-1" for resource in intake.accepted_resources())

    _until("the worker dyno delivered the build", delivered, timeout=30)

    for dyno in (web, worker):
        code, seconds = dyno.stop()
        assert code == 0, dyno.output()[-2000:]
        assert seconds < HEROKU_STOP_SECONDS
    assert TOKEN not in web.output() + worker.output()
