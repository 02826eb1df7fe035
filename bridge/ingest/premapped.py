"""A new event mapped before its write, on a stand-in for the id the write will give it.

On SQLite every write waits for the one writer, so whatever a create does inside its write, every other create
waits for. Mapping the event needs its id (the run's uuids and the event's URL come from it), and only the
INSERT inside the write gives that. So the mapping runs before the write on a stand-in: a random number above any
id the table will reach (:data:`STAND_IN_FLOOR`), which never leaves this process. Its context records every run
uuid derived from parts that hold the stand-in. Inside the write, once the INSERT has given the real id, the
stand-in's digits and each uuid derived from it are replaced by the real ones in the outbox rows, already
converted to what the driver takes, and the rows are inserted as they are. No other text can be replaced by
mistake: the 19 digits of the stand-in or a uuid5 of it turn up in a body by chance with odds under 2^-60, and
nobody outside this process can know them to send them.

This holds for a mapping that derives everything it takes from the id through the id's text or through
``context.run_uuid`` over parts that include it, as the Distelli mapping (adapters/distelli.py) does:
tests/test_premapped.py maps events both ways and compares.
"""

from __future__ import annotations

import dataclasses
import secrets

from sqlalchemy.engine import Dialect

from adapters.base import MappingContext
from bridge.config import Config
from bridge.ingest.ingest import Translate, mapping_facts
from bridge.storage.models import Event, EventInsert
from bridge.storage.outbox import Enqueue
from bridge.storage.prepared import Executor

STAND_IN_FLOOR = 1 << 62  # ids start at 1 and grow by one a row: no table reaches this


@dataclasses.dataclass(frozen=True)
class _StandInContext(MappingContext):
    """The request's mapping context, which remembers the run uuids it derived from the stand-in id."""

    stand_in: int = 0
    derived: dict[str, tuple[object, ...]] = dataclasses.field(default_factory=dict)

    def run_uuid(self, *parts: object) -> str:
        derived = super().run_uuid(*parts)
        if self.stand_in in parts:
            self.derived[derived] = parts
        return derived


class Premapped:
    """A new event's INSERT and its outbox rows, built and converted before the write; :meth:`write` runs both in
    the write's transaction and returns how many bodies it queued."""

    def __init__(self, dialect: Dialect, config: Config, event: Event, translate: Translate) -> None:
        self._insert = EventInsert(dialect, event)
        self._stand_in = STAND_IN_FLOOR + secrets.randbits(61)
        context = _StandInContext(**mapping_facts(config, event.event_time), stand_in=self._stand_in)
        event.id = self._stand_in
        try:
            outbounds = translate(event, context)
        finally:
            event.id = None  # type: ignore[assignment]
        self._context = context
        self._rows = Enqueue(dialect, self._stand_in, outbounds, event.event_time)

    def write(self, on: Executor) -> int:
        event_id = self._insert.run(on)
        return self._rows.run(on, event_id, self._texts(event_id))

    def _texts(self, event_id: int) -> list[tuple[str, str]]:
        """Each text the stand-in gave the rows (its digits, the run uuids derived from it) and the real one."""
        stand_in, context = self._stand_in, self._context
        texts = [(str(stand_in), str(event_id))]
        for derived, parts in context.derived.items():
            real = MappingContext.run_uuid(context, *(event_id if part == stand_in else part for part in parts))
            texts.append((derived, real))
        return texts
