"""Running the app under gunicorn from the command line, with the config already loaded.

The app is imported only in :meth:`BridgeGunicorn.load`, never at this module's import: importing it here would
import prometheus_client before the multi-process metrics directory is known (see
``bridge.operations.multiproc``). gunicorn calls ``load`` in the master (``preload_app``), after that directory is
set, so the web workers share the pages of the imported libraries instead of each importing them again. Building
the app opens no connection and no metrics file; the ``post_fork`` hook still drops any pooled connection a worker
inherited, since a database connection must not be used by two processes.

Preloading is a choice for what memory really costs. Measured with ``bench/bench_memory.py`` (2 web workers and
the delivery worker, SQLite, 100 req/s, 2026-11-25, 2-core AMD EPYC): total PSS 146 MB with preload against 166 MB
without, because the workers share the master's imported libraries (``gc.freeze`` keeps those pages from being
copied). Summed RSS reads the other way (251 MB against 223 MB) only because it counts every shared page once in
each process holding it; a container's or a dyno's memory limit counts it once.
"""

from __future__ import annotations

import gc
from typing import Any

from gunicorn.app.base import BaseApplication

from bridge.config import Config
from bridge.web.balance import ConnectionCounts

COUNTED_WORKERS = 16  # slots of connection counts: more than web_concurrency, for workers started by TTIN
WORKER_CONNECTIONS = 2000  # per web process: 1,200 slow or idle clients can all land on one of the two


def gunicorn_options(config: Config) -> dict[str, Any]:
    """gunicorn settings for ``config``: JSON logs (access log included) and metrics files of dead workers dropped."""
    metrics_dir = config.metrics_dir
    counts = ConnectionCounts(max(COUNTED_WORKERS, 2 * config.web_concurrency))

    def pre_fork(server: Any, worker: Any) -> None:
        """Move what the master built into the collector's permanent generation, so the workers' garbage
        collections never write to (and so copy) the pages they share with it; give the new worker its slot of
        the connection counts (bridge.web.balance)."""
        gc.freeze()
        taken = {other.balance_slot for other in server.WORKERS.values() if other.balance_slot is not None}
        worker.connection_counts, worker.balance_slot = counts, counts.claim(taken)

    def child_exit(_server: Any, worker: Any) -> None:
        if getattr(worker, "balance_slot", None) is not None:
            counts.release(worker.balance_slot)
        if metrics_dir:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid, metrics_dir)

    return {
        "bind": config.bind,
        "preload_app": True,
        "pre_fork": pre_fork,
        "post_fork": post_fork,
        "workers": config.web_concurrency,
        # gthread's pool, but the main thread buffers each request until complete (bridge/web/http_worker.py).
        "worker_class": "bridge.web.http_worker.BufferingWorker",
        "threads": 4,
        "worker_connections": WORKER_CONNECTIONS,
        "timeout": 30,
        "graceful_timeout": 25,
        "keepalive": 5,
        "accesslog": "-",
        "errorlog": "-",
        "logger_class": "bridge.operations.logs.GunicornLogger",
        "loglevel": config.log_level.lower(),
        "child_exit": child_exit,
        # X-Forwarded-* are the app's business (ProxyFix, by BRIDGE_PROXY_HOPS); gunicorn must not act on them too.
        "secure_scheme_headers": {},
        "forwarded_allow_ips": "",
    }


def post_fork(_server: Any, worker: Any) -> None:
    """In a new web worker: forget the connections of the app's pool inherited from the master, unclosed."""
    app = getattr(worker.app, "callable", None)
    store = getattr(app, "extensions", {}).get("bridge.storage.store")
    if store is not None:
        store.engine.dispose(close=False)


class BridgeGunicorn(BaseApplication):
    """A gunicorn application that builds the bridge app once, in the master, for every web worker."""

    def __init__(self, config: Config, options: dict[str, Any] | None = None) -> None:
        self.bridge_config = config
        self.options = {**gunicorn_options(config), **(options or {})}
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from bridge.web.app import create_app

        return create_app(self.bridge_config)


def run_gunicorn(config: Config) -> None:
    BridgeGunicorn(config).run()
