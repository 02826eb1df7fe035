"""No client, however slow, stalls the bridge: real sockets against ``pipeline-bridge serve`` (2 web processes).

Before bridge/web/http_worker.py, eight connections trickling header lines held every gunicorn thread (``/healthz``
waited over 90 s) and idle connections held one each for 5 s. The full 500/200/500 scenario and its p99 are
measured by ``bench/bench_slow_clients.py``; here a smaller crowd, still many times the 8 threads, must not delay a
normal request, and each kind of slow connection must be ended on time, with a 408 in the JSON error shape where
a request had begun. gunicorn's own refusals (request line, header limits, framing) answer in that shape too.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bridge.config import load_config
from bridge.web.http_worker import BODY_SECONDS, HEAD_SECONDS
from bridge.web.server import gunicorn_options
from tests.reliability.harness import (
    APP,
    CONSOLE_SCRIPT,
    TOKEN,
    USER,
    BridgeProcess,
    bridge_env,
    create_url,
    free_port,
    running_body,
)
from tests.reliability.slow_load import slow_clients, wait_until_open

KEEPALIVE_SECONDS = float(gunicorn_options(load_config({"BRIDGE_TOKENS": f"{USER}:{TOKEN}"}))["keepalive"])
SWEEP_SLACK = 3.0  # the worker looks at deadlines every 0.25 s; a loaded 2-core machine adds scheduling delay
CREATE = f"/{USER}/apps/{APP}/events/buildEvent?apiToken={TOKEN}"


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    directory = tmp_path_factory.mktemp("slow-clients")
    env = bridge_env(
        f"sqlite:///{directory / 'bridge.db'}", None, free_port(), BRIDGE_SINK_PATH=str(directory / "sink")
    )
    with BridgeProcess("serve", env, directory / "bridge.log") as process:
        process.start(ready_timeout=60)
        yield process


def exchange(bridge: BridgeProcess, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", int(bridge.env["PORT"])), timeout=timeout) as client:
        client.sendall(data)
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def split_answer(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_normal_requests_answer_while_slow_and_idle_clients_hold_many_times_the_threads(
    bridge: BridgeProcess,
) -> None:
    options = gunicorn_options(load_config(bridge.env))
    threads = options["workers"] * options["threads"]
    head, body, idle = 10 * threads, 5 * threads, 10 * threads
    with slow_clients(int(bridge.env["PORT"]), head, body, idle) as load:
        assert wait_until_open(load, head + body + idle, timeout=30)
        latencies = []
        for number in range(20):
            started = time.monotonic()
            reply = requests.put(create_url(bridge.base_url), json=running_body(number), timeout=30)
            latencies.append(time.monotonic() - started)
            assert reply.status_code == 200, reply.text
            assert requests.get(bridge.base_url + "/healthz", timeout=30).status_code == 200

    # Before the fix these waited for the slow clients: tens of seconds. Generous for a loaded machine, far
    # below what a held thread costs (the 10 s deadlines).
    assert max(latencies) < 5.0, latencies


def test_each_slow_connection_is_ended_on_time_with_a_408_json_where_a_request_had_begun(
    bridge: BridgeProcess,
) -> None:
    with slow_clients(int(bridge.env["PORT"]), head=3, body=3, idle=3, trickle_seconds=1.0) as load:
        deadline = time.monotonic() + HEAD_SECONDS + KEEPALIVE_SECONDS + 3 * SWEEP_SLACK
        while time.monotonic() < deadline and not all(load.ended(kind) for kind in ("head", "body", "idle")):
            time.sleep(0.2)

    for kind, seconds in (("head", HEAD_SECONDS), ("body", BODY_SECONDS)):
        endings = load.ended(kind)
        assert endings, f"no {kind} trickler was closed"
        for ending in endings:
            status, headers, answer = split_answer(ending.answer)
            assert status == 408
            assert headers["content-type"] == "application/json"
            assert headers["connection"] == "close"
            assert json.loads(answer)["error"] == {
                "code": "request_timeout",
                "message": f"The request {kind} did not arrive within {seconds:g} s.",
            }
            assert seconds - 0.5 <= ending.seconds_open <= seconds + SWEEP_SLACK
    idle = load.ended("idle")
    assert idle, "no idle keep-alive connection was closed"
    for ending in idle:
        assert ending.answer == b""  # nothing was asked on it, so nothing is answered
        assert KEEPALIVE_SECONDS - 0.5 <= ending.seconds_open <= KEEPALIVE_SECONDS + SWEEP_SLACK


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(bridge: BridgeProcess) -> None:
    started = time.monotonic()

    assert exchange(bridge, b"", timeout=HEAD_SECONDS + 2 * SWEEP_SLACK) == b""
    assert HEAD_SECONDS - 0.5 <= time.monotonic() - started <= HEAD_SECONDS + SWEEP_SLACK


HOST = b"Host: 127.0.0.1\r\n"
PUT = f"PUT {CREATE} HTTP/1.1\r\n".encode() + HOST


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GARBAGE\r\n\r\n", 400, "invalid_request_line"),
        (b"GET /healthz HTTP/3.7\r\n" + HOST + b"\r\n", 400, "invalid_http_version"),
        (b"G\x01T /healthz HTTP/1.1\r\n" + HOST + b"\r\n", 400, "invalid_method"),
        (f"GET /healthz?apiToken={TOKEN}&q={'a' * 5000} HTTP/1.1\r\n".encode() + HOST + b"\r\n", 414, "uri_too_long"),
        (
            b"GET /healthz HTTP/1.1\r\n" + HOST + b"".join(b"X-N%d: 1\r\n" % n for n in range(120)) + b"\r\n",
            431,
            "header_fields_too_large",
        ),
        (b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n", 431, "header_fields_too_large"),
        (b"GET /healthz HTTP/1.1\r\n" + HOST + b"NoColon\r\n\r\n", 400, "invalid_header"),
        (PUT + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, "invalid_header"),
        (PUT + b"Content-Length: 1x\r\n\r\n{}", 400, "invalid_header"),
        (PUT + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}", 400, "invalid_header"),
        (PUT + b"Transfer-Encoding: br\r\n\r\n", 501, "unsupported_transfer_coding"),
        (PUT + b"Expect: 200-ok\r\nContent-Length: 2\r\n\r\n{}", 417, "expectation_failed"),
        (PUT + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400, "invalid_chunked_body"),
        (PUT + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n", 400, "invalid_chunked_body"),
        (
            PUT + b"Transfer-Encoding: chunked\r\n\r\n" + b"100000\r\n" + b" " * 0x100000 + b"\r\n1\r\n \r\n0\r\n\r\n",
            413,
            "payload_too_large",
        ),
    ],
    ids=[
        "request-line",
        "http-version",
        "method",
        "long-url",
        "too-many-headers",
        "header-too-large",
        "header-without-colon",
        "two-content-lengths",
        "bad-content-length",
        "length-and-chunked",
        "unknown-transfer-coding",
        "unknown-expectation",
        "bad-chunk-size",
        "chunk-without-terminator",
        "chunked-over-1-MiB",
    ],
)
def test_what_gunicorn_refuses_is_answered_in_the_json_error_shape(
    bridge: BridgeProcess, request_bytes: bytes, status: int, code: str
) -> None:
    answer = exchange(bridge, request_bytes)

    got_status, headers, body = split_answer(answer)
    assert got_status == status
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == code
    assert error["message"].endswith(".")
    assert TOKEN.encode() not in answer and b"<html" not in answer.lower()


def test_a_body_declared_over_1_mib_is_refused_with_413_json_without_waiting_for_it(bridge: BridgeProcess) -> None:
    started = time.monotonic()
    answer = exchange(bridge, PUT + b"Content-Length: 2000000\r\n\r\n{")

    status, headers, body = split_answer(answer)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    assert headers["connection"] == "close"
    assert time.monotonic() - started < BODY_SECONDS


def test_a_client_waiting_for_100_continue_gets_it_then_its_answer(bridge: BridgeProcess) -> None:
    body = json.dumps(running_body(100)).encode()
    with socket.create_connection(("127.0.0.1", int(bridge.env["PORT"])), timeout=10) as client:
        client.sendall(PUT + b"Connection: close\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert client.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.sendall(body)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk

    status, _headers, reply = split_answer(answer)
    assert status == 200
    assert "event_id" in json.loads(reply)


def test_chunked_and_pipelined_requests_on_one_connection_are_each_answered(bridge: BridgeProcess) -> None:
    body = json.dumps(running_body(101)).encode()
    chunked = PUT + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    last = b"GET /healthz HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"

    answer = exchange(bridge, chunked + last)

    first, _, second = answer.partition(b"HTTP/1.1 200 OK\r\n")[2].partition(b"HTTP/1.1 ")
    assert b'"event_id"' in first
    assert second.startswith(b"200 OK") and second.endswith(b'{"status":"ok"}\n')


def test_stopping_with_slow_clients_connected_exits_promptly_and_cleanly(tmp_path: Path) -> None:
    env = bridge_env(f"sqlite:///{tmp_path / 'bridge.db'}", None, free_port(), BRIDGE_SINK_PATH=str(tmp_path / "sink"))
    with BridgeProcess("serve", env, tmp_path / "bridge.log") as process:
        process.start(ready_timeout=60)
        with slow_clients(int(env["PORT"]), head=20, body=20, idle=20) as load:
            assert wait_until_open(load, 60, timeout=30)
            started = time.monotonic()
            code = process.stop(timeout=40)
            stopped_after = time.monotonic() - started

    assert code == 0, process.log_tail()
    # Idle connections close at once; requests on their way get at most gunicorn's stop linger (2 s).
    assert stopped_after < 20, stopped_after


def test_a_low_open_file_limit_is_raised_to_hold_the_connections(tmp_path: Path) -> None:
    """A container's usual soft limit (1024, here 400) would refuse the connections: the worker lifts it."""
    env = bridge_env(
        f"sqlite:///{tmp_path / 'bridge.db'}",
        None,
        free_port(),
        BRIDGE_SINK_PATH=str(tmp_path / "sink"),
        WEB_CONCURRENCY="1",
    )
    argv = ["prlimit", "--nofile=400:4096", "--", CONSOLE_SCRIPT, "serve"]
    with BridgeProcess("serve", env, tmp_path / "bridge.log", argv=argv) as process:
        process.start(ready_timeout=60)
        with slow_clients(int(env["PORT"]), head=600, body=0, idle=0) as load:
            assert wait_until_open(load, 600, timeout=30)
            health = requests.get(process.base_url + "/healthz", timeout=10)
            deadline = time.monotonic() + HEAD_SECONDS + 5 * SWEEP_SLACK
            while time.monotonic() < deadline and len(load.ended("head")) < 600:
                time.sleep(0.2)

    assert health.status_code == 200
    # A 408 on time means the worker accepted the connection at once and read it: all 600 held a descriptor
    # together (one left waiting in the listen backlog for a free descriptor is answered later than that).
    on_time = [e for e in load.ended("head") if e.status == 408 and e.seconds_open <= HEAD_SECONDS + SWEEP_SLACK]
    assert len(on_time) >= 600
    assert "file descriptors" not in process.log_tail(100_000)
