"""POST /webhooks/salesforce/outbound and POST /webhooks/salesforce: fixture-driven, each
test posts a stored message and checks what Salesforce would see (the status and SOAP
answer) and what Fullkit did (what got queued, and what a worker then makes of it)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import fromstring

import pytest
from flask.testing import FlaskClient

from bridge import db, ledger
from bridge.app import create_app
from bridge.receivers.salesforce_signature import sign
from bridge.runtime import Runtime
from bridge.worker import build_worker
from tests.conftest import FIXTURES, ROOT, queued, secret

ORG = "00D5g00000KxQfTEAV"
SECRET = "test-salesforce-webhook-secret"
OUTBOUND = "/webhooks/salesforce/outbound"
SOAP_ENV = "{http://schemas.xmlsoap.org/soap/envelope/}"
ACK = "{http://soap.sforce.com/2005/09/outbound}"
OPPORTUNITY = "0065g00000Ab001AAB"


def fixture(name: str) -> bytes:
    return (FIXTURES / "salesforce" / name).read_bytes()


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The shipped mappings with a Salesforce kit, whose stage (Closed Won) is watched."""
    rules = tmp_path / "rules"
    shutil.copytree(FIXTURES / "rules" / "salesforce" / "kits", rules / "kits")
    shutil.copytree(ROOT / "kit_rules" / "mappings", rules / "mappings")
    return rules


@pytest.fixture
def sf_settings(make_settings: Any, rules_dir: Path) -> Any:
    def build(**overrides: Any) -> Any:
        values = {
            "FULLKIT_RULES_DIR": str(rules_dir),
            "SALESFORCE_ORG_ID": ORG,
            "SALESFORCE_WEBHOOK_SECRET": SECRET,
            **overrides,
        }
        return make_settings(**{k: v for k, v in values.items() if v is not None})

    return build


@pytest.fixture
def app(sf_settings: Any) -> Any:
    return create_app(sf_settings())


def post_outbound(client: FlaskClient, body: bytes, content_type: str = "text/xml") -> Any:
    # As Salesforce sends it: text/xml with a charset, and an empty SOAPAction.
    headers = {"Content-Type": f"{content_type}; charset=utf-8", "SOAPAction": '""'}
    return client.post(OUTBOUND, data=body, headers=headers)


def acked(answer: Any) -> bool:
    """Salesforce's test of success: HTTP 200, text/xml, notificationsResponse Ack true."""
    if answer.status_code != 200 or answer.mimetype != "text/xml":
        return False
    ack = fromstring(answer.data).find(f"{SOAP_ENV}Body/{ACK}notificationsResponse/{ACK}Ack")
    return ack is not None and ack.text == "true"


def fault(answer: Any) -> tuple[int, str, str]:
    """HTTP status, faultcode and faultstring of a SOAP fault answer."""
    assert answer.mimetype == "text/xml"
    found = fromstring(answer.data).find(f"{SOAP_ENV}Body/{SOAP_ENV}Fault")
    assert found is not None, answer.data
    return answer.status_code, found.findtext("faultcode", ""), found.findtext("faultstring", "")


# --- outbound messages ------------------------------------------------------------------


def test_one_notification_is_queued_and_acked(client: FlaskClient, app: Any) -> None:
    assert acked(post_outbound(client, fixture("outbound__one_notification.xml")))
    # the opportunity, its StageName, LastModifiedDate, the delivery, the notification key
    assert queued(app) == [
        (
            "salesforce", OPPORTUNITY, "Closed Won", "2026-11-27T10:01:32+00:00",
            "salesforce-notification:04l5g00000Zq001AAB", "notification:04l5g00000Zq001AAB",
        )
    ]  # fmt: skip


def test_a_hundred_notifications_are_queued_in_one_answer(client: FlaskClient, app: Any) -> None:
    assert acked(post_outbound(client, fixture("outbound__hundred_notifications.xml")))
    assert len({args[1] for args in queued(app)}) == 100


