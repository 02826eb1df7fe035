"""The one ingest path: store a source's event and enqueue its translation, in the caller's transaction.

Distelli events (:mod:`bridge.ingest.distelli_ingest`) and webhooks (:mod:`bridge.ingest.hooks`) both end here,
so an accepted event and what it maps to always commit together whatever the source. A Distelli create on SQLite
takes the same two steps with its mapping made before the write (:mod:`bridge.ingest.premapped`). The refusals the
write paths raise are domain errors without HTTP statuses; the routes map them (:mod:`bridge.web.routes.ingest_errors`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import inspect

from adapters.base import MappingContext, Outbound
from bridge.config import Config
from bridge.storage import outbox
from bridge.storage.models import Event, EventInsert
from bridge.storage.prepared import Executor, dialect_of

# How a source maps a stored event: given the event (with its id) and the installation's mapping context.
Translate = Callable[[Event, MappingContext], Sequence[Outbound]]


class IngestError(Exception):
    """A request the write path refuses, with per-field messages; nothing it did is committed."""

    def __init__(self, message: str, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = dict(fields) if fields else None


class UnknownEvent(IngestError):
    """The event to change does not exist where the request looked for it."""


class FinishedEvent(IngestError):
    """The event is final and can no longer change."""


class InvalidRecord(IngestError):
    """The values cannot be stored, or contradict what is stored."""


def mapping_context(config: Config, received_at: dt.datetime) -> MappingContext:
    """The installation-wide facts every adapter's mapping may use, at this request's receipt time."""
    return MappingContext(**mapping_facts(config, received_at))


def mapping_facts(config: Config, received_at: dt.datetime) -> dict[str, Any]:
    """:func:`mapping_context`'s fields by name, for a context of another kind (bridge/ingest/premapped.py)."""
    return {
        "installation_id": config.installation_id,
        "public_url": config.public_url,
        "received_at": received_at,
        "author_emails": config.author_emails,
        "author_email_template": config.author_email_template,
        "service_names": config.service_names,
    }


def ingest(
    on: Executor,
    config: Config,
    event: Event,
    translate: Translate,
    received_at: dt.datetime,
    insert: EventInsert | None = None,
) -> int:
    """Store ``event`` and enqueue what ``translate`` maps it to; returns how many bodies were queued.

    A new event (one no session holds) is inserted first, so the mapping can derive ids from it, with prepared
    statements that run on a session or on a bare driver connection (``on``): by ``insert`` when the caller
    converted its values before the write began. An event loaded in a session was changed in place and is written
    by that session's commit. A new event given again, because its group's transaction was rolled back and run
    again (:mod:`bridge.storage.groupcommit`), is inserted again.
    """
    if inspect(event).transient:
        (insert or EventInsert(dialect_of(on), event)).run(on)
    outbounds = translate(event, mapping_context(config, received_at))
    outbox.enqueue(on, event.id, outbounds, received_at)
    return len(outbounds)
