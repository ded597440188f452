"""One request budget per CRM account, kept in Redis and shared by every process.

Each worker pacing itself cannot keep N workers under a per-account limit, and answering
429s with backoff spends most of the calls on 429s. So every outgoing CRM call first takes
a slot from a sliding-window log in Redis (the shape of HubSpot's TEN_SECONDLY_ROLLING
policy), atomically in one Lua script, so all processes together stay under the limit.

* A slot is scored again when the answer arrives: the CRM counts the request somewhere
  between our send and its answer, so holding the slot for a whole window after the answer
  is the only hold that is certainly long enough, whatever the network did in between.
* The CRM's own word wins when it comes: a 429's wait pauses the budget for every process
  (`pause`), and a "remaining" figure lower than ours fills the window up to it (`drain`),
  e.g. when something else spends the same account's limit.
* Time is Redis's own (`TIME`) unless a clock is injected, so processes on hosts whose
  clocks disagree still share one window.
* Redis unreachable: the call goes ahead unpaced (the CRM's 429 handling still stands);
  a budget must not turn a queue hiccup into failed hand-offs.
* Every answered call is also counted for /metrics by system and outcome
  (kernel/api_calls.py) in the same script, and each budget notes its limit, so any
  process can say how many slots are left (`budgets_left`). Counts a Redis error kept
  from the hash wait in the process and go with its next answered call.
* A limit turned off (e.g. ASANA_RATE_LIMIT=off) still counts: `RateBudgets.budget` with
  no limit gives an `UnpacedBudget`, which takes no slot (no round trip before the call)
  and counts each answered call in one script, one round trip where a paced call has two.

Keys name the account by a digest (`fullkit:rate:<crm>:<digest>`), never by its token.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis
import structlog

from kernel import api_calls
from kernel.errors import RetryableError

log = structlog.get_logger("fullkit.rate_budget")

KEY_PREFIX = "fullkit:rate"
# Latest rate-limit figures the CRM reported, per CRM, for /metrics in any process.
OBSERVED_KEY = f"{KEY_PREFIX}:observed"
# Every budget's log key -> "limit,window ms", so /metrics can say what each has left.
BUDGETS_KEY = f"{KEY_PREFIX}:budgets"
# Long enough to wait out one 10-second window in place; a longer wait (a pause the CRM
# asked for) goes back to the job layer, which reschedules instead of holding a worker.
MAX_WAIT_SECONDS = 15.0
# Waiters that wake together take turns rather than all asking in the same millisecond.
WAKE_JITTER_SECONDS = 0.02

_NOW = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
end
"""

# KEYS: log, pause. ARGV: now ms ('' = Redis time), limit, window ms, slot id.
# -> {1, 0} admitted, or {0, ms to wait before asking again}.
_TAKE = (
    _NOW
    + """
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then return {0, paused - now} end
local limit, window = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window * 2)
  return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, math.max(1, tonumber(oldest[2]) + window - now)}
"""
)

# KEYS: log, observed, budgets, calls. ARGV: now ms, window ms, slot id or '', limit, the
# CRM's remaining or '', crm, the CRM's figures or '', then (calls field, count) pairs. The
# slot now counts from the answer; when the CRM says fewer calls are left than we think,
# the window is filled until only those are left.
_ANSWERED = (
    _NOW
    + """
local window, limit = tonumber(ARGV[2]), tonumber(ARGV[4])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[1], now, ARGV[3]) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[2], ARGV[6], ARGV[7]) end
redis.call('HSET', KEYS[3], KEYS[1], ARGV[4] .. ',' .. ARGV[2])
for i = 8, #ARGV - 1, 2 do
  redis.call('HINCRBY', KEYS[4], ARGV[i], tonumber(ARGV[i + 1]))
end
local filled = 0
if ARGV[5] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  local missing = (limit - tonumber(ARGV[5])) - redis.call('ZCARD', KEYS[1])
  for i = 1, missing do
    redis.call('ZADD', KEYS[1], now, 'crm:' .. now .. ':' .. i)
    filled = filled + 1
  end
end
redis.call('PEXPIRE', KEYS[1], window * 2)
return filled
"""
)

