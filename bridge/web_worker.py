"""The web process's gunicorn worker: gunicorn's gevent worker (see gunicorn_config), which
also lets go of idle keep-alive connections when it is told to stop.

gunicorn's own gevent worker waits, on SIGTERM, until every connection's greenlet is done or
graceful_timeout has passed. A connection idling between two requests (HubSpot keeps them
open; so do proxies and test clients) is only done when its keep-alive of 75 s runs out, so
every deploy or restart would wait the full graceful_timeout. Here a connection that is
waiting for its next request is closed at once, as the gthread worker did;
requests in flight still get graceful_timeout to finish. And a SIGTERM that arrives while
the worker is still starting is not lost. And the queue's client checks a pooled connection
without a turn of gevent's loop (see checks_without_yielding).
"""

from __future__ import annotations

import contextlib
import select
import signal
from collections.abc import Iterator
from typing import Any

import gevent
from gevent import monkey
from gunicorn.workers.ggevent import GeventWorker
from redis._parsers import hiredis


def checks_without_yielding() -> None:
    """Before each command redis-py asks whether a pooled connection has data waiting: a
    poll with timeout 0. gevent's patched poll answers that only after a whole turn of its
    event loop, so every webhook went to the back of the line once more before its one
    round trip to the queue: 13 us of CPU and 0.1 ms when idle, and at 500 webhooks/s
    (bench_ingest, four runs each, alternating) an ack p99 of 7.6-48.9 ms (median 13.9)
    against 6.4-14.7 ms (median 10.0) without it. A real poll with timeout 0 never blocks,
    so it runs under gevent as it is; a check that may wait keeps gevent's.
    """
    cooperative = hiredis._socket_can_read
    real_poll = monkey.get_original("select", "poll")

    def can_read(sock: Any, timeout: float) -> bool:
        if timeout != 0 or (hasattr(sock, "pending") and sock.pending()):
            return cooperative(sock, timeout)
        poller = real_poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))

    hiredis._socket_can_read = can_read


class WebWorker(GeventWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Each greenlet now waiting for a request, with the timeout it waits under.
        self._waiting: dict[gevent.Greenlet, gevent.Timeout] = {}

    def patch(self) -> None:
        super().patch()
        checks_without_yielding()

    def init_process(self) -> None:
        # gunicorn installs the worker's signal handlers only after gevent has patched the
        # standard library, which takes a moment: a SIGTERM meanwhile would be lost, and the
        # master would wait graceful_timeout before killing the worker. Hear it from the start.
        signal.signal(signal.SIGTERM, self._stop_before_running)
        super().init_process()

    def _stop_before_running(self, _sig: int, _frame: Any) -> None:
        self.alive = False

    @contextlib.contextmanager
    def timeout_ctx(self) -> Iterator[None]:
        """gunicorn reads each request's headers under this (keep-alive) timeout."""
        current = gevent.getcurrent()
        timeout = super().timeout_ctx()  # silent: on expiry the connection just closes
        self._waiting[current] = timeout
        try:
            with timeout:
                yield
        finally:
            self._waiting.pop(current, None)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        for waiting, timeout in list(self._waiting.items()):
            # As if the keep-alive ran out now: no request was begun, nothing is lost.
            waiting.kill(timeout, block=False)
