"""The Distelli mapping as pure functions: histories of requests in, the exact intake bodies out.

Each case replays a build's or deploy's requests through the schemas, :func:`advance_build` and :func:`translate`
the way the core does, and compares every body with ``tests/samples/distelli/expected/<case>.json``. Every body
is also checked against the official client models and the intake's rules (``tests/ddschema.py``): a body the
mapping sends must be one Datadog takes, and a body it marks expired must be one Datadog would refuse.
Set ``UPDATE_EXPECTED=1`` to rewrite the expected files after a deliberate change, then read the diff.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from adapters import distelli
from adapters.base import CI_PIPELINE, DORA_DEPLOYMENT, MappingContext, Outbound
from tests.ddschema import dora_problems, pipeline_problems
from tests.distelli_api import sample

EXPECTED = Path(__file__).parent / "samples" / "distelli" / "expected"
USER, APP, EVENT_ID = "jdoe", "example-node", 9100
T0 = dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.UTC)
SHA = "05169ab2384e8cd991cfdf4e61f9642ccf600758"
OTHER_SHA = "1234567890123456789012345678901234567890"
PUSH = {
    "repo_url": "https://github.com/doct15/example-node",
    "repo_provider": "github",
    "author_username": "doct15",
    "author_name": "Doc T",
    "commit_msg": "Fix the flaky test",
    "commit_id": SHA,
    "branch": "origin/master",
}


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def context(received_at: dt.datetime, **overrides: Any) -> MappingContext:
    settings: dict[str, Any] = {"installation_id": "test-install", "public_url": "https://bridge.example.com"}
    return MappingContext(received_at=received_at, **(settings | overrides))


@dataclasses.dataclass(frozen=True)
class Case:
    """A history: (receipt time, request body) steps of one event, plus the related events the core would find."""

    name: str
    steps: Sequence[tuple[dt.datetime, Mapping[str, Any]]]
    event_type: str = distelli.BUILD
    related: Sequence[Mapping[str, Any]] = ()
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def stored(body: Mapping[str, Any], event_type: str = distelli.PUSH) -> dict[str, Any]:
    """A related event's fields as the core stores them."""
    return distelli.to_stored(distelli.SCHEMAS[event_type]().load(body))


def replay(case: Case) -> list[list[Outbound]]:
    """What the core would enqueue after each step of the case."""
    fields: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    status: str | None = None
    prior_state: dict[str, Any] = {}
    results = []
    for received_at, body in case.steps:
        values = distelli.SCHEMAS[case.event_type]().load(body)
        if case.event_type == distelli.BUILD:
            fields, state = distelli.advance_build(fields, state, values, received_at)
        else:
            fields, state = distelli.to_stored(values), {}
        record = distelli.DistelliRecord(
            EVENT_ID,
            USER,
            APP,
            case.event_type,
            fields,
            state,
            status,
            prior_state,
            [dict(other) for other in case.related],
        )
        results.append(distelli.translate(record, context(received_at, **case.settings)))
        prior_state = dict(state)
        status = fields.get("build_status") or fields.get("deployment_status")
    return results


def as_json(outbound: Outbound) -> dict[str, Any]:
    return json.loads(
        json.dumps(
            {
                "kind": outbound.kind,
                "level": outbound.level,
                "final": outbound.final,
                "unique_id": outbound.unique_id,
                "expired_reason": outbound.expired_reason,
                "body": outbound.body,
            }
        )
    )


def problems(outbound: Outbound, now: dt.datetime) -> list[str]:
    if outbound.kind == DORA_DEPLOYMENT:
        return dora_problems(outbound.body)
    return pipeline_problems(outbound.body, now=now)


