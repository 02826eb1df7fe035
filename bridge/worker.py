"""The delivery worker process: runs sender passes until told to stop by SIGTERM or SIGINT.

On a stop signal it finishes the pass in flight (a batch is one HTTP request, bounded by the intake timeout)
and exits 0, well inside the 30 seconds a Heroku dyno is given. Rows it had claimed but not sent keep their
lease, which expires so another worker takes them.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import structlog

from bridge.config import Config
from bridge.intake import FileSink, HttpIntake, Intake
from bridge.sender import Sender, SenderSettings
from bridge.store import Store

log = structlog.get_logger(__name__)

IDLE_POLL_SECONDS = 0.5


def make_intake(config: Config) -> Intake:
    """The real intake when an API key is set, else the local file sink."""
    if config.dd_api_key:
        return HttpIntake(config.intake_base_url, config.dd_api_key)
    return FileSink(config.sink_path)


class Worker:
    """Loops over :meth:`Sender.run_once`, sleeping while there is nothing due."""

    def __init__(self, sender: Sender, idle_poll: float = IDLE_POLL_SECONDS) -> None:
        self.sender = sender
        self.idle_poll = idle_poll
        self.stopping = threading.Event()

    def stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        log.info("worker.stopping", signal=signum)
        self.stopping.set()

    def run(self) -> None:
        log.info("worker.started", worker_id=self.sender.worker_id)
        while not self.stopping.is_set():
            result = self.sender.run_once()
            if result.claimed == 0:
                self.stopping.wait(self.idle_poll)
        log.info("worker.stopped", worker_id=self.sender.worker_id)


def run_worker(config: Config, settings: SenderSettings | None = None) -> None:
    """Entry point of ``pipeline-bridge worker``: install signal handlers and deliver until stopped."""
    store = Store(config.database_url)
    worker = Worker(Sender(store, make_intake(config), settings))
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    try:
        worker.run()
    finally:
        store.dispose()
