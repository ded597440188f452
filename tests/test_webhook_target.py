"""The webhook ops target against the loopback sink over real HTTP: the signed document,
one per attempt across lost answers, the error kinds, pacing, and its options."""

from __future__ import annotations

import base64
import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

import connectors
from bridge.cli import cli
from bridge.rules import RulesError, load_rules
from bridge.settings import Settings
from connectors.webhook import WebhookTarget
from connectors.webhook_document import webhook_id
from connectors.webhook_settings import WebhookSettings
from kernel import api_calls
from kernel.connector import KitItem, OpsRequest, OpsResult
from kernel.errors import (
    AuthError,
    ConnectorError,
    NotConfigured,
    PartialFailure,
    PermanentError,
    RetryableError,
)
from kernel.packet import Packet
from kernel.rate_budget import RateBudgets
from kernel.settings import SettingsError, load
from sandbox.webhook_sink import RunningWebhookSink, start_webhook_sink
from tests.conftest import ROOT
from tests.e2e import Stack, start_stack

SECRET = "whsec_" + base64.b64encode(b"fullkit-test-webhook-secret-32by").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-receivers-secret-32bytes").decode()
PUBLIC = "https://fullkit.example.org"
ACCEPTED_AT = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)


@pytest.fixture
def sink() -> Iterator[RunningWebhookSink]:
    with start_webhook_sink(SECRET) as running:
        yield running


def settings(**values: Any) -> Settings:
    given = {"FULLKIT_WEBHOOK_SECRET": SECRET, "FULLKIT_PUBLIC_URL": PUBLIC, **values}
    return Settings(**{k: v for k, v in given.items() if v is not None})


def target(**values: Any) -> WebhookTarget:
    return WebhookTarget(settings(**{"FULLKIT_WEBHOOK_TIMEOUT_SECONDS": "1", **values}))


def request(url: str, attempt: int = 1, **options: Any) -> OpsRequest:
    packet = Packet(
        crm="hubspot",
        deal_id="4242",
        name="Acme Corp",
        deal={"amount": 24000.0, "plan": "enterprise", "kickoff_date": dt.date(2027, 1, 15)},
        company={"name": "Acme Corp", "domain": "acme.example"},
        contacts=[{"email": "bill@acme.example", "role": "billing"}],
        line_items=[{"name": "Platform seat", "quantity": 25.0}],
        url="https://app.hubspot.com/contacts/1/record/0-3/4242",
    )
    return OpsRequest(
        handoff_id=f"hubspot:4242:{attempt}",
        crm="hubspot",
        deal_id="4242",
        kit_id="new-customer",
        kit_title="New customer onboarding",
        options={"url": url, **options},
        owner_email="ops-anna@example.com",
        subject="New customer onboarding: Acme Corp",
        summary="Kit: New customer onboarding\n  [x] amount: Deal amount must be above zero",
        expected_kickoff=dt.date(2027, 1, 15),
        packet=packet,
        requirements=(
            KitItem("amount", "Deal amount must be above zero", True),
            KitItem("sso-provider", "Enterprise deals need the SSO provider", False),
        ),
        accepted_at=ACCEPTED_AT,
    )


def only_error(partial: pytest.ExceptionInfo[PartialFailure]) -> ConnectorError:
    (error,) = partial.value.failed.values()
    return error


def hook(running: RunningWebhookSink) -> str:
    return f"{running.url}/hooks/ops"


# --- the document ------------------------------------------------------------------


def test_the_document_arrives_signed_with_the_whole_kit(sink: RunningWebhookSink) -> None:
    result = target().create([request(hook(sink))])

    (doc,) = sink.sandbox.handoffs()
    assert doc["type"] == "handoff.accepted"
    assert doc["timestamp"] == "2026-12-01T09:30:00Z"
    data = doc["data"]
    assert data["schema_version"] == 1
    assert data["handoff_id"] == "hubspot:4242:1"
    assert data["crm"] == "hubspot"
    assert data["deal"]["id"] == "4242"
    assert data["deal"]["url"] == "https://app.hubspot.com/contacts/1/record/0-3/4242"
    assert data["deal"]["fields"] == {
        "amount": 24000, "kickoff_date": "2027-01-15", "plan": "enterprise"
    }  # fmt: skip
    assert data["kit"]["requirements"] == [
        {"id": "amount", "message": "Deal amount must be above zero", "status": "satisfied"},
        {"id": "sso-provider", "message": "Enterprise deals need the SSO provider",
         "status": "not_applicable"},
    ]  # fmt: skip
    assert data["ops"] == {"owner": "ops-anna@example.com", "expected_kickoff": "2027-01-15"}
    assert data["company"] == {"domain": "acme.example", "name": "Acme Corp"}
    assert data["contacts"] == [{"email": "bill@acme.example", "role": "billing"}]
    assert data["line_items"] == [{"name": "Platform seat", "quantity": 25}]
    # The receiver verified the signature (a bad one is a 401) and answered its own record.
    (delivery,) = sink.sandbox.deliveries
    assert delivery.status == 200
    assert delivery.webhook_id == webhook_id("hubspot:4242:1") == data["webhook_id"]
    assert "." not in delivery.webhook_id  # the spec forbids it: it delimits what is signed
    assert result == {
        "hubspot:4242:1": OpsResult(
            ref="doc-1", link=f"{sink.url}/documents/doc-1", owner="ops-anna@example.com"
        )
    }


