"""What ``serve`` tells a person at start, in plain words beside the JSON logs: where it listens, what it stores
in, where events go, who may call it, and what is missing for it to accept anything.

It reads only the :class:`~bridge.config.Config` and the webhook registry, so it costs nothing at start and says
the same thing the processes will do. A person at a terminal gets plain lines; anywhere else (docker logs, a
dyno, a file) every line stays JSON, so log pipelines keep parsing them, with the same sentence as the event.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path

import structlog

from bridge.config import ALL_INTERFACES, Config, mask_url_password

NO_TOKENS = (
    "WARNING: BRIDGE_TOKENS is empty: every Distelli API request will be refused with 401 and /readyz answers 503 "
    "until it names at least one user:apiToken pair"
)


def listen_url(config: Config) -> str:
    """The URL a browser on this machine uses, with a note when every interface listens."""
    if config.bind_address in ALL_INTERFACES:
        return f"http://localhost:{config.port} (every interface, {config.bind})"
    host = f"[{config.bind_address}]" if ":" in config.bind_address else config.bind_address
    return f"http://{host}:{config.port}"


def destination(config: Config) -> str:
    """Where the worker sends what it translates: the Datadog site (or the override) or the file sink."""
    if not config.dd_api_key:
        return f"file sink {Path(config.sink_path).resolve()} (DD_API_KEY is unset)"
    if config.dd_intake_url:
        return f"Datadog at {mask_url_password(config.dd_intake_url)} (DD_INTAKE_URL)"
    return f"Datadog site {config.dd_site}"


def enabled_sources(config: Config, registered: Iterable[str]) -> list[str]:
    """The webhook sources that answer: registered and given a secret."""
    return sorted(name for name in registered if config.hook_secrets.get(name))


def summary(config: Config, registered: Iterable[str]) -> str:
    """One line: ``pipeline-bridge 0.1.0 listening on ... | database ... | events to ... | ... | webhooks ...``."""
    users = len(config.tokens)
    sources = enabled_sources(config, registered)
    parts = [
        f"pipeline-bridge {version('pipeline-bridge')} listening on {listen_url(config)}",
        f"database {mask_url_password(config.database_url)}",
        f"events to {destination(config)}",
        f"{users} user{'' if users == 1 else 's'} with an apiToken",
        f"webhooks: {', '.join(sources)}" if sources else "webhooks: none enabled (BRIDGE_HOOK_SECRETS)",
    ]
    return " | ".join(parts)


def warnings(config: Config, registered: Iterable[str]) -> list[str]:
    """What makes the bridge refuse everything or ignore a setting, loud enough to be read before the logs."""
    found = [NO_TOKENS] if not config.tokens else []
    unknown = sorted(set(config.hook_secrets) - set(registered))
    if unknown:
        found.append(f"WARNING: BRIDGE_HOOK_SECRETS names no installed webhook source: {', '.join(unknown)}")
    return found


def announce(config: Config, registered: Iterable[str]) -> None:
    """Say the summary and the warnings: plain on a terminal, else as JSON log events (logging is configured)."""
    names = list(registered)
    found = warnings(config, names)
    if sys.stderr.isatty():
        for line in (summary(config, names), *found):
            print(line, file=sys.stderr, flush=True)
        return
    log = structlog.get_logger("bridge.operations.startup")
    log.info(summary(config, names))
    for line in found:
        log.warning(line)