SPEC_BUILD_AT = dt.datetime(2016, 8, 15, 22, 22, 30, tzinfo=dt.UTC)
SPEC_UPDATE_AT = dt.datetime(2016, 8, 17, 22, 22, 30, tzinfo=dt.UTC)
SPEC_LIST_AT = dt.datetime(2016, 8, 30, 22, 31, 12, tzinfo=dt.UTC)
_listed = {event["event_id"]: event for event in sample("list_events_result.json")["events"]}
SPEC_PUSH_1800 = {k: v for k, v in _listed[1800].items() if k in distelli.PUSH_FIELDS}
SPEC_BUILD_1801 = {k: v for k, v in _listed[1801].items() if k in distelli.BUILD_FIELDS}
SPEC_DEPLOY_2000 = {k: v for k, v in _listed[2000].items() if k in distelli.DEPLOY_FIELDS}
BUILD_V5 = {**SPEC_BUILD_1801, "parent_event_id": None}
SUCCESS_DEPLOY = {
    **sample("create_deploy_event.json"),
    "deployment_status": "Success",
    "deploy_start": iso(at(-2)),
    "deploy_end": iso(at(-1)),
}

CASES = [
    # The spec's own examples.
    Case("spec_create_build_running", [(SPEC_BUILD_AT, sample("create_build_event.json"))]),
    Case(
        "spec_running_then_update_success",
        [(SPEC_BUILD_AT, sample("create_build_event.json")), (SPEC_UPDATE_AT, sample("update_build_event.json"))],
    ),
    Case(
        "spec_listed_build_with_parent_push",
        [(SPEC_LIST_AT, SPEC_BUILD_1801)],
        related=[stored(SPEC_PUSH_1800)],
    ),
    Case("spec_listed_failed_deploy", [(SPEC_LIST_AT, SPEC_DEPLOY_2000)], event_type=distelli.DEPLOY),
    # Lifecycles.
    Case(
        "queued_running_success",
        [
            (at(0), {"build_status": "Queued", "build_id": "41", "build_provider": "Jenkins", **PUSH}),
            (at(0.5), {"build_status": "Running"}),
            (at(5), {"build_status": "Success", "build_end": iso(at(4.9))}),
        ],
    ),
    Case(
        "waiting_queued_running_failed",
        [
            (at(0), {"build_status": "Waiting", "build_id": "42", "build_provider": "CircleCI", **PUSH}),
            (at(0.25), {"build_status": "Queued"}),
            (at(1), {"build_status": "Running", "build_start": iso(at(0.75))}),
            (at(6), {"build_status": "Failed", "build_end": iso(at(6))}),
        ],
    ),
    Case(
        "created_success",
        [(at(10), {"build_status": "Success", "build_start": iso(at(1)), "build_end": iso(at(9)), **PUSH})],
    ),
    Case(
        "created_timed_out",
        [(at(10), {"build_status": "TimedOut", "build_id": "43", "build_provider": "TravisCI", **PUSH})],
    ),
    Case(
        "running_then_cancelled",
        [
            (at(0), {"build_status": "Running", "build_provider": "AzureDevops", "auto_build": False, **PUSH}),
            (at(3), {"build_status": "Running", "build_url": "https://dev.azure.com/acme/p/_build/7"}),
            (at(4), {"build_status": "Cancelled"}),
        ],
    ),
    # Git facts.
    Case("parentless_without_git", [(at(0), {"build_status": "Running", "build_id": "44"})]),
    Case(
        "short_sha",
        [(at(0), {"build_status": "Running", **PUSH, "commit_id": "05169ab"})],
    ),
    Case(
        "refs_tags_branch",
        [(at(0), {"build_status": "Running", **PUSH, "branch": "refs/tags/v1.2.0"})],
    ),
    Case(
        "git_from_parent_push",
        [(at(0), {"build_status": "Running", "build_provider": "Codeship", "parent_event_id": "1800"})],
        related=[stored(PUSH)],
    ),
    Case(
        "git_from_same_commit_push",
        [(at(0), {"build_status": "Running", "commit_id": SHA, "branch": "refs/heads/main"})],
        related=[stored({**PUSH, "branch": "origin/feature"})],
    ),
    Case(
        "push_of_another_commit_is_ignored",
        [(at(0), {"build_status": "Running", "commit_id": OTHER_SHA, "repo_url": "https://gitlab.com/a/b"})],
        related=[stored(PUSH)],
    ),
    Case(
        "repository_from_commit_url_and_mapped_email",
        [
            (
                at(0),
                {
                    "build_status": "Running",
                    "commit_id": SHA,
                    "commit_url": f"https://gitlab.com/acme/api/-/commit/{SHA}",
                    "author_username": "JDoe",
                },
            )
        ],
        settings={"author_emails": {"jdoe": "john.doe@acme.example"}},
    ),
    Case(
        "repository_from_provider_and_email_template",
        [
            (
                at(0),
                {
                    "build_status": "Running",
                    "commit_id": SHA,
                    "repo_provider": "bitbucket",
                    "repo_owner": "acme",
                    "repo_name": "api",
                    "author_username": "jane doe",
                },
            )
        ],
        settings={"author_email_template": "ci+{username}@{host}"},
    ),
    # The intake's time rules.
    Case(
        "ended_19_hours_ago",
        [(at(0), {"build_status": "Success", "build_start": iso(at(-19.5 * 60)), "build_end": iso(at(-19 * 60))})],
    ),
    Case(
        "end_before_bridge_start",
        [(at(0), {"build_status": "Running"}), (at(5), {"build_status": "Failed", "build_end": iso(at(-2))})],
    ),
    Case(
        "end_within_skew_of_bridge_start",
        [(at(0), {"build_status": "Running"}), (at(0.5), {"build_status": "Success", "build_end": iso(at(-0.05))})],
    ),
    Case(
        "ran_over_a_year",
        [
            (at(0), {"build_status": "Running", "build_start": iso(at(-400 * 24 * 60))}),
            (at(1), {"build_status": "Success"}),
        ],
    ),
    Case(
        "future_times_clamped",
        [
            (at(0), {"build_status": "Running", "build_start": iso(at(60))}),
            (at(1), {"build_status": "Success", "build_end": iso(at(90))}),
        ],
    ),
    # DORA deployments.
    Case("deploy_with_git", [(at(0), {**SUCCESS_DEPLOY, **PUSH})], event_type=distelli.DEPLOY),
    Case(
        "deploy_git_from_release_build",
        [(at(0), SUCCESS_DEPLOY)],
        event_type=distelli.DEPLOY,
        related=[stored(BUILD_V5, distelli.BUILD)],
        settings={"service_names": {APP: "shopist"}},
    ),
    Case(
        "deploy_without_git",
        [(at(0), {**SUCCESS_DEPLOY, "commit_id": None, "deploy_start": None})],
        event_type=distelli.DEPLOY,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_mapping_produces_the_expected_bodies(case: Case) -> None:
    results = replay(case)
    produced = [[as_json(outbound) for outbound in step] for step in results]
    path = EXPECTED / f"{case.name}.json"
    if os.environ.get("UPDATE_EXPECTED") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(produced, indent=2, sort_keys=True) + "\n")
    assert produced == json.loads(path.read_text())


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_every_body_sent_is_valid_and_every_expired_body_would_be_refused(case: Case) -> None:
    for (received_at, _), step in zip(case.steps, replay(case), strict=True):
        for outbound in step:
            found = problems(outbound, received_at)
            if outbound.expired_reason:
                assert found, f"{outbound.level} marked expired but the intake would take it"
            else:
                assert found == [], found


def _resources(case: Case) -> list[list[dict[str, Any]]]:
    return [[o.body["data"]["attributes"]["resource"] for o in step] for step in replay(case)]


def _case(name: str) -> Case:
    return next(case for case in CASES if case.name == name)


def test_queued_build_sends_nothing_until_it_runs_then_running_then_final_with_the_same_ids() -> None:
    queued, running, final = _resources(_case("queued_running_success"))

    assert queued == []
    assert [(r["level"], r["status"]) for r in running] == [("pipeline", "running"), ("job", "running")]
    assert [(r["level"], r["status"]) for r in final] == [("pipeline", "success"), ("job", "success")]
    assert final[0]["unique_id"] == running[0]["unique_id"] == final[1]["pipeline_unique_id"]
    assert final[1]["id"] == running[1]["id"]
    assert "end" not in running[0] and "end" not in running[1]


def test_queue_time_runs_from_the_first_waiting_to_the_start_and_the_start_never_moves() -> None:
    _, _, running, final = _resources(_case("waiting_queued_running_failed"))

    assert running[0]["queue_time"] == 45_000
    assert final[0]["start"] == running[0]["start"] == iso(at(0.75)).replace("Z", ".000Z")


def test_a_build_created_terminal_sends_only_final_events_with_queue_time_zero() -> None:
    (final,) = _resources(_case("created_success"))

    assert [(r["level"], r["status"], r["queue_time"]) for r in final] == [
        ("pipeline", "success", 0),
        ("job", "success", 0),
    ]


@pytest.mark.parametrize(
    ("status", "dd_status", "error_type"),
    [
        ("Success", "success", None),
        ("Failed", "error", "build_failed"),
        ("TimedOut", "error", "timeout"),
        ("Cancelled", "canceled", None),
    ],
)
def test_each_terminal_status_maps_to_its_datadog_status_and_errors_carry_a_provider_error(
    status: str, dd_status: str, error_type: str | None
) -> None:
    case = Case(status, [(at(1), {"build_status": status, "build_id": "77", "build_provider": "Jenkins"})])
    (finals,) = replay(case)

    for outbound in finals:
        assert outbound.final and pipeline_problems(outbound.body, now=at(1)) == []
        resource = outbound.body["data"]["attributes"]["resource"]
        assert resource["status"] == dd_status
        if error_type is None:
            assert "error" not in resource
        else:
            assert resource["error"]["domain"] == "provider"
            assert resource["error"]["type"] == error_type
            assert "Jenkins" in resource["error"]["message"] and "77" in resource["error"]["message"]


@pytest.mark.parametrize(
    ("ref", "branch", "tag"),
    [
        ("master", "master", None),
        ("origin/master", "master", None),
        ("refs/heads/feature/x", "feature/x", None),
        ("refs/remotes/origin/main", "main", None),
        ("refs/tags/v1.0", None, "v1.0"),
        ("", None, None),
        (None, None, None),
    ],
)
def test_branch_normalisation(ref: str | None, branch: str | None, tag: str | None) -> None:
    assert distelli.normalise_branch(ref) == (branch, tag)


def test_a_short_sha_is_kept_as_a_tag_and_git_is_left_out() -> None:
    ((pipeline, job),) = _resources(_case("short_sha"))

    assert "git" not in pipeline and "git" not in job
    assert "distelli.commit_id:05169ab" in pipeline["tags"]


def test_parent_push_fills_the_git_facts_the_build_lacks() -> None:
    ((pipeline, _),) = _resources(_case("git_from_parent_push"))

    assert pipeline["git"] == {
        "repository_url": "https://github.com/doct15/example-node",
        "sha": SHA,
        "branch": "master",
        "message": "Fix the flaky test",
        "author_name": "Doc T",
        "committer_name": "Doc T",
        "author_email": "doct15@users.noreply.github.com",
    }


def test_the_build_own_branch_wins_over_the_push_and_a_push_of_another_commit_adds_nothing() -> None:
    ((same, _),) = _resources(_case("git_from_same_commit_push"))
    ((other, _),) = _resources(_case("push_of_another_commit_is_ignored"))

    assert same["git"]["branch"] == "main" and same["git"]["message"] == "Fix the flaky test"
    assert other["git"] == {
        "repository_url": "https://gitlab.com/a/b",
        "sha": OTHER_SHA,
        "author_email": "unknown@users.noreply.gitlab.com",
    }


def test_author_email_comes_from_the_operator_map_then_the_template() -> None:
    ((mapped, _),) = _resources(_case("repository_from_commit_url_and_mapped_email"))
    ((templated, _),) = _resources(_case("repository_from_provider_and_email_template"))

    assert mapped["git"]["author_email"] == "john.doe@acme.example"
    assert mapped["git"]["repository_url"] == "https://gitlab.com/acme/api"
    assert templated["git"]["author_email"] == "ci+jane-doe@bitbucket.org"
    assert templated["git"]["repository_url"] == "https://bitbucket.org/acme/api"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("ended_19_hours_ago", "more than 18 hours"),
        ("end_before_bridge_start", "before start"),
        ("ran_over_a_year", "more than a year"),
    ],
)
def test_a_final_event_the_intake_would_refuse_is_expired_with_its_reason(name: str, reason: str) -> None:
    finals = replay(_case(name))[-1]

    assert [outbound.final for outbound in finals] == [True, True]
    for outbound in finals:
        assert outbound.expired_reason is not None and reason in outbound.expired_reason


