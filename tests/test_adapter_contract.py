"""The contract every registered webhook adapter must keep, run over the samples stored for it.

A new adapter passes this file before it is merged: its samples parse, every body it maps is one the official
``datadog-api-client`` models and the intake's time rules accept, it refuses a wrong signature, bad input is a
:class:`Rejected` (a 400), never a crash, and the mapping is deterministic, also from the stored form of a record.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from adapters.base import DORA_DEPLOYMENT, Rejected, RequestHeaders, WebhookAdapter
from adapters.registry import load_adapters
from tests.ddschema import dora_problems, pipeline_problems
from tests.test_adapter_samples import SAMPLES, SECRET, adapter, body, context, headers, index, parse, received_at

REGISTERED = sorted(load_adapters())


def samples(source: str) -> list[str]:
    return list(index(source)["samples"])


def every_registered_sample() -> list[tuple[str, str]]:
    return [(source, name) for source in REGISTERED for name in samples(source)]


@pytest.mark.parametrize("source", REGISTERED)
def test_adapter_keeps_the_protocol_and_ships_samples(source: str) -> None:
    registered = adapter(source)
    assert isinstance(registered, WebhookAdapter)
    assert registered.name == source
    assert callable(getattr(registered, "sign", None)), "the contract suite signs samples with adapter.sign"
    assert (SAMPLES / source / "index.json").is_file(), f"tests/samples/{source}/index.json is missing"
    assert samples(source)


@pytest.mark.parametrize(("source", "name"), every_registered_sample())
def test_sample_parses_to_a_storable_record(source: str, name: str) -> None:
    record = parse(source, name)
    assert record is not None
    assert record.run_key and record.app_name and record.event_type
    assert json.loads(json.dumps(record.fields)) == record.fields


@pytest.mark.parametrize(("source", "name"), every_registered_sample())
def test_every_mapped_body_is_valid_for_the_official_models(source: str, name: str) -> None:
    record = parse(source, name)
    assert record is not None
    at = received_at(source, name)
    for outbound in adapter(source).map(record, [], context(at)):
        if outbound.kind == DORA_DEPLOYMENT:
            assert dora_problems(outbound.body) == []
        else:
            assert pipeline_problems(outbound.body, now=at) == []
        assert outbound.expired_reason is None


@pytest.mark.parametrize(("source", "name"), every_registered_sample())
def test_mapping_is_deterministic_also_from_the_stored_record(source: str, name: str) -> None:
    first, second = parse(source, name), parse(source, name)
    assert first is not None and first == second
    stored = dataclasses.replace(first, fields=json.loads(json.dumps(first.fields)))
    at = received_at(source, name)
    mapped = adapter(source).map(first, [], context(at))
    assert adapter(source).map(first, [], context(at)) == mapped
    assert adapter(source).map(stored, [], context(at)) == mapped


@pytest.mark.parametrize(("source", "name"), every_registered_sample())
def test_verification_accepts_the_right_secret_and_refuses_a_wrong_one(source: str, name: str) -> None:
    payload = body(source, name)
    checked = adapter(source)
    assert checked.verify(headers(source, name, payload), payload, SECRET) is None
    wrong = headers(source, name, payload, secret="not-the-secret")
    reason = checked.verify(wrong, payload, SECRET)
    assert reason and SECRET not in reason
    unsigned = RequestHeaders(index(source)["samples"][name]["headers"])
    assert checked.verify(unsigned, payload, SECRET)


@pytest.mark.parametrize(("source", "name"), every_registered_sample())
def test_a_tampered_body_fails_verification_or_carries_no_signature(source: str, name: str) -> None:
    payload = body(source, name)
    signed = headers(source, name, payload)
    reason = adapter(source).verify(signed, payload + b" ", SECRET)
    shared_secret = adapter(source).sign(b"", SECRET) == adapter(source).sign(payload, SECRET)
    assert reason is not None or shared_secret


@pytest.mark.parametrize("source", REGISTERED)
@pytest.mark.parametrize("payload", [b"", b"not json", b"[]", b"{}", b'{"build": 1, "object_kind": "pipeline"}'])
def test_bad_input_is_rejected_or_ignored_never_a_crash(source: str, payload: bytes) -> None:
    name = samples(source)[0]
    try:
        record = adapter(source).parse(headers(source, name, payload), payload)
    except Rejected as exc:
        assert exc.status == 400 and exc.message
        return
    assert record is None


@pytest.mark.parametrize(("source", "name"), every_registered_sample())
def test_a_sample_missing_any_top_level_key_is_rejected_ignored_or_still_valid(source: str, name: str) -> None:
    original = json.loads(body(source, name))
    at = received_at(source, name)
    for key in original:
        payload = json.dumps({k: v for k, v in original.items() if k != key}).encode()
        try:
            record = adapter(source).parse(headers(source, name, payload), payload)
        except Rejected:
            continue
        if record is not None:
            for outbound in adapter(source).map(record, [], context(at)):
                assert pipeline_problems(outbound.body, now=at) == [], key
