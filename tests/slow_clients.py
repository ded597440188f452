"""Clients that hold a request open as long as they like, as an attacker would (issue 15):
those that send their headers a byte at a time, and those that stop after the headers.

Shared by tests/test_slow_clients.py and bench/bench_slow_clients.py.
"""

from __future__ import annotations

import socket
import threading
from typing import Literal

Kind = Literal["headers", "body"]
# How often a trickling client sends its next byte: far inside any sane read timeout.
TRICKLE_SECONDS = 2.0


class SlowClients:
    """Connections to host:port that each keep one request unfinished until close()."""

    def __init__(self, host: str, port: int, kind: Kind) -> None:
        self.host, self.port, self.kind = host, port, kind
        self.sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._trickler = threading.Thread(target=self._trickle, daemon=True)
        self._trickler.start()

    def open(self, count: int) -> None:
        """Open `count` more connections, each with its request begun."""
        for _ in range(count):
            sock = socket.create_connection((self.host, self.port), timeout=10)
            sock.sendall(self._opening())
            with self._lock:
                self.sockets.append(sock)

    def _opening(self) -> bytes:
        if self.kind == "headers":
            # A header whose value never ends: the server waits for the end of the line.
            return b"POST /webhooks/hubspot HTTP/1.1\r\nHost: fullkit\r\nX-Slow: "
        # Complete headers, then the body a byte at a time.
        return (
            b"POST /webhooks/hubspot HTTP/1.1\r\nHost: fullkit\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n["
        )

    def _trickle(self) -> None:
        while not self._stop.wait(TRICKLE_SECONDS):
            with self._lock:
                alive = list(self.sockets)
            for sock in alive:
                try:
                    sock.send(b"a")
                except OSError:
                    pass  # the server dropped it; an attacker would simply open another

    def close(self) -> None:
        self._stop.set()
        self._trickler.join()
        with self._lock:
            for sock in self.sockets:
                sock.close()
            self.sockets.clear()

    def __enter__(self) -> SlowClients:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
