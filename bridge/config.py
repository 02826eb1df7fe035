"""The bridge's configuration, read once from the environment into one frozen object.

Every other module receives a :class:`Config`; nothing else reads ``os.environ``. A bad value stops the
process at start with one message that names every bad variable, because a bridge that starts half-configured
loses events silently later.

Each setting is declared once, as a field of :class:`Config` made by :func:`setting`: its environment variable,
what it means (the README's configuration table), how its text is read and checked, and its default. The loader,
``config check`` and the table are all derived from those declarations, so adding a setting is one field.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DD_SITES = (
    "datadoghq.com",
    "us3.datadoghq.com",
    "us5.datadoghq.com",
    "datadoghq.eu",
    "ap1.datadoghq.com",
    "ap2.datadoghq.com",
    "ddog-gov.com",
    "us2.ddog-gov.com",
)
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")
DATABASE_DRIVERS = ("", "pysqlite", "psycopg")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ALL_INTERFACES = ("0.0.0.0", "::")  # noqa: S104 - the documented choice for containers and Heroku
_API_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
ADMIN_TOKEN_MIN_LENGTH = 16


# Readers: each turns a variable's (stripped, non-empty) text into the field's value, or raises ValueError with
# what is wrong. A message never quotes the value, since it may be a secret.


def whole_number(low: int, high: int) -> Callable[[str], int]:
    def read(raw: str) -> int:
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return int(raw)

    return read


def one_of(choices: tuple[str, ...], why: str, fold: Callable[[str], str] = str) -> Callable[[str], str]:
    def read(raw: str) -> str:
        if fold(raw) not in choices:
            raise ValueError(why)
        return fold(raw)

    return read


def plain(raw: str) -> str:
    return raw


def duration(high: float) -> Callable[[str], float]:
    """A positive number up to ``high``, fractions allowed, so a test or a trial can watch upkeep act in seconds."""

    def read(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0 < value <= high:  # also refuses nan and inf
            raise ValueError(f"must be a number above 0 and at most {high:g} (fractions allowed)")
        return value

    return read


def admin_token(raw: str) -> str:
    if len(raw) < ADMIN_TOKEN_MIN_LENGTH:
        raise ValueError(f"must be at least {ADMIN_TOKEN_MIN_LENGTH} characters")
    return raw


def database_url(raw: str) -> str:
    scheme, _, driver = raw.split(":", 1)[0].partition("+")
    if scheme not in DATABASE_SCHEMES or "://" not in raw or driver not in DATABASE_DRIVERS:
        raise ValueError("must start with sqlite://, postgresql:// or postgres:// (driver psycopg)")
    return normalise_database_url(raw)


def http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return raw.rstrip("/")


def ip_address(raw: str) -> str:
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise ValueError("must be an IP address: 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None


def api_key(raw: str) -> str:
    if not _API_KEY.match(raw):
        raise ValueError("must be letters, digits, - and _ only (check for pasted quotes or spaces)")
    return raw


def email_template(raw: str) -> str:
    if "{username}" not in raw or "@" not in raw:
        raise ValueError("must contain {username} and an @")
    return raw


def existing_directory(raw: str) -> str:
    if not Path(raw).is_dir():
        raise ValueError("must name an existing directory")
    return raw


def colon_pairs(raw: str) -> dict[str, str]:
    return parse_pairs(raw)


def colon_pairs_file(raw: str) -> dict[str, str]:
    return parse_pairs(_read_file(raw))


def equals_pairs(raw: str) -> dict[str, str]:
    return parse_pairs(raw.replace("=", ":"))


def equals_pairs_or_file(raw: str) -> dict[str, str]:
    return equals_pairs(raw if "=" in raw or ":" in raw else _read_file(raw))


@dataclasses.dataclass(frozen=True)
class Variable:
    """One environment variable: its name, its line in the README's table, and how its text is read."""

    name: str
    meaning: str
    read: Callable[[str], Any]
    secret: bool = False


