"""What the sender and worker tests share: valid intake bodies in the outbox, polling, and a real worker process.

Rows are put in the outbox the way the web process does (``outbox.enqueue`` in the event's transaction), with
bodies the strict intake accepts, so a test can fill thousands without going through the Events API.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from adapters.base import CI_PIPELINE, Outbound, pipeline_request, rfc3339
from bridge.delivery.sender import PassResult, Sender
from bridge.storage import outbox
from bridge.storage.models import Event, OutboxItem
from bridge.storage.store import Store

DD_API_KEY = "test-dd-api-key"


def pipeline_outbound(
    unique_id: str | None = None,
    status: str = "success",
    end: dt.datetime | None = None,
    padding: int = 0,
) -> Outbound:
    """A pipeline event the intake accepts; ``status="running"`` makes a running one, ``padding`` a big one."""
    now = dt.datetime.now(dt.UTC)
    unique_id = unique_id or str(uuid.uuid4())
    end = end or now
    resource: dict[str, Any] = {
        "level": "pipeline",
        "unique_id": unique_id,
        "name": "example-node",
        "url": f"https://ci.example.com/runs/{unique_id}",
        "start": rfc3339(end - dt.timedelta(minutes=3)),
        "status": status,
        "partial_retry": False,
        "git": {"repository_url": "https://github.com/jdoe/example-node", "sha": "a" * 40, "author_email": "j@x.io"},
    }
    if status != "running":
        resource["end"] = rfc3339(end)
    if padding:
        resource["parameters"] = {"padding": "x" * padding}
    final = status != "running"
    return Outbound(
        CI_PIPELINE, unique_id, "pipeline", final, pipeline_request(resource, "jenkins"), end if final else None
    )


def add_event(store: Store, outbounds: list[Outbound]) -> int:
    """Store one event and its outbox rows in one transaction, as the Events API does; returns the event id."""
    now = dt.datetime.now(dt.UTC)
    with store.transaction() as session:
        event = Event(
            source="distelli",
            username="jdoe",
            app_name="example-node",
            event_type="build",
            fields={},
            state={},
            raw_body="{}",
            event_time=now,
            updated_at=now,
        )
        session.add(event)
        session.flush()
        outbox.enqueue(session, event.id, outbounds, now)
        return event.id


def fill(store: Store, count: int, **kwargs: Any) -> list[str]:
    """``count`` finished pipeline events in the outbox; returns their unique_ids in order."""
    outbounds = [pipeline_outbound(**kwargs) for _ in range(count)]
    add_event(store, outbounds)
    return [outbound.unique_id for outbound in outbounds]


def rows(store: Store) -> list[OutboxItem]:
    with store.transaction() as session:
        return list(session.scalars(select(OutboxItem).order_by(OutboxItem.id)))


def states(store: Store) -> dict[str, int]:
    with store.transaction() as session:
        return outbox.counts_by_state(session)


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout} s")
        time.sleep(every)


def deliver_all(sender: Sender, store: Store, timeout: float = 20.0) -> list[PassResult]:
    """Run passes until nothing is pending (retries wait their turn); returns what each pass did."""
    results: list[PassResult] = []

    def done() -> bool:
        results.append(sender.run_once())
        return states(store).get(outbox.PENDING, 0) == 0

    wait_until(done, timeout, every=0.02)
    return results


def accepted_ids(intake: Any) -> list[str]:
    return [resource["unique_id"] for resource in intake.accepted_resources()]


def start_worker(
    database_url: str, intake_url: str, log_path: Path, command: list[str] | None = None, **env: str
) -> subprocess.Popen[bytes]:
    """``python -m bridge worker`` configured only through its environment, as an operator runs it."""
    environ = {name: value for name, value in os.environ.items() if not name.startswith(("DD_", "BRIDGE_"))}
    environ.update(
        {
            "DATABASE_URL": database_url,
            "DD_API_KEY": DD_API_KEY,
            "DD_INTAKE_URL": intake_url,
            "LOG_LEVEL": "INFO",
            **env,
        }
    )
    with log_path.open("ab") as log:
        arguments = command or ["-m", "bridge", "worker"]
        return subprocess.Popen([sys.executable, *arguments], env=environ, stdout=log, stderr=log)


def sent_by(log_path: Path) -> int:
    """Events a worker process reports it delivered, from its JSON log lines."""
    total = 0
    for line in log_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == "delivery.sent":
            total += int(entry["count"])
    return total
