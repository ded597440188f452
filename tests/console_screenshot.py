"""Take the README's console screenshot: `python -m tests.console_screenshot [OUT.png]`.

A seeded ledger (tests/console_seed.py) in a throwaway home, the app on loopback, and
Debian's Chromium at laptop size; `--phone` adds the same page at phone size beside it.
`--url` and `--token` photograph a running console instead (e.g. `fullkit demo --keep`'s).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from bridge.app import create_app
from bridge.settings import load_settings
from bridge.valkey import EmbeddedValkey
from tests.browser import LAPTOP, PHONE, NoChromium, launch, serving, sign_in
from tests.console_seed import DEALS, seed

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "screenshot-admin-token-0123456789abcdef"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "docs" / "console.png")
    parser.add_argument("--phone", type=Path, help="also write the list at phone size here")
    parser.add_argument("--page", default="/console/", help="console path to photograph")
    parser.add_argument("--url", help="a running Fullkit's base URL (default: a seeded one)")
    parser.add_argument("--token", default=TOKEN, help="its admin token")
    args = parser.parse_args()
    try:
        if args.url:
            with tempfile.TemporaryDirectory() as scratch:
                photograph(args.url.rstrip("/"), args, Path(scratch) / "profile")
        else:
            photograph_seeded(args)
    except NoChromium as exc:
        print(f"console_screenshot: {exc}", file=sys.stderr)
        return 1
    return 0


def photograph_seeded(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "home"
        valkey = EmbeddedValkey(home)
        try:
            settings = load_settings(
                FULLKIT_HOME=str(home), FULLKIT_ADMIN_TOKEN=TOKEN, REDIS_URL=valkey.url(),
                FULLKIT_RULES_DIR=str(ROOT / "kit_rules"),
            )  # fmt: skip
            app = create_app(settings)
            seed(app.config["FULLKIT"].sessions, DEALS)
            with serving(app) as base:
                photograph(base, args, Path(scratch) / "profile")
        finally:
            valkey.stop()


def photograph(base: str, args: argparse.Namespace, profile: Path) -> None:
    with sync_playwright() as driver:
        browser = launch(driver, profile)
        page = browser.new_page()
        sign_in(page, base, args.token)
        shots = [(args.out, LAPTOP)] + ([(args.phone, PHONE)] if args.phone else [])
        for out, viewport in shots:
            page.set_viewport_size(viewport)
            page.goto(f"{base}{args.page}")
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=viewport is PHONE)
            print(f"wrote {out}")
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
