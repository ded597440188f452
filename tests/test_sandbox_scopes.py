"""The sandbox knows scopes: its token has exactly the app config's scopes, every route
requires what HubSpot requires, and a missing scope answers HubSpot's 403."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from bridge import jobs
from connectors.hubspot_app import required_scopes
from sandbox import HubSpotSandbox, RunningSandbox, start_sandbox
from sandbox.hubspot_http import _RULES
from sandbox.hubspot_scopes import find_rule
from sandbox.hubspot_scopes import required_scopes as route_scopes
from tests.e2e import Stack, start_stack

APP_SCOPES = frozenset(required_scopes())
SAMPLE_ARGS = {"otype": "deals", "to": "companies"}


@pytest.fixture
def served() -> Iterator[RunningSandbox]:
    with start_sandbox(sandbox=HubSpotSandbox(rate_limit=None)) as running:
        yield running


def _call(served: RunningSandbox, method: str, path: str, token: str, **kwargs: Any) -> Any:
    return requests.request(
        method,
        served.url + path,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
        **kwargs,
    )


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, _ in _RULES])
def test_every_sandbox_route_declares_its_scopes(method: str, path: str) -> None:
    concrete = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: SAMPLE_ARGS.get(m.group(1), "101"), path)
    assert find_rule(method, concrete) is not None, f"add a line to SCOPE_RULES for {path}"


def test_the_token_has_exactly_the_app_configs_scopes(served: RunningSandbox) -> None:
    token = served.access_token
    answer = _call(
        served,
        "POST",
        "/oauth/v2/private-apps/get/access-token-info",
        token,
        json={"tokenKey": token},
    )
    assert answer.status_code == 200
    info = answer.json()
    assert set(info["scopes"]) == APP_SCOPES
    assert info["hubId"] == served.sandbox.portal_id and info["appId"] == served.sandbox.app_id


def test_everything_fullkit_calls_is_within_the_app_scopes() -> None:
    fullkit_calls = [
        ("GET", "/account-info/v3/details"),
        ("GET", "/crm/v3/owners/"),
        ("POST", "/crm/v3/properties/deals"),
        ("POST", "/crm/v3/properties/tickets/groups"),
        ("GET", "/crm/v3/pipelines/tickets"),
        ("GET", "/crm/v3/objects/deals/101"),
        ("POST", "/crm/v3/objects/deals/search"),
        ("POST", "/crm/v3/objects/deals/batch/update"),
        ("POST", "/crm/v3/objects/companies/batch/read"),
        ("POST", "/crm/v3/objects/contacts/batch/read"),
        ("POST", "/crm/v3/objects/line_items/batch/read"),
        ("POST", "/crm/v3/objects/tickets"),
        ("POST", "/crm/v3/objects/tasks/batch/create"),
        ("POST", "/crm/v4/associations/deals/tasks/batch/read"),
        ("GET", "/crm/v4/objects/deals/101/associations/contacts"),
        ("POST", "/crm/v3/objects/notes/batch/read"),
        ("POST", "/crm/v3/objects/emails/batch/read"),
        ("GET", "/files/v3/files/101/signed-url"),
    ]
    for method, path in fullkit_calls:
        needed = route_scopes(method, path)
        assert needed is not None and set(needed) <= APP_SCOPES, (method, path, needed)


def test_a_missing_scope_answers_hubspots_403(served: RunningSandbox) -> None:
    served.sandbox.add_token("pat-narrow", scopes=APP_SCOPES - {"crm.objects.contacts.write"})
    answer = _call(served, "POST", "/crm/v3/objects/tasks", "pat-narrow", json={"properties": {}})
    assert answer.status_code == 403
    body = answer.json()
    assert body["category"] == "MISSING_SCOPES"
    assert body["message"].startswith("This app hasn't been granted all required scopes")
    assert body["errors"] == [
        {
            "message": "One or more of the following scopes are required.",
            "context": {"requiredGranularScopes": ["crm.objects.contacts.write"]},
        }
    ]
    assert body["correlationId"] and body["links"]
    assert served.sandbox.all("tasks") == []
    # Reads the token was granted still work.
    assert _call(served, "GET", "/crm/v3/objects/tasks", "pat-narrow").status_code == 200


@pytest.fixture
def narrow_stack(make_settings: Any) -> Iterator[Stack]:
    # Set up with the app's scopes; the app was later installed without contacts.write.
    for stack in start_stack(make_settings):
        stack.sandbox.set_scopes(
            stack.sandbox.access_token, APP_SCOPES - {"crm.objects.contacts.write"}
        )
        yield stack


def test_pushback_without_contacts_write_fails_naming_the_scope(narrow_stack: Stack) -> None:
    stack = narrow_stack
    deal_id = stack.complete_deal(amount="0")
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()

    attempt = stack.history(deal_id)["attempts"][0]
    assert attempt["state"] == "failed"
    assert "crm.objects.contacts.write" in attempt["error"], attempt["error"]
    assert stack.sandbox.tasks_for_deal(deal_id) == []

    # The admin updates the app's install: the same attempt then finishes with one task.
    stack.sandbox.set_scopes(stack.sandbox.access_token, APP_SCOPES)
    assert jobs.replay_failed(stack.runtime, [("hubspot", deal_id)]) == [f"hubspot:{deal_id}:1"]
    stack.work()
    assert stack.history(deal_id)["attempts"][0]["state"] == "returned"
    assert len(stack.sandbox.tasks_for_deal(deal_id)) == 1
