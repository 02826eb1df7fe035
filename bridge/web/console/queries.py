"""What the console's pages read, each an index search or a bounded range, however large the store grows.

Lists page by keyset (``before`` an id, or after an (user, app) pair), never by OFFSET, so page 1000 costs what
page 1 costs. Counts read time ranges through ``ix_events_time`` and ``ix_outbox_delivered`` or the small sets
of pending and dead rows, never the whole history (``bench/bench_console.py`` checks the plans and the times).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, text
from sqlalchemy.orm import Session

from adapters.base import INTAKE_WINDOW
from bridge.delivery import attempts, delivery_gate
from bridge.storage import outbox
from bridge.storage.models import Event, OutboxItem
from bridge.web.console.chart import epoch_minute

PAGE = 50
APPS_PAGE = 25
CHART_MINUTES = 24 * 60
AT_RISK_AGE = dt.timedelta(hours=12)
SEARCH_LIMIT = 50


@dataclasses.dataclass(frozen=True)
class Overview:
    accepted_hour: int
    accepted_day: int
    delivered_hour: int
    delivered_day: int
    counts: dict[str, int]
    retrying: int
    oldest_pending_age: dt.timedelta | None
    pause: delivery_gate.Pause | None
    holds: list[delivery_gate.Hold]
    accepted_per_minute: dict[int, int]
    delivered_per_minute: dict[int, int]

    @property
    def window(self) -> dt.timedelta:
        return INTAKE_WINDOW

    @property
    def at_risk(self) -> bool:
        return self.oldest_pending_age is not None and self.oldest_pending_age >= AT_RISK_AGE


class MinuteCounts:
    """Rows per minute of one time column over the last 24 h, remembering the minutes that are over.

    Both columns are stamped with the writer's clock when the row is written (received, delivered), so a minute
    that has passed no longer changes: each refresh of an open console reads only the last few minutes, not
    the day (33,000 index entries a refresh at 1,000,000 events a month). :data:`SETTLED_AFTER` minutes of grace
    cover a transaction that commits a little after its stamp. One per process and column (in app.extensions).
    """

    SETTLED_AFTER = 2

    def __init__(self, column: Any) -> None:
        self.column = column
        self._settled: dict[int, int] = {}
        self._settled_until: int | None = None  # the first minute not yet settled
        self._lock = threading.Lock()

    def read(self, session: Session, now: dt.datetime) -> dict[int, int]:
        current = epoch_minute(now)
        first = current - CHART_MINUTES + 1
        with self._lock:
            start = first if self._settled_until is None else max(first, self._settled_until)
        fresh = _per_minute(session, self.column, dt.datetime.fromtimestamp(start * 60, dt.UTC))
        settled_until = current - self.SETTLED_AFTER + 1
        with self._lock:
            self._settled = {minute: count for minute, count in self._settled.items() if minute >= first}
            self._settled.update({minute: count for minute, count in fresh.items() if minute < settled_until})
            self._settled_until = max(settled_until, start)
            return {**self._settled, **{minute: count for minute, count in fresh.items() if minute >= settled_until}}


def overview(
    session: Session, now: dt.datetime, accepted_minutes: MinuteCounts, delivered_minutes: MinuteCounts
) -> Overview:
    """The overview's figures; the hour and day totals are sums of the per-minute counts the chart reads anyway."""
    counts = {
        state: _count(session, OutboxItem.state == state) for state in (outbox.PENDING, outbox.DEAD, outbox.EXPIRED)
    }
    oldest = outbox.oldest_pending_queued_at(session)
    pause, holds = delivery_gate.current(session)
    accepted = accepted_minutes.read(session, now)
    delivered = delivered_minutes.read(session, now)
    hour = epoch_minute(now) - 59
    return Overview(
        accepted_hour=sum(count for minute, count in accepted.items() if minute >= hour),
        accepted_day=sum(accepted.values()),
        delivered_hour=sum(count for minute, count in delivered.items() if minute >= hour),
        delivered_day=sum(delivered.values()),
        counts=counts,
        # A pending row due later is waiting out a retry's backoff (fresh rows are due at once): an index range.
        retrying=_count(session, and_(OutboxItem.state == outbox.PENDING, OutboxItem.next_attempt_at > now)),
        oldest_pending_age=None if oldest is None else now - oldest,
        pause=pause,
        holds=holds,
        accepted_per_minute=accepted,
        delivered_per_minute=delivered,
    )


def _count(session: Session, where: ColumnElement[bool]) -> int:
    return int(session.scalar(select(func.count()).select_from(OutboxItem).where(where)) or 0)


def _per_minute(session: Session, column: Any, since: dt.datetime) -> dict[int, int]:
    """Rows per minute since the Unix epoch (UTC), grouped by the database over the range of a time index.

    On SQLite the stored text's first 16 characters are the minute: cutting them costs a tenth of strftime.
    """
    where = column >= since
    if session.get_bind().dialect.name == "postgresql":
        minute: Any = func.floor(func.extract("epoch", column) / 60)
        rows = session.execute(select(minute, func.count()).where(where).group_by(minute)).all()
        return {int(bucket): int(count) for bucket, count in rows}
    text_minute = func.substr(column, 1, 16)
    rows = session.execute(select(text_minute, func.count()).where(where).group_by(text_minute)).all()
    return {
        epoch_minute(dt.datetime.fromisoformat(bucket).replace(tzinfo=dt.UTC)): int(count) for bucket, count in rows
    }


