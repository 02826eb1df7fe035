"""What every benchmark shares: the machine's description, the servers under test, load generators and figures.

The servers are real processes (``pipeline-bridge serve``, the baselines in ``baselines.py``, the intake stand-in
in ``stand_in.py``), started through the reliability suite's harness so both drive the same console script. Load
comes from wrk when it is installed (``apt-get install -y wrk``: a C load generator that leaves the two cores to
the server), else from a small threaded keep-alive generator; fixed-rate runs use the open-loop generator here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import http.client
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import requests  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from tests.reliability.harness import (  # noqa: E402
    APP,
    TOKEN,
    USER,
    BridgeProcess,
    bridge_env,
    free_port,
    running_body,
)
from tests.reliability.harness import run_uuids as run_uuids  # noqa: E402  (re-exported for the benches)

BENCH = Path(__file__).resolve().parent
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CREATE_PATH = f"/{USER}/apps/{APP}/events/buildEvent?apiToken={TOKEN}"


def machine() -> str:
    """One line naming the date, CPU, core count and memory, printed above every result."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kilobytes = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        memory = f"{kilobytes / 1024 / 1024:.0f} GiB"
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{today}; {os.cpu_count()} cores, {cpu}; {memory} RAM; Python {platform.python_version()}"


def header(title: str) -> None:
    print(f"# {title}")
    print(f"# machine: {machine()}")
    print(f"# load average before the run: {load_average()} (other work on the machine skews absolute figures)")


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def workdir(name: str) -> Path:
    """A fresh directory for one run's database, logs and sink, under bench/results/ (ignored by git), or under
    ``$BENCH_RESULTS`` (``/dev/shm/bench``: the same run with the disk taken out)."""
    path = Path(os.environ.get("BENCH_RESULTS", BENCH / "results")) / f"{name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'bridge.db'}"


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A PostgreSQL URL on a fresh schema, dropped afterwards (as the test suite's fixture does)."""
    schema = f"pb_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        separator = "&" if "?" in POSTGRES_ADMIN_URL else "?"
        yield f"{POSTGRES_ADMIN_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def upgrade(env: dict[str, str], directory: Path) -> None:
    """``pipeline-bridge db upgrade`` (serve does it itself only on SQLite)."""
    with (directory / "upgrade.log").open("ab") as log:
        subprocess.run(
            [str(Path(sys.executable).with_name("pipeline-bridge")), "db", "upgrade"],
            env=env,
            stdout=log,
            stderr=log,
            check=True,
        )


@contextlib.contextmanager
def bridge(
    directory: Path, database_url: str, intake_url: str | None = None, worker: bool = True, **env: str
) -> Iterator[BridgeProcess]:
    """``pipeline-bridge serve`` (gunicorn + one delivery worker unless ``worker`` is false) on ``database_url``.

    Without ``intake_url`` deliveries go to the file sink in ``directory``.
    """
    settings = bridge_env(database_url, intake_url, free_port(), BRIDGE_SINK_PATH=str(directory / "sink.jsonl"), **env)
    if not database_url.startswith("sqlite"):
        upgrade(settings, directory)
    command = "serve" if worker else "serve --no-worker"
    # Another tree's bridge runs from that tree: one from before ac4aced starts its delivery worker with -m alone,
    # which imports the working directory's package first.
    other_tree = Path(env["PYTHONPATH"]) if "PYTHONPATH" in env else None
    with BridgeProcess(command, settings, directory / "bridge.log", cwd=other_tree) as process:
        yield process.start()


@contextlib.contextmanager
def baseline(
    directory: Path, kind: str, intake_url: str | None = None, database_url: str | None = None
) -> Iterator[BridgeProcess]:
    """A baseline app of ``baselines.py`` (``bare``, ``naive`` or ``lean``) under the bridge's own gunicorn
    settings; ``lean`` keeps its rows at ``database_url``."""
    settings = bridge_env(database_url or sqlite_url(directory), intake_url, free_port())
    argv = [sys.executable, str(BENCH / "baselines.py"), kind]
    with BridgeProcess(kind, settings, directory / f"{kind}.log", argv=argv) as process:
        yield process.start()


@contextlib.contextmanager
def stand_in(directory: Path, delay: float = 0.0) -> Iterator[str]:
    """The intake stand-in of ``stand_in.py`` in its own process; yields its base URL."""
    settings = {**os.environ, "PORT": str(free_port()), "STAND_IN_DELAY": str(delay)}
    argv = [sys.executable, str(BENCH / "stand_in.py")]
    with BridgeProcess("stand-in", settings, directory / "stand-in.log", argv=argv) as process:
        yield process.start().base_url


def stand_in_received(url: str) -> dict[str, float]:
    """When the stand-in first received each (unique_id, level, status), keyed ``unique_id/level/status``."""
    received: dict[str, float] = requests.get(url + "/_received", timeout=30).json()
    return received


def build_body(number: int = 1) -> bytes:
    return json.dumps(running_body(number)).encode()


# --- closed-loop throughput: wrk, or a threaded fallback ---------------------------------------------------------


@dataclasses.dataclass
class Throughput:
    requests_per_second: float
    non_2xx: int
    errors: int
    tool: str
    cpu_ms_per_request: float = 0.0  # CPU (user + system) of every server process, per answered request
    database_cpu_ms_per_request: float = 0.0  # the same of the PostgreSQL server's processes, when asked for


def throughput(
    base_url: str,
    seconds: float,
    connections: int = 16,
    path: str = CREATE_PATH,
    server: BridgeProcess | None = None,
    database: bool = False,
) -> Throughput:
    """Closed-loop PUTs of a Running build for ``seconds`` (after a short warm-up) with ``connections`` clients.

    With ``server``, also the CPU its processes (master, web workers, delivery worker) spent per request during
    the measured part: what a request costs, whatever the load generator took of the same cores. With
    ``database``, also what this machine's PostgreSQL processes spent in the same time (its backends serve the
    bridge's statements on the same two cores).
    """
    run = _wrk if shutil.which("wrk") else _threaded
    run(base_url, 2, connections, path)
    pids = server.pids() if server else []
    before, database_before = cpu_seconds(pids), postgres_cpu_seconds() if database else 0.0
    result = run(base_url, seconds, connections, path)
    if pids and result.requests_per_second:
        requests = result.requests_per_second * seconds
        result.cpu_ms_per_request = (cpu_seconds(pids) - before) * 1000 / requests
        if database:
            result.database_cpu_ms_per_request = (postgres_cpu_seconds() - database_before) * 1000 / requests
    return result


def postgres_cpu_seconds() -> float:
    """CPU seconds this machine's PostgreSQL server has spent so far: every live process of it (backends, WAL
    writer, checkpointer, autovacuum workers) plus what its postmaster has reaped of the children that ended.

    Summing only the processes alive when a run began missed those that started during it (autovacuum workers)
    and subtracted the whole past of any that ended during it: in six runs on 2026-12-03 it read 0.49 and 0.51 ms a
    request in two where this sum read 0.80 and 0.82 (the other four agreed within 0.01). With the reaped children's
    time the sum only grows, whatever comes and goes.
    """
    total = 0
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            if not entry.name.isdigit() or (entry / "comm").read_text().strip() != "postgres":
                continue
            fields = _stat_fields(entry.name)
            total += int(fields[11]) + int(fields[12])
            if (Path("/proc") / fields[1] / "comm").read_text().strip() != "postgres":  # the postmaster
                total += int(fields[13]) + int(fields[14])
    return total / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds of these processes so far (those that have gone count as zero)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = _stat_fields(pid)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (which may hold spaces): [0] is the state, [1] the
    parent, [11] and [12] user and system ticks, [13] and [14] those of the children it has reaped."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _wrk(base_url: str, seconds: float, connections: int, path: str) -> Throughput:
    script = (
        'wrk.method = "PUT"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(build_body().decode())}\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script)
    try:
        output = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", lua.name, base_url + path],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        ).stdout
    finally:
        os.unlink(lua.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return Throughput(
        rate,
        int(non_2xx.group(1)) if non_2xx else 0,
        sum(int(value) for value in errors.groups()) if errors else 0,
        "wrk",
    )


def _threaded(base_url: str, seconds: float, connections: int, path: str) -> Throughput:
    host, port = base_url.removeprefix("http://").split(":")
    body = build_body()
    deadline = time.monotonic() + seconds
    counts = {"ok": 0, "non_2xx": 0, "errors": 0}
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        while time.monotonic() < deadline:
            try:
                connection.request("PUT", path, body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                outcome = "ok" if 200 <= response.status < 300 else "non_2xx"
            except (OSError, http.client.HTTPException):
                connection.close()
                outcome = "errors"
            with lock:
                counts[outcome] += 1

    threads = [threading.Thread(target=client) for _ in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    elapsed = time.monotonic() - started
    return Throughput(sum(counts.values()) / elapsed, counts["non_2xx"], counts["errors"], "python threads")


# --- open loop: requests sent on a clock, latency measured from the scheduled time ---------------------------------


@dataclasses.dataclass
class Sent:
    """One request of an open-loop run: when it was due, how long until its answer, and the answer."""

    due: float
    latency: float
    status: int
    body: bytes
    answered_at: float  # wall clock (time.time()), to compare with another process's records
    late: float = 0.0  # how long after ``due`` the generator began it: its own delay, not the server's


def open_loop(
    base_url: str,
    rate: float,
    seconds: float,
    make_body: Callable[[int], bytes] = build_body,
    path: str = CREATE_PATH,
    max_connections: int = 512,
) -> list[Sent]:
    """Send ``rate`` PUTs a second for ``seconds`` on a fixed schedule, whatever the answers take.

    A request due at time t is sent at t on an idle keep-alive connection (a new one if none is idle) and its
    latency runs from t, so a server that falls behind shows it instead of slowing the client down (the
    coordinated-omission trap of closed-loop tools). Each answer also records how late the generator itself began
    the request, so a run can tell whether the generator (on the same cores as the server) kept to its clock.
    """
    host, port = base_url.removeprefix("http://").split(":")
    return asyncio.run(_open_loop(host, int(port), rate, seconds, make_body, path, max_connections))


async def _open_loop(
    host: str,
    port: int,
    rate: float,
    seconds: float,
    make_body: Callable[[int], bytes],
    path: str,
    max_connections: int,
) -> list[Sent]:
    loop = asyncio.get_running_loop()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    slots = asyncio.Semaphore(max_connections)
    results: list[Sent] = []

    async def one(number: int, due: float) -> None:
        late = loop.time() - due
        body = make_body(number)
        request = (
            f"PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        async with slots:
            connection = idle.pop() if idle else None
            try:
                if connection is not None:
                    try:
                        status, reply, keep = await _exchange(*connection, request)
                    except (OSError, asyncio.IncompleteReadError, ValueError):
                        # The server closed this kept-alive connection while it sat idle (gunicorn's keepalive):
                        # send again on a new one, as HTTP clients do.
                        connection[1].close()
                        connection = None
                if connection is None:
                    connection = await asyncio.open_connection(host, port)
                    status, reply, keep = await _exchange(*connection, request)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                if connection is not None:
                    connection[1].close()
                results.append(Sent(due, loop.time() - due, 0, b"", time.time(), late))
                return
            results.append(Sent(due, loop.time() - due, status, reply, time.time(), late))
            if keep:
                idle.append(connection)
            else:
                connection[1].close()

    tasks = []
    start = loop.time() + 0.05
    for number in range(int(rate * seconds)):
        due = start + number / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(number, due)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    for _, writer in idle:
        writer.close()
    results.sort(key=lambda sent: sent.due)
    for sent in results:
        sent.due -= start
    return results


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes, bool]:
    """One HTTP/1.1 request and its Content-Length-framed answer on a kept-alive connection."""
    writer.write(request)
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ValueError("connection closed")
    status = int(status_line.split()[1])
    length, keep = 0, True
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "connection" and value.strip().lower() == "close":
            keep = False
    return status, await reader.readexactly(length), keep


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` of 1) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def spread(values: list[float], unit: str, digits: int) -> tuple[list[str], list[str]]:
    """Table headings and cells for the p50, p90, p99 and maximum of ``values``."""
    headings = [f"{name} {unit}" for name in ("p50", "p90", "p99", "max")]
    points = [percentile(values, fraction) for fraction in (0.5, 0.9, 0.99)] + [max(values, default=float("nan"))]
    return headings, [f"{point:.{digits}f}" for point in points]


def verdict(ok: bool) -> str:
    return "meets the target" if ok else "MISSES the target"


def table(rows: list[tuple[str, ...]]) -> None:
    """Print a Markdown table, first row the header."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |")
        if index == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")


def event_ids(sent: list[Sent]) -> list[str]:
    return [json.loads(item.body)["event_id"] for item in sent if item.status == 200]
