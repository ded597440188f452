"""Salesforce outbound messages (SOAP 1.1): reading a `notifications` envelope, and the
two answers Salesforce understands, the `Ack` envelope and a SOAP fault.

Parsed with defusedxml, refusing any DTD (and so every entity declaration, external or
not): an outbound message never has one, and a DTD is how XXE and entity-expansion
bombs get in.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from bridge.deal_ids import InvalidDealId, salesforce_id18

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
SOBJECT = "urn:sobject.enterprise.soap.sforce.com"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
MAX_NOTIFICATIONS = 100  # the outbound messaging WSDL's maxOccurs
OPPORTUNITY_PREFIX = "006"  # every org's key prefix of Opportunity ids
# The sObject fields a hand-off needs: the outbound message must be set up to send them.
NEEDED_FIELDS = ("Id", "StageName", "LastModifiedDate")

ACK = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}">'
    "<soapenv:Body>"
    f'<notificationsResponse xmlns="{OUTBOUND}"><Ack>true</Ack></notificationsResponse>'
    "</soapenv:Body>"
    "</soapenv:Envelope>"
).encode()


class Malformed(Exception):
    """Not an outbound message Fullkit can act on; the message says what is wrong."""


@dataclass(frozen=True)
class Notification:
    notification_id: str  # 18 characters; Salesforce redelivers under the same id
    opportunity_id: str  # 18 characters
    stage_name: str
    last_modified: dt.datetime  # timezone-aware


@dataclass(frozen=True)
class OutboundMessage:
    organization_id: str  # as sent (15 or 18 characters)
    notifications: list[Notification]


def fault(code: str, reason: str) -> bytes:
    """A SOAP 1.1 fault; `code` is `Client` (the message is wrong) or `Server` (we are)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}">'
        "<soap:Body><soap:Fault>"
        f"<faultcode>soap:{code}</faultcode><faultstring>{escape(reason)}</faultstring>"
        "</soap:Fault></soap:Body>"
        "</soap:Envelope>"
    ).encode()


def parse(body: bytes) -> OutboundMessage:
    """The message in `body`; raises Malformed naming the first problem."""
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise Malformed("DTDs and entity declarations are refused") from None
    except ParseError as exc:
        raise Malformed(f"not XML: {exc}") from None
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise Malformed("not a SOAP 1.1 envelope")
    notifications = root.find(f"{{{SOAP_ENV}}}Body/{{{OUTBOUND}}}notifications")
    if notifications is None:
        raise Malformed("no outbound messaging notifications in the SOAP body")
    org_id = _text(notifications.find(f"{{{OUTBOUND}}}OrganizationId"))
    if org_id is None:
        raise Malformed("no OrganizationId")
    found = notifications.findall(f"{{{OUTBOUND}}}Notification")
    if not 1 <= len(found) <= MAX_NOTIFICATIONS:
        raise Malformed(f"{len(found)} notifications: a message holds 1 to {MAX_NOTIFICATIONS}")
    return OutboundMessage(org_id, [_notification(i, n) for i, n in enumerate(found)])


def _notification(index: int, element: Element) -> Notification:
    notification_id = _text(element.find(f"{{{OUTBOUND}}}Id"))
    where = f"notification {index}" + (f" ({notification_id})" if notification_id else "")
    sobject = element.find(f"{{{OUTBOUND}}}sObject")
    if notification_id is None or sobject is None:
        raise Malformed(f"{where}: needs an Id and an sObject")
    kind = sobject.get(f"{{{XSI}}}type", "")
    if kind.rpartition(":")[2] != "Opportunity":
        raise Malformed(f"{where}: the sObject is {kind or 'untyped'}, not sf:Opportunity")
    fields = {name: _text(sobject.find(f"{{{SOBJECT}}}{name}")) for name in NEEDED_FIELDS}
    missing = [f"sf:{name}" for name, value in fields.items() if value is None]
    if missing:
        raise Malformed(
            f"{where}: the outbound message must send {', '.join(missing)} (add the fields)"
        )
    opportunity_id = _opportunity_id(where, str(fields["Id"]))
    return Notification(
        _id18(where, "Id", notification_id),
        opportunity_id,
        str(fields["StageName"]),
        _moment(where, str(fields["LastModifiedDate"])),
    )


def _text(element: Element | None) -> str | None:
    """An element's text, None when it is absent, empty or `xsi:nil`."""
    if element is None or element.get(f"{{{XSI}}}nil") == "true":
        return None
    text = (element.text or "").strip()
    return text or None


def _id18(where: str, name: str, raw: str) -> str:
    try:
        return salesforce_id18(raw)
    except InvalidDealId as exc:
        raise Malformed(f"{where}: {name}: {exc}") from None


def _opportunity_id(where: str, raw: str) -> str:
    value = _id18(where, "sf:Id", raw)
    if not value.startswith(OPPORTUNITY_PREFIX):
        raise Malformed(f"{where}: sf:Id {raw[:18]!r} is no Opportunity id (they start 006)")
    return value


def _moment(where: str, raw: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(raw)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise Malformed(f"{where}: sf:LastModifiedDate {raw[:40]!r} is no dateTime with a zone")
    return moment
