"""The bridge's configuration, read once from the environment into one frozen object.

Every other module receives a :class:`Config`; nothing else reads ``os.environ``. A bad value stops the
process at start with one message that names every bad variable, because a bridge that starts half-configured
loses events silently later.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DD_SITES = frozenset(
    {
        "datadoghq.com",
        "us3.datadoghq.com",
        "us5.datadoghq.com",
        "datadoghq.eu",
        "ap1.datadoghq.com",
        "ap2.datadoghq.com",
        "ddog-gov.com",
        "us2.ddog-gov.com",
    }
)
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")
DATABASE_DRIVERS = ("", "pysqlite", "psycopg")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_API_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
SECRET_FIELDS = frozenset({"tokens", "dd_api_key", "hook_secrets", "admin_token"})
ADMIN_TOKEN_MIN_LENGTH = 16

# Every variable the bridge reads, with what it means: the source of the docs' table and of app.json's checks.
VARIABLES = {
    "PORT": "TCP port the web server listens on (default 8000; set by Heroku)",
    "WEB_CONCURRENCY": "gunicorn worker processes (default 2)",
    "DATABASE_URL": "sqlite:///path or postgresql://user:pass@host/db (default sqlite:///pipeline-bridge.db)",
    "BRIDGE_TOKENS": "user:apiToken pairs, comma or newline separated; each user's Distelli apiToken",
    "BRIDGE_TOKENS_FILE": "a file of user:apiToken lines, added to BRIDGE_TOKENS",
    "BRIDGE_HOOK_SECRETS": "adapter:secret pairs for the webhook adapters",
    "DD_API_KEY": "Datadog API key; when unset, events go to the local file sink BRIDGE_SINK_PATH",
    "DD_SITE": "Datadog site, e.g. datadoghq.com or datadoghq.eu (default datadoghq.com)",
    "DD_INTAKE_URL": "override of the Datadog API base URL (tests, proxies)",
    "BRIDGE_PUBLIC_URL": "the bridge's own public URL, used in links to events (default http://localhost:8000)",
    "BRIDGE_AUTHOR_EMAILS": "username=email pairs, or a file of them, for commit authors",
    "BRIDGE_AUTHOR_EMAIL_TEMPLATE": "fallback author email, default {username}@users.noreply.{host}",
    "BRIDGE_SERVICE_NAMES": "app=service pairs naming the DORA service of an app",
    "BRIDGE_SINK_PATH": "JSON-lines file the sink writes when DD_API_KEY is unset",
    "BRIDGE_INSTALLATION_ID": "stable name of this installation, part of every pipeline unique_id",
    "BRIDGE_PROXY_HOPS": "how many proxies in front set X-Forwarded-For/-Proto/-Port (0: trust none; Heroku: 1)",
    "LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR (default INFO)",
    "PROMETHEUS_MULTIPROC_DIR": "directory for multi-process metrics (serve makes a temporary one when unset)",
    "BRIDGE_WORKER_METRICS_PORT": "port where a separately run worker serves its own /metrics (default: none)",
    "BRIDGE_SENDER_LEASE_SECONDS": "how long a worker's claim on outbox rows holds before another may take them (60)",
    "BRIDGE_SENDER_BATCH_SIZE": "outbox rows one delivery pass claims, at most 1000 per request (default 1000)",
    # Upkeep (docs/operations.md): each accepts fractions, so 0.002 hours is about 7 seconds.
    "BRIDGE_RETENTION_DAYS": "days a settled event is kept before the worker prunes it (default 30)",
    "BRIDGE_DEAD_LETTER_RETENTION_DAYS": "days an event with a dead letter is kept (default 90)",
    "BRIDGE_STALE_RUN_HOURS": "hours after which a run with no final status is closed as error (default 12)",
    "BRIDGE_BACKLOG_WARN_HOURS": "hours an event may wait for delivery before /readyz says degraded (default 6)",
    "BRIDGE_PAUSE_WARN_MINUTES": "minutes delivery may be paused before /readyz says degraded (default 15)",
    "BRIDGE_UPKEEP_MINUTES": "how often the worker prunes, closes stale runs and logs backlog warnings (default 1)",
    "BRIDGE_ADMIN_TOKEN": "enables the operator console at /console: the token to log in with (16+ characters)",
}


class ConfigError(Exception):
    """Raised with every bad variable at once; the CLI prints it and exits with status 2."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name}: {why}" for name, why in sorted(problems.items())))


