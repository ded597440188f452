"""The `asana` ops target against the loopback Asana over real HTTP, and one hand-off from a
HubSpot deal to an Asana task through the whole stack."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from bridge.server import unset_secrets
from bridge.settings import Settings
from connectors.asana import AsanaTarget
from connectors.asana_settings import AsanaSettings
from kernel import api_calls
from kernel.connector import OpsRequest
from kernel.errors import AuthError, NotConfigured, PartialFailure, PermanentError, RetryableError
from kernel.packet import Packet
from kernel.rate_budget import RateBudgets
from sandbox.asana import AsanaSandbox
from sandbox.asana_http import RunningAsanaSandbox, start_asana_sandbox
from tests.conftest import ROOT
from tests.e2e import KICKOFF, Stack, start_stack

HANDOFF = "hubspot:101:1"


@pytest.fixture
def asana() -> Iterator[RunningAsanaSandbox]:
    with start_asana_sandbox() as running:
        yield running


@pytest.fixture
def gids(asana: RunningAsanaSandbox) -> dict[str, str]:
    return asana.sandbox.seed_default_workspace()


def target(asana: RunningAsanaSandbox, **values: Any) -> AsanaTarget:
    settings = Settings(
        ASANA_ACCESS_TOKEN=values.pop("token", asana.access_token),
        ASANA_API_BASE=asana.api_base,
        ASANA_JOB_WAIT_SECONDS=values.pop("job_wait", 5),
        **values,
    )
    return AsanaTarget(settings)


def request(
    options: dict[str, Any], handoff: str = HANDOFF, owner: str | None = "ops-anna@example.com"
) -> OpsRequest:
    return OpsRequest(
        handoff_id=handoff,
        crm="hubspot",
        deal_id="101",
        kit_id="new-customer",
        kit_title="New customer onboarding",
        options=options,
        owner_email=owner,
        subject="New customer onboarding: Acme <b>Corp</b> & Co",
        summary="Kit: New customer onboarding\n  Billing contact: <script>x</script>\nDone.",
        expected_kickoff=dt.date(2027, 1, 15),
        packet=Packet(crm="hubspot", deal_id="101"),
    )


def task_in(asana: RunningAsanaSandbox, gids: dict[str, str]) -> list[dict[str, Any]]:
    return asana.sandbox.task_list(gids["project"])


def made_projects(asana: RunningAsanaSandbox, gids: dict[str, str]) -> list[dict[str, Any]]:
    return [p for p in asana.sandbox.project_list(gids["team"]) if p["gid"] != gids["project"]]


# --- a task in a project -----------------------------------------------------------------


def test_task_lands_in_the_section_assigned_due_at_kickoff_with_the_kit(
    asana: RunningAsanaSandbox, gids: dict[str, str]
) -> None:
    made = target(asana).create(
        [request({"project": gids["project"], "section": gids["section"]})]
    )[HANDOFF]

    [task] = task_in(asana, gids)
    assert made.ref == task["gid"] and task["gid"] in made.link
    assert made.owner == "ops-anna@example.com"
    assert task["assignee"] == asana.sandbox.user_gid("ops-anna@example.com")
    assert task["memberships"] == [{"project": gids["project"], "section": gids["section"]}]
    assert task["due_on"] == "2027-01-15"
    assert task["external"]["gid"] == HANDOFF
    assert task["name"] == "New customer onboarding: Acme <b>Corp</b> & Co"  # plain text
    # Rich text Asana accepts, in which nothing from the CRM became a tag.
    assert task["html_notes"] == (
        "<body>Kit: New customer onboarding\n"
        "  Billing contact: &lt;script&gt;x&lt;/script&gt;\nDone.\n\n"
        "Fullkit hand-off hubspot:101:1</body>"
    )


def test_characters_xml_forbids_never_make_asana_refuse_the_notes(
    asana: RunningAsanaSandbox, gids: dict[str, str]
) -> None:
    hostile = replace(request({"project": gids["project"]}), summary="Acme\uffff\x00\u202e Co")
    target(asana).create([hostile])
    [task] = task_in(asana, gids)
    assert task["html_notes"] == "<body>Acme  Co\n\nFullkit hand-off hubspot:101:1</body>"


def test_task_without_section_or_owner(asana: RunningAsanaSandbox, gids: dict[str, str]) -> None:
    made = target(asana).create([request({"project": gids["project"]}, owner=None)])[HANDOFF]
    [task] = task_in(asana, gids)
    assert task["assignee"] is None and made.owner is None
    assert task["memberships"] == [{"project": gids["project"], "section": None}]


def test_retry_after_a_lost_answer_finds_the_task_instead_of_making_a_second(
    asana: RunningAsanaSandbox, gids: dict[str, str]
) -> None:
    ops = target(asana)
    asana.sandbox.lose_next_answers(1, "/tasks")  # Asana creates it; we never hear back
    with pytest.raises(RetryableError):
        ops.create([request({"project": gids["project"]})])
    assert len(task_in(asana, gids)) == 1

    made = ops.create([request({"project": gids["project"]})], may_exist=True)[HANDOFF]

    [task] = task_in(asana, gids)
    assert made.ref == task["gid"] and made.owner == "ops-anna@example.com"
    assert asana.sandbox.calls("POST", "/tasks")[-1].status == 504  # no second create


def listed(asana: RunningAsanaSandbox) -> list[Any]:
    """The calls that listed a project's tasks (GET /tasks?project=..)."""
    return [c for c in asana.sandbox.calls("GET", "/tasks") if c.path == "/tasks"]


