"""ListEvents: every filter, the result format, pagination walks in both orders, and bad queries."""

from __future__ import annotations

import base64

import pytest

from tests.conftest import OTHER_TOKEN, OTHER_USER
from tests.distelli_api import SQLITE_ONLY, DistelliApi, assert_error, sample

# label: (create path, body). Created in this order, so ids increase down the list.
HISTORY = {
    "b1": ("buildEvent", {"branch": "master", "build_status": "Running"}),
    "b2": ("buildEvent", {"branch": "origin/master", "build_status": "Success"}),
    "b3": ("buildEvent", {"branch": "refs/heads/master"}),
    "b4": ("buildEvent", {"branch": "feature/x"}),
    "p1": ("pushEvent", {"branch": "origin/master"}),
    "p2": ("pushEvent", {"branch": "develop"}),
    "r1": ("pullRequestEvent", {"branch": "refs/heads/feature/x"}),
    "d1": ("deployEvent", {"env_name": "dev", "branch": "master", "deployment_status": "Running"}),
    "d2": ("deployEvent", {"env_name": "prod", "branch": "origin/master"}),
    "d3": ("deployEvent", {"env_name": "dev", "branch": "feature/x"}),
}
MASTER = ["b1", "b2", "b3", "p1", "d1", "d2"]


@pytest.fixture
def history(api: DistelliApi) -> dict[int, str]:
    """The mixed history above, plus noise in another app and another user's app; event id -> label."""
    ids = {int(api.create_id(kind, body)): label for label, (kind, body) in HISTORY.items()}
    api.for_app("other-app").create_id("buildEvent", {"branch": "master"})
    api.as_user(OTHER_USER, OTHER_TOKEN).create_id("deployEvent", {"env_name": "dev", "branch": "master"})
    return ids


def _labels(api: DistelliApi, history: dict[int, str], **query: str) -> list[str]:
    return [history[event["event_id"]] for event in api.events(max_results=100, **query)]


def _newest_first(labels: list[str]) -> list[str]:
    order = list(HISTORY)
    return sorted(labels, key=order.index, reverse=True)


FILTER_CASES = [
    ({}, list(HISTORY)),
    ({"filter_name": "Branch", "filter_branch": "master"}, MASTER),
    ({"filter_name": "Branch", "filter_branch": "origin/master"}, MASTER),
    ({"filter_name": "Branch", "filter_branch": "refs/heads/master"}, MASTER),
    ({"filter_name": "branch", "filter_branch": "feature/x"}, ["b4", "r1", "d3"]),
    ({"filter_name": "Branch", "filter_branch": "origin/feature/x"}, ["b4", "r1", "d3"]),
    ({"filter_name": "Branch", "filter_branch": "no-such-branch"}, []),
    ({"filter_name": "EventType", "filter_event_type": "build"}, ["b1", "b2", "b3", "b4"]),
    ({"filter_name": "EventType", "filter_event_type": "BUILD"}, ["b1", "b2", "b3", "b4"]),
    ({"filter_name": "EventType", "filter_event_type": "Build"}, ["b1", "b2", "b3", "b4"]),
    ({"filter_name": "EventType", "filter_event_type": "push"}, ["p1", "p2"]),
    ({"filter_name": "EventType", "filter_event_type": "Push"}, ["p1", "p2"]),
    ({"filter_name": "EventType", "filter_event_type": "pullrequest"}, ["r1"]),
    ({"filter_name": "EventType", "filter_event_type": "Pullrequest"}, ["r1"]),
    ({"filter_name": "EventType", "filter_event_type": "PULL_REQUEST"}, ["r1"]),
    ({"filter_name": "EventType", "filter_event_type": "deploy"}, ["d1", "d2", "d3"]),
    ({"filter_name": "EventType", "filter_event_type": "Deploy"}, ["d1", "d2", "d3"]),
    ({"filter_name": "EventType", "filter_event_type": "release"}, []),
    ({"filter_name": "EventType", "filter_event_type": "Release"}, []),
    ({"filter_name": "EventType", "filter_event_type": "Dockerimage"}, []),
    ({"filter_name": "eventtype", "filter_event_type": "build"}, ["b1", "b2", "b3", "b4"]),
    (
        {"filter_name": "BranchAndEventType", "filter_branch": "master", "filter_event_type": "build"},
        ["b1", "b2", "b3"],
    ),
    (
        {"filter_name": "BranchAndEventType", "filter_branch": "master", "filter_event_type": "deploy"},
        ["d1", "d2"],
    ),
    (
        {"filter_name": "BranchAndEventType", "filter_branch": "origin/master", "filter_event_type": "PUSH"},
        ["p1"],
    ),
    (
        {"filter_name": "BranchAndEventType", "filter_branch": "develop", "filter_event_type": "build"},
        [],
    ),
    ({"filter_name": "Env", "filter_env": "dev"}, ["d1", "d3"]),
    ({"filter_name": "Env", "filter_env": "prod"}, ["d2"]),
    ({"filter_name": "Env", "filter_env": "qa"}, []),
    ({"filter_name": "EnvAndBranch", "filter_env": "dev", "filter_branch": "master"}, ["d1"]),
    ({"filter_name": "EnvAndBranch", "filter_env": "dev", "filter_branch": "origin/master"}, ["d1"]),
    ({"filter_name": "EnvAndBranch", "filter_env": "prod", "filter_branch": "refs/heads/master"}, ["d2"]),
    ({"filter_name": "EnvAndBranch", "filter_env": "prod", "filter_branch": "feature/x"}, []),
]