def setting(
    name: str,
    meaning: str,
    read: Callable[[str], Any],
    default: Any = None,
    *,
    secret: bool = False,
    also: Variable | None = None,
) -> Any:
    """Declare a :class:`Config` field read from the variable ``name``.

    A mapping default is given as its type (``dict``) and made fresh for each Config. ``also`` names a second
    variable whose pairs are added to the first one's (BRIDGE_TOKENS_FILE beside BRIDGE_TOKENS).
    """
    variables = (Variable(name, meaning, read, secret), *((also,) if also else ()))
    metadata = {"variables": variables}
    if default is dict:
        return dataclasses.field(default_factory=dict, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class ConfigError(Exception):
    """Raised with every bad variable at once; the CLI prints it and exits with status 2."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name}: {why}" for name, why in sorted(problems.items())))


@dataclasses.dataclass(frozen=True)
class Config:
    """Typed settings for one bridge installation. Tests build their own with :func:`load_config`."""

    port: int = setting(
        "PORT", "TCP port the web server listens on (default 8000; set by Heroku)", whole_number(1, 65535), 8000
    )
    bind_address: str = setting(
        "BRIDGE_BIND_ADDRESS",
        "the address `serve` listens on: `127.0.0.1` (default: only this machine, for `make run` on a laptop) or "
        "`0.0.0.0` (every interface: the Docker image and the Procfile set it)",
        ip_address,
        "127.0.0.1",
    )
    web_concurrency: int = setting("WEB_CONCURRENCY", "gunicorn worker processes (default 2)", whole_number(1, 64), 2)
    database_url: str = setting(
        "DATABASE_URL",
        "`sqlite:///path` or `postgresql://user:pass@host/db`; Heroku's `postgres://` works too "
        "(default `sqlite:///pipeline-bridge.db`)",
        database_url,
        "sqlite:///pipeline-bridge.db",
    )
    tokens: Mapping[str, str] = setting(
        "BRIDGE_TOKENS",
        "`user:apiToken` pairs, comma or newline separated: the Distelli user names your CI tools call and the "
        "token each sends",
        colon_pairs,
        dict,
        secret=True,
        also=Variable(
            "BRIDGE_TOKENS_FILE",
            "a file of `user:apiToken` lines (`#` comments allowed), added to `BRIDGE_TOKENS`",
            colon_pairs_file,
        ),
    )
    hook_secrets: Mapping[str, str] = setting(
        "BRIDGE_HOOK_SECRETS",
        "`adapter:secret` pairs for the webhook adapters (`POST /hooks/<adapter>`)",
        colon_pairs,
        dict,
        secret=True,
    )
    dd_api_key: str | None = setting(
        "DD_API_KEY",
        "Datadog API key; when unset, events go to the local file sink `BRIDGE_SINK_PATH` instead",
        api_key,
        secret=True,
    )
    dd_site: str = setting(
        "DD_SITE",
        "Datadog site: " + ", ".join(f"`{site}`" + (" (default)" if site == DD_SITES[0] else "") for site in DD_SITES),
        one_of(DD_SITES, f"unknown Datadog site; one of {', '.join(sorted(DD_SITES))}"),
        "datadoghq.com",
    )
    dd_intake_url: str | None = setting(
        "DD_INTAKE_URL", "override of the Datadog API base URL (tests, an egress proxy)", http_url
    )
    public_url: str = setting(
        "BRIDGE_PUBLIC_URL",
        "the bridge's own public URL, used in links from Datadog back to events (default `http://localhost:<PORT>`)",
        http_url,
        "http://localhost:8000",
    )
    author_emails: Mapping[str, str] = setting(
        "BRIDGE_AUTHOR_EMAILS",
        "`username=email` pairs, or a file of them, for commit authors",
        equals_pairs_or_file,
        dict,
    )
    author_email_template: str = setting(
        "BRIDGE_AUTHOR_EMAIL_TEMPLATE",
        "fallback author email, default `{username}@users.noreply.{host}`",
        email_template,
        "{username}@users.noreply.{host}",
    )
    service_names: Mapping[str, str] = setting(
        "BRIDGE_SERVICE_NAMES", "`app=service` pairs naming the DORA service of an app", equals_pairs, dict
    )
    sink_path: str = setting(
        "BRIDGE_SINK_PATH",
        "JSON-lines file the sink writes when `DD_API_KEY` is unset (default `pipeline-bridge-sink.jsonl`)",
        plain,
        "pipeline-bridge-sink.jsonl",
    )
    installation_id: str = setting(
        "BRIDGE_INSTALLATION_ID",
        "stable name of this installation, part of every pipeline id: never change it once events flow",
        plain,
        "pipeline-bridge",
    )
    proxy_hops: int = setting(
        "BRIDGE_PROXY_HOPS",
        "how many proxies in front set `X-Forwarded-For/-Proto/-Port` (0: trust none, the default; Heroku: 1)",
        whole_number(0, 10),
        0,
    )
    log_level: str = setting(
        "LOG_LEVEL",
        "`DEBUG`, `INFO` (default), `WARNING` or `ERROR`",
        one_of(LOG_LEVELS, f"must be one of {', '.join(LOG_LEVELS)}", fold=str.upper),
        "INFO",
    )
    metrics_dir: str | None = setting(
        "PROMETHEUS_MULTIPROC_DIR",
        "directory where processes share metrics, emptied of `*.db` files at start; `serve` makes and removes a "
        "temporary one when unset",
        existing_directory,
    )
    worker_metrics_port: int | None = setting(
        "BRIDGE_WORKER_METRICS_PORT",
        "port where a separately run `worker` serves its own `/metrics` (default: none)",
        whole_number(1, 65535),
    )
    sender_lease_seconds: int = setting(
        "BRIDGE_SENDER_LEASE_SECONDS",
        "how long a worker's claim on outbox rows holds before another may take them (default 60)",
        whole_number(1, 3600),
        60,
    )
    sender_batch_size: int = setting(
        "BRIDGE_SENDER_BATCH_SIZE",
        "outbox rows one delivery pass claims, at most 1000 per request (default 1000)",
        whole_number(1, 1000),
        1000,
    )
    # Upkeep (docs/operations.md).
    retention_days: float = setting(
        "BRIDGE_RETENTION_DAYS",
        "days a settled event (every body delivered, superseded or expired, or none to send) is kept after its last "
        "change before the worker deletes it (default 30)",
        duration(36500),
        30.0,
    )
    dead_letter_retention_days: float = setting(
        "BRIDGE_DEAD_LETTER_RETENTION_DAYS",
        "days an event with a dead letter is kept (default 90)",
        duration(36500),
        90.0,
    )
    stale_run_hours: float = setting(
        "BRIDGE_STALE_RUN_HOURS",
        "hours after its running event that a run with no final status is closed as `error` by the bridge (default 12)",
        duration(8760),
        12.0,
    )
    backlog_warn_hours: float = setting(
        "BRIDGE_BACKLOG_WARN_HOURS",
        "hours an event may wait for delivery before `/readyz` says `degraded` (default 6)",
        duration(8760),
        6.0,
    )
    pause_warn_minutes: float = setting(
        "BRIDGE_PAUSE_WARN_MINUTES",
        "minutes delivery may stay paused (API key refused) before `/readyz` says `degraded` (default 15)",
        duration(525600),
        15.0,
    )
    upkeep_minutes: float = setting(
        "BRIDGE_UPKEEP_MINUTES",
        "how often the worker closes stale runs, prunes and logs backlog warnings (default 1)",
        duration(1440),
        1.0,
    )
    admin_token: str | None = setting(
        "BRIDGE_ADMIN_TOKEN",
        "enables the operator console at `/console` (unset: 404) and is what an operator logs in with, or sends as "
        "`Authorization: Bearer …` for read-only GETs; at least 16 characters; the console's session key is "
        "derived from it, so changing it logs every session out",
        admin_token,
        secret=True,
    )

    @property
    def intake_base_url(self) -> str:
        """The Datadog API base URL: the override when set, else the site's public API host."""
        if self.dd_intake_url:
            return self.dd_intake_url.rstrip("/")
        return f"https://api.{self.dd_site}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def bind(self) -> str:
        """gunicorn's ``host:port`` (an IPv6 address in brackets)."""
        host = f"[{self.bind_address}]" if ":" in self.bind_address else self.bind_address
        return f"{host}:{self.port}"

    def masked(self) -> dict[str, Any]:
        """The effective settings by variable name with every secret replaced, for ``config check``.

        A setting read from two variables is shown under the first: BRIDGE_TOKENS lists the users of both.
        """
        shown: dict[str, Any] = {}
        for field, variables in declared_fields():
            value = getattr(self, field.name)
            if variables[0].secret and value:
                value = {k: "****" for k in value} if isinstance(value, Mapping) else "****"
            elif isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, str) and "://" in value:
                value = mask_url_password(value)
            shown[variables[0].name] = value
        return shown


