"""gunicorn settings for running gunicorn directly
(``gunicorn -c python:bridge.web.gunicorn_conf bridge.web.wsgi:app``).

The same settings ``pipeline-bridge serve`` uses, read in the gunicorn master before any worker starts, which is
also where the multi-process metrics directory has to be made.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from bridge.config import ConfigError, load_config
from bridge.operations.multiproc import make_metrics_dir, remove_metrics_dir
from bridge.web.server import gunicorn_options

try:
    _configured = load_config(os.environ)
except ConfigError as exc:
    sys.stderr.write(f"pipeline-bridge: bad configuration: {exc}\n")
    sys.exit(2)
_config = make_metrics_dir(_configured, os.environ)
globals().update(gunicorn_options(_config))


def on_exit(_server: Any) -> None:
    remove_metrics_dir(_configured, _config, os.environ)