# KEYS: observed, calls. ARGV: crm, the CRM's figures or '', then (calls field, count)
# pairs. An unpaced call's answer: counted, and the CRM's figures kept for /metrics.
_COUNTED = """
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
for i = 3, #ARGV - 1, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], tonumber(ARGV[i + 1]))
end
return 0
"""

# KEYS: (log, pause) per budget. ARGV: now ms ('' = Redis time), then each budget's window
# ms. -> each budget's slots taken within its window, or -1 while it is paused.
_TAKEN = (
    _NOW
    + """
local taken = {}
for i = 1, #KEYS / 2 do
  local paused = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  if paused > now then
    taken[i] = -1
  else
    local since = now - tonumber(ARGV[i + 1])
    taken[i] = redis.call('ZCOUNT', KEYS[2 * i - 1], '(' .. since, '+inf')
  end
end
return taken
"""
)

# KEYS: pause. ARGV: now ms, pause ms. Only ever lengthens a pause another process set.
_PAUSE = (
    _NOW
    + """
local ends = now + tonumber(ARGV[2])
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if paused < ends then
  redis.call('SET', KEYS[1], ends, 'PX', tonumber(ARGV[2]))
end
return ends
"""
)


class BudgetSpent(Exception):
    """No slot within the caller's bound; `wait` says when asking again can succeed."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"request budget spent; next slot in {wait:.1f} s")
        self.wait = wait


@dataclass(frozen=True)
class Limit:
    """`requests` per rolling `window` seconds."""

    requests: int
    window: float


@dataclass(frozen=True)
class Observed:
    """What the CRM last said about its own limit."""

    remaining: int
    maximum: int
    interval: float  # seconds
    at: float  # unix seconds

    def encode(self) -> str:
        return f"{self.remaining},{self.maximum},{self.interval:g},{self.at:.3f}"

    @classmethod
    def decode(cls, value: str) -> Observed:
        remaining, maximum, interval, at = value.split(",")
        return cls(int(remaining), int(maximum), float(interval), float(at))

    def remaining_now(self, now: float) -> int:
        # Past its window the figure is stale: everything it counted has expired.
        return self.maximum if now - self.at >= self.interval else self.remaining


class RateBudget:
    """The budget of one CRM account. Thread-safe; share one per process and account."""

    def __init__(
        self,
        connection: redis.Redis,
        crm: str,
        account: str,
        limit: Limit,
        *,
        clock: Callable[[], float] | None = None,
        max_wait: float = MAX_WAIT_SECONDS,
    ) -> None:
        self.crm = crm
        self.limit = limit
        self.max_wait = max_wait
        self._redis = connection
        self._clock = clock
        self._log_key = f"{KEY_PREFIX}:{crm}:{account}"
        self._pause_key = f"{self._log_key}:pause"
        self._take = connection.register_script(_TAKE)
        self._answered = connection.register_script(_ANSWERED)
        self._pause = connection.register_script(_PAUSE)
        self._warned = False
        # Calls answered while Redis could not be told, by api_calls field.
        self._tally: Counter[str] = Counter()
        self._tally_lock = threading.Lock()

    @property
    def _window_ms(self) -> int:
        return max(1, round(self.limit.window * 1000))

    def _now(self) -> str:
        return "" if self._clock is None else str(round(self._clock() * 1000))

    def try_take(self) -> tuple[str | None, float]:
        """(slot id, 0) when admitted, else (None, seconds until asking again may succeed)."""
        slot = uuid.uuid4().hex
        admitted, wait_ms = self._take(
            keys=[self._log_key, self._pause_key],
            args=[self._now(), self.limit.requests, self._window_ms, slot],
        )
        return (slot, 0.0) if admitted else (None, int(wait_ms) / 1000)

    def take(self) -> str | None:
        """A slot, waiting for one up to `max_wait`; raises BudgetSpent beyond that.

        None when Redis cannot be asked: the call then goes ahead unpaced.
        """
        deadline = time.monotonic() + self.max_wait
        while True:
            try:
                slot, wait = self.try_take()
            except redis.RedisError as exc:
                self._unreachable(exc)
                return None
            if slot is not None:
                return slot
            if time.monotonic() + wait > deadline:
                raise BudgetSpent(wait)
            time.sleep(wait + random.uniform(0, WAKE_JITTER_SECONDS))

    def answered(
        self,
        slot: str | None,
        figures: Observed | None = None,
        *,
        outcome: str | None = None,
        system: str | None = None,
    ) -> None:
        """The call of `slot` was answered, with the CRM's own rate-limit figures if any.

        The slot holds its place for a window from now. The figures are kept for
        /metrics, and when they leave fewer calls than our count does, they win. The call
        is counted under `system` (default: the budget's CRM) and its `outcome`
        (kernel/api_calls.py), unless no outcome is given.
        """
        tally = self._tally_with(outcome, system)
        args: list[str | int] = [
            self._now(),
            self._window_ms,
            slot or "",
            self.limit.requests,
            "" if figures is None else max(0, figures.remaining),
            self.crm,
            "" if figures is None else figures.encode(),
        ]
        for name, count in tally.items():
            args += [name, count]
        keys = [self._log_key, OBSERVED_KEY, BUDGETS_KEY, api_calls.CALLS_KEY]
        self._tell(tally, lambda: self._answered(keys=keys, args=args))

    def _tally_with(self, outcome: str | None, system: str | None) -> Counter[str]:
        """The calls still to count: those Redis missed so far, and this one."""
        with self._tally_lock:
            tally, self._tally = self._tally, Counter()
        if outcome is not None:
            tally[api_calls.field(system or self.crm, outcome)] += 1
        return tally

    def _tell(self, tally: Counter[str], script: Callable[[], object]) -> None:
        try:
            script()
        except redis.ConnectionError as exc:
            # Never sent: counted with the next call that reaches Redis. (After a timeout
            # the script may have run, and counting twice would be worse than once less.)
            with self._tally_lock:
                self._tally.update(tally)
            self._unreachable(exc)
        except redis.RedisError as exc:
            self._unreachable(exc)

    def pause(self, seconds: float) -> None:
        """No process takes a slot for `seconds` (a 429's Retry-After or window)."""
        pause_ms = max(1, round(seconds * 1000))
        self._quietly(lambda: self._pause(keys=[self._pause_key], args=[self._now(), pause_ms]))

    def _quietly(self, action: Callable[[], object]) -> None:
        try:
            action()
        except redis.RedisError as exc:
            self._unreachable(exc)

    def _unreachable(self, exc: redis.RedisError) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "rate budget unreachable; calls go ahead unpaced",
                crm=self.crm,
                error=type(exc).__name__,
            )


def observed(connection: redis.Redis) -> dict[str, Observed]:
    """The CRMs' latest rate-limit figures, by CRM name (what /metrics shows)."""
    found: dict[str, Observed] = {}
    raw: dict[bytes, bytes] = connection.hgetall(OBSERVED_KEY)  # type: ignore[assignment]
    for name, value in raw.items():
        try:
            found[name.decode()] = Observed.decode(value.decode())
        except ValueError:
            continue  # written by another version: skip rather than break /metrics
    return found


@dataclass(frozen=True)
class BudgetLeft:
    """What one account's shared budget has left right now (0 while paused)."""

    crm: str
    account: str  # the digest that names the account in its keys, never a token
    limit: int
    window: float  # seconds
    left: int


def budgets_left(connection: redis.Redis, *, now: float | None = None) -> list[BudgetLeft]:
    """Every budget a process has used, with the slots left in its window (two round trips)."""
    raw: dict[bytes, bytes] = connection.hgetall(BUDGETS_KEY)  # type: ignore[assignment]
    known: list[tuple[str, int, int]] = []
    for name, value in sorted(raw.items()):
        try:
            limit, window_ms = (int(part) for part in value.decode().split(","))
        except ValueError:
            continue  # written by another version: skip rather than break /metrics
        known.append((name.decode(), limit, window_ms))
    if not known:
        return []
    keys: list[str] = []
    for log_key, _, _ in known:
        keys += [log_key, f"{log_key}:pause"]
    at = "" if now is None else str(round(now * 1000))
    script = connection.register_script(_TAKEN)
    taken: Sequence[int] = script(keys=keys, args=[at, *(w for _, _, w in known)])
    found = []
    for (log_key, limit, window_ms), used in zip(known, taken, strict=True):
        crm, _, account = log_key.removeprefix(f"{KEY_PREFIX}:").partition(":")
        left = 0 if used < 0 else max(0, limit - int(used))
        found.append(BudgetLeft(crm, account, limit, window_ms / 1000, left))
    return found


class UnpacedBudget(RateBudget):
    """An account whose limit is off: calls go ahead at once and are only counted."""

    # No limit to pace by; the window is a typical CRM's, for figures that name none.
    UNLIMITED = Limit(requests=0, window=10.0)

    def __init__(self, connection: redis.Redis, crm: str, account: str) -> None:
        super().__init__(connection, crm, account, self.UNLIMITED)
        self._counted = connection.register_script(_COUNTED)

    def try_take(self) -> tuple[str | None, float]:
        return uuid.uuid4().hex, 0.0

    def take(self) -> str | None:
        return None  # nothing to wait for, and no round trip to learn that

    def answered(
        self,
        slot: str | None,
        figures: Observed | None = None,
        *,
        outcome: str | None = None,
        system: str | None = None,
    ) -> None:
        tally = self._tally_with(outcome, system)
        args: list[str | int] = [self.crm, "" if figures is None else figures.encode()]
        for name, count in tally.items():
            args += [name, count]
        keys = [OBSERVED_KEY, api_calls.CALLS_KEY]
        self._tell(tally, lambda: self._counted(keys=keys, args=args))

    def pause(self, seconds: float) -> None:
        """Nothing to pause: with the limit off the CRM's own 429s are the only brake."""


class RateBudgets:
    """A process's budgets, one per CRM account: what the runtime hands to connectors."""

    def __init__(
        self,
        connection: redis.Redis,
        *,
        clock: Callable[[], float] | None = None,
        max_wait: float = MAX_WAIT_SECONDS,
    ) -> None:
        self.connection = connection
        self._clock = clock
        self._max_wait = max_wait
        self._budgets: dict[tuple[str, str, Limit | None], RateBudget] = {}
        self._lock = threading.Lock()

    def budget(self, crm: str, identity: str, limit: Limit | None) -> RateBudget:
        """The budget of the account `identity` names (e.g. API base + token).

        Only a digest of `identity` reaches Redis, so a token can name its account. No
        `limit` (the setting is off): an UnpacedBudget, so the calls are still counted.
        """
        account = hashlib.sha256(identity.encode()).hexdigest()[:24]
        key = (crm, account, limit)
        with self._lock:
            found = self._budgets.get(key)
            if found is None:
                found = (
                    UnpacedBudget(self.connection, crm, account)
                    if limit is None
                    else RateBudget(
                        self.connection,
                        crm,
                        account,
                        limit,
                        clock=self._clock,
                        max_wait=self._max_wait,
                    )
                )
                self._budgets[key] = found
            return found


def take_slot(budget: RateBudget | None, what: str) -> str | None:
    """A slot of `budget` for one call (None when the calls are unpaced).

    A wait too long to hold a worker raises RetryableError instead: the job layer
    reschedules the attempt for when the budget has room.
    """
    if budget is None:
        return None
    try:
        return budget.take()
    except BudgetSpent as spent:
        raise RetryableError(f"{what}: {spent}", retry_after=spent.wait) from None
