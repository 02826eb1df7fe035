"""Configuration: every bad value stops the real console script at start with one clear line and exit code 2,
never echoing a secret; ``config check`` shows the effective settings with secrets masked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bridge.config import VARIABLES, ConfigError, load_config

CONSOLE_SCRIPT = str(Path(sys.executable).with_name("pipeline-bridge"))
SECRET = "s3cr3t-Value-9f8e7d"

# (variable, bad value, words the message must contain); every value that could be a secret embeds SECRET.
BAD_VALUES = [
    ("DD_SITE", "datadoghq.example", "unknown Datadog site"),
    ("BRIDGE_TOKENS", f"jdoe:{SECRET},asmith{SECRET}", "entry 2 is not of the form name:value"),
    ("BRIDGE_TOKENS", f"{SECRET}", "entry 1 is not of the form name:value"),
    ("BRIDGE_TOKENS_FILE", f"/nonexistent/{SECRET}", "cannot read the file"),
    ("DATABASE_URL", f"mysql://bridge:{SECRET}@db.example.com/bridge", "must start with sqlite://"),
    ("DATABASE_URL", f"postgresql+asyncpg://bridge:{SECRET}@db/bridge", "driver psycopg"),
    ("DATABASE_URL", f"bridge:{SECRET}@db/bridge", "must start with sqlite://"),
    ("DD_API_KEY", f'"{SECRET}"', "letters, digits, - and _ only"),
    ("DD_INTAKE_URL", f"ftp://user:{SECRET}@intake.example.com", "must be an http:// or https:// URL"),
    ("BRIDGE_HOOK_SECRETS", f"github{SECRET}", "not of the form name:value"),
    ("PORT", "http", "whole number from 1 to 65535"),
    ("WEB_CONCURRENCY", "0", "whole number from 1 to 64"),
    ("BRIDGE_PROXY_HOPS", "-1", "whole number from 0 to 10"),
    ("LOG_LEVEL", "LOUD", "must be one of DEBUG"),
    ("PROMETHEUS_MULTIPROC_DIR", "/nonexistent/metrics", "existing directory"),
]


def _run(command: list[str], env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONSOLE_SCRIPT, *command],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", [["config", "check"], ["serve"]], ids=["config-check", "serve"])
@pytest.mark.parametrize(("variable", "value", "why"), BAD_VALUES)
def test_bad_value_stops_the_console_script_with_one_line_naming_it(
    tmp_path: Path, command: list[str], variable: str, value: str, why: str
) -> None:
    done = _run(command, {variable: value}, tmp_path)

    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"pipeline-bridge: bad configuration: {variable}: ")
    assert why in lines[0]
    assert SECRET not in done.stderr


def test_every_bad_variable_is_named_in_the_same_line(tmp_path: Path) -> None:
    done = _run(["serve"], {"DD_SITE": "nowhere", "PORT": "0", "LOG_LEVEL": "x"}, tmp_path)

    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    for variable in ("DD_SITE", "PORT", "LOG_LEVEL"):
        assert f"{variable}: " in done.stderr


def test_config_check_prints_the_effective_settings_by_variable_name_with_secrets_masked(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"# CI users\nbuilder:{SECRET}-file\n", encoding="utf-8")
    env = {
        "DATABASE_URL": f"postgres://bridge:{SECRET}-db@db.example.com:5432/bridge",
        "BRIDGE_TOKENS": f"jdoe:{SECRET}-jdoe",
        "BRIDGE_TOKENS_FILE": str(tokens_file),
        "DD_API_KEY": f"{SECRET}-dd",
        "DD_SITE": "datadoghq.eu",
        "BRIDGE_HOOK_SECRETS": f"github:{SECRET}-hook",
        "PORT": "5000",
    }
    done = _run(["config", "check"], env, tmp_path)

    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    shown = json.loads(done.stdout)
    assert shown["DATABASE_URL"] == "postgresql+psycopg://bridge:****@db.example.com:5432/bridge"
    assert shown["BRIDGE_TOKENS"] == {"jdoe": "****", "builder": "****"}
    assert shown["DD_API_KEY"] == "****"
    assert shown["BRIDGE_HOOK_SECRETS"] == {"github": "****"}
    assert (shown["DD_SITE"], shown["PORT"]) == ("datadoghq.eu", 5000)


def test_defaults_need_no_variable_at_all() -> None:
    config = load_config({})

    assert config.database_url.startswith("sqlite:///")
    assert (config.port, config.dd_site, config.log_level, config.proxy_hops) == (8000, "datadoghq.com", "INFO", 0)
    assert config.intake_base_url == "https://api.datadoghq.com"


def test_links_back_to_events_follow_the_port_unless_a_public_url_is_set() -> None:
    assert load_config({}).public_url == "http://localhost:8000"
    assert load_config({"PORT": "8766"}).public_url == "http://localhost:8766"
    assert load_config({"PORT": "8766", "BRIDGE_PUBLIC_URL": "https://ci.example.com"}).public_url == (
        "https://ci.example.com"
    )


class _Recording(dict[str, str]):
    """An environment that remembers which names were asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


def test_the_documented_variables_are_exactly_the_ones_read() -> None:
    environ = _Recording()
    load_config(environ)

    assert environ.asked == set(VARIABLES)


def test_the_error_names_every_bad_variable_without_its_value() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({"DD_SITE": SECRET, "BRIDGE_TOKENS": SECRET, "DATABASE_URL": SECRET})

    assert set(raised.value.problems) == {"DD_SITE", "BRIDGE_TOKENS", "DATABASE_URL"}
    assert SECRET not in str(raised.value)


def test_heroku_postgres_urls_get_the_psycopg_driver() -> None:
    config = load_config({"DATABASE_URL": "postgres://u:p@host:5432/db"})

    assert config.database_url == "postgresql+psycopg://u:p@host:5432/db"


def test_the_readme_documents_every_variable() -> None:
    guide = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")

    assert [name for name in VARIABLES if f"| `{name}` |" not in guide] == []
