"""The directory prometheus_client shares between processes, so /metrics adds up every gunicorn worker.

prometheus_client picks its storage when it is first imported, from ``PROMETHEUS_MULTIPROC_DIR``. So the
directory is made and exported here, before anything imports ``bridge.operations.metrics``, and the processes started
afterwards (gunicorn workers, the delivery worker) inherit it. This module must not import prometheus_client.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, MutableMapping
from pathlib import Path

from bridge.config import Config

ENV_NAME = "PROMETHEUS_MULTIPROC_DIR"


def make_metrics_dir(config: Config, environ: MutableMapping[str, str]) -> Config:
    """Export the configured directory (emptied of an earlier run's files), or a fresh temporary one.

    Returns the config with ``metrics_dir`` set. Raises RuntimeError when prometheus_client was imported
    too early, since its counters would then stay private to each process.
    """
    if "prometheus_client" in sys.modules and ENV_NAME not in environ:
        raise RuntimeError("prometheus_client was imported before the metrics directory was set")
    if config.metrics_dir:
        # Files of a previous run would be summed with this one's, under process ids that may be reused.
        for stale in Path(config.metrics_dir).glob("*.db"):
            stale.unlink(missing_ok=True)
    path = config.metrics_dir or tempfile.mkdtemp(prefix="pipeline-bridge-metrics-")
    environ[ENV_NAME] = path
    return dataclasses.replace(config, metrics_dir=path)


def remove_metrics_dir(config: Config, made: Config, environ: MutableMapping[str, str]) -> None:
    """Delete the directory if :func:`make_metrics_dir` created it; a configured one belongs to the operator."""
    if config.metrics_dir is None and made.metrics_dir:
        shutil.rmtree(made.metrics_dir, ignore_errors=True)
        environ.pop(ENV_NAME, None)


@contextlib.contextmanager
def metrics_dir(config: Config) -> Iterator[Config]:
    """:func:`make_metrics_dir` for the length of a ``with`` block, then :func:`remove_metrics_dir`."""
    made = make_metrics_dir(config, os.environ)
    maker = os.getpid()
    try:
        yield made
    finally:
        # gunicorn forks its web workers inside the block, and a worker that leaves while the master runs on (a
        # crash, a timeout, a reload) unwinds through it too: only the process that made the directory removes it.
        if os.getpid() == maker:
            remove_metrics_dir(config, made, os.environ)
