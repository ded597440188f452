"""The API calls a sandbox received, as tests and benchmarks count them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response


@dataclass(frozen=True)
class CallRecord:
    method: str
    path: str
    status: int
    at: float


def matching(
    calls: Iterable[CallRecord], method: str | None = None, path_prefix: str | None = None
) -> list[CallRecord]:
    """The calls with this HTTP method (any case) under this path prefix."""
    return [
        c
        for c in calls
        if (method is None or c.method == method.upper())
        and (path_prefix is None or c.path.startswith(path_prefix))
    ]


class Logged(Protocol):
    lock: threading.RLock
    call_log: list[CallRecord]


class RecordingApp:
    """A fake's WSGI application: routes by (method, path, endpoint), and every request
    recorded in its sandbox's call log with the status it was answered."""

    def __init__(self, sandbox: Logged, routes: Sequence[tuple[str, str, str]]) -> None:
        self.url_map = Map(
            [Rule(path, methods=[method], endpoint=name) for method, path, name in routes],
            strict_slashes=False,
            merge_slashes=False,
        )
        self._logged = sandbox

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        response = self.handle(request)
        with self._logged.lock:
            self._logged.call_log.append(
                CallRecord(request.method, request.path, response.status_code, time.time())
            )
        return response(environ, start_response)

    def handle(self, request: Request) -> Response:
        raise NotImplementedError