def test_an_end_a_few_seconds_before_the_bridge_start_is_moved_up_to_it() -> None:
    _, (pipeline, _) = _resources(_case("end_within_skew_of_bridge_start"))

    assert pipeline["end"] == pipeline["start"]


def test_future_times_are_clamped_to_the_receipt_time() -> None:
    (running, _), (final, _) = _resources(_case("future_times_clamped"))

    assert running["start"] == "2026-11-25T08:00:00.000Z"
    assert final["end"] == "2026-11-25T08:01:00.000Z"


def test_unique_ids_are_uuid5_of_installation_user_app_and_event() -> None:
    build = {"build_status": "Running"}
    fields, state = distelli.advance_build(None, None, build, T0)

    def ids(installation: str, event_id: int) -> list[str]:
        record = distelli.DistelliRecord(event_id, USER, APP, distelli.BUILD, fields, state)
        outbounds = distelli.translate(record, context(T0, installation_id=installation))
        return [outbound.unique_id for outbound in outbounds]

    assert ids("a", 1) == ids("a", 1)
    assert ids("a", 1) != ids("b", 1)
    assert ids("a", 1) != ids("a", 2)


def test_only_a_successful_deploy_becomes_a_dora_deployment_with_nanosecond_times() -> None:
    assert replay(_case("spec_listed_failed_deploy")) == [[]]
    ((deployment,),) = replay(_case("deploy_git_from_release_build"))
    attributes = deployment.body["data"]["attributes"]

    assert deployment.kind == DORA_DEPLOYMENT
    assert attributes["service"] == "shopist"
    assert attributes["env"] == "ej-dev" and attributes["version"] == "v5"
    assert attributes["started_at"] == int(at(-2).timestamp()) * 10**9
    assert attributes["finished_at"] == int(at(-1).timestamp()) * 10**9
    assert attributes["git"] == {"commit_sha": SHA, "repository_url": "https://github.com/doct15/example-node"}


