"""gunicorn settings for the Procfile's web process: the same as ``pipeline-bridge serve`` uses."""

from __future__ import annotations

import os

from bridge.config import load_config
from bridge.web import gunicorn_options

globals().update(gunicorn_options(load_config(os.environ)))