@dataclasses.dataclass(frozen=True)
class AppRow:
    username: str
    app_name: str
    source: str
    last_event: Event
    states_day: dict[str, int]


# The apps page walks the distinct (user, app) pairs of ix_events_app by skip-scan: each step is one index seek
# (the next app of the same user, else the first app of the next user). Prebuilt text statements, because
# building 75 ORM statements cost more than the database spent on them.
_NEXT_APP_OF_USER = text("SELECT min(app_name) FROM events WHERE username = :username AND app_name > :app_name")
_NEXT_USER = text("SELECT min(username) FROM events WHERE username > :username")
_FIRST_APP = text("SELECT min(app_name) FROM events WHERE username = :username")
_LAST_EVENT = text("SELECT max(id) FROM events WHERE username = :username AND app_name = :app_name")
_STATES_SINCE = text(
    "SELECT o.state, count(*) FROM events e JOIN outbox o ON o.event_id = e.id"
    " WHERE e.username = :username AND e.app_name = :app_name AND e.id >= :first GROUP BY o.state"
)


def apps(
    session: Session, now: dt.datetime, after: tuple[str, str] | None
) -> tuple[list[AppRow], tuple[str, str] | None]:
    """One page of apps and sources in (user, app) order, and the next page's key; each app costs index seeks."""
    connection = session.connection()
    keys: list[tuple[str, str]] = []
    username, app_name = after or ("", "")
    while len(keys) <= APPS_PAGE:
        following = connection.execute(_NEXT_APP_OF_USER, {"username": username, "app_name": app_name}).scalar()
        if following is None:
            next_user = connection.execute(_NEXT_USER, {"username": username}).scalar()
            if next_user is None:
                break
            username = next_user
            following = connection.execute(_FIRST_APP, {"username": username}).scalar()
        app_name = str(following)
        keys.append((username, app_name))
    more = len(keys) > APPS_PAGE
    keys = keys[:APPS_PAGE]
    first_today = _first_event_id_since(session, now - dt.timedelta(days=1))
    last_ids: list[int] = []
    states: list[dict[str, int]] = []
    for username, app_name in keys:
        names = {"username": username, "app_name": app_name}
        last_ids.append(int(connection.execute(_LAST_EVENT, names).scalar_one()))
        counted = connection.execute(_STATES_SINCE, {**names, "first": first_today}).all() if first_today else []
        states.append({str(state): int(count) for state, count in counted})
    last = {e.id: e for e in session.scalars(select(Event).where(Event.id.in_(last_ids)))}
    rows = [
        AppRow(username, app_name, last[last_id].source, last[last_id], counts)
        for (username, app_name), last_id, counts in zip(keys, last_ids, states, strict=True)
    ]
    return rows, (keys[-1] if more else None)


def _first_event_id_since(session: Session, since: dt.datetime) -> int | None:
    """The first event received at or after ``since``, found on ``ix_events_time`` (ids grow with time)."""
    return session.scalar(
        select(Event.id).where(Event.event_time >= since).order_by(Event.event_time, Event.id).limit(1)
    )


def app_events(
    session: Session, username: str, app_name: str, before: int | None
) -> tuple[list[Event], dict[int, dict[str, object]], int | None]:
    """One page of an app's events, newest first, with each one's delivery state, and the next page's key."""
    statement = select(Event).where(Event.username == username, Event.app_name == app_name)
    if before is not None:
        statement = statement.where(Event.id < before)
    events = list(session.scalars(statement.order_by(Event.id.desc()).limit(PAGE + 1)))
    more = len(events) > PAGE
    events = events[:PAGE]
    summary = outbox.delivery_summary(session, [event.id for event in events])
    return events, summary, (events[-1].id if more else None)


@dataclasses.dataclass(frozen=True)
class Translated:
    """One outbox row of an event, with its kept attempts (oldest first) or only its latest."""

    row: OutboxItem
    attempts: list[attempts.Attempt]


def translated(session: Session, event_ids: Sequence[int], every_attempt: bool) -> list[Translated]:
    rows = list(
        session.scalars(select(OutboxItem).where(OutboxItem.event_id.in_(list(event_ids))).order_by(OutboxItem.id))
    )
    ids = [row.id for row in rows]
    if every_attempt:
        tried = attempts.of_rows(session, ids)
        return [Translated(row, [a for a in tried if a.outbox_id == row.id]) for row in rows]
    latest = attempts.latest_attempts(session, ids)
    return [Translated(row, [latest[row.id]] if row.id in latest else []) for row in rows]


def event(session: Session, event_id: int) -> Event | None:
    return session.get(Event, event_id)


