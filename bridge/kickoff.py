"""When ops can be expected to kick off: business days from the acceptance date."""

from __future__ import annotations

import datetime as dt


def add_business_days(start: dt.date, days: int) -> dt.date:
    """start + `days` Mon–Fri days; counting starts the next business day."""
    current = start
    remaining = days
    while remaining > 0:
        current += dt.timedelta(days=1)
        if current.weekday() < 5:
            remaining -= 1
    return current


def expected_kickoff(accepted_on: dt.date, within_days: int, requested: object) -> dt.date:
    """The later of acceptance + business days and the deal's requested kickoff date."""
    earliest = add_business_days(accepted_on, within_days)
    if isinstance(requested, dt.datetime):
        requested = requested.date()
    if isinstance(requested, dt.date) and requested > earliest:
        return requested
    return earliest
