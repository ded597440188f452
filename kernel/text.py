"""Text that reaches an ops tool: CRM values made inert before anything renders them.

CRM values are written by whoever filled a public form, so none of them may shape what
ops reads: a line break in a company name would forge a line such as
`Open the deal: https://evil.example/`, a bidi override would reverse what follows, and
markup would become a link. Every ops target (HubSpot ticket and task, Salesforce Case,
Jira ADF, Asana, webhook JSON) builds its text with `inert`, and nothing else.
"""

from __future__ import annotations

import html as html_text
import re
import unicodedata
from typing import Literal

# Control (Cc: C0/C1, CR, LF, NEL, ESC), line and paragraph separators (Zl, Zp): a space.
_AS_SPACE = frozenset({"Cc", "Zl", "Zp"})
# Format characters (Cf: bidi overrides and isolates, zero-width space/joiners, BOM, soft
# hyphen, tag characters) and lone surrogates (Cs): invisible, so removed outright.
_REMOVED = frozenset({"Cf", "Cs"})
# `scheme://`: renderers (HubSpot, Jira, Asana, Slack) turn it into a clickable link.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(?=//)")

Markup = Literal["text", "html"]


def inert(
    value: object, *, markup: Markup = "text", lines: bool = False, links: bool = False
) -> str:
    """`value` as text no renderer can take for structure, for any ops target.

    * Control characters become a space and format characters vanish: CR, LF, NEL,
      VT/FF, U+2028/U+2029, bidi overrides and isolates (U+202A-E, U+2066-9),
      zero-width characters, BOM. Runs of whitespace become one space, ends are trimmed.
      So a value is one line: it can never start a line of its own in a ticket.
    * `links=False` (every CRM value): a `scheme://` is written `scheme[:]//`, so the
      only links ops can click are the ones Fullkit builds itself (the deal's URL).
    * `markup="html"` (HubSpot ticket content and task bodies, Asana `html_notes`):
      `&`, `<` and `>` are escaped, so no value is a tag. `"text"` for plain-text
      fields (ticket subject, Salesforce Case, Jira ADF text nodes, webhook JSON, whose
      encoder escapes what JSON needs).
    * `lines=True`: for text Fullkit assembled itself from values already made inert:
      its `\\n` line breaks (and CR LF) are kept as `\\n`, and so is each line's spacing
      (indentation); every other character is treated as above.

    How a target uses it: build its text from `inert(crm_value)` pieces (Fullkit's own
    labels and links with `links=True`), then render the whole as its markup wants,
    e.g. `inert(summary, markup="html", lines=True, links=True)` for an HTML field.
    """
    text = "" if value is None else str(value)
    if lines:
        return "\n".join(
            _render(_visible(line), markup, links)
            for line in text.replace("\r\n", "\n").split("\n")
        )
    return _render(" ".join(_visible(text).split()), markup, links)


def _render(text: str, markup: Markup, links: bool) -> str:
    if not links and "//" in text:
        text = _SCHEME.sub(r"\1[:]", text)
    if markup == "html":
        text = html_text.escape(text, quote=False)
    return text


def _visible(text: str) -> str:
    if text.isprintable():  # the usual CRM value: no per-character pass
        return text
    return "".join(_clean(char) for char in text)


def _clean(char: str) -> str:
    kind = unicodedata.category(char)
    if kind in _AS_SPACE:
        return " "
    if kind in _REMOVED:
        return ""
    return char
