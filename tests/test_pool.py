"""The worker supervisor stops in bounded time, whatever its children do."""

from __future__ import annotations

import signal
import threading
import time
from multiprocessing.synchronize import Event as ProcessEvent

import pytest

from bridge import pool
from bridge.pool import Pool


def _deaf_child(ready: ProcessEvent, parent_pid: int) -> None:
    # A child stuck where SIGTERM cannot reach it (a hung call, a swallowed stop).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.set()
    while True:
        time.sleep(1)


def test_a_child_that_ignores_sigterm_is_killed_and_the_supervisor_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pool, "STOP_GRACE_SECONDS", 0.5)
    workers = Pool(2, _deaf_child)
    workers.start()
    supervisor = threading.Thread(target=workers.supervise, args=(lambda: None,))
    supervisor.start()
    assert all(ready.wait(30) for _, ready in workers.children)
    workers.stop()
    supervisor.join(timeout=60)
    assert not supervisor.is_alive()
    assert all(not child.is_alive() for child, _ in workers.children)
    assert all(child.exitcode == -signal.SIGKILL for child, _ in workers.children)
