"""Running the app under gunicorn from the command line, with the config already loaded.

The app is imported only in :meth:`BridgeGunicorn.load`, after the fork: importing it here would import
prometheus_client before the multi-process metrics directory is known (see ``bridge.multiproc``).
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from bridge.config import Config


def gunicorn_options(config: Config) -> dict[str, Any]:
    """gunicorn settings for ``config``: JSON logs (access log included) and metrics files of dead workers dropped."""
    metrics_dir = config.metrics_dir

    def child_exit(_server: Any, worker: Any) -> None:
        if metrics_dir:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid, metrics_dir)

    return {
        "bind": f"0.0.0.0:{config.port}",
        "workers": config.web_concurrency,
        "worker_class": "gthread",
        "threads": 4,
        "timeout": 30,
        "graceful_timeout": 25,
        "keepalive": 5,
        "accesslog": "-",
        "errorlog": "-",
        "logger_class": "bridge.logs.GunicornLogger",
        "loglevel": config.log_level.lower(),
        "child_exit": child_exit,
        # X-Forwarded-* are the app's business (ProxyFix, by BRIDGE_PROXY_HOPS); gunicorn must not act on them too.
        "secure_scheme_headers": {},
        "forwarded_allow_ips": "",
    }


class BridgeGunicorn(BaseApplication):
    """A gunicorn application that builds one bridge app per worker process, after the fork."""

    def __init__(self, config: Config, options: dict[str, Any] | None = None) -> None:
        self.bridge_config = config
        self.options = {**gunicorn_options(config), **(options or {})}
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from bridge.app import create_app

        return create_app(self.bridge_config)


def run_gunicorn(config: Config) -> None:
    BridgeGunicorn(config).run()