def test_redelivered_notifications_are_queued_once(client: FlaskClient, app: Any) -> None:
    for name in ("outbound__hundred_notifications.xml", "outbound__one_notification.xml"):
        assert acked(post_outbound(client, fixture(name)))
    assert acked(post_outbound(client, fixture("outbound__hundred_notifications.xml")))
    # The same message again queues nothing. A notification re-sent inside another message
    # rides in that delivery's job, and the ledger records its change key once.
    keys = [args[-1] for args in queued(app)]
    assert (len(keys), len(set(keys))) == (101, 100)


def test_only_handoff_stages_are_queued_whatever_their_case(client: FlaskClient, app: Any) -> None:
    assert acked(post_outbound(client, fixture("outbound__other_stage.xml")))
    assert queued(app) == []
    # Closed Won, Negotiation/Review, "closed won" (Salesforce's names ignore case)
    assert acked(post_outbound(client, fixture("outbound__mixed_stages.xml")))
    assert sorted(args[2] for args in queued(app)) == ["Closed Won", "closed won"]


def test_a_15_character_org_id_equals_the_18_character_setting(
    client: FlaskClient, app: Any
) -> None:
    assert acked(post_outbound(client, fixture("outbound__org_15_chars.xml")))
    assert len(queued(app)) == 1


def test_a_15_character_setting_equals_an_18_character_org_id(sf_settings: Any) -> None:
    app = create_app(sf_settings(SALESFORCE_ORG_ID=ORG[:15]))
    assert acked(post_outbound(app.test_client(), fixture("outbound__one_notification.xml")))
    assert len(queued(app)) == 1


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("outbound__wrong_org.xml", "is not the org Fullkit serves"),
        ("outbound__malformed.xml", "not XML"),
        ("outbound__xxe.xml", "DTDs and entity declarations are refused"),
        ("outbound__billion_laughs.xml", "DTDs and entity declarations are refused"),
        ("outbound__dtd.xml", "DTDs and entity declarations are refused"),
        ("outbound__not_an_opportunity.xml", "the sObject is sf:Account, not sf:Opportunity"),
        ("outbound__missing_fields.xml", "must send sf:StageName, sf:LastModifiedDate"),
        ("outbound__too_many_notifications.xml", "101 notifications"),
    ],
)
def test_what_salesforce_must_not_send_is_a_client_fault_and_queues_nothing(
    client: FlaskClient, app: Any, name: str, reason: str
) -> None:
    status, code, why = fault(post_outbound(client, fixture(name)))
    assert (status, code) == (500, "soap:Client")
    assert reason in why
    assert queued(app) == []


def test_entities_are_never_expanded(client: FlaskClient) -> None:
    answer = post_outbound(client, fixture("outbound__xxe.xml"))
    assert b"root:" not in answer.data  # nothing of /etc/passwd comes back
    answer = post_outbound(client, fixture("outbound__billion_laughs.xml"))
    assert len(answer.data) < 1000


def test_wrong_content_type_is_a_client_fault(client: FlaskClient, app: Any) -> None:
    answer = post_outbound(client, fixture("outbound__one_notification.xml"), "application/json")
    assert fault(answer)[:2] == (500, "soap:Client")
    assert queued(app) == []


def test_oversized_message_is_413_before_anything_else(client: FlaskClient, app: Any) -> None:
    body = fixture("outbound__one_notification.xml") + b" " * (1024 * 1024)
    answer = post_outbound(client, body, "text/plain")
    assert fault(answer)[:2] == (413, "soap:Client")
    assert queued(app) == []


def test_queue_down_is_a_server_fault_so_salesforce_redelivers(sf_settings: Any) -> None:
    app = create_app(sf_settings(REDIS_URL="redis://127.0.0.1:9/0"))
    answer = post_outbound(app.test_client(), fixture("outbound__one_notification.xml"))
    assert fault(answer)[:2] == (500, "soap:Server")


def test_no_org_id_setting_is_503(sf_settings: Any) -> None:
    app = create_app(sf_settings(SALESFORCE_ORG_ID=None))
    answer = post_outbound(app.test_client(), fixture("outbound__one_notification.xml"))
    assert fault(answer) == (503, "soap:Server", "SALESFORCE_ORG_ID is not set")
    assert queued(app) == []


