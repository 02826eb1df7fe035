"""Real Distelli clients, replayed over a real socket with the request shapes they send.

- A public Groovy Jenkinsfile library (``pushData`` over ``HttpURLConnection``) treats any answer but 200 as a
  failed build, creates included; it sends lower-case ``running``, ``date -u +%Y-%m-%dT%H:%M:%S.0Z`` times, the
  branch cut to one segment (``GIT_BRANCH.split('/')[1]``) and ``commit_url`` as ``GIT_URL`` (a ``.git`` URL)
  plus ``/commits/<sha>``.
- The shell scripts of the Distelli Jenkins guide build every value with ``jq -R``, so every value is a string:
  ``""`` for a variable that was never set and ``NoChange...`` placeholders when the job has no git facts; a
  variant sends ``parent_id``; a failed create leaves ``null`` or nothing as the event id of the next call.
- The ``distelli`` client on PyPI joins its endpoint and paths into ``//user/...`` and sends ``json.dumps(None)``,
  a ``null`` body, on a GET.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from bridge.delivery.intake import HttpIntake
from bridge.delivery.sender import Sender
from bridge.storage.store import Store
from tests.conftest import TOKEN, USER
from tests.intake_server import IntakeServer
from tests.sender_support import deliver_all

SHA = "9f0c1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b"
GIT_URL = "https://github.com/ipcrm/pipelines_jenkins.git"
APP = "pipelines_jenkins"


@pytest.fixture
def bridge_url(app: Flask) -> Iterator[str]:
    """The bridge app behind a real threaded HTTP server on 127.0.0.1."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def _dot_zero_now() -> str:
    """``date -u +%Y-%m-%dT%H:%M:%S.0Z``."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.0Z")


def _push_data(base: str, method: str, args: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The Groovy library's ``pushData``: JSON body, and anything but 200 fails the build."""
    parts = urlsplit(f"{base}/{USER}/{args}")
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    connection.request(
        method,
        f"{parts.path}?{parts.query}",
        body=json.dumps(payload).encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    assert response.status == 200, f"Jenkinsfile error: {method} failed! Response code {response.status}: {text}"
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def _deliver(store: Store, intake: IntakeServer) -> None:
    deliver_all(Sender(store, HttpIntake(intake.url, intake.api_key)), store)


def test_the_groovy_jenkinsfile_library_gets_200_on_every_call_and_its_build_reaches_the_intake(
    bridge_url: str, store: Store, intake: IntakeServer
) -> None:
    git_branch = "origin/master"
    branch = git_branch.split("/")[1]
    change_url = f"{GIT_URL}/commits/{SHA}"
    token = f"apiToken={TOKEN}"
    push_id = _push_data(
        bridge_url,
        "PUT",
        f"apps/{APP}/events/pushEvent?{token}",
        {
            "author_username": "Matt Cadorette",
            "author_name": "Matt Cadorette",
            "commit_msg": "Add the Jenkinsfile",
            "commit_url": change_url,
            "repo_url": GIT_URL,
            "commit_id": SHA,
            "repo_owner": "ipcrm",
            "repo_name": APP,
            "branch": branch,
        },
    )["event_id"]
    build_id = _push_data(
        bridge_url,
        "PUT",
        f"apps/{APP}/events/buildEvent?{token}",
        {
            "build_status": "running",
            "build_start": _dot_zero_now(),
            "build_provider": "jenkins",
            "build_url": "https://jenkins.example.com/job/pipelines_jenkins/12/",
            "repo_url": GIT_URL,
            "commit_url": change_url,
            "author_username": "Matt Cadorette",
            "author_name": "Matt Cadorette",
            "commit_msg": "Add the Jenkinsfile",
            "commit_id": SHA,
            "branch": branch,
            "parent_event_id": push_id,
        },
    )["event_id"]
    _deliver(store, intake)
    updated = _push_data(
        bridge_url,
        "POST",
        f"apps/{APP}/events/{build_id}?{token}",
        {"build_status": "Success", "build_end": _dot_zero_now(), "release_version": "v3"},
    )
    _deliver(store, intake)
    listed = _push_data(bridge_url, "GET", f"apps/{APP}/events?{token}", {})

    assert updated["event"]["build_status"] == "Success"
    assert [event["event_id"] for event in listed["events"]] == [int(build_id), int(push_id)]
    running, running_job, final, final_job = intake.accepted_resources()
    assert [(r["level"], r["status"]) for r in (running, running_job, final, final_job)] == [
        ("pipeline", "running"),
        ("job", "running"),
        ("pipeline", "success"),
        ("job", "success"),
    ]
    assert final["git"]["sha"] == SHA
    assert final["git"]["repository_url"] == GIT_URL
    assert final["git"]["branch"] == "master"
    assert final["git"]["message"] == "Add the Jenkinsfile"
    assert final["start"] == running["start"] and final["end"] >= final["start"]
    assert "release:v3" in final["tags"]
    assert intake.statuses() == [202, 202]


# The guide's "No GIT variables available" branch: every git fact is a placeholder.
NO_GIT = {
    "commit_url": "NoChangeURL",
    "author_username": "NoChangeAuthor",
    "author_name": "NoChangeAuthorName",
    "commit_msg": "NoChangeMessage",
    "commit_id": "NoChangeID",
    "branch": "NoChangeBranch",
    "repo_url": "NoChangeTarget",
}


def _shell(bridge_url: str, method: str, path: str, body: dict[str, str] | str) -> requests.Response:
    """``curl -s -k -H "Content-Type: application/json" -X <method> <url> -d "$API_JSON"``."""
    data = body if isinstance(body, str) else json.dumps(body)
    return requests.request(
        method,
        f"{bridge_url}/{USER}/apps/{APP}/events/{path}?apiToken={TOKEN}",
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )


def test_shell_scripts_with_placeholders_and_empty_strings_are_stored_and_send_no_fake_git(
    bridge_url: str, store: Store, intake: IntakeServer
) -> None:
    push = _shell(bridge_url, "PUT", "pushEvent", NO_GIT)
    build_body = {
        "build_status": "Running",
        "build_start": _dot_zero_now(),
        "build_id": "12",
        "build_provider": "jenkins",
        "build_url": "https://jenkins.example.com/job/example-jenkins/12/",
        **NO_GIT,
        "parent_event_id": push.json()["event_id"],
    }
    build = _shell(bridge_url, "PUT", "buildEvent", build_body)
    build_id = build.json()["event_id"]
    # `distelli push -save-release` failed, so the release file was empty.
    update = _shell(
        bridge_url,
        "POST",
        build_id,
        {"build_status": "Success", "build_end": _dot_zero_now(), "release_version": ""},
    )
    _deliver(store, intake)

    assert (push.status_code, build.status_code, update.status_code) == (200, 200, 200)
    event = update.json()["event"]
    assert event["commit_id"] == "NoChangeID" and event["branch"] == "NoChangeBranch"  # listed as sent
    assert event["release_version"] is None and event["build_id"] == "12"
    pipeline, job = intake.accepted_resources()
    assert pipeline["status"] == job["status"] == "success"
    for resource in (pipeline, job):
        assert "git" not in resource
        assert not [tag for tag in resource["tags"] if "NoChange" in tag]
        assert not [tag for tag in resource["tags"] if tag.startswith("release:")]


def test_shell_scripts_with_git_variables_send_the_real_facts_and_drop_the_placeholder_message(
    bridge_url: str, store: Store, intake: IntakeServer
) -> None:
    """The guide's "Using GIT variables" branch: commit_url is $GIT_URL, the message a placeholder."""
    body = {
        "build_status": "Running",
        "build_start": _dot_zero_now(),
        "build_id": "13",
        "build_provider": "jenkins",
        "build_url": "https://jenkins.example.com/job/example-jenkins/13/",
        "repo_url": GIT_URL,
        "commit_url": GIT_URL,
        "author_username": "jdoe",
        "author_name": "John Doe",
        "commit_msg": "NoChangeMessage",
        "commit_id": SHA,
        "branch": "origin/feature/x",
        "parent_event_id": "",  # the push create failed, so its id was never set
    }

    response = _shell(bridge_url, "PUT", "buildEvent", body)
    _deliver(store, intake)

    assert response.status_code == 200
    pipeline, _ = intake.accepted_resources()
    assert pipeline["git"]["sha"] == SHA
    assert pipeline["git"]["branch"] == "feature/x"
    assert "message" not in pipeline["git"]


def test_parent_id_is_the_same_field_as_parent_event_id(bridge_url: str, store: Store, intake: IntakeServer) -> None:
    push = _shell(
        bridge_url,
        "PUT",
        "pushEvent",
        {"repo_url": GIT_URL, "commit_id": SHA, "commit_msg": "From the push", "branch": "master"},
    )
    build = _shell(bridge_url, "PUT", "buildEvent", {"build_status": "Running", "parent_id": push.json()["event_id"]})
    _deliver(store, intake)

    assert build.status_code == 200
    pipeline, _ = intake.accepted_resources()
    assert pipeline["git"]["sha"] == SHA and pipeline["git"]["message"] == "From the push"
    events = requests.get(f"{bridge_url}/{USER}/apps/{APP}/events?apiToken={TOKEN}", timeout=10).json()["events"]
    assert events[0]["parent_event_id"] == push.json()["event_id"]


@pytest.mark.parametrize("event_id", ["", "null"])
def test_an_update_to_an_event_id_a_failed_create_left_empty_is_a_clear_4xx(bridge_url: str, event_id: str) -> None:
    """``jq .event_id | tr -d '"'`` of an error answer is ``null``; an empty file gives ``/events/``."""
    response = _shell(bridge_url, "POST", event_id, {"build_status": "Success", "build_end": _dot_zero_now()})

    assert 400 <= response.status_code < 500
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] and error["message"]


