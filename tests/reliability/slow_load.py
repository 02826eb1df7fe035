"""Slow and idle clients held open against a server, for the slow-client test and ``bench/bench_slow_clients.py``.

Three kinds of connection, each kept at its count for the whole run (one the server closes is opened again):
``head`` sends a request line and then one header line every ``trickle_seconds``, never the blank line;
``body`` sends a whole head announcing a 1000-byte body and then one byte every ``trickle_seconds``; ``idle`` makes
one GET /healthz and then says nothing on the kept-alive connection. All of them run on one asyncio loop in a
thread, so 1,200 connections cost the client side little CPU. For each kind it records how the server ended each
connection (the status it answered, or none) and how long after the last byte the client sent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import random
import threading
import time
from collections.abc import Iterator

from tests.reliability.harness import APP, TOKEN, USER

DECLARED_BODY_BYTES = 1000


@dataclasses.dataclass
class Ending:
    """How the server ended one slow connection."""

    kind: str
    status: int | None  # None: closed without an answer
    answer: bytes
    seconds_open: float  # from connecting (head, body) or from the last answer (idle) to the close


@dataclasses.dataclass
class SlowLoad:
    """The connections open now, the endings seen so far, and the connect failures."""

    open: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    endings: list[Ending] = dataclasses.field(default_factory=list)
    connect_errors: int = 0
    peak_open: int = 0

    def ended(self, kind: str) -> list[Ending]:
        return [ending for ending in self.endings if ending.kind == kind]


def _head_lines() -> tuple[bytes, bytes]:
    request = f"PUT /{USER}/apps/{APP}/events/buildEvent?apiToken={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    body_head = request + (
        f"Content-Type: application/json\r\nContent-Length: {DECLARED_BODY_BYTES}\r\n\r\n{{".encode()
    )
    return request, body_head


async def _read_answer(reader: asyncio.StreamReader) -> bytes:
    """Whatever the server sends until it closes."""
    chunks = []
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _status(answer: bytes) -> int | None:
    parts = answer.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1].isdigit():
        return int(parts[1])
    return None


async def _client(
    kind: str, port: int, trickle_seconds: float, spread_seconds: float, load: SlowLoad, stop: asyncio.Event
) -> None:
    request, body_head = _head_lines()
    # Not all at once: 1,200 clients opening (and so timing out, and reopening) in the same instant would be
    # bursts of connections and GET /healthz requests that no real crowd of slow clients makes.
    await asyncio.sleep(random.uniform(0, spread_seconds))
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            load.connect_errors += 1
            await asyncio.sleep(0.5)
            continue
        load.open[kind] += 1
        load.peak_open = max(load.peak_open, sum(load.open.values()))
        started = time.monotonic()
        try:
            if kind == "idle":
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                await writer.drain()
                await reader.readuntil(b'{"status":"ok"}\n')
                started = time.monotonic()
                answer = await _read_answer(reader)
            else:
                writer.write(request if kind == "head" else body_head)
                answer_task = asyncio.ensure_future(_read_answer(reader))
                line = 0
                while not answer_task.done() and not stop.is_set():
                    await asyncio.wait([answer_task], timeout=trickle_seconds)
                    if answer_task.done():
                        break
                    line += 1
                    with contextlib.suppress(OSError):
                        writer.write(b"X-Slow-%d: 1\r\n" % line if kind == "head" else b" ")
                if stop.is_set():
                    answer_task.cancel()
                    return
                answer = answer_task.result()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            answer = b""
        finally:
            load.open[kind] -= 1
            writer.close()
        if not stop.is_set():
            load.endings.append(Ending(kind, _status(answer), answer, time.monotonic() - started))


@contextlib.contextmanager
def slow_clients(
    port: int, head: int, body: int, idle: int, trickle_seconds: float = 2.0, spread_seconds: float = 1.0
) -> Iterator[SlowLoad]:
    """Hold ``head``, ``body`` and ``idle`` connections open to 127.0.0.1:``port`` until the block ends, the first
    opening of each spread over ``spread_seconds``."""
    load = SlowLoad()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()

    async def main() -> None:
        tasks = [
            asyncio.ensure_future(_client(kind, port, trickle_seconds, spread_seconds, load, stop))
            for kind, count in (("head", head), ("body", body), ("idle", idle))
            for _ in range(count)
        ]
        ready.set()
        await stop.wait()
        await asyncio.wait(tasks, timeout=5)
        for task in tasks:
            task.cancel()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait()
    try:
        yield load
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=15)
        loop.close() if not thread.is_alive() else None


def wait_until_open(load: SlowLoad, count: int, timeout: float) -> bool:
    """Whether ``count`` slow connections were open at once within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(load.open.values()) >= count:
            return True
        time.sleep(0.1)
    return False