def test_a_malformed_org_id_setting_stops_the_process(sf_settings: Any) -> None:
    from bridge.receivers.salesforce_settings import SalesforceReceiverSettings
    from kernel.settings import SettingsError

    settings = sf_settings(SALESFORCE_ORG_ID="0065g00000Ab001AAB")  # an opportunity's id
    with pytest.raises(SettingsError, match="SALESFORCE_ORG_ID"):
        settings.section(SalesforceReceiverSettings)


# --- JSON calls from Flows and Apex -----------------------------------------------------


def call(
    client: FlaskClient,
    payload: dict[str, Any] | bytes,
    *,
    secret: str = SECRET,
    timestamp: int | str | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    sent = {
        "Content-Type": "application/json",
        "X-Fullkit-Timestamp": stamp,
        "X-Fullkit-Signature": sign(secret, stamp, body),
        **(headers or {}),
    }
    return client.post("/webhooks/salesforce", data=body, headers=sent)


STAGE_CALL = {
    "opportunityId": "0065g00000Ab001",
    "stage": "Closed Won",
    "eventId": "flow-7f3e9c",
    "occurredAt": "2026-11-27T10:20:00.000Z",
}


def test_a_signed_handoff_call_is_queued(client: FlaskClient, app: Any) -> None:
    answer = call(client, STAGE_CALL)
    assert (answer.status_code, answer.json) == (202, {"queued": True})
    # the 15-character id of the Flow's record stored as Salesforce's 18-character one
    assert queued(app) == [
        (
            "salesforce", OPPORTUNITY, "Closed Won", "2026-11-27T10:20:00+00:00",
            "salesforce-event:flow-7f3e9c", "event:flow-7f3e9c",
        )
    ]  # fmt: skip


def test_a_call_without_occurred_at_is_dated_when_received(client: FlaskClient, app: Any) -> None:
    before = ledger.utcnow()
    payload = {k: v for k, v in STAGE_CALL.items() if k != "occurredAt"}
    assert call(client, payload).json == {"queued": True}
    [args] = queued(app)
    assert before <= ledger.utcnow().fromisoformat(args[3]) <= ledger.utcnow()


def test_a_call_for_another_stage_is_answered_and_not_queued(client: FlaskClient, app: Any) -> None:
    answer = call(client, {**STAGE_CALL, "stage": "Negotiation/Review"})
    assert (answer.status_code, answer.json) == (202, {"queued": False})
    assert queued(app) == []


def test_a_repeated_event_id_is_queued_once(client: FlaskClient, app: Any) -> None:
    for _ in range(3):
        assert call(client, STAGE_CALL).json == {"queued": True}
    assert len(queued(app)) == 1


@pytest.mark.parametrize(
    ("secret", "timestamp", "headers"),
    [
        ("not-the-secret", None, None),
        (SECRET, -310, None),  # seconds off the clock: outside the 5 minutes
        (SECRET, 310, None),
        (SECRET, "१७६४", None),  # digits, but not ASCII ones
        (SECRET, "1" * 5000, None),
        (SECRET, None, {"X-Fullkit-Signature": ""}),
        (SECRET, None, {"X-Fullkit-Timestamp": ""}),
    ],
)
def test_bad_signatures_and_stale_timestamps_are_401(
    client: FlaskClient, app: Any, secret: str, timestamp: Any, headers: Any
) -> None:
    if isinstance(timestamp, int):
        timestamp = int(time.time()) + timestamp
    answer = call(client, STAGE_CALL, secret=secret, timestamp=timestamp, headers=headers)
    assert answer.status_code == 401
    assert queued(app) == []


def test_a_tampered_body_is_401(client: FlaskClient, app: Any) -> None:
    stamp = str(int(time.time()))
    signed = json.dumps(STAGE_CALL).encode()
    headers = {"X-Fullkit-Timestamp": stamp, "X-Fullkit-Signature": sign(SECRET, stamp, signed)}
    tampered = json.dumps({**STAGE_CALL, "opportunityId": "0065g00000Ab002"}).encode()
    assert call(client, tampered, headers=headers).status_code == 401
    assert queued(app) == []


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        {k: v for k, v in STAGE_CALL.items() if k != "eventId"},
        {**STAGE_CALL, "opportunityId": "0015g00000Bc001AAB"},  # an Account's id
        {**STAGE_CALL, "opportunityId": "0065g00000Ab001XXX"},  # a suffix that lies
        {**STAGE_CALL, "stage": 7},
        {**STAGE_CALL, "occurredAt": "2026-11-27T10:20:00"},  # no time zone
        {**STAGE_CALL, "occurredAt": "1970-01-01T00:00:00Z"},
        {**STAGE_CALL, "occuredAt": "2026-11-27T10:20:00Z"},  # a typo is not ignored
    ],
)
def test_malformed_calls_are_400(client: FlaskClient, app: Any, payload: Any) -> None:
    assert call(client, payload).status_code == 400
    assert queued(app) == []


