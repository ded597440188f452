"""Several worker processes under one supervisor: a CRM call that hangs holds one of them.

An RQ worker runs one job at a time, so a CRM answering after 30 s would hold every
hand-off for as long. `fullkit worker` therefore runs `FULLKIT_WORKER_PROCESSES` of them,
restarts any that dies, and takes them all down with it: each child asks the kernel to
kill it when its parent dies (Linux), and watches its parent's pid as well (elsewhere).

The first children are forked before the supervisor starts a thread or opens a
connection, so they start in a moment with every module already imported; a child
started again later is spawned (a fresh interpreter), since by then the supervisor runs
threads whose locks a fork could copy in a held state.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

import structlog

log = structlog.get_logger("fullkit.worker")
# How long a child that died waits before it is started again: a child that cannot
# start at all must not spin the machine.
RESTART_DELAY_SECONDS = 1.0
# How long a stopping child may finish its job. A step caught mid-call is safe to cut:
# every step is ledger-first and idempotent, and the resumer picks the attempt up again.
# Shorter than the 30 s platforms commonly give between SIGTERM and SIGKILL.
STOP_GRACE_SECONDS = 20.0
PARENT_CHECK_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1

_fork = multiprocessing.get_context("fork") if hasattr(os, "fork") else None
_spawn = multiprocessing.get_context("spawn")


def die_with_parent(parent_pid: int) -> None:
    """Called first thing in a child: it must not outlive the supervisor that started it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the watcher below is the only guard
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the request above took effect

    def watch() -> None:
        while True:
            threading.Event().wait(PARENT_CHECK_SECONDS)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _child(target: Callable[..., None], args: tuple[Any, ...]) -> None:
    # Its own process group: a Ctrl-C in a terminal reaches only the supervisor, which
    # stops each child once (RQ takes a second signal as "abandon the job now").
    os.setpgrp()
    # A forked child inherits the supervisor's handlers; the worker installs its own.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    target(*args)


class Pool:
    """`size` children, each running `target(*args, ready, parent_pid)`."""

    def __init__(self, size: int, target: Callable[..., None], *args: Any) -> None:
        self.size = size
        self.target = target
        self.args = args
        self.children: list[tuple[BaseProcess, ProcessEvent]] = []
        self.stopping = threading.Event()

    def start(self) -> None:
        """Fork the children: call before this process starts threads or connects."""
        self.children = [self._start(_fork or _spawn) for _ in range(self.size)]

    def supervise(self, on_ready: Callable[[], None]) -> None:
        """Call on_ready once a child takes jobs; restart children that die, until stopped."""
        announced = False
        while not self.stopping.is_set():
            if not announced and any(ready.is_set() for _, ready in self.children):
                on_ready()
                announced = True
            for index, (child, _) in enumerate(self.children):
                if not child.is_alive() and not self.stopping.is_set():
                    log.warning("worker process died; starting another", exitcode=child.exitcode)
                    if self.stopping.wait(RESTART_DELAY_SECONDS):
                        break  # asked to stop meanwhile: start nothing new
                    child.close()
                    self.children[index] = self._start(_spawn)
            self.stopping.wait(0.2 if not announced else 1.0)
        self._stop_children()

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def _start(self, context: Any) -> tuple[BaseProcess, ProcessEvent]:
        ready = context.Event()
        args = (*self.args, ready, os.getpid())
        child = context.Process(target=_child, args=(self.target, args), name="fullkit-worker")
        child.start()
        return child, ready

    def _stop_children(self) -> None:
        # SIGTERM is RQ's warm shutdown: each child finishes its job, then exits.
        for child, _ in self.children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child, _ in self.children:
            child.join(max(deadline - time.monotonic(), 0))
        for child, _ in self.children:
            if child.is_alive() and child.pid is not None:
                log.warning("worker process did not stop in time; killing it", pid=child.pid)
                os.kill(child.pid, signal.SIGKILL)
                child.join()