@dataclasses.dataclass(frozen=True)
class Config:
    """Typed settings for one bridge installation. Tests build their own with :func:`load_config`."""

    database_url: str = "sqlite:///pipeline-bridge.db"
    port: int = 8000
    web_concurrency: int = 2
    tokens: Mapping[str, str] = dataclasses.field(default_factory=dict)
    dd_api_key: str | None = None
    dd_site: str = "datadoghq.com"
    dd_intake_url: str | None = None
    public_url: str = "http://localhost:8000"
    author_emails: Mapping[str, str] = dataclasses.field(default_factory=dict)
    author_email_template: str = "{username}@users.noreply.{host}"
    hook_secrets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    log_level: str = "INFO"
    sink_path: str = "pipeline-bridge-sink.jsonl"
    installation_id: str = "pipeline-bridge"
    proxy_hops: int = 0
    service_names: Mapping[str, str] = dataclasses.field(default_factory=dict)
    metrics_dir: str | None = None
    worker_metrics_port: int | None = None
    sender_lease_seconds: int = 60
    sender_batch_size: int = 1000
    retention_days: float = 30.0
    dead_letter_retention_days: float = 90.0
    stale_run_hours: float = 12.0
    backlog_warn_hours: float = 6.0
    pause_warn_minutes: float = 15.0
    upkeep_minutes: float = 1.0
    admin_token: str | None = None

    @property
    def intake_base_url(self) -> str:
        """The Datadog API base URL: the override when set, else the site's public API host."""
        if self.dd_intake_url:
            return self.dd_intake_url.rstrip("/")
        return f"https://api.{self.dd_site}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def masked(self) -> dict[str, Any]:
        """The effective settings with every secret replaced, for ``config check`` and logs."""
        shown: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in SECRET_FIELDS and value:
                value = {k: "****" for k in value} if isinstance(value, Mapping) else "****"
            elif field.name in ("database_url", "dd_intake_url", "public_url") and value:
                value = _mask_url_password(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            shown[field.name] = value
        return shown


def load_config(environ: Mapping[str, str]) -> Config:
    """Turn an environment mapping into a :class:`Config`, or raise :class:`ConfigError` naming every problem."""
    problems: dict[str, str] = {}
    values: dict[str, Any] = {}

    def text(name: str) -> str | None:
        value = environ.get(name)
        return value.strip() if value is not None and value.strip() else None

    def integer(name: str, field: str, low: int, high: int) -> None:
        raw = text(name)
        if raw is None:
            return
        if not raw.isdigit() or not low <= int(raw) <= high:
            problems[name] = f"must be a whole number from {low} to {high}"
        else:
            values[field] = int(raw)

    integer("PORT", "port", 1, 65535)
    integer("WEB_CONCURRENCY", "web_concurrency", 1, 64)
    integer("BRIDGE_PROXY_HOPS", "proxy_hops", 0, 10)
    integer("BRIDGE_WORKER_METRICS_PORT", "worker_metrics_port", 1, 65535)
    integer("BRIDGE_SENDER_LEASE_SECONDS", "sender_lease_seconds", 1, 3600)
    integer("BRIDGE_SENDER_BATCH_SIZE", "sender_batch_size", 1, 1000)

    def duration(name: str, field: str, high: float) -> None:
        raw = text(name)
        if raw is None:
            return
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0 < value <= high:  # also refuses nan and inf
            problems[name] = f"must be a number above 0 and at most {high:g} (fractions allowed)"
        else:
            values[field] = value

    duration("BRIDGE_RETENTION_DAYS", "retention_days", 36500)
    duration("BRIDGE_DEAD_LETTER_RETENTION_DAYS", "dead_letter_retention_days", 36500)
    duration("BRIDGE_STALE_RUN_HOURS", "stale_run_hours", 8760)
    duration("BRIDGE_BACKLOG_WARN_HOURS", "backlog_warn_hours", 8760)
    duration("BRIDGE_PAUSE_WARN_MINUTES", "pause_warn_minutes", 525600)
    duration("BRIDGE_UPKEEP_MINUTES", "upkeep_minutes", 1440)

    database_url = text("DATABASE_URL")
    if database_url is not None:
        scheme, _, driver = database_url.split(":", 1)[0].partition("+")
        if scheme not in DATABASE_SCHEMES or "://" not in database_url or driver not in DATABASE_DRIVERS:
            problems["DATABASE_URL"] = "must start with sqlite://, postgresql:// or postgres:// (driver psycopg)"
        else:
            values["database_url"] = normalise_database_url(database_url)

    tokens: dict[str, str] = {}
    for name, read in (("BRIDGE_TOKENS", lambda raw: raw), ("BRIDGE_TOKENS_FILE", _read_file)):
        raw = text(name)
        try:
            tokens.update(parse_pairs(read(raw) if raw else ""))
        except ValueError as exc:
            problems[name] = str(exc)
    values["tokens"] = tokens

    try:
        values["hook_secrets"] = parse_pairs(text("BRIDGE_HOOK_SECRETS") or "")
    except ValueError as exc:
        problems["BRIDGE_HOOK_SECRETS"] = str(exc)

    try:
        emails_source = text("BRIDGE_AUTHOR_EMAILS") or ""
        if emails_source and "=" not in emails_source and ":" not in emails_source:
            emails_source = _read_file(emails_source)
        values["author_emails"] = parse_pairs(emails_source.replace("=", ":"))
    except ValueError as exc:
        problems["BRIDGE_AUTHOR_EMAILS"] = str(exc)

    try:
        values["service_names"] = parse_pairs((text("BRIDGE_SERVICE_NAMES") or "").replace("=", ":"))
    except ValueError as exc:
        problems["BRIDGE_SERVICE_NAMES"] = str(exc)

    site = text("DD_SITE")
    if site is not None:
        if site not in DD_SITES:
            problems["DD_SITE"] = f"unknown Datadog site; one of {', '.join(sorted(DD_SITES))}"
        else:
            values["dd_site"] = site

    for name, field in (("DD_INTAKE_URL", "dd_intake_url"), ("BRIDGE_PUBLIC_URL", "public_url")):
        url = text(name)
        if url is None:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems[name] = "must be an http:// or https:// URL"
        else:
            values[field] = url.rstrip("/")

    level = text("LOG_LEVEL")
    if level is not None:
        if level.upper() not in LOG_LEVELS:
            problems["LOG_LEVEL"] = f"must be one of {', '.join(LOG_LEVELS)}"
        else:
            values["log_level"] = level.upper()

    template = text("BRIDGE_AUTHOR_EMAIL_TEMPLATE")
    if template is not None:
        if "{username}" not in template or "@" not in template:
            problems["BRIDGE_AUTHOR_EMAIL_TEMPLATE"] = "must contain {username} and an @"
        else:
            values["author_email_template"] = template

    api_key = text("DD_API_KEY")
    if api_key is not None:
        if not _API_KEY.match(api_key):
            problems["DD_API_KEY"] = "must be letters, digits, - and _ only (check for pasted quotes or spaces)"
        else:
            values["dd_api_key"] = api_key

    metrics_dir = text("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir is not None:
        if not Path(metrics_dir).is_dir():
            problems["PROMETHEUS_MULTIPROC_DIR"] = "must name an existing directory"
        else:
            values["metrics_dir"] = metrics_dir

    for name, field in (
        ("BRIDGE_SINK_PATH", "sink_path"),
        ("BRIDGE_INSTALLATION_ID", "installation_id"),
    ):
        value = text(name)
        if value is not None:
            values[field] = value

    admin_token = text("BRIDGE_ADMIN_TOKEN")
    if admin_token is not None:
        if len(admin_token) < ADMIN_TOKEN_MIN_LENGTH:
            problems["BRIDGE_ADMIN_TOKEN"] = f"must be at least {ADMIN_TOKEN_MIN_LENGTH} characters"
        else:
            values["admin_token"] = admin_token

    if problems:
        raise ConfigError(problems)
    return Config(**values)


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


def _mask_url_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":****@", 1)
    return url
