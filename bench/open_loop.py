"""An open-loop HTTP load generator: requests sent at fixed times over keep-alive connections.

Each request has its time; its latency counts from then, so a server that falls behind
shows it, however long the request waited for a free connection. One thread drives every
connection through a selector, and the requests are whole byte strings built (and signed)
beforehand: HubSpot's CPU is not the server's, so the client should cost the machine it
shares with the server as little as it can. A pool of threads with http.client cost a
quarter of a core at 500 requests a second on a 2-core machine, and timed each answer only
when its thread next got the GIL.

A second thread only sleeps until the next request is due and wakes the selector then, as
a selector's own timeout rounds up to whole milliseconds.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

_HEADERS_END = b"\r\n\r\n"
_NO_BODY = frozenset({204, 304})


@dataclass
class Outcome:
    """Each answered request's status and latency (seconds from its due time)."""

    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    # Requests that got no answer (the connection failed or closed under them).
    lost: int = 0
    elapsed: float = 0.0


def request_bytes(method: str, path: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    """One HTTP/1.1 request on a keep-alive connection, as a client would write it."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection:
    def __init__(self, address: tuple[str, int], timeout: float) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buffer = b""
        self.due: float | None = None  # the due time of the request in flight, if any

    def answer(self) -> int | None:
        """The status of a complete answer in the buffer (consumed), or None for not yet."""
        end = self.buffer.find(_HEADERS_END)
        if end < 0:
            return None
        head = self.buffer[:end].decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "transfer-encoding":
                raise ValueError("chunked answers are not read by this client")
        if status in _NO_BODY:
            length = 0
        total = end + len(_HEADERS_END) + length
        if len(self.buffer) < total:
            return None
        self.buffer = self.buffer[total:]
        return status


class _Clock:
    """Wakes the selector through a pipe at each due time (sub-millisecond, unlike its
    timeout), from a thread that does nothing else."""

    def __init__(self, times: Sequence[float]) -> None:
        self.read_end, self._write_end = os.pipe()
        os.set_blocking(self.read_end, False)
        self._times = times
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        for due in self._times:
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            os.write(self._write_end, b".")

    def drain(self) -> None:
        try:
            while os.read(self.read_end, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        self._thread.join()
        os.close(self.read_end)
        os.close(self._write_end)


def run(
    address: tuple[str, int],
    requests: Sequence[bytes],
    rate: float,
    connections: int,
    timeout: float = 10.0,
) -> Outcome:
    """Send requests[n] at start + n / rate, each on the next free connection."""
    outcome = Outcome()
    selector = selectors.DefaultSelector()
    idle: deque[_Connection] = deque()
    for _ in range(connections):
        connection = _Connection(address, timeout)
        selector.register(connection.sock, selectors.EVENT_READ, connection)
        idle.append(connection)
    # The clock starts once every connection is open: connecting is not what is measured.
    start = time.perf_counter() + 0.2
    due_times = [start + n / rate for n in range(len(requests))]
    clock = _Clock(due_times)
    selector.register(clock.read_end, selectors.EVENT_READ, None)
    backlog: deque[int] = deque()  # due requests waiting for a free connection
    sent = answered = 0
    deadline = due_times[-1] + timeout if due_times else start
    clock.start()
    try:
        while answered + outcome.lost < len(requests) and time.perf_counter() < deadline:
            for key, _events in selector.select(timeout=0.05):
                connection = key.data
                if connection is None:
                    clock.drain()
                    continue
                answered += _read(connection, outcome, selector, idle, address, timeout)
            now = time.perf_counter()
            while sent < len(requests) and due_times[sent] <= now:
                backlog.append(sent)
                sent += 1
            while backlog and idle:
                number = backlog.popleft()
                connection = idle.popleft()
                if not _send(connection, requests[number], due_times[number]):
                    outcome.lost += 1
                    idle.append(_replace(connection, selector, address, timeout))
        outcome.lost += len(requests) - answered - outcome.lost
        outcome.elapsed = time.perf_counter() - start
    finally:
        for key in list(selector.get_map().values()):
            if key.data is not None:
                key.data.sock.close()
        selector.close()
        clock.close()
    return outcome


def _send(connection: _Connection, request: bytes, due: float) -> bool:
    connection.due = due
    try:
        # Small requests fit the socket's buffer at once; a partial send is a failure here.
        return connection.sock.send(request) == len(request)
    except OSError:
        return False


def _read(
    connection: _Connection,
    outcome: Outcome,
    selector: selectors.BaseSelector,
    idle: deque[_Connection],
    address: tuple[str, int],
    timeout: float,
) -> int:
    """Read what arrived; returns 1 when it completed the answer in flight."""
    try:
        chunk = connection.sock.recv(65536)
    except BlockingIOError:
        return 0
    except OSError:
        chunk = b""
    if not chunk:
        if connection.due is not None:
            outcome.lost += 1
        else:  # closed while idle (keep-alive timeout): not in flight, nothing lost
            idle.remove(connection)
        idle.append(_replace(connection, selector, address, timeout))
        return 0
    connection.buffer += chunk
    status = connection.answer()
    if status is None or connection.due is None:
        return 0
    outcome.latencies.append(time.perf_counter() - connection.due)
    outcome.statuses.append(status)
    connection.due = None
    idle.append(connection)
    return 1


def _replace(
    connection: _Connection,
    selector: selectors.BaseSelector,
    address: tuple[str, int],
    timeout: float,
) -> _Connection:
    selector.unregister(connection.sock)
    connection.sock.close()
    fresh = _Connection(address, timeout)
    selector.register(fresh.sock, selectors.EVENT_READ, fresh)
    return fresh
