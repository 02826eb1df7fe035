"""/readyz: ready only when the database answers and its schema is current; a paused delivery is shown, not fatal."""

from __future__ import annotations

from collections.abc import Callable

from flask.testing import FlaskClient

from bridge.config import Config
from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.storage.store import Store
from bridge.web.app import create_app
from tests.conftest import TOKEN, USER
from tests.intake_server import IntakeServer

UNREACHABLE_POSTGRES = "postgresql+psycopg://postgres:pw-never-shown@127.0.0.1:1/test"


def test_ready_on_a_migrated_database(client: FlaskClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ready",
        "database": "ok",
        "migrations": "current",
        "delivery": {"paused": False},
    }


def test_not_ready_when_postgresql_does_not_answer(make_config: Callable[..., Config]) -> None:
    client = create_app(make_config(DATABASE_URL=UNREACHABLE_POSTGRES)).test_client()

    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert body["reason"] == "database unavailable: OperationalError"
    assert "pw-never-shown" not in response.get_data(as_text=True)
    assert client.get("/healthz").status_code == 200


def test_not_ready_before_migrations_run(make_config: Callable[..., Config], postgres_url: str) -> None:
    client = create_app(make_config(DATABASE_URL=postgres_url)).test_client()

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.get_json()["migrations"] == "pending"
    assert response.get_json()["reason"].startswith("migrations pending")


def test_a_paused_delivery_is_shown_but_the_bridge_stays_ready(
    client: FlaskClient, store: Store, intake: IntakeServer
) -> None:
    created = client.put(
        f"/{USER}/apps/health-app/events/buildEvent?apiToken={TOKEN}", json={"build_status": "Running"}
    )
    assert created.status_code == 200
    Sender(store, HttpIntake(intake.url, "a-refused-key")).run_once()

    response = client.get("/readyz")

    assert response.status_code == 200
    delivery = response.get_json()["delivery"]
    assert delivery["paused"] is True
    assert delivery["status"] in (401, 403)
    assert delivery["since"]
