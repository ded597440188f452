"""FULLKIT_HOME's file locks under the web process's gevent worker: a request's greenlet
that waits for a lock another process holds (the worker starting the embedded Valkey)
must not stop every other request of the process meanwhile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

HOLDER = """
import fcntl, sys, time
from pathlib import Path
lock, gate = (Path(p) for p in sys.argv[1:])
with open(lock, "a") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    print("held", flush=True)
    deadline = time.monotonic() + 30  # let go by itself, so a broken run still ends
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
"""

WEB = """
from gevent import monkey
monkey.patch_all()
import sys
from pathlib import Path
import gevent
from bridge.home import exclusive
lock, gate = Path(sys.argv[1]), Path(sys.argv[2])
order = []

def wait_for_lock():
    with exclusive(lock):
        order.append("lock taken")

def other_requests():
    for _ in range(5):
        gevent.sleep(0.01)
    order.append("others served")
    gate.touch()  # only now may the holding process let go

gevent.joinall([gevent.spawn(wait_for_lock), gevent.spawn(other_requests)])
print(",".join(order))
"""


def test_a_greenlet_waiting_for_a_home_lock_lets_the_others_run(tmp_path: Path) -> None:
    lock, gate = tmp_path / "lock", tmp_path / "gate"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock), str(gate)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        done = subprocess.run(
            [sys.executable, "-c", WEB, str(lock), str(gate)],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
    finally:
        gate.touch()
        holder.wait(timeout=60)
    assert done.stdout.strip() == "others served,lock taken", done.stderr