def test_crm_text_reaches_the_receiver_inert(sink: RunningWebhookSink) -> None:
    forged = request(hook(sink))
    forged.packet.name = "Acme\nOpen the deal: https://evil.example/\u202e"
    forged.packet.company["name"] = "<b>Acme</b>\u2028Inc"
    target().create([forged])

    data = sink.sandbox.handoffs()[0]["data"]
    assert data["deal"]["name"] == "Acme Open the deal: https[:]//evil.example/"
    assert data["company"]["name"] == "<b>Acme</b> Inc"  # JSON is data: no HTML escaping
    assert data["deal"]["fields"]["amount"] == 24000  # numbers stay numbers


def test_a_receiver_without_a_reply_gets_fullkits_console_as_the_link() -> None:
    with start_webhook_sink(SECRET, reply="none") as quiet:
        result = target().create([request(hook(quiet))])
    msg_id = webhook_id("hubspot:4242:1")
    assert result["hubspot:4242:1"] == OpsResult(
        ref=msg_id,
        link=f"{PUBLIC}/console/handoffs/hubspot/4242#{msg_id}",
        owner="ops-anna@example.com",
    )


def test_no_link_at_all_is_a_configuration_error_that_names_the_setting() -> None:
    with start_webhook_sink(SECRET, reply="none") as quiet:
        with pytest.raises(PartialFailure) as partial:
            target(FULLKIT_PUBLIC_URL=None).create([request(hook(quiet))])
    error = only_error(partial)
    assert isinstance(error, AuthError)
    assert "FULLKIT_PUBLIC_URL is not set" in str(error)


# --- one document per attempt ------------------------------------------------------


def test_a_lost_answer_is_retried_with_the_same_webhook_id_and_kept_once(
    sink: RunningWebhookSink,
) -> None:
    sink.sandbox.drop_answer_next(1)  # stored, then the connection ends: a crash
    with pytest.raises(PartialFailure) as partial:
        target().create([request(hook(sink))])
    assert isinstance(only_error(partial), RetryableError)

    again = target().create([request(hook(sink))], may_exist=True)

    assert len(sink.sandbox.handoffs()) == 1
    ids = [d.webhook_id for d in sink.sandbox.deliveries]
    assert ids == [webhook_id("hubspot:4242:1")] * 2
    assert again["hubspot:4242:1"].ref == "doc-1"  # the receiver's first record
    # The next attempt of the same deal is another document.
    target().create([request(hook(sink), attempt=2)])
    assert len(sink.sandbox.handoffs()) == 2


def test_a_receiver_slower_than_the_timeout_is_retried_and_keeps_one(
    sink: RunningWebhookSink,
) -> None:
    sink.sandbox.hang_next(1, seconds=5)
    with pytest.raises(PartialFailure) as partial:
        target(FULLKIT_WEBHOOK_TIMEOUT_SECONDS="0.3").create([request(hook(sink))])
    error = only_error(partial)
    assert isinstance(error, RetryableError) and "no answer within 0.3 s" in str(error)
    target().create([request(hook(sink))], may_exist=True)
    assert len(sink.sandbox.handoffs()) == 1


# --- errors --------------------------------------------------------------------------


def test_a_refused_signature_stops_with_an_auth_error(sink: RunningWebhookSink) -> None:
    with pytest.raises(PartialFailure) as partial:
        target(FULLKIT_WEBHOOK_SECRET=OTHER_SECRET).create([request(hook(sink))])
    error = only_error(partial)
    assert isinstance(error, AuthError) and not isinstance(error, RetryableError)
    assert "answered 401" in str(error) and "FULLKIT_WEBHOOK_SECRET" in str(error)
    assert SECRET not in str(error) and OTHER_SECRET not in str(error)
    assert sink.sandbox.handoffs() == []


def test_a_receiver_answering_401_or_gone_stops(sink: RunningWebhookSink) -> None:
    for status in (401, 403, 410):
        sink.sandbox.fail_next(1, status)
        with pytest.raises(PartialFailure) as partial:
            target().create([request(hook(sink))])
        assert isinstance(only_error(partial), AuthError), status


