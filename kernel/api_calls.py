"""Outside API calls as /metrics counts them: per system and outcome, kept in Redis.

Workers make the calls, possibly on other hosts, while /metrics is answered by a web
process: so the counts live in one Redis hash every process adds to and any process reads
(`fullkit:metrics:api_calls`, field `<system>|<outcome>`). They are added where every call
already goes, the rate budget's `answered` (kernel/rate_budget.py), inside the script that
scores the call's slot: counting costs no round trip of its own. A connector, CRM or ops
target, is counted by taking its calls' slots from a budget and saying how each ended.

The outcomes are a small fixed vocabulary, so a label never grows with what a server says.
"""

from __future__ import annotations

import redis

CALLS_KEY = "fullkit:metrics:api_calls"

OK = "ok"
RATE_LIMITED = "429"  # also a CRM's own word for it, e.g. Salesforce's REQUEST_LIMIT_EXCEEDED
SERVER_ERROR = "5xx"
AUTH = "auth"  # 401 and 403: a human must act
CLIENT_ERROR = "4xx"  # any other 4xx (HubSpot's 423 and 477 "try later" among them)
TIMEOUT = "timeout"  # no answer in time; the call may have landed
UNREACHABLE = "unreachable"  # no answer at all: refused, reset, name not resolved
OTHER = "other"  # 1xx, 3xx: nothing our clients ask for
OUTCOMES = (OK, RATE_LIMITED, SERVER_ERROR, AUTH, CLIENT_ERROR, TIMEOUT, UNREACHABLE, OTHER)


def outcome(status: int | None, *, timed_out: bool = False, rate_limited: bool = False) -> str:
    """How a call ended: its HTTP status, or None when no answer came (`timed_out` says why)."""
    if status is None:
        return TIMEOUT if timed_out else UNREACHABLE
    if status == 429 or rate_limited:
        return RATE_LIMITED
    if 200 <= status < 300:
        return OK
    if status in (401, 403):
        return AUTH
    if 400 <= status < 500:
        return CLIENT_ERROR
    if status >= 500:
        return SERVER_ERROR
    return OTHER


def field(system: str, result: str) -> str:
    return f"{system}|{result}"


def counts(connection: redis.Redis) -> dict[tuple[str, str], int]:
    """Every process's calls so far, by (system, outcome)."""
    raw: dict[bytes, bytes] = connection.hgetall(CALLS_KEY)  # type: ignore[assignment]
    found: dict[tuple[str, str], int] = {}
    for name, value in raw.items():
        system, _, result = name.decode().partition("|")
        try:
            found[(system, result)] = int(value)
        except ValueError:
            continue  # not ours to break /metrics over
    return found