def pat_target(asana: RunningAsanaSandbox) -> AsanaTarget:
    """A personal access token, on an Asana that drops its `external` data."""
    asana.sandbox.external_needs_oauth = True
    return target(asana)


def test_with_a_personal_access_token_a_retry_finds_the_task_by_its_notes(
    asana: RunningAsanaSandbox, gids: dict[str, str]
) -> None:
    ops = pat_target(asana)
    accepted = dt.datetime.now(dt.UTC)
    first = replace(request({"project": gids["project"]}), accepted_at=accepted)
    asana.sandbox.lose_next_answers(1, "/tasks")
    with pytest.raises(RetryableError):
        ops.create([first])
    [lost] = task_in(asana, gids)
    assert lost["external"] is None  # Asana kept no external id for this token

    made = ops.create([first], may_exist=True)[HANDOFF]

    [task] = task_in(asana, gids)
    assert made.ref == task["gid"] and made.owner == "ops-anna@example.com"
    assert asana.sandbox.calls("POST", "/tasks")[-1].status == 504  # no second create
    assert [c.status for c in listed(asana)] == [200]


def test_a_project_with_many_tasks_is_paged_to_find_the_first_try(
    asana: RunningAsanaSandbox, gids: dict[str, str]
) -> None:
    ops = pat_target(asana)
    asana.sandbox.lose_next_answers(1, "/tasks")
    with pytest.raises(RetryableError):
        ops.create([request({"project": gids["project"]})])
    [first] = [t["gid"] for t in task_in(asana, gids)]
    others = [request({"project": gids["project"]}, handoff=f"hubspot:9{n}:1") for n in range(250)]
    ops.create(others)
    box = asana.sandbox
    with box.lock:  # the first try's task last in the project's order (ops moved it)
        box.tasks[first] = box.tasks.pop(first)

    made = ops.create([request({"project": gids["project"]})], may_exist=True)[HANDOFF]

    assert made.ref == first and len(task_in(asana, gids)) == 251
    assert len(listed(asana)) == 3  # 100 + 100 + 51


def test_an_unrelated_task_naming_a_longer_handoff_id_is_not_taken_for_it(
    asana: RunningAsanaSandbox, gids: dict[str, str]
) -> None:
    ops = pat_target(asana)
    ops.create([request({"project": gids["project"]}, handoff="hubspot:101:10")])

    made = ops.create([request({"project": gids["project"]})], may_exist=True)[HANDOFF]

    assert len(task_in(asana, gids)) == 2
    assert made.ref != task_in(asana, gids)[0]["gid"]


def test_the_fake_lists_tasks_as_strictly_as_asana(
    asana: RunningAsanaSandbox, gids: dict[str, str]
) -> None:
    base = asana.api_base
    auth = {"Authorization": f"Bearer {asana.access_token}"}
    no_project = requests.get(f"{base}/tasks", headers=auth, timeout=5)
    bad_since = requests.get(
        f"{base}/tasks",
        params={"project": gids["project"], "modified_since": "yesterday"},
        headers=auth,
        timeout=5,
    )
    too_many = requests.get(
        f"{base}/tasks", params={"project": gids["project"], "limit": 101}, headers=auth, timeout=5
    )
    assert [r.status_code for r in (no_project, bad_since, too_many)] == [400, 400, 400]
    assert "errors" in bad_since.json()


