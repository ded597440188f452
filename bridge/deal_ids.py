"""Deal ids in one canonical form per CRM, so one record is one ledger key.

Salesforce writes the same record as a 15-character case-sensitive id (its UI, reports,
formula fields) and an 18-character case-safe id (its APIs, outbound messages). Both
name the same opportunity, so everything Fullkit stores and looks up uses the 18-character
form. HubSpot ids are digits and already canonical.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable

# Salesforce's suffix alphabet: each suffix character encodes which of five id characters
# are upper-case letters, as 5 bits.
_SUFFIX_ALPHABET = string.ascii_uppercase + "012345"
_SALESFORCE_ID = re.compile(r"[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?")


class InvalidDealId(ValueError):
    """Not an id of that CRM; the message says what one looks like."""


def salesforce_suffix(id15: str) -> str:
    """The three case-safe characters Salesforce appends to a 15-character id."""
    suffix = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, char in enumerate(id15[start : start + 5]) if char.isupper())
        suffix += _SUFFIX_ALPHABET[bits]
    return suffix


def salesforce_id18(raw: str) -> str:
    """The 18-character form of a Salesforce id given with 15 or 18 characters.

    An 18-character id is case-insensitive (a spreadsheet may have lower-cased it): its
    suffix says which letters are capitals, and the id comes back with them restored.
    """
    value = raw.strip()
    if _SALESFORCE_ID.fullmatch(value) is None:
        raise InvalidDealId(f"a Salesforce id has 15 or 18 letters and digits, not {raw!r}")
    if len(value) == 15:
        return value + salesforce_suffix(value)
    body, suffix = value[:15], value[15:].upper()
    if any(char not in _SUFFIX_ALPHABET for char in suffix):
        raise InvalidDealId(f"{raw!r} is not a Salesforce id: its last 3 characters are no suffix")
    restored = "".join(
        char.upper() if _SUFFIX_ALPHABET.index(suffix[i // 5]) >> (i % 5) & 1 else char.lower()
        for i, char in enumerate(body)
    )
    if salesforce_suffix(restored) != suffix:
        raise InvalidDealId(f"{raw!r} is not a Salesforce id: its suffix does not match")
    return restored + suffix


def _hubspot(raw: str) -> str:
    value = raw.strip()
    if not value.isascii() or not value.isdigit():
        raise InvalidDealId(f"a HubSpot deal id is digits, not {raw!r}")
    return value


_CANONICAL: dict[str, Callable[[str], str]] = {"hubspot": _hubspot, "salesforce": salesforce_id18}
CRMS = tuple(_CANONICAL)


def canonical_deal_id(crm: str, raw: str) -> str:
    """The one form under which `crm` deal `raw` is stored; InvalidDealId otherwise."""
    try:
        hook = _CANONICAL[crm]
    except KeyError:
        raise InvalidDealId(f"unknown CRM {crm!r} (known: {', '.join(CRMS)})") from None
    return hook(raw)
