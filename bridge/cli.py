"""The ``pipeline-bridge`` command: serve, worker, db upgrade, config check, healthcheck, dead-letters.

Commands import what they need when they run, so a bad configuration is reported at once, before SQLAlchemy,
Alembic or gunicorn are loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import click

from bridge.config import Config, ConfigError, load_config


def _load() -> Config:
    try:
        return load_config(os.environ)
    except ConfigError as exc:
        click.echo(f"pipeline-bridge: bad configuration: {exc}", err=True)
        sys.exit(2)


@click.group()
@click.version_option(package_name="pipeline-bridge", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx: click.Context) -> None:
    """pipeline-bridge: a Distelli-compatible Events API that forwards builds to Datadog CI Visibility."""
    ctx.obj = _load()


@main.command()
@click.option("--worker/--no-worker", default=True, help="Also run one delivery worker (default: yes).")
@click.pass_obj
def serve(config: Config, worker: bool) -> None:
    """Run the web server (gunicorn) and one delivery worker: a complete bridge in one command.

    With --no-worker it runs the web server alone, for platforms that run ``pipeline-bridge worker`` separately.
    """
    from adapters.registry import load_adapters
    from bridge.operations import startup
    from bridge.operations.logs import configure_logging
    from bridge.operations.multiproc import metrics_dir
    from bridge.web.server import run_gunicorn

    registered = list(load_adapters())
    with metrics_dir(config) as config:
        configure_logging(config)
        if config.is_sqlite:
            # In a child process, so that Alembic and Mako (about 7 MB) stay out of the gunicorn master, whose
            # pages every web worker shares and counts.
            # -P (here and for the worker): the working directory stays off the child's path, so it imports the
            # same bridge package as the web processes. With -m alone, run from a source checkout it imported the
            # checkout's copy whatever PYTHONPATH said: a benchmark's --against run measured one version's delivery
            # worker beside the other's web processes.
            upgraded = subprocess.run(
                [sys.executable, "-P", "-m", "bridge", "db", "upgrade"], stdout=subprocess.DEVNULL
            )
            if upgraded.returncode:
                sys.exit(upgraded.returncode)
        startup.announce(config, registered)
        process = subprocess.Popen([sys.executable, "-P", "-m", "bridge", "worker"]) if worker else None
        serving = os.getpid()
        try:
            run_gunicorn(config)
        finally:
            if process is not None and os.getpid() == serving:  # not in a web worker leaving (see metrics_dir)
                _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@main.command()
@click.option("--url", help="What to fetch (default: this bridge's /healthz on PORT).")
@click.pass_obj
def healthcheck(config: Config, url: str | None) -> None:
    """Exit 0 when the web server answers /healthz with 200, else 1: the container HEALTHCHECK."""
    import requests

    target = url or f"http://127.0.0.1:{config.port}/healthz"
    try:
        status = requests.get(target, timeout=3).status_code
    except requests.RequestException as exc:
        click.echo(f"unhealthy: {type(exc).__name__}", err=True)
        sys.exit(1)
    if status != 200:
        click.echo(f"unhealthy: status {status}", err=True)
        sys.exit(1)
    click.echo("healthy")


@main.command()
@click.pass_obj
def worker(config: Config) -> None:
    """Deliver outbox rows to the intake until SIGTERM.

    Run on its own (compose, a second container), it can serve its delivery counters on
    BRIDGE_WORKER_METRICS_PORT, since the web server's /metrics only sees processes that share its directory.
    """
    from bridge.delivery.worker import run_worker
    from bridge.operations.logs import configure_logging

    configure_logging(config)
    if config.worker_metrics_port and not config.metrics_dir:
        from prometheus_client import start_http_server

        start_http_server(config.worker_metrics_port)
    run_worker(config)


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(config: Config) -> None:
    """Apply every pending migration."""
    from bridge.operations.logs import configure_logging
    from bridge.storage import migrate
    from bridge.storage.store import Store

    configure_logging(config)
    migrate.upgrade(Store(config.database_url))
    click.echo("database is at the newest revision")


@main.group()
def config() -> None:
    """Configuration commands."""


@config.command("check")
@click.pass_obj
def config_check(config: Config) -> None:
    """Print the effective configuration by variable name (as the README's table names them), secrets masked."""
    click.echo(json.dumps(config.masked(), indent=2, default=str))


@main.group("dead-letters")
def dead_letters() -> None:
    """Events the intake refused as invalid."""


@dead_letters.command("list")
@click.pass_obj
def dead_letters_list(config: Config) -> None:
    """List dead letters with the intake's reason, one JSON object per line."""
    from bridge.storage import outbox
    from bridge.storage.store import Store

    store = Store(config.database_url)
    try:
        with store.transaction() as session:
            items = outbox.dead_letters(session)
            if not items:
                click.echo("no dead letters", err=True)
            for item in items:
                row: dict[str, Any] = {
                    "id": item.id,
                    "event_id": item.event_id,
                    "kind": item.kind,
                    "unique_id": item.unique_id,
                    "level": item.level,
                    "attempts": item.attempts,
                    "created_at": item.created_at.isoformat(),
                    "reason": item.reason,
                }
                click.echo(json.dumps(row))
    finally:
        store.dispose()


@dead_letters.command("redrive")
@click.option("--id", "ids", multiple=True, type=int, help="Only these outbox ids (default: all).")
@click.pass_obj
def dead_letters_redrive(config: Config, ids: tuple[int, ...]) -> None:
    """Queue dead letters for delivery again."""
    from bridge.delivery.sender import redrive
    from bridge.storage.store import Store

    store = Store(config.database_url)
    try:
        count = redrive(store, list(ids) or None)
    finally:
        store.dispose()
    click.echo(f"{count} dead letter(s) queued again")


@main.command()
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@click.option(
    "--enable-incremental-vacuum",
    is_flag=True,
    help="SQLite: switch an existing file to auto_vacuum=INCREMENTAL first (one full VACUUM; run at a quiet time).",
)
@click.pass_obj
def prune(config: Config, dry_run: bool, enable_incremental_vacuum: bool) -> None:
    """Delete settled events past BRIDGE_RETENTION_DAYS now (the worker also does it periodically)."""
    from bridge.operations import retention
    from bridge.operations.logs import configure_logging
    from bridge.storage.store import Store

    configure_logging(config)
    store = Store(config.database_url)
    try:
        if enable_incremental_vacuum and not dry_run and retention.enable_incremental(store):
            click.echo("the SQLite file now gives space back after each prune (auto_vacuum=INCREMENTAL)")
        report = retention.prune(store, retention.RetentionPolicy.from_config(config), dry_run=dry_run)
        with store.transaction() as session:
            remaining = retention.row_counts(session)
    finally:
        store.dispose()
    click.echo(report.summary())
    click.echo(f"kept {remaining['events']} event(s) and {remaining['outbox']} outbox row(s)")


def _moment(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    import datetime as dt

    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("must be an ISO 8601 time such as 2026-12-01T08:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@main.command()
@click.option("--app", "app_name", required=True, help="The app (Distelli app, or a webhook source's app name).")
@click.option("--user", "username", help="Only this user's events (a Distelli user, or a webhook source's name).")
@click.option("--since", callback=_moment, help="Only events last changed at or after this time (ISO 8601).")
@click.option("--until", callback=_moment, help="Only events last changed before this time (ISO 8601).")
@click.option("--dry-run", is_flag=True, help="Print what would be queued; queue nothing.")
@click.pass_obj
def replay(config: Config, app_name: str, username: str | None, since: Any, until: Any, dry_run: bool) -> None:
    """Map stored events again with today's mapping and queue what is inside the intake's 18-hour window."""
    from bridge.operations.logs import configure_logging
    from bridge.operations.replay import ReplayFilter
    from bridge.operations.replay import replay as run_replay
    from bridge.storage.store import Store

    configure_logging(config)
    store = Store(config.database_url)
    try:
        report = run_replay(store, config, ReplayFilter(app_name, username, since, until), dry_run=dry_run)
    finally:
        store.dispose()
    for late in report.outside_window:
        click.echo(f"not sent: event {late['event_id']} ({late['unique_id']}): {late['reason']}")
    click.echo(report.summary())
