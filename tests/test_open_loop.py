"""The benchmark's open-loop client: what it reports is what a sender at a fixed rate sees."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import open_loop

STALL_SECONDS = 0.2


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn answers

    def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if body == b"stall":
            time.sleep(STALL_SECONDS)
        if body == b"bad":
            answer = b'{"error": "not a HubSpot event batch"}'
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            return
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    request_queue_size = 64  # every connection accepted at once
    daemon_threads = True


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield ("127.0.0.1", httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def _requests(address: tuple[str, int], bodies: list[bytes]) -> list[bytes]:
    host = f"{address[0]}:{address[1]}"
    return [open_loop.request_bytes("POST", "/hook", host, {}, body) for body in bodies]


def test_every_request_is_answered_and_bodies_are_read(server: tuple[str, int]) -> None:
    bodies = [b"ok", b"bad"] * 50
    outcome = open_loop.run(server, _requests(server, bodies), rate=1000, connections=4)
    assert outcome.lost == 0
    assert sorted(outcome.statuses) == [204] * 50 + [400] * 50
    assert outcome.elapsed >= 0.099  # 100 requests at 1,000/s


def test_a_stalled_answer_delays_the_requests_due_behind_it(server: tuple[str, int]) -> None:
    """Open loop: a request that waits for the connection counts from its own due time,
    so a server that falls behind shows in every latency, not only the slow one's."""
    bodies = [b"stall"] + [b"ok"] * 19
    outcome = open_loop.run(server, _requests(server, bodies), rate=200, connections=1)
    assert outcome.lost == 0 and outcome.statuses == [204] * 20
    # Due every 5 ms behind a 200 ms stall: each waited for it, counted from its own time.
    assert outcome.latencies[0] >= STALL_SECONDS
    assert all(later >= STALL_SECONDS - 0.005 * (n + 1) for n, later in
               enumerate(outcome.latencies[1:]))  # fmt: skip


def test_requests_are_sent_at_their_rate_not_faster(server: tuple[str, int]) -> None:
    outcome = open_loop.run(server, _requests(server, [b"ok"] * 30), rate=100, connections=8)
    assert outcome.statuses == [204] * 30
    assert outcome.elapsed >= 0.29
    # Each counted from its own due time, not from the start of the run.
    assert max(outcome.latencies) < outcome.elapsed / 2