def run_events(session: Session, event: Event) -> list[Event]:
    """The events of one build or run: a Distelli build is one event, a webhook run all those of its run key."""
    if not event.run_key:
        return [event]
    return list(
        session.scalars(
            select(Event).where(Event.source == event.source, Event.run_key == event.run_key).order_by(Event.id)
        )
    )


def dead_letters(session: Session, before: int | None) -> tuple[list[tuple[OutboxItem, Event]], int | None]:
    """One page of dead letters, newest first, with their events."""
    statement = (
        select(OutboxItem, Event).join(Event, Event.id == OutboxItem.event_id).where(OutboxItem.state == outbox.DEAD)
    )
    if before is not None:
        statement = statement.where(OutboxItem.id < before)
    rows = [(row, event) for row, event in session.execute(statement.order_by(OutboxItem.id.desc()).limit(PAGE + 1))]
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    return rows, (rows[-1][0].id if more else None)


@dataclasses.dataclass(frozen=True)
class SearchResult:
    events: list[Event]
    apps: list[tuple[str, str]]


def search(session: Session, query: str) -> SearchResult:
    """Events by id (the build id the Distelli API hands out), commit sha or its prefix, or unique_id; apps by
    name or ``user/app``. Each branch is an index search, bounded to :data:`SEARCH_LIMIT` results."""
    query = query.strip()
    if not query:
        return SearchResult([], [])
    found: dict[int, Event] = {}
    if query.isascii() and query.isdigit() and len(query) <= 18:
        hit = session.get(Event, int(query))
        if hit is not None:
            found[hit.id] = hit
    if 4 <= len(query) <= 200:
        prefix = query.lower()
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        by_commit = select(Event).where(Event.commit_id >= prefix, Event.commit_id < upper)
        for hit in session.scalars(by_commit.order_by(Event.commit_id, Event.id).limit(SEARCH_LIMIT)):
            found.setdefault(hit.id, hit)
        by_run = select(OutboxItem.event_id).where(OutboxItem.unique_id == query).limit(SEARCH_LIMIT)
        for hit in session.scalars(select(Event).where(Event.id.in_(by_run))):
            found.setdefault(hit.id, hit)
    return SearchResult(sorted(found.values(), key=lambda e: -e.id)[:SEARCH_LIMIT], _apps_named(session, query))


def _apps_named(session: Session, query: str) -> list[tuple[str, str]]:
    """Apps called ``query`` (or the one ``user/app``), walking the few distinct users by index seeks."""
    user, slash, app_name = query.partition("/")
    users = [user] if slash else _users(session)
    name = app_name if slash else query
    found = []
    for username in users:
        exists = session.scalar(
            select(Event.id).where(Event.username == username, Event.app_name == name).order_by(Event.id).limit(1)
        )
        if exists is not None:
            found.append((username, name))
    return found


def _users(session: Session, limit: int = 500) -> list[str]:
    users: list[str] = []
    while len(users) < limit:
        statement = select(Event.username).order_by(Event.username).limit(1)
        if users:
            statement = statement.where(Event.username > users[-1])
        username = session.scalar(statement)
        if username is None:
            break
        users.append(username)
    return users


@dataclasses.dataclass(frozen=True)
class Lifecycle:
    """A build or run as Datadog will see it: status, queued/started/ended, durations and git facts."""

    status: str | None
    queued_at: dt.datetime | None
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    git: dict[str, Any]

    @property
    def queue_duration(self) -> dt.timedelta | None:
        return _between(self.queued_at, self.started_at)

    @property
    def run_duration(self) -> dt.timedelta | None:
        return _between(self.started_at, self.ended_at)


def lifecycle(run: Sequence[Event], rows: Sequence[Translated]) -> Lifecycle:
    """From the newest pipeline-level body (the same shape for every source), else from the Distelli fields.

    The queue start is the bridge's own record (a Distelli ``Waiting``/``Queued``), else the run's first event.
    """
    newest = run[-1]
    pipelines = [t.row.body for t in rows if t.row.level == "pipeline" and t.row.kind == "ci_pipeline"]
    queued = _parse(newest.state.get("queued_at")) if newest.state else None
    if pipelines:
        resource = pipelines[-1].get("data", {}).get("attributes", {}).get("resource", {})
        started, ended = _parse(resource.get("start")), _parse(resource.get("end"))
        if queued is None and resource.get("queue_time") and started is not None:
            queued = started - dt.timedelta(milliseconds=int(resource["queue_time"]))
        git = {key: value for key, value in (resource.get("git") or {}).items() if key != "author_email"}
        return Lifecycle(resource.get("status"), queued, started, ended, git)
    fields = newest.fields or {}
    git = {
        key: fields[key] for key in ("commit_id", "branch", "repo_url", "commit_msg", "author_name") if fields.get(key)
    }
    started = _parse((newest.state or {}).get("started_at") or fields.get("build_start"))
    return Lifecycle(
        newest.status,
        queued or (run[0].event_time if len(run) > 1 else None),
        started,
        _parse(fields.get("build_end")),
        git,
    )


def _parse(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _between(start: dt.datetime | None, end: dt.datetime | None) -> dt.timedelta | None:
    return end - start if start is not None and end is not None and end >= start else None
