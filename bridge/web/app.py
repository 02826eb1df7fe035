"""The app factory: the one place that wires configuration, storage, routes and error handling together."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from bridge.config import Config
from bridge.operations import logs, metrics
from bridge.storage.store import Store
from bridge.web import console
from bridge.web.errors import register_error_handlers
from bridge.web.routes import events, health, hooks, meta

MAX_BODY_BYTES = 1024 * 1024
_SLASHES = re.compile(r"/{2,}")


class CollapseSlashes:
    """Treat ``//user/apps/...`` as ``/user/apps/...``: a published Distelli client doubles the slash.

    Werkzeug's own merge_slashes answers with a redirect, which curl and most CI scripts do not follow for PUT.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if "//" in path:
            environ["PATH_INFO"] = _SLASHES.sub("/", path)
        return self.app(environ, start_response)


class BridgeFlask(Flask):
    """Flask, asking whether a hook or view is ``async def`` once per function instead of on every call.

    Flask asks it through ``inspect.iscoroutinefunction`` of each before-, after- and teardown-request function and
    of the view, seven times a request on the accept path; a function's answer never changes.
    """

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        try:
            is_async = _is_async(func)
        except TypeError:  # an unhashable callable: asked every time, as Flask does
            is_async = inspect.iscoroutinefunction(func)
        return self.async_to_sync(func) if is_async else func


@functools.lru_cache(maxsize=1024)
def _is_async(func: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(func)


def create_app(config: Config, store: Store | None = None) -> Flask:
    """Build a bridge app for ``config``; tests pass their own config and may share a store."""
    app = BridgeFlask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.extensions["bridge.config"] = config
    app.extensions["bridge.storage.store"] = store = store or Store(config.database_url)
    register_error_handlers(app)
    logs.init_app(app)
    metrics.init_app(app)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(meta.blueprint)
    app.register_blueprint(events.blueprint)
    app.register_blueprint(hooks.blueprint)
    console.init_app(app, config, store)
    app.wsgi_app = CollapseSlashes(app.wsgi_app)  # type: ignore[method-assign]
    if config.proxy_hops:
        # Only as many X-Forwarded-* values as there are proxies we run behind are believed; Host is never.
        hops = config.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_port=hops)  # type: ignore[method-assign]
    return app
