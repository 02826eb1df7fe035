"""X-Forwarded-* are believed only for as many proxies as BRIDGE_PROXY_HOPS says stand in front."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from bridge.config import Config
from bridge.web.app import create_app

# Two proxies: the outer one saw the client 198.51.100.7 over http, the inner one saw the outer one over https.
FORWARDED = {
    "X-Forwarded-For": "198.51.100.7, 203.0.113.9",
    "X-Forwarded-Proto": "http, https",
    "X-Forwarded-Port": "80, 443",
}


def _seen_by_the_app(make_config: Callable[..., Config], hops: str) -> dict[str, str]:
    app: Flask = create_app(make_config(BRIDGE_PROXY_HOPS=hops))

    @app.get("/seen")
    def seen() -> ResponseReturnValue:
        return jsonify(client=request.remote_addr, scheme=request.scheme, host=request.host)

    response = app.test_client().get("/seen", headers={**FORWARDED, "X-Forwarded-Host": "evil.example"})
    assert response.status_code == 200
    body: dict[str, str] = response.get_json()
    return body


@pytest.mark.parametrize(
    ("hops", "client", "scheme"),
    [("0", "127.0.0.1", "http"), ("1", "203.0.113.9", "https"), ("2", "198.51.100.7", "http")],
)
def test_forwarded_headers_are_trusted_only_as_configured(
    make_config: Callable[..., Config], hops: str, client: str, scheme: str
) -> None:
    seen = _seen_by_the_app(make_config, hops)

    assert (seen["client"], seen["scheme"]) == (client, scheme)
    assert seen["host"] == "localhost"
