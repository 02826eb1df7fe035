"""The Distelli Events API as a legacy CI script calls it, for the tests/test_api_*.py modules.

A thin wrapper over Flask's test client that builds the spec's URLs, plus the checks every API test shares: the
one JSON error shape, the spec's sample bodies on disk, and a dump of every stored row (to look for secrets).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from bridge.storage.models import Base, Event
from bridge.storage.store import Store
from tests.conftest import TOKEN, USER

SAMPLES = Path(__file__).parent / "samples" / "distelli"
APP = "example-node"
CREATE_PATHS = ("buildEvent", "pushEvent", "pullRequestEvent", "deployEvent")
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# For checks that end before the database is touched (query and body validation): SQLite alone is enough there,
# and each PostgreSQL test pays for a fresh schema.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def sample(name: str) -> dict[str, Any]:
    """A body from tests/samples/distelli, parsed."""
    loaded: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    return loaded


def sample_bytes(name: str) -> bytes:
    """A body from tests/samples/distelli exactly as curl's ``-d`` sends it."""
    return (SAMPLES / name).read_bytes().strip()


class DistelliApi:
    """Calls the bridge the way the spec's curl examples do: path per user and app, ``apiToken`` in the query."""

    def __init__(self, client: FlaskClient, user: str = USER, token: str | None = TOKEN, app: str = APP) -> None:
        self.client = client
        self.user = user
        self.token = token
        self.app = app

    def as_user(self, user: str, token: str | None, app: str | None = None) -> DistelliApi:
        return DistelliApi(self.client, user, token, app or self.app)

    def for_app(self, app: str) -> DistelliApi:
        return DistelliApi(self.client, self.user, self.token, app)

    def url(self, suffix: str = "", **query: Any) -> str:
        params = {"apiToken": self.token} if self.token is not None else {}
        params.update({key: value for key, value in query.items() if value is not None})
        path = f"/{self.user}/apps/{self.app}/events{suffix}"
        return f"{path}?{urlencode(params)}" if params else path

    def create(self, kind: str, body: Any, **kwargs: Any) -> TestResponse:
        """PUT .../events/<kind>; a dict or list is sent as JSON, bytes as they are."""
        if isinstance(body, bytes | str):
            kwargs.setdefault("content_type", "application/json")
            return self.client.put(self.url(f"/{kind}"), data=body, **kwargs)
        return self.client.put(self.url(f"/{kind}"), json=body, **kwargs)

    def create_id(self, kind: str, body: Any) -> str:
        """Create an event that must be accepted and return its id."""
        response = self.create(kind, body)
        assert response.status_code == 200, response.get_json()
        event_id: str = response.get_json()["event_id"]
        return event_id

    def update(self, event_id: str, body: Any, **kwargs: Any) -> TestResponse:
        if isinstance(body, bytes | str):
            kwargs.setdefault("content_type", "application/json")
            return self.client.post(self.url(f"/{event_id}"), data=body, **kwargs)
        return self.client.post(self.url(f"/{event_id}"), json=body, **kwargs)

    def list(self, **query: Any) -> TestResponse:
        return self.client.get(self.url(**query))

    def events(self, **query: Any) -> list[dict[str, Any]]:
        """One page of ListEvents, which must succeed."""
        response = self.list(**query)
        assert response.status_code == 200, response.get_json()
        events: list[dict[str, Any]] = response.get_json()["events"]
        return events

    def event(self, event_id: str) -> dict[str, Any]:
        """One event as ListEvents shows it."""
        matches = [event for event in self.events(max_results=100) if str(event["event_id"]) == event_id]
        assert len(matches) == 1, f"event {event_id} not listed"
        return matches[0]

    def walk(self, marker: str | None = None, **query: Any) -> list[dict[str, Any]]:
        """Every page of ListEvents from ``marker`` on, following markers; each page but the last carries one."""
        pages = []
        while True:
            response = self.list(marker=marker, **query)
            assert response.status_code == 200, response.get_json()
            page = response.get_json()
            pages.append(page)
            if pages[:-1]:
                assert page["events"], "a marker led to an empty page: markers must stop at the last page"
            marker = page.get("marker")
            if marker is None:
                return pages
            assert len(pages) < 1000, "markers never end"


def assert_error(response: TestResponse, status: int, code: str | None = None) -> dict[str, Any]:
    """The one JSON error shape, with the status and code expected; returns the ``error`` object."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) <= {"code", "message", "fields"}
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.get_data(as_text=True)
    if code is not None:
        assert error["code"] == code, error
    return error


def stored_rows(store: Store) -> list[dict[str, Any]]:
    """Every row of every bridge table, as dicts: what a database dump would show."""
    rows = []
    with store.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows.extend({"table": table.name, **row._asdict()} for row in connection.execute(select(table)))
    return rows


def stored_events(store: Store) -> list[Event]:
    with store.transaction() as session:
        return list(session.scalars(select(Event).order_by(Event.id)))
