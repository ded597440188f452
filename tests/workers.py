"""Real `fullkit worker` processes against a sandbox whose answers a test can hold."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server

from sandbox import HubSpotSandbox, RunningSandbox
from sandbox.hubspot_http import HubSpotApp
from tests.conftest import ROOT

# A hold longer than any test, shorter than forever: a failing test still ends.
HOLD_LIMIT_SECONDS = 120.0


class Holding:
    """WSGI middleware: calls that name a held deal (path or body) wait until released."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.held_deals: set[str] = set()
        self.waiting = 0
        self.released = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        text = environ.get("PATH_INFO", "") + body.decode(errors="replace")
        if any(f"/{deal}" in text or f'"{deal}"' in text for deal in self.held_deals):
            with self._lock:
                self.waiting += 1
            self.released.wait(HOLD_LIMIT_SECONDS)
            with self._lock:
                self.waiting -= 1
        return self.app(environ, start_response)


class _Quiet(WSGIRequestHandler):
    def log_request(self, *_: Any) -> None:
        pass


def serve_holding(box: HubSpotSandbox) -> tuple[RunningSandbox, Holding]:
    holding = Holding(HubSpotApp(box))
    server = make_server("127.0.0.1", 0, holding, threaded=True, request_handler=_Quiet)
    return RunningSandbox(box, server), holding


def wait_for(check: Any, timeout: float, what: str = "condition") -> None:
    """Wait for other processes to reach a state; fails the test past the deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@contextmanager
def worker_process(
    env: dict[str, str], log: Path, **extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`fullkit worker` running until the block ends (SIGTERM, then SIGKILL if it hangs)."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge", "worker"],
            env={**env, **extra}, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: "worker ready" in log.read_text() or process.poll() is not None, 90)
        assert process.poll() is None, log.read_text()
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def descendants(pid: int) -> set[int]:
    """Every living process below pid (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def base_env(home: Path, box: HubSpotSandbox, url: str) -> dict[str, str]:
    return {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("REDIS", "DATABASE", "FULLKIT"))
        },
        "FULLKIT_HOME": str(home),
        "FULLKIT_RULES_DIR": str(ROOT / "kit_rules"),
        "HUBSPOT_ACCESS_TOKEN": box.access_token,
        "HUBSPOT_API_BASE": url,
        "HUBSPOT_RATE_LIMIT": "off",
    }