def test_each_attempt_gets_its_own_task(asana: RunningAsanaSandbox, gids: dict[str, str]) -> None:
    ops = target(asana)
    first = ops.create([request({"project": gids["project"]})])[HANDOFF]
    second = ops.create(
        [request({"project": gids["project"]}, handoff="hubspot:101:2")], may_exist=True
    )["hubspot:101:2"]
    assert first.ref != second.ref and len(task_in(asana, gids)) == 2


# --- a project from a template --------------------------------------------------------------


def test_template_makes_a_project_owned_by_ops_starting_at_kickoff(
    asana: RunningAsanaSandbox, gids: dict[str, str]
) -> None:
    made = target(asana).create([request({"template": gids["template"]})])[HANDOFF]

    [project] = made_projects(asana, gids)
    assert made.ref == project["gid"] and project["gid"] in made.link
    assert project["name"] == f"New customer onboarding: Acme <b>Corp</b> & Co [{HANDOFF}]"
    assert project["owner"] == asana.sandbox.user_gid("ops-anna@example.com")
    assert made.owner == "ops-anna@example.com"
    assert project["start_on"] == "2027-01-15"  # the template's requested kickoff date
    assert "&lt;script&gt;" in project["html_notes"]
    names = sorted(t["name"] for t in asana.sandbox.task_list(project["gid"]))
    assert names == ["Kickoff call", "Provision the account", "Training"]


def test_retry_after_a_lost_instantiation_finds_the_project_by_its_handoff_id(
    asana: RunningAsanaSandbox, gids: dict[str, str]
) -> None:
    ops = target(asana)
    asana.sandbox.lose_next_answers(1, "/project_templates")
    with pytest.raises(RetryableError):
        ops.create([request({"template": gids["template"]})])

    made = ops.create([request({"template": gids["template"]})], may_exist=True)[HANDOFF]

    [project] = made_projects(asana, gids)
    assert made.ref == project["gid"]
    # The step the lost answer cut off is done on the retry.
    assert project["owner"] == asana.sandbox.user_gid("ops-anna@example.com")


def test_a_slow_instantiation_is_left_to_the_retry_which_finds_it(
    asana: RunningAsanaSandbox, gids: dict[str, str]
) -> None:
    asana.sandbox.job_polls = 1000  # the job never finishes while we wait
    with pytest.raises(RetryableError, match="still making"):
        target(asana, job_wait=0).create([request({"template": gids["template"]})])
    asana.sandbox.job_polls = 0
    target(asana).create([request({"template": gids["template"]})], may_exist=True)
    assert len(made_projects(asana, gids)) == 1


# --- errors ------------------------------------------------------------------------------


def test_a_refused_token_stops_with_an_auth_error(
    asana: RunningAsanaSandbox, gids: dict[str, str]
) -> None:
    with pytest.raises(AuthError, match="access token was refused"):
        target(asana, token="2/wrong").create([request({"project": gids["project"]})])
    asana.sandbox.fail_next(1, 403)
    with pytest.raises(PartialFailure) as forbidden:
        target(asana).create([request({"project": gids["project"]})])
    assert isinstance(forbidden.value.failed[HANDOFF], AuthError)
    assert task_in(asana, gids) == []


def test_a_project_the_token_may_not_write_fails_only_its_own_request(
    asana: RunningAsanaSandbox, gids: dict[str, str]
) -> None:
    """Two kits, two projects: a 403 is that one project's permission, so the other
    kit's task is still made in the same batch instead of failing with it."""
    asana.sandbox.fail_next(1, 403)
    with pytest.raises(PartialFailure) as partial:
        target(asana).create([
            request({"project": gids["project"]}, owner=None),
            request({"project": gids["project"]}, handoff="hubspot:102:1", owner=None),
        ])  # fmt: skip
    assert isinstance(partial.value.failed[HANDOFF], AuthError)
    assert set(partial.value.done) == {"hubspot:102:1"}  # type: ignore[arg-type]
    assert len(task_in(asana, gids)) == 1