def test_the_running_event_goes_to_the_pipeline_intake() -> None:
    (step,) = replay(_case("spec_create_build_running"))

    assert {outbound.kind for outbound in step} == {CI_PIPELINE}


@pytest.mark.parametrize(
    ("repository", "template", "email"),
    [
        ("git@github.com:acme/api.git", "{username}@users.noreply.{host}", "jane-doe@users.noreply.github.com"),
        ("https://GitLab.example.com/acme/api", "{username}@{host}", "jane-doe@gitlab.example.com"),
        ("https://github.com/acme/api", "{username}.{team}@corp.example", "jane-doe.{team}@corp.example"),
    ],
)
def test_the_synthesised_author_email_uses_the_repository_host_and_never_fails_on_a_template(
    repository: str, template: str, email: str
) -> None:
    build = {"build_status": "Running", "commit_id": SHA, "repo_url": repository, "author_username": "jane doe"}
    case = Case("email", [(T0, build)], settings={"author_email_template": template})

    ((pipeline, _),) = _resources(case)

    assert pipeline["git"]["author_email"] == email


@pytest.mark.parametrize("event_type", sorted(distelli.SCHEMAS))
def test_no_request_field_is_required_so_partial_loading_gives_the_same_values(event_type: str) -> None:
    schema = distelli.SCHEMAS[event_type]()
    assert schema.partial is True
    assert [name for name, field in schema.fields.items() if field.required] == []
    body = {"branch": "main", "build_status": "running", "auto_build": True, "deploy_start": "2024-01-02T03:04:05Z"}
    assert schema.load(body) == distelli.SCHEMAS[event_type](partial=False).load(body)
