"""Clients that trickle a body byte by byte must not keep other clients waiting beyond the body deadline."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import requests

from bridge.config import load_config
from bridge.http_worker import BODY_SECONDS as BODY_READ_SECONDS
from bridge.web import gunicorn_options
from tests.reliability.harness import APP, TOKEN, USER, BridgeProcess, bridge_env, create_url, free_port, running_body

DECLARED_BODY_BYTES = 1000  # what each slow client announces; it never sends them all
TRICKLE_SECONDS = 0.5  # one byte per client this often


@contextlib.contextmanager
def trickling_clients(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that send their headers, then one body byte per client every TRICKLE_SECONDS."""
    head = (
        f"PUT /{USER}/apps/{APP}/events/buildEvent?apiToken={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {DECLARED_BODY_BYTES}\r\n\r\n{{"
    ).encode()
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    stop = threading.Event()

    def trickle() -> None:
        for _ in range(DECLARED_BODY_BYTES - 2):
            if stop.wait(TRICKLE_SECONDS):
                return
            for client in sockets:
                with contextlib.suppress(OSError):
                    client.sendall(b" ")

    for client in sockets:
        client.sendall(head)
    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield sockets
    finally:
        stop.set()
        thread.join(timeout=5)
        for client in sockets:
            client.close()


def test_a_build_is_accepted_while_slow_clients_hold_more_connections_than_threads(
    tmp_path: Path, sqlite_url: str
) -> None:
    env = bridge_env(sqlite_url, None, free_port(), WEB_CONCURRENCY="1", BRIDGE_SINK_PATH=str(tmp_path / "sink"))
    options = gunicorn_options(load_config(env))
    with BridgeProcess("serve", env, tmp_path / "bridge.log") as bridge:
        bridge.start()
        with trickling_clients(int(env["PORT"]), options["workers"] * options["threads"] + 2) as slow:
            reply = requests.put(create_url(bridge.base_url), json=running_body(1), timeout=BODY_READ_SECONDS + 5)
            slow[0].settimeout(5)
            slow_answer = slow[0].recv(200)
        assert reply.status_code == 200
        assert slow_answer.startswith(b"HTTP/1.1 408")