def test_rate_limit_carries_retry_after_and_the_paced_retry_succeeds(
    asana: RunningAsanaSandbox, gids: dict[str, str], embedded_redis_url: str
) -> None:
    now = [1_000_000.0]
    connection = redis.Redis.from_url(embedded_redis_url)
    budgets = RateBudgets(connection, clock=lambda: now[0])
    before = api_calls.counts(connection)
    ops = target(asana)
    ops.rate_budgets = budgets
    asana.sandbox.fail_next(1, 429, retry_after=7)

    with pytest.raises(RetryableError) as limited:
        ops.create([request({"project": gids["project"]})])
    assert limited.value.retry_after == 7
    # Every process spending this token now waits Asana's 7 seconds before asking.
    assert ops.api.budget is not None
    assert ops.api.budget.try_take() == (None, 7.0)

    now[0] += 7
    made = ops.create([request({"project": gids["project"]})], may_exist=True)
    assert [t["gid"] for t in task_in(asana, gids)] == [made[HANDOFF].ref]
    # /metrics counts the refused call and the ones that worked, under asana.
    after = api_calls.counts(connection)
    assert after.get(("asana", "429"), 0) - before.get(("asana", "429"), 0) == 1
    assert after.get(("asana", "ok"), 0) - before.get(("asana", "ok"), 0) >= 1


def test_outage_and_bad_data_are_told_apart(
    asana: RunningAsanaSandbox, gids: dict[str, str]
) -> None:
    asana.sandbox.fail_next(1, 503)
    with pytest.raises(RetryableError):
        target(asana).create([request({"project": gids["project"]})])
    with pytest.raises(PartialFailure) as unknown:
        target(asana).create([request({"project": "1"})])
    assert isinstance(unknown.value.failed[HANDOFF], PermanentError)
    assert "Unknown object: 1" in str(unknown.value.failed[HANDOFF])


def test_an_ops_owner_asana_does_not_know_fails_only_that_request(
    asana: RunningAsanaSandbox, gids: dict[str, str]
) -> None:
    with pytest.raises(PartialFailure) as partial:
        target(asana).create([
            request({"project": gids["project"]}, owner="nobody@example.com"),
            request({"project": gids["project"]}, handoff="hubspot:102:1"),
        ])  # fmt: skip
    assert "nobody@example.com is not an Asana user" in str(partial.value.failed[HANDOFF])
    assert set(partial.value.done) == {"hubspot:102:1"}  # type: ignore[arg-type]


def test_unset_token_disables_the_target_and_serve_says_so() -> None:
    with pytest.raises(NotConfigured, match="ASANA_ACCESS_TOKEN is not set"):
        AsanaTarget(Settings()).create([request({"project": "1"})])
    lines = unset_secrets(Settings(), [AsanaSettings])
    assert any(line.startswith("ASANA_ACCESS_TOKEN is not set: the asana") for line in lines)


def oauth_target(asana: RunningAsanaSandbox, refresh_token: str | None = None) -> AsanaTarget:
    box = asana.sandbox
    return AsanaTarget(
        Settings(
            ASANA_CLIENT_ID=box.client_id,
            ASANA_CLIENT_SECRET=box.client_secret,
            ASANA_REFRESH_TOKEN=refresh_token or box.refresh_token,
            ASANA_OAUTH_TOKEN_URL=asana.oauth_token_url,
            ASANA_API_BASE=asana.api_base,
        )
    )


def test_oauth_tokens_are_refreshed_when_they_end(
    asana: RunningAsanaSandbox, gids: dict[str, str]
) -> None:
    ops = oauth_target(asana)
    ops.create([request({"project": gids["project"]})])
    asana.sandbox.expire_issued_tokens()  # an hour later
    ops.create([request({"project": gids["project"]}, handoff="hubspot:102:1")])

    assert len(task_in(asana, gids)) == 2
    assert [c.status for c in asana.sandbox.calls("POST", "/-/oauth_token")] == [200, 200]
    assert [c.status for c in asana.sandbox.calls("POST", "/tasks")] == [201, 401, 201]


def test_a_refused_refresh_token_is_an_auth_error_that_shows_no_secret(
    asana: RunningAsanaSandbox, gids: dict[str, str]
) -> None:
    with pytest.raises(AuthError, match="refused the refresh token") as refused:
        oauth_target(asana, refresh_token="1/stolen-and-revoked").create(
            [request({"project": gids["project"]})]
        )
    assert "stolen" not in str(refused.value)
    assert asana.sandbox.client_secret not in str(refused.value)


