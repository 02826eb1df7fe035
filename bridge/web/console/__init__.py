"""The operator console: server-rendered pages under ``/console`` showing each build's way to Datadog.

Off unless ``BRIDGE_ADMIN_TOKEN`` is set: then :func:`init_app` registers the blueprint, and without it every
``/console`` path is the API's ordinary 404. Pages: overview, apps and sources, a build's timeline, an event's
detail with every delivery attempt, dead letters (with redrive) and search. :mod:`bridge.web.console.auth` says who
may see them; :mod:`bridge.web.console.queries` what they read.
"""

from __future__ import annotations

from flask import Flask

from bridge.config import Config
from bridge.storage.models import Event, OutboxItem
from bridge.storage.store import Store


def init_app(app: Flask, config: Config, store: Store) -> None:
    """Register the console when an admin token is configured; otherwise import nothing of it."""
    if not config.admin_token:
        return
    from bridge.web.console import auth
    from bridge.web.console.queries import MinuteCounts
    from bridge.web.console.reading import Reader
    from bridge.web.console.views import Redactor, blueprint

    auth.init_sessions(app, config.admin_token)
    app.extensions["bridge.web.console.reader"] = Reader(store)
    app.extensions["bridge.web.console.redactor"] = Redactor(config)
    app.extensions["bridge.web.console.throttle"] = auth.LoginThrottle()
    app.extensions["bridge.web.console.minutes"] = (
        MinuteCounts(Event.event_time),
        MinuteCounts(OutboxItem.delivered_at),
    )
    app.register_blueprint(blueprint)
