"""One deal, one id: Salesforce's 15- and 18-character ids name the same opportunity,
wherever an operator types them (API, `fullkit status`, `replay`, `kit check`)."""

from __future__ import annotations

import pytest

from bridge.deal_ids import InvalidDealId, canonical_deal_id, salesforce_id18

# Published examples of Salesforce's 15 -> 18 conversion (CASESAFEID).
EXAMPLES = [
    ("a0D30000001n7Pi", "a0D30000001n7PiEAI"),
    ("a0RE000000IJmcN", "a0RE000000IJmcNMAT"),
    ("a01M00000062mPg", "a01M00000062mPgIAI"),
    ("001M000000qfPyS", "001M000000qfPySIAU"),
    ("a0FE000000D6r3F", "a0FE000000D6r3FMAR"),
    ("0019000000B98de", "0019000000B98deAAB"),
]


@pytest.mark.parametrize(("id15", "id18"), EXAMPLES)
def test_salesforce_15_and_18_character_ids_are_one_record(id15: str, id18: str) -> None:
    assert salesforce_id18(id15) == id18
    assert salesforce_id18(id18) == id18


@pytest.mark.parametrize(("id15", "id18"), EXAMPLES)
def test_an_18_character_id_whose_case_was_lost_is_restored(id15: str, id18: str) -> None:
    # A spreadsheet or a case-insensitive database may have changed the letters' case.
    assert salesforce_id18(id18.lower()) == id18
    assert salesforce_id18(id18.upper()) == id18


@pytest.mark.parametrize(
    "bad",
    [
        "0019000000B98deAAC",  # the suffix belongs to another id
        "0019000000B98de9AB",  # a suffix has no 6-9
        "0019000000B98d",  # 14 characters
        "0019000000B98de!",
        "0019000000B98d-e",
        "",
    ],
)
def test_what_is_no_salesforce_id_is_refused(bad: str) -> None:
    with pytest.raises(InvalidDealId):
        canonical_deal_id("salesforce", bad)


def test_hubspot_ids_are_digits_as_they_are() -> None:
    assert canonical_deal_id("hubspot", "0012345") == "0012345"
    for bad in ("12a", "", "-5", "١٢"):
        with pytest.raises(InvalidDealId):
            canonical_deal_id("hubspot", bad)


def test_an_unknown_crm_is_refused() -> None:
    with pytest.raises(InvalidDealId, match="known: hubspot, salesforce"):
        canonical_deal_id("pipedrive", "1")