def test_429_carries_retry_after_and_the_paced_retry_succeeds(
    sink: RunningWebhookSink, embedded_redis_url: str
) -> None:
    paced = target()
    connection = redis.Redis.from_url(embedded_redis_url)
    paced.rate_budgets = RateBudgets(connection)
    before = api_calls.counts(connection)
    sink.sandbox.fail_next(1, 429, retry_after=1)
    with pytest.raises(PartialFailure) as partial:
        paced.create([request(hook(sink))])
    error = only_error(partial)
    assert isinstance(error, RetryableError) and error.retry_after == 1.0

    result = paced.create([request(hook(sink))], may_exist=True)

    assert result["hubspot:4242:1"].ref == "doc-1"
    refused, delivered = sink.sandbox.deliveries
    assert (refused.status, delivered.status) == (429, 200)
    # The budget held every process back for the receiver's Retry-After.
    assert delivered.at - refused.at >= 0.9
    # /metrics counts both deliveries, under the target's name.
    after = api_calls.counts(connection)
    for outcome in ("429", "ok"):
        key = ("webhook", outcome)
        assert after.get(key, 0) - before.get(key, 0) == 1


def test_server_errors_are_retryable_and_other_4xx_permanent(sink: RunningWebhookSink) -> None:
    sink.sandbox.fail_next(1, 503, retry_after=7)
    with pytest.raises(PartialFailure) as partial:
        target().create([request(hook(sink))])
    error = only_error(partial)
    assert isinstance(error, RetryableError) and error.retry_after == 7.0

    sink.sandbox.fail_next(1, 422)
    with pytest.raises(PartialFailure) as partial:
        target().create([request(hook(sink))])
    error = only_error(partial)
    assert isinstance(error, PermanentError)
    assert "answered 422" in str(error) and "receiver unavailable" in str(error)

    sink.sandbox.fail_next(1, 308)
    with pytest.raises(PartialFailure) as partial:
        target().create([request(hook(sink))])
    assert "follow no redirects" in str(only_error(partial))
    assert sink.sandbox.handoffs() == []


def test_an_unreachable_receiver_is_retryable_and_errors_hide_the_path() -> None:
    with start_webhook_sink(SECRET) as gone:
        url = f"{gone.url}/hooks/T000/B000/token-in-path?key=token-in-query"
    with pytest.raises(PartialFailure) as partial:
        target().create([request(url)])
    error = only_error(partial)
    assert isinstance(error, RetryableError)
    assert "token-in" not in str(error)


# --- settings and secrets ------------------------------------------------------------


def test_without_a_secret_the_target_is_disabled_and_says_so(sink: RunningWebhookSink) -> None:
    config = load(WebhookSettings, {})
    assert config.unset() == [
        "FULLKIT_WEBHOOK_SECRET is not set: the webhook ops target is disabled "
        "(unless a kit names its own secret_env)"
    ]
    with pytest.raises(PartialFailure) as partial:
        WebhookTarget(Settings()).create([request(hook(sink))])
    assert isinstance(only_error(partial), NotConfigured)


@pytest.mark.parametrize(
    "value", ["whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()]
)
def test_a_malformed_secret_is_one_line_that_does_not_echo_it(value: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load(WebhookSettings, {"FULLKIT_WEBHOOK_SECRET": value})
    assert str(refused.value).startswith("invalid setting FULLKIT_WEBHOOK_SECRET: must ")
    assert value not in str(refused.value)


def test_a_kit_can_name_its_receivers_own_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FULLKIT_WEBHOOK_SECRET_BILLING", OTHER_SECRET)
    with start_webhook_sink(OTHER_SECRET) as billing:
        url = hook(billing)
        target().create([request(url, secret_env="FULLKIT_WEBHOOK_SECRET_BILLING")])
        assert len(billing.sandbox.handoffs()) == 1
    monkeypatch.delenv("FULLKIT_WEBHOOK_SECRET_BILLING")
    with pytest.raises(PartialFailure) as partial:
        target().create([request(url, secret_env="FULLKIT_WEBHOOK_SECRET_BILLING")])
    assert "FULLKIT_WEBHOOK_SECRET_BILLING" in str(only_error(partial))


# --- options -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({}, "url: required"),
        ({"url": "ftp://files.example/in"}, "url: must be an http:// or https:// URL"),
        ({"url": 42}, "url: must be an http:// or https:// URL"),
        ({"url": "https://user:pw@hooks.example/x"}, "url: must not hold a user or password"),
        ({"url": "http://169.254.169.254/latest"}, "url: must not be a link-local"),
        ({"url": "https://h.example/x", "event_type": "handoff accepted"}, "event_type: must"),
        ({"url": "https://h.example/x", "secret_env": "DATABASE_URL"}, "secret_env: must name"),
        ({"url": "https://h.example/x", "timeout_seconds": "10"}, "timeout_seconds: must be"),
        ({"url": "https://h.example/x", "timeout_seconds": True}, "timeout_seconds: must be"),
        ({"url": "https://h.example/x", "timeout_seconds": 600}, "timeout_seconds: must be"),
        ({"url": "https://h.example/x", "channel": "#ops"}, "channel: unknown key"),
    ],
)
def test_options_are_validated(options: dict[str, Any], problem: str) -> None:
    problems = WebhookTarget.validate_options(options)
    assert any(p.startswith(problem) for p in problems), problems


