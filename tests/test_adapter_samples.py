"""Every stored sample payload maps to exactly the bodies in ``tests/samples/<source>/expected/``.

Each source directory holds realistic payloads, an ``index.json`` (the headers each arrived with, the receipt
time the expected bodies were made at, and which samples form one run in order) and the expected outbounds. The
helpers here are shared with the contract and HTTP tests.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
from pathlib import Path
from typing import Any

import pytest

from adapters.base import MappingContext, RequestHeaders, SourceRecord, WebhookAdapter
from adapters.payload import read_source_time
from adapters.registry import load_adapters
from adapters.target import Outbound

SAMPLES = Path(__file__).parent / "samples"
# Every source the registry finds in the package: a new source is its module and its samples.
NATIVE = tuple(load_adapters())
SECRET = "s3cr3t-hook-value-that-must-never-leak"


def index(source: str) -> dict[str, Any]:
    return dict(json.loads((SAMPLES / source / "index.json").read_text()))


@functools.cache
def _builtin() -> dict[str, WebhookAdapter]:
    return load_adapters()


def adapter(source: str) -> WebhookAdapter:
    """The registered adapter (looked up once: a registry scan reads every installed package's entry points)."""
    return _builtin()[source]


def body(source: str, name: str) -> bytes:
    return (SAMPLES / source / f"{name}.json").read_bytes()


def headers(source: str, name: str, payload: bytes, secret: str = SECRET) -> RequestHeaders:
    """The sample's headers as its source would send them, signed with ``secret``."""
    given = index(source)["samples"][name]["headers"]
    return RequestHeaders({**given, **adapter(source).sign(payload, secret)})


def received_at(source: str, name: str) -> dt.datetime:
    meta = index(source)
    moment = read_source_time(meta["samples"][name].get("received_at") or meta["received_at"])
    assert moment is not None
    return moment


def context(at: dt.datetime) -> MappingContext:
    return MappingContext(installation_id="pipeline-bridge", public_url="https://bridge.example.com", received_at=at)


def parse(source: str, name: str) -> SourceRecord | None:
    payload = body(source, name)
    record = adapter(source).parse(headers(source, name, payload), payload)
    return None if record is None else dataclasses.replace(record, received_at=received_at(source, name))


def as_json(outbounds: list[Outbound]) -> list[dict[str, Any]]:
    rows = [dataclasses.asdict(outbound) for outbound in outbounds]
    for row in rows:
        row["end"] = row["end"].isoformat() if row["end"] else None
    return rows


def expected(source: str, name: str) -> list[dict[str, Any]]:
    return list(json.loads((SAMPLES / source / "expected" / f"{name}.json").read_text()))


def map_alone(source: str, name: str) -> list[Outbound]:
    record = parse(source, name)
    assert record is not None
    return adapter(source).map(record, [], context(received_at(source, name)))


def every_sample() -> list[tuple[str, str]]:
    return [(source, name) for source in NATIVE for name in index(source)["samples"]]


def write_expected() -> None:
    """Regenerate the expected bodies after a deliberate mapping change; review the diff before committing."""
    for source, name in every_sample():
        target = SAMPLES / source / "expected" / f"{name}.json"
        target.parent.mkdir(exist_ok=True)
        target.write_text(json.dumps(as_json(map_alone(source, name)), indent=2) + "\n")


@pytest.mark.parametrize(("source", "name"), every_sample())
def test_sample_maps_to_exactly_the_expected_bodies(source: str, name: str) -> None:
    assert as_json(map_alone(source, name)) == expected(source, name)


@pytest.mark.parametrize("source", NATIVE)
def test_a_run_in_order_sends_one_running_then_one_final_per_resource(source: str) -> None:
    for run in index(source)["runs"]:
        history: list[SourceRecord] = []
        sent: list[tuple[str, str, bool]] = []
        for name in run:
            record = parse(source, name)
            assert record is not None
            sent += [
                (o.level, o.unique_id, o.final)
                for o in adapter(source).map(record, history, context(received_at(source, name)))
            ]
            history.append(record)
        for level, unique_id in {(level, unique_id) for level, unique_id, _ in sent}:
            finals = [final for lvl, uid, final in sent if (lvl, uid) == (level, unique_id)]
            assert finals.count(True) == 1, (source, run, level)
            assert finals.count(False) <= 1 and finals[-1] is True, (source, run, level)


@pytest.mark.parametrize("source", NATIVE)
def test_a_running_webhook_after_the_final_one_sends_nothing(source: str) -> None:
    for run in index(source)["runs"]:
        records = [parse(source, name) for name in run]
        final = next(r for r in records if r is not None and r.status not in ("queued", "running"))
        running = [r for r in records if r is not None and r.status == "running"]
        for record in running:
            assert adapter(source).map(record, [final], context(received_at(source, run[-1]))) == []
