"""The loopback Jira Cloud site answers as Jira does: its error bodies, its auth and rate
limit answers, and its refusals, so the target's tests mean something."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sandbox.jira import JiraSandbox
from sandbox.jira_http import RunningJiraSandbox, start_jira_sandbox

API = "/rest/api/3"


@pytest.fixture
def site() -> Iterator[RunningJiraSandbox]:
    box = JiraSandbox()
    box.seed_default_site()
    served = start_jira_sandbox(sandbox=box)
    yield served
    served.stop()


def post(site: RunningJiraSandbox, fields: dict[str, Any], **extra: Any) -> requests.Response:
    auth = (site.sandbox.email, site.sandbox.api_token)
    body = {"fields": fields, **extra}
    return requests.post(f"{site.url}{API}/issue", json=body, auth=auth, timeout=5)


def task(**fields: Any) -> dict[str, Any]:
    return {"project": {"key": "OPS"}, "issuetype": {"name": "Task"}, "summary": "x", **fields}


def test_a_plain_string_description_is_refused_on_v3(site: RunningJiraSandbox) -> None:
    answer = post(site, task(description="Kit complete"))
    assert answer.status_code == 400
    assert answer.json() == {
        "errorMessages": [],
        "errors": {
            "description": "Operation value must be an Atlassian Document (see the Atlassian "
            "Document Format)"
        },
    }


@pytest.mark.parametrize(
    "document",
    [
        {"type": "doc", "version": 2, "content": []},
        {"type": "doc", "version": 1, "content": [{"type": "text", "text": "loose"}]},
        {"type": "doc", "version": 1,
         "content": [{"type": "paragraph", "content": [{"type": "text", "text": ""}]}]},
        {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [
            {"type": "text", "text": "x", "marks": [{"type": "link", "attrs": {}}]}]}]},
    ],
)  # fmt: skip
def test_malformed_documents_are_refused(site: RunningJiraSandbox, document: Any) -> None:
    assert post(site, task(description=document)).status_code == 400


def test_every_bad_field_is_named_in_one_answer(site: RunningJiraSandbox) -> None:
    answer = post(
        site,
        task(summary="two\nlines", components=[{"name": "Nope"}], customfield_10099="x"),
    )
    assert answer.status_code == 400
    assert answer.json()["errors"] == {
        "summary": "The summary is invalid because it contains newline characters.",
        "components": "Component name 'Nope' is not valid",
        "customfield_10099": "Field 'customfield_10099' cannot be set. It is not on the "
        "appropriate screen, or unknown.",
    }


def test_wrong_credentials_get_jiras_401(site: RunningJiraSandbox) -> None:
    answer = requests.get(
        f"{site.url}{API}/user/search", params={"query": "a"}, auth=("x", "y"), timeout=5
    )
    assert answer.status_code == 401
    assert answer.text == "Client must be authenticated to access this resource."


def test_a_429_carries_jiras_rate_limit_headers(site: RunningJiraSandbox) -> None:
    site.sandbox.fail_next(1, 429, retry_after=5)
    answer = post(site, task())
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "5"
    assert answer.headers["RateLimit-Reason"] == "jira-burst-based"
    assert "X-RateLimit-Reset" in answer.headers
    assert post(site, task()).status_code == 201


def test_a_lost_answer_still_creates(site: RunningJiraSandbox) -> None:
    site.sandbox.lose_next_answers(1)
    assert post(site, task()).status_code == 504
    assert [i.key for i in site.sandbox.all_issues("OPS")] == ["OPS-1", "OPS-2"]


def test_search_cannot_query_an_unindexed_entity_property(site: RunningJiraSandbox) -> None:
    answer = requests.get(
        f"{site.url}{API}/search/jql",
        params={"jql": 'issue.property[fullkit].handoffId = "hubspot:1:1"'},
        auth=(site.sandbox.email, site.sandbox.api_token),
        timeout=5,
    )
    assert answer.status_code == 400
    assert "does not exist" in answer.json()["errorMessages"][0]


def test_search_lags_behind_a_create(site: RunningJiraSandbox) -> None:
    box = site.sandbox
    box.search_lag_seconds = 3600.0
    assert post(site, task(labels=["fresh"])).status_code == 201
    client = site.client()
    assert client.enhanced_search_issues('labels = "fresh"', json_result=True)["issues"] == []
    box.index_now()
    found = client.enhanced_search_issues('labels = "fresh"', json_result=True)["issues"]
    assert [i["key"] for i in found] == ["OPS-2"]