def declared_fields() -> Iterator[tuple[dataclasses.Field[Any], tuple[Variable, ...]]]:
    """Each :class:`Config` field declared with :func:`setting`, with its variables, in declaration order."""
    for field in dataclasses.fields(Config):
        if "variables" in field.metadata:
            yield field, field.metadata["variables"]


# Every variable the bridge reads, with what it means: the README's configuration table and app.json's checks.
VARIABLES = {variable.name: variable.meaning for _, variables in declared_fields() for variable in variables}
# The fields whose values are secrets: redacted from every log line (bridge/operations/logs.py), masked by
# config check.
SECRET_FIELDS = frozenset(field.name for field, variables in declared_fields() if variables[0].secret)


def load_config(environ: Mapping[str, str]) -> Config:
    """Turn an environment mapping into a :class:`Config`, or raise :class:`ConfigError` naming every problem.

    A variable that is unset or blank keeps the default; several variables of one setting add up their pairs.
    """
    problems: dict[str, str] = {}
    values: dict[str, Any] = {}
    for field, variables in declared_fields():
        for variable in variables:
            raw = (environ.get(variable.name) or "").strip()
            if not raw:
                continue
            try:
                value = variable.read(raw)
            except ValueError as exc:
                problems[variable.name] = str(exc)
                continue
            values[field.name] = {**values[field.name], **value} if field.name in values else value
    if problems:
        raise ConfigError(problems)
    if "public_url" not in values and "port" in values:
        # Links must reach the bridge `make run` started on another port, not the default one.
        values["public_url"] = f"http://localhost:{values['port']}"
    return Config(**values)


def markdown_table() -> str:
    """The README's configuration table, one row per variable."""
    rows = [f"| `{name}` | {meaning} |" for name, meaning in VARIABLES.items()]
    return "\n".join(["| variable | meaning |", "|---|---|", *rows])


def parse_pairs(source: str) -> dict[str, str]:
    """Parse ``name:value`` pairs separated by commas or new lines (the format of BRIDGE_TOKENS and friends).

    The message never quotes a value, since the values are secrets.
    """
    pairs: dict[str, str] = {}
    for number, item in enumerate(re.split(r"[,\n]", source), start=1):
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        name, sep, value = item.partition(":")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"entry {number} is not of the form name:value")
        pairs[name.strip()] = value.strip()
    return pairs


def normalise_database_url(url: str) -> str:
    """Accept Heroku's ``postgres://`` form and pick the psycopg 3 driver for PostgreSQL URLs."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _read_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the file it names ({exc.strerror})") from None


def mask_url_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":****@", 1)
    return url
