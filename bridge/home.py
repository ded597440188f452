"""FULLKIT_HOME, the local state directory: private to the user who runs Fullkit.

It holds the SQLite ledger, the embedded Valkey's append-only file, its password and
state file, and logs. Any other local user who could read them could read hand-offs or,
with the queue's password, queue a job the worker runs; so the folder is 0700 and every
file a Fullkit process creates is 0600 (umask 077), whoever starts first.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PRIVATE_UMASK = 0o077
PRIVATE_DIR = 0o700
# How often a process waiting for a home lock tries again: the holders (a Valkey start, a
# migration) keep it for a fraction of a second to seconds.
LOCK_RETRY_SECONDS = 0.02


def private_home(home: Path) -> Path:
    """Create `home` for its owner only, and make this process's new files private.

    The umask is process-wide on purpose: the ledger's journal files, the metrics files,
    logs and the Valkey child (which inherits it) are created by code that takes no mode.
    A home made by an older version, or by hand, with wider modes is tightened.
    """
    os.umask(PRIVATE_UMASK)
    home.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if stat.S_IMODE(home.stat().st_mode) & ~PRIVATE_DIR:
        try:
            home.chmod(PRIVATE_DIR)
        except PermissionError:
            pass  # not ours (a shared mount): its owner decides, the files stay 0600
    return home


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically: readers that take no lock (the
    web process reading the state file) never see half of it."""
    partial = path.with_name(f".{path.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(partial, path)


@contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (created if need be) until the block ends.

    flock locks belong to the open file, so threads of one process exclude each other
    too, and the kernel drops the lock of a process that dies holding it.

    Taken without blocking, and tried again after a short sleep while another holds it:
    a blocking flock is a call gevent cannot make cooperative, so under the web process's
    gevent worker a request waiting here (the embedded Valkey's reviver, while a worker
    starts the server) would stop every other request and /healthz of that process.
    """
    with open(lock_file, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(LOCK_RETRY_SECONDS)  # gevent's sleep in the web process
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