def test_every_filter_lists_exactly_the_matching_events_of_this_app_newest_first(
    api: DistelliApi, history: dict[int, str]
) -> None:
    """The whole filter table against one history per database; a failure lists every query that went wrong."""
    wrong = {}
    for query, expected in FILTER_CASES:
        got = _labels(api, history, **query)
        if got != _newest_first(expected):
            wrong[str(query)] = {"got": got, "expected": _newest_first(expected)}

    assert wrong == {}


@pytest.mark.parametrize(
    "query",
    [
        {"filter_name": "Env", "filter_env": "dev"},
        {"filter_name": "EnvAndBranch", "filter_env": "dev", "filter_branch": "master"},
    ],
)
def test_env_filters_are_an_empty_list_until_there_are_deploy_events(api: DistelliApi, query: dict[str, str]) -> None:
    api.create_id("buildEvent", {"branch": "master"})
    api.create_id("pushEvent", {"branch": "master"})

    response = api.list(**query)

    assert response.status_code == 200
    assert response.get_json() == {"app_name": "example-node", "events": []}


def test_branch_is_shown_as_sent_even_when_matched_without_its_prefix(
    api: DistelliApi, history: dict[int, str]
) -> None:
    events = api.events(filter_name="Branch", filter_branch="master", max_results=100)

    shown = {history[event["event_id"]]: event["branch"] for event in events}

    assert shown["b2"] == "origin/master" and shown["b3"] == "refs/heads/master" and shown["b1"] == "master"


def test_spec_example_query_returns_the_two_newest_builds(api: DistelliApi, history: dict[int, str]) -> None:
    response = api.list(max_results=2, order="desc", filter_name="EventType", filter_event_type="build")

    body = response.get_json()
    assert [history[event["event_id"]] for event in body["events"]] == ["b4", "b3"]
    assert body["app_name"] == "example-node"
    assert "marker" in body
    assert all(event["event_type"] == "BUILD" for event in body["events"])


def test_list_result_has_the_spec_format(api: DistelliApi) -> None:
    api.create_id("buildEvent", sample("create_build_event.json"))

    body = api.list().get_json()

    assert list(body) == ["app_name", "events"]
    spec_build = sample("list_events_result.json")["events"][2]
    assert set(spec_build) <= set(body["events"][0])
    assert isinstance(body["events"][0]["event_id"], int)


def test_empty_app_lists_no_events_and_no_marker(api: DistelliApi) -> None:
    assert api.list().get_json() == {"app_name": "example-node", "events": []}


@pytest.fixture
def pushes(api: DistelliApi) -> list[int]:
    """25 push events, oldest first."""
    return [int(api.create_id("pushEvent", {"commit_msg": f"commit {n}"})) for n in range(25)]


