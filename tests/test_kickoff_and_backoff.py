"""Expected kickoff dates and retry delays: the arithmetic users see in HubSpot and in
how patiently Fullkit waits for a rate-limited CRM."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from bridge.jobs import BACKOFF_CAP_SECONDS, retry_delay
from bridge.kickoff import add_business_days, expected_kickoff

FRIDAY = dt.date(2026, 11, 27)


def test_business_days_skip_the_weekend() -> None:
    assert add_business_days(FRIDAY, 1) == dt.date(2026, 11, 30)  # Monday
    assert add_business_days(FRIDAY, 5) == dt.date(2026, 12, 4)  # next Friday


def test_counting_starts_the_next_business_day_after_a_weekend_acceptance() -> None:
    saturday = dt.date(2026, 11, 28)
    assert add_business_days(saturday, 1) == dt.date(2026, 11, 30)


def test_a_later_requested_kickoff_wins() -> None:
    assert expected_kickoff(FRIDAY, 5, dt.date(2027, 1, 15)) == dt.date(2027, 1, 15)
    assert expected_kickoff(FRIDAY, 5, dt.date(2026, 11, 30)) == dt.date(2026, 12, 4)
    assert expected_kickoff(FRIDAY, 5, None) == dt.date(2026, 12, 4)


@given(st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2100, 1, 1)),
       st.integers(min_value=1, max_value=60))  # fmt: skip
def test_kickoff_is_a_weekday_at_least_n_business_days_out(start: dt.date, days: int) -> None:
    result = add_business_days(start, days)
    assert result.weekday() < 5
    span = [start + dt.timedelta(days=n) for n in range(1, (result - start).days + 1)]
    assert sum(1 for day in span if day.weekday() < 5) == days


@given(st.integers(min_value=0, max_value=40), st.none() | st.floats(0, 3600))
def test_retry_delay_backs_off_with_jitter_and_honours_retry_after(
    retries: int, retry_after: float | None
) -> None:
    delay = retry_delay(retries, retry_after)
    ceiling = min(BACKOFF_CAP_SECONDS, 2.0 * 2**retries)
    assert delay >= ceiling / 2
    assert delay <= max(ceiling, retry_after or 0)
    assert delay >= (retry_after or 0)