def test_the_pypi_client_shape_doubled_slashes_and_a_null_body_on_get(bridge_url: str) -> None:
    """``Request(method, "{endpoint}/{username}{url}?apiToken=...", data=json.dumps(data))`` as the package
    prepares it, with its endpoint's trailing slash making ``//``."""
    endpoint = f"{bridge_url}/"
    session = requests.Session()

    def call(method: str, url: str, data: Any = None) -> requests.Response:
        request = requests.Request(
            method=method,
            url=f"{endpoint}/{USER}{url}?apiToken={TOKEN}",
            headers={"Content-Type": "application/json"},
            data=json.dumps(data),
        )
        return session.send(request.prepare(), timeout=10)

    created = call("PUT", f"/apps/{APP}/events/buildEvent", {"build_status": "Running", "build_id": "7"})
    listed = call("GET", f"/apps/{APP}/events")
    updated = call("POST", f"/apps/{APP}/events/{created.json()['event_id']}", {"build_status": "Failed"})

    assert created.request.path_url.startswith(f"//{USER}/apps/")
    assert listed.request.body == "null"
    assert (created.status_code, listed.status_code, updated.status_code) == (200, 200, 200)
    assert [event["build_id"] for event in listed.json()["events"]] == ["7"]
    assert updated.json()["event"]["build_status"] == "Failed"
