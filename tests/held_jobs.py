"""Jobs for worker-process tests, imported by the workers (run from the repository root)."""

from __future__ import annotations

import threading
from pathlib import Path

from bridge import jobs


def stage_change_after(gate: str, *args: str) -> str:
    """The intake job, held until the file `gate` exists: a worker killed meanwhile dies
    after acknowledging the webhook and before its first ledger write."""
    while not Path(gate).exists():
        threading.Event().wait(0.05)
    return jobs.handle_stage_change(*args)


def nothing() -> str:
    return "done"
