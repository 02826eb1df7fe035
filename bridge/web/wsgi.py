"""The WSGI entry point for running gunicorn (or another WSGI server) directly, instead of ``pipeline-bridge serve``:

    gunicorn -c python:bridge.web.gunicorn_conf bridge.web.wsgi:app

This is the composition root for that case, so it is the one module that reads the environment at import.
"""

from __future__ import annotations

import os
import sys

from bridge.config import ConfigError, load_config
from bridge.operations.logs import configure_logging
from bridge.web.app import create_app

try:
    _config = load_config(os.environ)
except ConfigError as exc:
    sys.stderr.write(f"pipeline-bridge: bad configuration: {exc}\n")
    sys.exit(2)
configure_logging(_config)
app = create_app(_config)
