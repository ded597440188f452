"""Outbound messages the way Salesforce sends them: SOAP 1.1 `notifications`.

A record-triggered Flow (`OutboundRule`) queues a notification when an Opportunity's
StageName changes into one of its stages. Delivery is manual (`deliver`), so tests
decide when Salesforce "retries"; a batch holds up to 100 notifications of one rule,
the sObject fields are read at delivery time (Salesforce sends the record's latest
values, not the ones of the change), and a notification stays queued until the
endpoint answers 200 with exactly the `Ack` true envelope.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import ParseError
from xml.sax.saxutils import escape

import requests
from defusedxml import DefusedXmlException, ElementTree

from sandbox.salesforce_model import API_VERSION, FieldDef, ObjectDef
from sandbox.salesforce_store import Notification, Row

MAX_NOTIFICATIONS = 100
_SOAPENV = "http://schemas.xmlsoap.org/soap/envelope/"
_OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
_SOBJECT = "urn:sobject.enterprise.soap.sforce.com"


@dataclass
class OutboundRule:
    """The Flow's entry criteria and the outbound message it sends."""

    action_id: str  # the outbound message's id (04k...)
    url: str
    stages: frozenset[str]
    fields: tuple[str, ...]  # besides Id, which is always sent
    # An entry condition admins add ("LastModifiedBy is not the integration user").
    skip_user_ids: frozenset[str] = frozenset()


@dataclass
class Delivery:
    """One HTTP attempt at delivering a batch."""

    url: str
    notification_ids: list[str]
    status: int | None
    acked: bool
    body: str
    error: str | None = None
    at: float = field(default_factory=time.time)


def envelope(
    org_id: str,
    rule: OutboundRule,
    batch: list[tuple[Notification, Row]],
    obj: ObjectDef,
    instance_url: str,
) -> str:
    org15 = org_id[:15]
    items = "".join(_notification(n, row, rule, obj) for n, row in batch)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<soapenv:Envelope xmlns:soapenv="{_SOAPENV}" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        " <soapenv:Body>\n"
        f'  <notifications xmlns="{_OUTBOUND}">\n'
        f"   <OrganizationId>{org_id}</OrganizationId>\n"
        f"   <ActionId>{rule.action_id}</ActionId>\n"
        '   <SessionId xsi:nil="true"/>\n'
        f"   <EnterpriseUrl>{escape(instance_url)}/services/Soap/c/{API_VERSION}/{org15}"
        "</EnterpriseUrl>\n"
        f"   <PartnerUrl>{escape(instance_url)}/services/Soap/u/{API_VERSION}/{org15}"
        "</PartnerUrl>\n"
        f"{items}"
        "  </notifications>\n"
        " </soapenv:Body>\n"
        "</soapenv:Envelope>\n"
    )


def _notification(item: Notification, row: Row, rule: OutboundRule, obj: ObjectDef) -> str:
    # Id first, then the selected fields in alphabetical order, as Salesforce writes them.
    names = ["Id", *sorted({f for f in rule.fields if f != "Id"}, key=str.lower)]
    lines = []
    for name in names:
        definition = obj.field(name)
        assert definition is not None
        value = row.get(definition.name)
        if value is None:
            lines.append(f'     <sf:{definition.name} xsi:nil="true"/>\n')
        else:
            lines.append(
                f"     <sf:{definition.name}>{_soap_value(definition, value)}</sf:"
                f"{definition.name}>\n"
            )
    return (
        "   <Notification>\n"
        f"    <Id>{item.id}</Id>\n"
        f'    <sObject xsi:type="sf:{obj.name}" xmlns:sf="{_SOBJECT}">\n'
        f"{''.join(lines)}"
        "    </sObject>\n"
        "   </Notification>\n"
    )


def _soap_value(definition: FieldDef, value: Any) -> str:
    if definition.type == "datetime":
        # REST writes +0000; SOAP writes xsd:dateTime with a Z.
        return escape(str(value).replace("+0000", "Z"))
    if definition.type == "boolean":
        return "true" if value else "false"
    if definition.type in ("double", "currency", "percent"):
        return repr(float(value))
    return escape(str(value))


def is_ack(status: int, content_type: str, body: bytes) -> bool:
    """Only 200 + text/xml + `<Ack>true</Ack>` in `notificationsResponse` counts."""
    if status != 200 or "xml" not in content_type:
        return False
    try:
        root = ElementTree.fromstring(body)
    except (ParseError, DefusedXmlException):  # an unparsable answer is simply no Ack
        return False
    ack = root.find(f"{{{_SOAPENV}}}Body/{{{_OUTBOUND}}}notificationsResponse/{{{_OUTBOUND}}}Ack")
    return ack is not None and (ack.text or "").strip() == "true"


def post(url: str, body: str, timeout: float) -> tuple[int | None, bool, str | None]:
    """POST one envelope: (status, acked, error)."""
    try:
        answer = requests.post(
            url,
            data=body.encode(),
            headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        return None, False, type(exc).__name__
    acked = is_ack(answer.status_code, answer.headers.get("Content-Type", ""), answer.content)
    return answer.status_code, acked, None
