"""The web process's gunicorn worker: gunicorn's gevent worker (see gunicorn_config), which
also lets go of idle keep-alive connections when it is told to stop.

gunicorn's own gevent worker waits, on SIGTERM, until every connection's greenlet is done or
graceful_timeout has passed. A connection idling between two requests (HubSpot keeps them
open; so do proxies and test clients) is only done when its keep-alive of 75 s runs out, so
every deploy or restart would wait the full graceful_timeout. Here a connection that is
waiting for its next request is closed at once, as the gthread worker did;
requests in flight still get graceful_timeout to finish. And a SIGTERM that arrives while
the worker is still starting is not lost.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import gevent
from gunicorn.workers.ggevent import GeventWorker


class WebWorker(GeventWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Each greenlet now waiting for a request, with the timeout it waits under.
        self._waiting: dict[gevent.Greenlet, gevent.Timeout] = {}

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
