"""The WSGI entry point for running gunicorn (or another WSGI server) directly, instead of ``pipeline-bridge serve``:

    gunicorn -c python:bridge.gunicorn_conf bridge.wsgi:app

This is the composition root for that case, so it is the one module that reads the environment at import.
"""

from __future__ import annotations

import os
import sys

from bridge.app import create_app
from bridge.config import ConfigError, load_config
from bridge.logs import configure_logging

try:
    _config = load_config(os.environ)
except ConfigError as exc:
    sys.stderr.write(f"pipeline-bridge: bad configuration: {exc}\n")
    sys.exit(2)
configure_logging(_config)
app = create_app(_config)
