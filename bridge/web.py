"""Running the app under gunicorn from the command line, with the config already loaded."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from bridge.app import create_app
from bridge.config import Config

# The access log leaves out the query string: Distelli clients put their apiToken there.
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'


def gunicorn_options(config: Config) -> dict[str, Any]:
    return {
        "bind": f"0.0.0.0:{config.port}",
        "workers": config.web_concurrency,
        "worker_class": "gthread",
        "threads": 4,
        "timeout": 30,
        "graceful_timeout": 25,
        "keepalive": 5,
        "accesslog": "-",
        "access_log_format": ACCESS_LOG_FORMAT,
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
        return create_app(self.bridge_config)


def run_gunicorn(config: Config) -> None:
    BridgeGunicorn(config).run()