def test_checks_run_in_the_spec_order(client: FlaskClient, sf_settings: Any) -> None:
    oversized = b"{" + b" " * (1024 * 1024) + b"}"
    assert call(client, oversized, headers={"Content-Type": "text/plain"}).status_code == 413
    assert call(client, b"not json", headers={"Content-Type": "text/plain"}).status_code == 415
    assert call(client, b"not json", secret="wrong").status_code == 401
    unset = create_app(sf_settings(SALESFORCE_WEBHOOK_SECRET=None)).test_client()
    assert call(unset, STAGE_CALL).status_code == 503


def test_queue_down_is_503(sf_settings: Any) -> None:
    app = create_app(sf_settings(REDIS_URL="redis://127.0.0.1:9/0"))
    assert call(app.test_client(), STAGE_CALL).status_code == 503


def test_refusals_log_why_and_never_the_secret_or_signature(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    stamp = str(int(time.time()))
    signature = sign("not-the-secret", stamp, b"{}")
    headers = {"X-Fullkit-Timestamp": stamp, "X-Fullkit-Signature": signature}
    assert call(client, b"{}", headers=headers).status_code == 401
    assert "signature does not match" in caplog.text
    assert SECRET not in caplog.text and signature not in caplog.text


# --- the worker side, before a Salesforce connector exists -------------------------------


def test_receiving_imports_no_worker_side_code(sf_settings: Any) -> None:
    """Both receivers queue the intake job by name; the web process loads no job,
    hand-off or connector module to answer them."""
    settings = sf_settings()
    script = f"""
import json, sys, time
from bridge.app import create_app
from bridge.receivers.salesforce_signature import sign
from bridge.settings import load_settings
app = create_app(load_settings(FULLKIT_HOME={str(settings.home)!r},
    REDIS_URL={secret(settings.redis_url)!r}, FULLKIT_RULES_DIR={str(settings.rules_dir)!r},
    SALESFORCE_ORG_ID={ORG!r}, SALESFORCE_WEBHOOK_SECRET={SECRET!r}))
client = app.test_client()
before = set(sys.modules)
xml = {fixture("outbound__one_notification.xml")!r}
assert client.post({OUTBOUND!r}, data=xml, content_type="text/xml").status_code == 200
body, stamp = json.dumps({STAGE_CALL!r}).encode(), str(int(time.time()))
headers = {{"X-Fullkit-Timestamp": stamp, "X-Fullkit-Signature": sign({SECRET!r}, stamp, body)}}
answer = client.post("/webhooks/salesforce", data=body, headers=headers,
    content_type="application/json")
assert answer.status_code == 202, answer.data
loaded = [m for m in sys.modules if m.startswith(("bridge.jobs", "bridge.handoff", "connectors"))]
print(sorted(loaded + [m for m in set(sys.modules) - before if m.startswith("bridge")]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_queued_salesforce_change_fails_its_attempt_clearly_unconfigured(
    client: FlaskClient, sf_settings: Any
) -> None:
    assert acked(post_outbound(client, fixture("outbound__one_notification.xml")))
    runtime = Runtime.build(sf_settings())
    db.prepare(runtime.engine, runtime.settings)
    build_worker(runtime).work(burst=True, logging_level="WARNING")

    with runtime.sessions() as session:
        history = ledger.deal_history(session, "salesforce", OPPORTUNITY)
    assert history is not None
    [attempt] = history["attempts"]
    assert attempt["state"] == "failed"
    # A worker without SALESFORCE_INSTANCE_URL says which setting is missing.
    assert "SALESFORCE_INSTANCE_URL is not set" in attempt["error"]
    runtime.engine.dispose()
