"""The image really builds from deploy/Dockerfile and runs: as its non-root user, answering /healthz, accepting a
PUT and writing what it would send to the sink in its volume, then stopping cleanly on ``docker stop``.

No image registry is reachable from the test machines, so the image is built on a local Debian base made by
``deploy/base-image.sh`` (debootstrap + ``docker import``), kept by name so that only the first run pays for it.
The legacy builder (no BuildKit) is used, since it is the one that needs the root ``.dockerignore``. Without a
Docker daemon the test is skipped with the reason (under CI=true that is a failure; ``.ci/run`` starts one).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import TOKEN, USER

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = "pipeline-bridge-base:bookworm"
IMAGE = "pipeline-bridge:test"
MAX_CONTEXT_BYTES = 2 * 1024 * 1024  # the sources only: no .venv, no local database


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def docker(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **env})


@pytest.fixture(scope="module")
def image() -> str:
    """The bridge image, built from the working tree on the local base image (made first when missing)."""
    if shutil.which("docker") is None:
        _unavailable("no docker command (apt-get install docker.io; .ci/run does)")
    info = docker("info", "--format", "{{.ServerVersion}}")
    if info.returncode:
        _unavailable(f"no Docker daemon answers: {info.stderr.strip()[-300:]}")
    if docker("image", "inspect", BASE_IMAGE).returncode:
        if shutil.which("debootstrap") is None:
            _unavailable(f"no {BASE_IMAGE} and no debootstrap to make it (apt-get install debootstrap)")
        made = subprocess.run(
            ["sh", str(ROOT / "deploy" / "base-image.sh"), BASE_IMAGE], capture_output=True, text=True, timeout=1200
        )
        assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    built = docker(
        "build", "-f", "deploy/Dockerfile", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", IMAGE, str(ROOT),
        timeout=900,
        DOCKER_BUILDKIT="0",
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    sent = re.search(r"Sending build context to Docker daemon\s+([\d.]+)([kMG]?B)", built.stdout)
    assert sent, built.stdout[:500]
    size = float(sent.group(1)) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[sent.group(2)]
    assert size < MAX_CONTEXT_BYTES, f"the build context is {sent.group(0)}: .dockerignore lets too much in"
    return IMAGE


@pytest.fixture
def container(image: str) -> Iterator[str]:
    name = f"pipeline-bridge-test-{uuid.uuid4().hex[:8]}"
    started = docker(
        "run", "-d", "--name", name, "-p", "127.0.0.1::8000", "-e", f"BRIDGE_TOKENS={USER}:{TOKEN}", image
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        yield name
    finally:
        docker("rm", "-f", name)


def _published_url(name: str) -> str:
    port = docker("port", name, "8000/tcp").stdout.split()[0]
    return f"http://{port}"


def _wait_for(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not callable(check) or not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not so after {timeout} s")
        time.sleep(0.5)


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _sink(name: str) -> list[dict[str, object]]:
    shown = docker("exec", name, "cat", "/data/pipeline-bridge-sink.jsonl")
    return [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]


def test_the_image_runs_as_its_user_answers_health_accepts_a_build_and_writes_the_sink(container: str) -> None:
    url = _published_url(container)
    _wait_for("/healthz answers 200", lambda: _healthy(url), timeout=90)

    status = docker("exec", container, "cat", "/proc/1/status").stdout
    assert re.search(r"^Uid:\s+10001\s", status, re.MULTILINE), status  # gunicorn's master, PID 1
    assert requests.get(f"{url}/readyz", timeout=5).json()["status"] == "ready"

    start = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    body = {"build_status": "Running", "build_start": start, "build_id": "docker-1"}
    created = requests.put(f"{url}/{USER}/apps/in-docker/events/buildEvent?apiToken={TOKEN}", json=body, timeout=10)
    assert (created.status_code, created.json()) == (200, {"event_id": "1"})

    def delivered() -> bool:
        for line in _sink(container):
            resource = line["body"]["data"]["attributes"]["resource"]  # type: ignore[index]
            if resource["pipeline_id"] == "docker-1" and resource["status"] == "running":
                return True
        return False

    _wait_for("the running pipeline is in the sink", delivered, timeout=30)
    logs = docker("logs", container)
    assert "listening on http://localhost:8000 (every interface, 0.0.0.0:8000)" in logs.stderr
    assert TOKEN not in logs.stdout + logs.stderr

    stopped = docker("stop", "-t", "30", container, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert docker("inspect", "-f", "{{.State.ExitCode}}", container).stdout.strip() == "0"