@pytest.mark.parametrize(
    ("query", "sizes", "descending"),
    [
        ({}, [10, 10, 5], True),
        ({"order": "asc"}, [10, 10, 5], False),
        ({"order": "ASC", "max_results": "7"}, [7, 7, 7, 4], False),
        ({"order": "desc", "max_results": "7"}, [7, 7, 7, 4], True),
        ({"order": "asc", "max_results": "5"}, [5, 5, 5, 5, 5], False),
        ({"order": "desc", "max_results": "1"}, [1] * 25, True),
        ({"max_results": "100"}, [25], True),
    ],
)
def test_pagination_walk_returns_every_event_once_in_order_with_markers_only_while_more_remain(
    api: DistelliApi, pushes: list[int], query: dict[str, str], sizes: list[int], descending: bool
) -> None:
    pages = api.walk(**query)

    assert [len(page["events"]) for page in pages] == sizes
    assert ["marker" in page for page in pages] == [True] * (len(sizes) - 1) + [False]
    walked = [event["event_id"] for page in pages for event in page["events"]]
    assert walked == (pushes[::-1] if descending else pushes)


def test_pagination_walk_with_a_filter_stays_inside_the_filter(api: DistelliApi, history: dict[int, str]) -> None:
    pages = api.walk(filter_name="Branch", filter_branch="master", max_results=4, order="asc")

    assert [len(page["events"]) for page in pages] == [4, 2]
    assert [history[event["event_id"]] for page in pages for event in page["events"]] == MASTER


def test_default_page_is_the_ten_newest(api: DistelliApi, pushes: list[int]) -> None:
    assert [event["event_id"] for event in api.events()] == pushes[:-11:-1]


def test_events_created_during_a_walk_do_not_disturb_an_ascending_walk(api: DistelliApi, pushes: list[int]) -> None:
    first = api.list(order="asc", max_results=20).get_json()
    newer = int(api.create_id("pushEvent", {}))

    rest = api.walk(order="asc", max_results=20, marker=first["marker"])

    assert [event["event_id"] for event in rest[0]["events"]] == [*pushes[20:], newer]


def _marker_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"max_results": "0"}, "max_results"),
        ({"max_results": "101"}, "max_results"),
        ({"max_results": "-1"}, "max_results"),
        ({"max_results": "ten"}, "max_results"),
        ({"max_results": "1.5"}, "max_results"),
        ({"max_results": "1e2"}, "max_results"),
        ({"max_results": ""}, "max_results"),
        ({"max_results": "²"}, "max_results"),
        ({"max_results": "9" * 40}, "max_results"),
        ({"order": "sideways"}, "order"),
        ({"order": "ascending"}, "order"),
        ({"order": ""}, "order"),
        ({"marker": "not-a-marker!"}, "marker"),
        ({"marker": _marker_of("x:5")}, "marker"),
        ({"marker": _marker_of("e:-1")}, "marker"),
        ({"marker": _marker_of("e:²")}, "marker"),
        ({"marker": _marker_of("e:99999999999999999999")}, "marker"),
        ({"marker": "\u00e9"}, "marker"),
        ({"filter_name": "Bogus"}, "filter_name"),
        ({"filter_name": "Release"}, "filter_name"),
        ({"filter_name": "Branch"}, "filter_branch"),
        ({"filter_name": "Branch", "filter_branch": "  "}, "filter_branch"),
        ({"filter_name": "Env"}, "filter_env"),
        ({"filter_name": "EventType"}, "filter_event_type"),
        ({"filter_name": "EventType", "filter_event_type": "compile"}, "filter_event_type"),
        ({"filter_name": "BranchAndEventType", "filter_branch": "master"}, "filter_event_type"),
        ({"filter_name": "EnvAndBranch", "filter_env": "dev"}, "filter_branch"),
    ],
)
@SQLITE_ONLY
def test_bad_query_is_400_naming_the_parameter(api: DistelliApi, query: dict[str, str], field: str) -> None:
    api.create_id("pushEvent", {})

    error = assert_error(api.list(**query), 400, "invalid_query")

    assert field in error["fields"]


@SQLITE_ONLY
def test_every_problem_in_a_query_is_named_at_once(api: DistelliApi) -> None:
    error = assert_error(api.list(max_results="0", order="up", filter_name="EnvAndBranch"), 400, "invalid_query")

    assert set(error["fields"]) == {"max_results", "order", "filter_env", "filter_branch"}


@pytest.mark.parametrize(("filter_name", "parameter"), [("Branch", "filter_branch"), ("Env", "filter_env")])
def test_a_filter_value_with_a_nul_character_is_a_400_naming_it(
    api: DistelliApi, filter_name: str, parameter: str
) -> None:
    error = assert_error(api.list(filter_name=filter_name, **{parameter: "ma\x00ster"}), 400, "invalid_query")
    assert list(error["fields"]) == [parameter]
