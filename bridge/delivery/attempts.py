"""Delivery attempts: every request that carried an outbox row to the intake, and what the intake answered.

Operators of webhook gateways expect this audit trail: when each try went, to which endpoint, the status (0 when
no connection was made) and the first characters of the answer. The sender calls :func:`record` once per
request for all the rows the request carried; the console and ListEvents' ``delivery`` read :func:`latest` and
:func:`of_rows`.

Bounded: a row keeps its last :data:`KEEP_PER_ROW` attempts. A row is sent once when the intake accepts it, so
only failed requests can push a row over the bound, and only they prune. Nothing here ever holds the API key:
the intake client strips it from the answer before it gets here, and the endpoint is a URL without credentials.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from sqlalchemy import BigInteger, and_, bindparam, delete, func, insert, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, aliased

from bridge.storage.models import DeliveryAttempt

KEEP_PER_ROW = 20
ANSWER_CHARS = 500

_TABLE = DeliveryAttempt.metadata.tables[DeliveryAttempt.__tablename__]
_INSERT = insert(_TABLE)
# On PostgreSQL one statement for all the rows a request carried, which share every value but the outbox id: as
# one INSERT per row (the driver's executemany) the delivery worker's backend spent a quarter of its time on them.
_IDS = func.unnest(bindparam("outbox_ids", type_=postgresql.ARRAY(BigInteger))).column_valued("outbox_id")
_SHARED = ("attempted_at", "endpoint", "status", "answer")
_INSERT_EACH_ID = insert(_TABLE).from_select(
    ["outbox_id", *_SHARED],
    select(_IDS, *(bindparam(name, type_=_TABLE.c[name].type) for name in _SHARED)),
)


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One try of one outbox row: when, where, the intake's status (0: no connection) and its answer's start."""

    outbox_id: int
    attempted_at: dt.datetime
    endpoint: str
    status: int
    answer: str

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


def record(
    session: Session,
    outbox_ids: Sequence[int],
    attempted_at: dt.datetime,
    endpoint: str,
    status: int,
    answer: str,
) -> None:
    """Store one request's attempt for each row it carried; a failed request also prunes past the bound."""
    if not outbox_ids:
        return
    row = {"attempted_at": attempted_at, "endpoint": endpoint[:300], "status": status, "answer": answer[:ANSWER_CHARS]}
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_INSERT_EACH_ID, {"outbox_ids": list(outbox_ids), **row})
    else:  # SQLite runs in this process: its executemany costs no round trips
        session.connection().execute(_INSERT, [{"outbox_id": outbox_id, **row} for outbox_id in outbox_ids])
    if not 200 <= status < 300:
        _prune(session, outbox_ids)


def _prune(session: Session, outbox_ids: Sequence[int]) -> None:
    """Delete every attempt of these rows older than their newest :data:`KEEP_PER_ROW`."""
    newer = aliased(DeliveryAttempt)
    newer_count = (
        select(func.count())
        .where(newer.outbox_id == DeliveryAttempt.outbox_id, newer.id > DeliveryAttempt.id)
        .scalar_subquery()
    )
    session.execute(
        delete(DeliveryAttempt).where(
            and_(DeliveryAttempt.outbox_id.in_(list(outbox_ids)), newer_count >= KEEP_PER_ROW)
        )
    )


def latest_attempts(session: Session, outbox_ids: Sequence[int]) -> dict[int, Attempt]:
    """The newest attempt of each of these outbox rows, by outbox id; rows never tried are absent.

    One index search per row (``ix_delivery_attempts_outbox``), so a page of rows costs a page of lookups.
    """
    if not outbox_ids:
        return {}
    newest = (
        select(func.max(DeliveryAttempt.id))
        .where(DeliveryAttempt.outbox_id.in_(list(outbox_ids)))
        .group_by(DeliveryAttempt.outbox_id)
    )
    rows = session.scalars(select(DeliveryAttempt).where(DeliveryAttempt.id.in_(newest))).all()
    return {row.outbox_id: _attempt(row) for row in rows}


def of_rows(session: Session, outbox_ids: Sequence[int]) -> list[Attempt]:
    """Every kept attempt of these outbox rows, oldest first."""
    if not outbox_ids:
        return []
    rows = session.scalars(
        select(DeliveryAttempt)
        .where(DeliveryAttempt.outbox_id.in_(list(outbox_ids)))
        .order_by(DeliveryAttempt.attempted_at, DeliveryAttempt.id)
    ).all()
    return [_attempt(row) for row in rows]


def _attempt(row: DeliveryAttempt) -> Attempt:
    return Attempt(row.outbox_id, row.attempted_at, row.endpoint, row.status, row.answer)
