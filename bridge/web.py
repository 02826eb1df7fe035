"""Running the app under gunicorn from the command line, with the config already loaded.

Each web worker imports and builds the app itself, after the fork (no ``preload_app``), so the master holds only
gunicorn, the logging setup and the configuration. Measured with ``bench/bench_memory.py`` (2 web workers and the
delivery worker, SQLite, 100 req/s, 2026-11-25), against building the app once in the master before forking:

- summed RSS, the issue's measure: 223 MB instead of 251 MB (211 instead of 239 without ``rich``, which only the
  test extras install). RSS counts a page shared by forked processes once in every process holding it, so a
  master that has imported everything (~63 MB) adds its whole size again to each worker's figure;
- total PSS, what the processes cost the machine together: 166 MB instead of 146 MB, since the workers no longer
  share the pages of the imported libraries' Python objects with the master and each other (``gc.freeze`` kept
  those shared under preload).

Each worker thus starts in about a second instead of at once, which is also what a restarted worker costs, and
a broken app is reported by the workers failing to boot rather than by the master. The app is never imported at
this module's import anyway: prometheus_client must not be imported before the multi-process metrics directory is
known (see ``bridge.multiproc``). Nothing is built before the fork, so no database connection or metrics file is
inherited.
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
        "preload_app": False,
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
    """A gunicorn application that builds the bridge app in each web worker."""

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
