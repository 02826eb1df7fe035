"""The delivery worker process: runs sender passes until told to stop by SIGTERM or SIGINT.

On a stop signal the pass in flight sends no further request: the batch on the wire is finished (bounded by the
intake's timeouts) and the rows not yet sent are released at once for another worker. A platform such as Heroku
kills a process 30 seconds after SIGTERM, so a watchdog releases whatever is still claimed and exits 0 before
that, even if the intake trickles its answer.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
from types import FrameType

import structlog
from sqlalchemy.exc import SQLAlchemyError

from bridge.config import Config
from bridge.delivery.intake import FileSink, HttpIntake, Intake
from bridge.delivery.sender import Sender, SenderSettings
from bridge.operations.upkeep import Upkeep
from bridge.storage.migrate import database_problem
from bridge.storage.store import StorageUnavailable, Store

log = structlog.get_logger(__name__)

IDLE_POLL_SECONDS = 0.5
# After a pass that found less than a full batch, wait this long so a steady trickle of events goes out as a few
# larger batches a second rather than one pass (a claim transaction, an intake request, a finish transaction) per
# event: each pass takes the SQLite writer lock and CPU from the web processes, and Datadog counts the requests.
BATCH_LINGER_SECONDS = 0.2
STOP_GRACE_SECONDS = 25.0
DATABASE_RETRY_SECONDS = 5.0
# How long a stopping worker waits for an upkeep round in progress (its batches are small; each commits alone).
UPKEEP_STOP_SECONDS = 5.0


def make_intake(config: Config) -> Intake:
    """The real intake when an API key is set, else the local file sink."""
    if config.dd_api_key:
        return HttpIntake(config.intake_base_url, config.dd_api_key)
    return FileSink(config.sink_path)


def sender_settings(config: Config) -> SenderSettings:
    """The sender's settings from the configuration (defaults elsewhere live in :class:`SenderSettings`)."""
    return SenderSettings(batch_size=config.sender_batch_size, lease=dt.timedelta(seconds=config.sender_lease_seconds))


class Worker:
    """Loops over :meth:`Sender.run_once`, sleeping while there is nothing due."""

    def __init__(
        self, sender: Sender, idle_poll: float = IDLE_POLL_SECONDS, stop_grace: float = STOP_GRACE_SECONDS
    ) -> None:
        self.sender = sender
        self.idle_poll = idle_poll
        self.stop_grace = stop_grace
        self.stopping = threading.Event()
        self._watchdog: threading.Timer | None = None

    def stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        if self.stopping.is_set():
            return
        log.info("worker.stopping", signal=signum, worker_id=self.sender.worker_id)
        self.stopping.set()
        self.sender.stopping.set()
        self._watchdog = threading.Timer(self.stop_grace, self._overdue)
        self._watchdog.daemon = True
        self._watchdog.start()

    def run(self) -> None:
        log.info("worker.started", worker_id=self.sender.worker_id)
        try:
            while not self.stopping.is_set():
                try:
                    claimed = self.sender.run_once().claimed
                except (SQLAlchemyError, StorageUnavailable) as exc:
                    # The database restarting is no reason to exit: nothing is lost, leases expire, try again.
                    log.error(
                        "worker.database_error",
                        error_type=type(exc).__name__,
                        reason=database_problem(self.sender.store, exc),
                        worker_id=self.sender.worker_id,
                    )
                    self.stopping.wait(DATABASE_RETRY_SECONDS)
                    continue
                if claimed == 0:
                    self.stopping.wait(self.idle_poll)
                elif claimed < self.sender.settings.batch_size:
                    self.stopping.wait(BATCH_LINGER_SECONDS)
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
        log.info("worker.stopped", worker_id=self.sender.worker_id)

    def _overdue(self) -> None:
        """The batch on the wire outlived the grace period: release it and leave before the platform's SIGKILL."""
        released = self.sender.release_open()
        log.warning("worker.stop_overdue", released=released, worker_id=self.sender.worker_id)
        os._exit(0)


def run_worker(config: Config, settings: SenderSettings | None = None, stop_grace: float = STOP_GRACE_SECONDS) -> None:
    """Entry point of ``pipeline-bridge worker``: install signal handlers and deliver until stopped."""
    store = Store(config.database_url)
    worker = Worker(Sender(store, make_intake(config), settings or sender_settings(config)), stop_grace=stop_grace)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    # Retention, stale runs and backlog warnings (docs/operations.md).
    upkeep = Upkeep(store, config).start(worker.stopping)
    try:
        worker.run()
        # Upkeep stops between batches once told to: let it finish the one in hand and log what it did.
        upkeep.join(UPKEEP_STOP_SECONDS)
    finally:
        store.dispose()