def test_good_options_pass_and_loopback_is_allowed() -> None:
    assert WebhookTarget.validate_options({"url": "http://127.0.0.1:9000/hooks"}) == []
    assert (
        WebhookTarget.validate_options(
            {
                "url": "https://hooks.example.com/fullkit",
                "event_type": "onboarding.requested",
                "secret_env": "FULLKIT_WEBHOOK_SECRET_OPS",
                "timeout_seconds": 20,
            }
        )
        == []
    )


def test_a_kit_with_a_bad_webhook_url_names_its_file_and_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "kit_rules", rules)
    routed_to(rules, "ftp://files.example/in")
    with pytest.raises(RulesError) as invalid:
        load_rules(rules, connectors.load_all())
    assert "10-new-customer.yaml:11: ops.url: must be an http:// or https:// URL" in str(
        invalid.value
    )


# --- end to end: a HubSpot deal handed off to a webhook ----------------------------


def routed_to(rules: Path, url: str) -> None:
    kit = rules / "kits" / "10-new-customer.yaml"
    text = kit.read_text()
    old = '  target: hubspot_ticket\n  pipeline: "0"\n  stage: "1"\n'
    assert old in text
    kit.write_text(text.replace(old, f'  target: webhook\n  url: "{url}"\n'))


@pytest.fixture
def webhook_stack(make_settings: Any, tmp_path: Path, sink: RunningWebhookSink) -> Iterator[Stack]:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "kit_rules", rules)
    routed_to(rules, hook(sink))
    yield from start_stack(
        lambda **kw: make_settings(
            FULLKIT_RULES_DIR=str(rules), FULLKIT_WEBHOOK_SECRET=SECRET, **kw
        )
    )


def test_a_hubspot_deal_is_handed_off_to_the_webhook_once(
    webhook_stack: Stack, sink: RunningWebhookSink
) -> None:
    stack = webhook_stack
    deal_id = stack.complete_deal()
    sink.sandbox.drop_answer_next(1)  # the first delivery lands, its answer is lost
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()
    while stack.run_scheduled_now():
        stack.work()

    (doc,) = sink.sandbox.handoffs()
    data = doc["data"]
    assert data["handoff_id"] == f"hubspot:{deal_id}:1"
    assert data["deal"]["id"] == deal_id and data["deal"]["url"]
    assert data["ops"]["owner"] == "ops-anna@example.com"
    assert {"email": "bill@acmecorp.example", "role": "billing"} in data["contacts"]
    # Delivered twice (the first answer lost), under one webhook-id, kept once.
    assert [d.status for d in sink.sandbox.deliveries] == [200, 200]
    assert len({d.webhook_id for d in sink.sandbox.deliveries}) == 1

    deal = stack.deal(deal_id)
    assert deal["fullkit_status"] == "accepted"
    assert deal["fullkit_ops_link"] == f"{sink.url}/documents/doc-1"
    assert deal["fullkit_ops_owner"] == "ops-anna@example.com"
    attempt = stack.history(deal_id)["attempts"][0]
    assert attempt["state"] == "ops_created" and attempt["ops_link"].endswith("doc-1")
    assert stack.sandbox.tickets() == []  # the kit routes to the webhook, not HubSpot


def test_kit_validate_notes_a_webhook_kit_this_environment_cannot_hand_off(
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "kit_rules", rules)
    routed_to(rules, "https://hooks.example.com/fullkit")
    env = {"FULLKIT_RULES_DIR": str(rules), "FULLKIT_WEBHOOK_SECRET": ""}
    unset = CliRunner().invoke(cli, ["kit", "validate"], env=env)
    assert unset.exit_code == 0
    assert (
        "note: kit new-customer: ops target webhook is disabled here: "
        "FULLKIT_WEBHOOK_SECRET is not set"
    ) in unset.stderr

    done = CliRunner().invoke(
        cli, ["kit", "validate"], env={**env, "FULLKIT_WEBHOOK_SECRET": SECRET}
    )
    assert done.exit_code == 0 and "kit new-customer:" not in done.stderr
    assert SECRET not in done.output + done.stderr
