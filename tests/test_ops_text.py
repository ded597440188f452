"""CRM text in ops tickets and tasks: no value can forge a line, a tag or a link there.

Company and contact names come from public forms; ops reads them in the ticket and must
be able to trust every line that looks like Fullkit's own (`Open the deal: …`).
"""

from __future__ import annotations

import datetime as dt
import html
import re
import unicodedata
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.rules import Kit, load_rules
from bridge.summary import ticket_subject, ticket_summary
from connectors.hubspot import task_body
from connectors.hubspot_ticket import ticket_content
from kernel.connector import PushBack
from kernel.packet import Packet
from kernel.text import inert
from tests.conftest import ROOT
from tests.e2e import Stack, start_stack

DEAL_URL = "https://app.hubspot.com/contacts/4242/record/0-3/101"
FORGED = "Open the deal: https://evil.example/"
# What a hostile form can put in a name: line breaks of every kind, bidi overrides,
# zero-width characters, markup, entities, and lines that look like Fullkit's own.
NASTY = st.sampled_from(
    ["\n", "\r", "\r\n", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1e",
     "\u202e", "\u2066", "\u200b", "\u200d", "\ufeff", "\x00", "\x1b[31m", "\t", " ",
     FORGED, "Ops owner: mallory@evil.example", "<a href='https://evil.example'>x</a>",
     "</p><p>", "<br>", "&lt;b&gt;", "&#10;", "<script>alert(1)</script>", "javascript://x"]
)  # fmt: skip
CRM_TEXT = st.lists(st.one_of(NASTY, st.text(max_size=8)), max_size=8).map("".join)
LABELS = ("Open the deal:", "Ops owner:", "Kit:", "Deal:", "Expected kickoff:", "Company:")
KIT = load_rules(ROOT / "kit_rules").kits[0]


def packet(deal: str, company: str, contact: str, item: str, file: str) -> Packet:
    return Packet(
        crm="hubspot",
        deal_id="101",
        name=deal,
        deal={"amount": 1500.0, "plan": deal},
        company={"name": company, "domain": company},
        contacts=[{"email": contact, "role": "billing"}, {"role": contact}],
        line_items=[{"name": item, "quantity": 2.0}],
        attachments=[{"name": file, "extension": "pdf"}],
        url=DEAL_URL,
    )


def rendered_lines(content: str) -> list[str]:
    """The lines ops sees: tags as line breaks, entities decoded, every kind of break."""
    text = re.sub(r"</?(?:p|ul|li|br)\s*/?>", "\n", content)
    return html.unescape(text).splitlines()


def ticket(values: tuple[str, ...], kit: Kit = KIT) -> str:
    summary = ticket_summary(kit, packet(*values), "ops-anna@example.com", dt.date(2026, 12, 4))
    return ticket_content(summary)


def labelled(lines: list[str]) -> list[str]:
    return [line for line in lines if line.lstrip().startswith(LABELS)]


@settings(max_examples=300, deadline=None)
@given(st.tuples(CRM_TEXT, CRM_TEXT, CRM_TEXT, CRM_TEXT, CRM_TEXT))
def test_no_crm_value_forges_a_line_a_tag_or_a_link_in_the_ticket(
    values: tuple[str, ...],
) -> None:
    content = ticket(values)
    benign = rendered_lines(ticket(("Acme",) * 5))
    lines = rendered_lines(content)
    assert "<" not in content  # the ticket content has no markup but what ops may see as text
    assert len(lines) == len(benign)  # no value added (or removed) a line
    assert [line.split(":")[0] for line in labelled(lines)] == [
        line.split(":")[0] for line in labelled(benign)
    ]
    assert [line for line in lines if line.startswith("Open the deal:")] == [
        f"Open the deal: {DEAL_URL}"
    ]
    assert re.findall(r"[a-z]+://\S+", content) == [DEAL_URL]  # the only link is Fullkit's
    invisible = {"Cc", "Cf", "Zl", "Zp", "Cs"}
    assert not [c for c in content if c != "\n" and unicodedata.category(c) in invisible]


@settings(max_examples=200, deadline=None)
@given(CRM_TEXT)
def test_the_ticket_subject_is_one_plain_line(name: str) -> None:
    subject = ticket_subject("New customer onboarding", packet(name, "", "", "", ""))
    assert subject.startswith("New customer onboarding: ")
    assert len(subject.splitlines()) == 1
    assert "://" not in subject and "\u202e" not in subject and "\u200b" not in subject


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CRM_TEXT, min_size=1, max_size=3))
def test_no_text_adds_a_line_or_a_tag_to_the_push_back_task(missing: list[str]) -> None:
    item = PushBack(
        handoff_id="hubspot:101:1",
        deal_id="101",
        return_stage_ref="contractsent",
        missing=tuple(missing),
        owner_ref="7",
        returned_at=dt.datetime(2026, 12, 4, tzinfo=dt.UTC),
    )
    body = task_body(item)
    tags = re.findall(r"<[^>]*>", body)
    assert set(tags) <= {"<p>", "</p>", "<ul>", "</ul>", "<li>", "</li>"}
    items = re.findall(r"<li>(.*?)</li>", body, flags=re.DOTALL)
    assert len(items) == len(missing)  # one item per message, none forged
    assert all(len(html.unescape(text).splitlines()) <= 1 for text in items)
    assert [line for line in rendered_lines(body) if line.startswith("Fullkit hand-off ")] == [
        "Fullkit hand-off hubspot:101:1"
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Acme\n" + FORGED, "Acme Open the deal: https[:]//evil.example/"),
        ("Acme\u202eCorp\u200b", "AcmeCorp"),
        ("  Smith\r\n&\u2028Sons  ", "Smith & Sons"),
    ],
)  # fmt: skip
def test_inert_makes_one_plain_line_of_a_crm_value(value: str, expected: str) -> None:
    assert inert(value) == expected
    assert inert(value, markup="html") == html.escape(expected, quote=False)


@pytest.fixture
def stack(make_settings: Any) -> Iterator[Stack]:
    yield from start_stack(make_settings)


def test_a_company_name_with_a_forged_line_stays_inside_its_own_line(stack: Stack) -> None:
    deal_id = stack.complete_deal(name="Acme\n" + FORGED)
    stack.sandbox.move_deal(deal_id, "closedwon")
    stack.work()

    (ticket_record,) = stack.sandbox.tickets()
    props = ticket_record["properties"]
    lines = rendered_lines(props["content"])
    deal_url = f"{stack.running.url}/contacts/{stack.sandbox.portal_id}/record/0-3/{deal_id}"
    assert [line for line in lines if line.startswith("Open the deal:")] == [
        f"Open the deal: {deal_url}"
    ]
    assert "evil.example" in props["content"]  # ops still sees what the form said…
    assert "https://evil.example" not in props["content"]  # …but cannot click it
    assert "\n" not in props["subject"] and "https://evil.example" not in props["subject"]
