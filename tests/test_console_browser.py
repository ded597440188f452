"""The console in a real headless Chromium (Debian's, driven by Playwright): what an ops
lead does with it, and how its main pages look on a laptop and on a phone.

No Chromium is a failure, not a skip: CI installs it with `make browser`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import BrowserContext, Page, Playwright, expect, sync_playwright
from rq import Queue
from sqlalchemy import select

from bridge import batches
from bridge.app import create_app
from bridge.models import Attempt
from bridge.queue import QUEUE_NAME
from tests.browser import (
    LAPTOP,
    PHONE,
    NoChromium,
    distinct_pixels,
    find_chromium,
    launch,
    overflow,
    serving,
    sign_in,
)
from tests.conftest import ADMIN_TOKEN
from tests.console_seed import DEALS, HOSTILE, SALESFORCE_DEAL, seed


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    missing = None
    try:
        find_chromium()
    except NoChromium as exc:
        missing = str(exc)
    if missing:
        pytest.fail(missing, pytrace=False)  # never a skip: CI must run these
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(
    playwright: Playwright, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrowserContext]:
    context = launch(playwright, tmp_path_factory.mktemp("chromium-profile"))
    yield context
    context.close()


@pytest.fixture
def app(settings: Any) -> Flask:
    app = create_app(settings)
    seed(app.config["FULLKIT"].sessions, [*DEALS, HOSTILE])
    return app


@pytest.fixture
def base(app: Flask) -> Iterator[str]:
    with serving(app) as url:
        yield url


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    browser.clear_cookies()  # every test starts signed out
    page = browser.new_page()
    page.set_viewport_size(LAPTOP)
    yield page
    page.close()


def test_an_ops_lead_filters_opens_a_timeline_replays_and_signs_out(
    app: Flask, base: str, page: Page
) -> None:
    sign_in(page, base, ADMIN_TOKEN)
    expect(page.locator("h1")).to_have_text("Hand-offs")
    rows = page.locator("table.handoffs tbody tr")
    expect(rows).to_have_count(8)
    expect(rows.first).to_contain_text("failed")  # failed ones first

    page.select_option("select[name=crm]", "salesforce")
    page.click("text=Filter")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(SALESFORCE_DEAL)
    page.click("text=Clear")

    page.click("a[href='/console/handoffs/hubspot/1003']")
    expect(page.locator("h1")).to_contain_text("Deal 1003")
    expect(page.locator(".error")).to_contain_text("HubSpot refused the access token")
    page.click("text=Replay attempt 1")
    expect(page.locator(".flash")).to_have_text(
        "Replay queued for hubspot:1003:1: it resumes where it stopped."
    )
    expect(page.locator("button", has_text="Replay")).to_have_count(0)
    state = app.config["FULLKIT"]
    with state.sessions() as session:
        assert (
            session.scalar(select(Attempt.state).where(Attempt.deal_id == "1003")) == "evaluating"
        )
    queued = Queue(QUEUE_NAME, connection=state.redis).jobs
    assert [job.func_name for job in queued] == [batches.ADVANCE_READY]

    page.click("text=Sign out")
    expect(page.locator(".flash")).to_have_text("Signed out.")
    page.goto(f"{base}/console/")
    expect(page).to_have_url(f"{base}/console/login?next=/console/")


def test_a_wrong_token_shows_an_error(base: str, page: Page) -> None:
    sign_in(page, base, "not-the-admin-token")
    expect(page.locator("[role=alert]")).to_contain_text("Wrong token")
    expect(page.locator("#token")).to_be_visible()


def test_a_post_without_the_csrf_token_is_refused(app: Flask, base: str, page: Page) -> None:
    sign_in(page, base, ADMIN_TOKEN)
    expect(page.locator("h1")).to_have_text("Hand-offs")
    # The browser's own cookie, a form posted from elsewhere: no token, no replay.
    answer = page.request.post(
        f"{base}/console/handoffs/hubspot/1003/replay", form={"attempt": "1"}
    )
    assert answer.status == 400
    with app.config["FULLKIT"].sessions() as session:
        assert session.scalar(select(Attempt.state).where(Attempt.deal_id == "1003")) == "failed"


def test_a_hostile_deal_url_never_becomes_a_link(base: str, page: Page) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, base, ADMIN_TOKEN)
    page.goto(f"{base}/console/handoffs/hubspot/6666")
    expect(page.locator(".error")).to_contain_text("<script>alert('error')</script>")
    expect(page.locator("a[href^='javascript']")).to_have_count(0)
    assert dialogs == []


SCREENS = {
    "handoffs": ("/console/", "Hand-offs", "HubSpot refused the access token"),
    "timeline": ("/console/handoffs/hubspot/1001", "Deal 1001", "Add a billing contact"),
    "failed": ("/console/handoffs/hubspot/1003", "Deal 1003", "Replay attempt 1"),
    "insights": ("/console/insights", "Insights", "First-pass yield per week"),
    "backtest": ("/console/backtest", "Backtest a kit change", "Backtest a kit change"),
}


@pytest.mark.parametrize("size", ["laptop", "phone"])
def test_the_main_pages_fit_laptops_and_phones(
    base: str, page: Page, size: str, tmp_path: Path
) -> None:
    viewport = LAPTOP if size == "laptop" else PHONE
    page.set_viewport_size(viewport)
    page.goto(f"{base}/console/login")
    assert overflow(page) <= 0
    sign_in(page, base, ADMIN_TOKEN)
    for name, (path, heading, content) in SCREENS.items():
        page.goto(f"{base}{path}")
        expect(page.locator("h1")).to_contain_text(heading)
        expect(page.get_by_text(content).first).to_be_visible()
        expect(page.locator("nav[aria-label=Console]")).to_be_visible()
        assert overflow(page) <= 0, f"{name} scrolls sideways at {viewport['width']} px"
        shot = tmp_path / f"console-{name}-{size}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert distinct_pixels(shot.read_bytes(), at_least=4), f"{shot.name} is blank"
