"""A real browser for the console's tests and screenshots: Debian's Chromium driven by
Playwright, against the app under a real WSGI server on loopback."""

from __future__ import annotations

import os
import shutil
import struct
import sys
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import Flask
from playwright.sync_api import BrowserContext, Page, Playwright, sync_playwright
from werkzeug.serving import WSGIRequestHandler, make_server

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


MACOS_BROWSERS = (
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
)


class NoChromium(Exception):
    pass


def find_chromium() -> str:
    """FULLKIT_CHROMIUM, else Debian's /usr/bin/chromium, else `chromium` on PATH, else (on
    macOS) Chrome, Chromium or the Chromium Playwright installed."""
    chosen = os.environ.get("FULLKIT_CHROMIUM")
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise NoChromium(
                f"FULLKIT_CHROMIUM={chosen} is not an executable browser: fix it, or unset it"
                " and run `make browser`"
            )
        return chosen
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), *MACOS_BROWSERS):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    if sys.platform == "darwin":
        # What `make browser` installs on macOS when neither app is there.
        with sync_playwright() as playwright:
            own = playwright.chromium.executable_path
        if os.access(own, os.X_OK):
            return own
    raise NoChromium(
        "no Chromium found: run `make browser` (or point FULLKIT_CHROMIUM at Chrome/Chromium)"
    )


def launch(playwright: Playwright, user_data_dir: Path) -> BrowserContext:
    """Headless Chromium with a fresh profile: no cookie or cache from an earlier run."""
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=find_chromium(),
        headless=True,
        args=CHROMIUM_FLAGS,
        viewport=LAPTOP,
    )


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # pytest shows what failed; a line per request would bury it


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """The app on a loopback port of its own, threaded like a production server."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def sign_in(page: Page, base: str, token: str) -> None:
    page.goto(f"{base}/console/")
    page.fill("#token", token)
    page.click("button[type=submit]")


def overflow(page: Page) -> int:
    """How many pixels the page is wider than its viewport (0: no sideways scrolling)."""
    width: int = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    return width


def distinct_pixels(png: bytes, at_least: int) -> bool:
    """Whether an RGB(A) PNG has `at_least` distinct colours: a blank page has one."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, idat, header = 8, b"", b""
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        body = png[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    width, _height, depth, colour = struct.unpack(">IIBB", header[:10])
    channels = {2: 3, 6: 4}[colour]
    assert depth == 8
    raw = zlib.decompress(idat)
    stride = width * channels
    colours: set[bytes] = set()
    previous = bytearray(stride)
    for start in range(0, len(raw), stride + 1):
        line = _unfilter(
            raw[start], bytearray(raw[start + 1 : start + 1 + stride]), previous, channels
        )
        colours.update(bytes(line[i : i + channels]) for i in range(0, stride, channels * 5))
        if len(colours) >= at_least:
            return True
        previous = line
    return False


def _unfilter(kind: int, line: bytearray, above: bytearray, bpp: int) -> bytearray:
    """Undo one PNG row filter (None, Sub, Up, Average, Paeth) in place."""
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = above[i]
        corner = above[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + up) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 0xFF
        elif kind == 4:
            estimate = left + up - corner
            near = min((abs(estimate - left), 0, left), (abs(estimate - up), 1, up),
                       (abs(estimate - corner), 2, corner))  # fmt: skip
            line[i] = (line[i] + near[2]) & 0xFF
    return line