def test_half_an_oauth_set_up_is_named_at_start() -> None:
    lines = AsanaSettings(client_id="1", refresh_token="1/x").unset()  # type: ignore[arg-type]
    assert lines == [
        "ASANA_CLIENT_SECRET not set (the OAuth refresh needs all three): "
        "the asana ops target is disabled (kits naming it cannot be served)"
    ]


# --- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"project": "12", "colour": "red"}, "colour: unknown key for target asana"),
        ({"project": 1204}, 'project: must be an Asana gid in quotes, e.g. "1204567890123"'),
        ({"template": "12", "team": ["1"]}, "team: must be an Asana gid in quotes"),
        ({}, "project: required"),
        ({"section": "3"}, "section: only with project"),
        ({"project": "1", "template": "2"}, "template: give either project"),
        ({"project": "1", "team": "2"}, "team: only with template"),
    ],
)
def test_option_problems_are_named(options: dict[str, Any], problem: str) -> None:
    assert any(p.startswith(problem) for p in AsanaTarget.validate_options(options))


def test_good_options_pass() -> None:
    assert AsanaTarget.validate_options({"project": "12", "section": "34"}) == []
    assert AsanaTarget.validate_options({"template": "12", "team": "34"}) == []


# --- the fake is as strict as Asana ---------------------------------------------------------


def test_sandbox_refuses_invalid_rich_text_and_unknown_projects_in_asanas_shape(
    asana: RunningAsanaSandbox, gids: dict[str, str]
) -> None:
    auth = {"Authorization": f"Bearer {asana.access_token}"}

    def post(data: dict[str, Any]) -> requests.Response:
        url = f"{asana.api_base}/tasks"
        return requests.post(url, json={"data": data}, headers=auth, timeout=5)

    bad = post({"projects": [gids["project"]], "html_notes": "<body><p>hi</body>"})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["message"] == "html_notes: XML is invalid"
    assert "help" in bad.json()["errors"][0]
    script = post({"projects": [gids["project"]], "html_notes": "<body><script/></body>"})
    assert script.status_code == 400
    missing = post({"projects": ["999"], "name": "x"})
    assert missing.status_code == 404 and "Unknown object: 999" in missing.text
    asana.sandbox.fail_next(1, 429, retry_after=12)
    limited = post({"projects": [gids["project"]]})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "12"
    assert asana.sandbox.task_list() == []


# --- end to end: a HubSpot deal handed off into an Asana task --------------------------------


@pytest.fixture
def asana_stack(make_settings: Any, tmp_path: Path) -> Iterator[tuple[Stack, AsanaSandbox]]:
    with start_asana_sandbox() as asana:
        gids = asana.sandbox.seed_default_workspace()
        rules = tmp_path / "rules"
        shutil.copytree(ROOT / "kit_rules", rules)
        kit = rules / "kits" / "10-new-customer.yaml"
        kit.write_text(
            kit.read_text().replace(
                'target: hubspot_ticket\n  pipeline: "0"\n  stage: "1"',
                f'target: asana\n  project: "{gids["project"]}"\n  section: "{gids["section"]}"',
            )
        )

        def settings(**values: Any) -> Settings:
            return make_settings(
                FULLKIT_RULES_DIR=str(rules),
                ASANA_ACCESS_TOKEN=asana.access_token,
                ASANA_API_BASE=asana.api_base,
                **values,
            )

        for stack in start_stack(settings):
            yield stack, asana.sandbox


def test_hubspot_deal_is_handed_off_into_one_asana_task_linked_from_the_deal(
    asana_stack: tuple[Stack, AsanaSandbox],
) -> None:
    stack, asana = asana_stack
    deal_id = stack.complete_deal()
    asana.lose_next_answers(1, "/tasks")  # the first create's answer is lost
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()
    assert stack.history(deal_id)["attempts"][0]["state"] == "accepted"  # not yet recorded

    stack.run_scheduled_now()
    stack.work()

    [task] = asana.task_list()
    assert task["external"]["gid"] == f"hubspot:{deal_id}:1"
    assert "bill@acmecorp.example" in task["html_notes"]  # the whole kit, in the task
    assert task["due_on"] >= KICKOFF
    deal = stack.deal(deal_id)
    assert deal["fullkit_status"] == "accepted"
    assert deal["fullkit_ops_link"] == asana.task_permalink(task)
    assert task["gid"] in deal["fullkit_ops_link"]
    assert deal["fullkit_ops_owner"] == "ops-anna@example.com"
    assert stack.history(deal_id)["attempts"][0]["state"] == "ops_created"
