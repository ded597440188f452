"""Trouble a flaky HubSpot gives at random, for chaos runs; all of it off by default.

Three kinds, each as real HubSpot shows it:

* `error_rate`: that share of API calls is answered 500, 502, 503 or 504 before anything
  is done (nothing written).
* `burst_every` / `burst_seconds`: every `burst_every` seconds, for `burst_seconds`,
  every call is answered 429 `TEN_SECONDLY_ROLLING` with the rate-limit headers of a spent
  window, as when another app of the portal used up the shared limit.
* `late_rate` / `late_seconds`: that share of calls is carried out (a create creates, an
  update updates) and only then answered, `late_seconds` later: past the client's read
  timeout, the client sees a timeout for a write that happened.
* `slow_rate`: that share of calls waits `late_seconds` first and is then carried out and
  answered: the write lands after the client gave up, perhaps after its retry looked.

Set `HubSpotSandbox.chaos = Chaos(...)` once the portal is set up; `injected` counts what
was done, by kind.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["error", "limited", "late", "slow"]
ERROR_STATUSES = (500, 502, 503, 504)


@dataclass
class Chaos:
    error_rate: float = 0.0
    late_rate: float = 0.0
    late_seconds: float = 0.0
    slow_rate: float = 0.0
    burst_every: float = 0.0
    burst_seconds: float = 0.0
    # A fixed seed makes a run's dice reproducible (the timing of a run never is).
    seed: int | None = None
    clock: Callable[[], float] = time.monotonic
    injected: Counter[str] = field(default_factory=Counter)
    _random: random.Random = field(init=False, repr=False)
    _since: float = field(init=False, repr=False, default=0.0)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._since = self.clock()

    @property
    def active(self) -> bool:
        return bool(self.error_rate or self.late_rate or self.slow_rate or self.burst_seconds)

    def pick(self) -> tuple[Verdict | None, int]:
        """What happens to the next API call, and the status of an injected error."""
        with self._lock:
            verdict: Verdict | None = None
            status = 0
            if self._in_burst():
                verdict, status = "limited", 429
            elif self._random.random() < self.error_rate:
                verdict, status = "error", self._random.choice(ERROR_STATUSES)
            else:
                dice = self._random.random()
                if dice < self.late_rate:
                    verdict = "late"
                elif dice < self.late_rate + self.slow_rate:
                    verdict = "slow"
            if verdict is not None:
                self.injected[verdict] += 1
            return verdict, status

    def _in_burst(self) -> bool:
        if self.burst_every <= 0 or self.burst_seconds <= 0:
            return False
        elapsed = self.clock() - self._since
        # The first burst comes after one period, not at the start of the run.
        return elapsed >= self.burst_every and elapsed % self.burst_every < self.burst_seconds
