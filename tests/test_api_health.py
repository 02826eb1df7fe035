"""GET /healthz: a cheap liveness answer for platform health checkers."""

from __future__ import annotations

from collections.abc import Callable

from flask.testing import FlaskClient

from bridge.config import Config
from bridge.web.app import create_app
from tests.distelli_api import assert_error


def test_healthz_answers_200_json_without_a_token(client: FlaskClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_healthz_answers_even_when_the_database_is_unreachable(make_config: Callable[..., Config]) -> None:
    """Liveness says the process is up; it must not fail (and get the process restarted) over the database."""
    config = make_config(DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere")

    response = create_app(config).test_client().get("/healthz")

    assert response.status_code == 200


def test_healthz_accepts_a_trailing_slash_and_refuses_writes(client: FlaskClient) -> None:
    assert client.get("/healthz/").status_code == 200
    assert_error(client.post("/healthz"), 405, "method_not_allowed")
