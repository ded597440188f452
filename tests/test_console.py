"""The hand-off console (issue 14 item 4) through Flask's client: sign-in, the list and its
filters, a deal's timeline, and replay. tests/test_console_browser.py drives it in Chromium."""

from __future__ import annotations

import datetime as dt
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue
from sqlalchemy import select

from bridge import batches, replay
from bridge.admin_auth import MAX_FAILURES
from bridge.app import create_app
from bridge.console.listing import PAGE_SIZE
from bridge.models import Attempt, Transition
from bridge.queue import QUEUE_NAME
from tests.conftest import ADMIN_TOKEN
from tests.console_seed import ANNA, DEALS, HOSTILE, SALESFORCE_DEAL, Seeded, Step, seed
from tests.test_cli import UNREACHABLE_REDIS


@pytest.fixture
def app(settings: Any) -> Flask:
    app = create_app(settings)
    seed(app.config["FULLKIT"].sessions, [*DEALS, HOSTILE])
    return app


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def sign_in(client: FlaskClient, token: str = ADMIN_TOKEN, **environ: Any) -> Any:
    form = client.get("/console/login").get_data(as_text=True)
    return client.post(
        "/console/login",
        data={"token": token, "csrf_token": csrf_of(form)},
        environ_base=environ,
    )


def text_of(answer: Any) -> str:
    return str(answer.get_data(as_text=True))


def deals_listed(page: str) -> list[str]:
    return re.findall(r'href="/console/handoffs/\w+/(\w+)"', page)


@pytest.fixture
def signed_in(client: FlaskClient) -> FlaskClient:
    assert sign_in(client).status_code == 302
    return client


# --- sign-in, session and CSRF -------------------------------------------------------


def test_every_page_asks_for_the_login_first(client: FlaskClient) -> None:
    answer = client.get("/console/handoffs/hubspot/1003")
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/console/login?next=/console/handoffs/hubspot/1003"
    assert client.get("/console/static/console.css").status_code == 200  # the login's look


def test_the_right_token_signs_in_and_lands_on_the_page_asked_for(client: FlaskClient) -> None:
    form = client.get("/console/login?next=/console/handoffs/hubspot/1003").get_data(as_text=True)
    data = {"token": ADMIN_TOKEN, "csrf_token": csrf_of(form)}
    answer = client.post("/console/login?next=/console/handoffs/hubspot/1003", data=data)
    assert answer.headers["Location"] == "/console/handoffs/hubspot/1003"
    assert "HubSpot refused the access token" in text_of(client.get(answer.headers["Location"]))


@pytest.mark.parametrize(
    "next_page",
    ["https://evil.example/", "//evil.example/", "/api/x", "/console\r\nSet-Cookie: a=b"],
)
def test_the_login_never_sends_anyone_off_the_console(client: FlaskClient, next_page: str) -> None:
    form = client.get("/console/login").get_data(as_text=True)
    data = {"token": ADMIN_TOKEN, "csrf_token": csrf_of(form), "next": next_page}
    assert client.post("/console/login", data=data).headers["Location"] == "/console/"


def test_the_session_cookie_is_httponly_lax_scoped_and_bounded(client: FlaskClient) -> None:
    cookie = sign_in(client).headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain-HTTP deployment: a Secure cookie would never return
    expires = dt.datetime.strptime(
        re.search(r"Expires=([^;]+)", cookie).group(1),  # type: ignore[union-attr]
        "%a, %d %b %Y %H:%M:%S GMT",
    ).replace(tzinfo=dt.UTC)
    assert expires - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=12, minutes=1)
    assert ADMIN_TOKEN not in cookie


def test_a_session_in_use_all_along_still_ends_12_hours_after_its_sign_in(
    signed_in: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The clock itsdangerous signs and checks the cookie by moves too: the renewal at 11 h
    # is what a console kept open would get.
    signed_at = time.time()
    monkeypatch.setattr(time, "time", lambda: signed_at + 11 * 3600)
    assert signed_in.get("/console/").status_code == 200
    monkeypatch.setattr(time, "time", lambda: signed_at + 12 * 3600 + 60)
    answer = signed_in.get("/console/")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/console/login")


def test_the_cookie_is_secure_behind_an_https_public_url(make_settings: Any) -> None:
    settings = make_settings(FULLKIT_ADMIN_TOKEN=ADMIN_TOKEN, FULLKIT_PUBLIC_URL="https://fk.test")
    cookie = sign_in(create_app(settings).test_client()).headers["Set-Cookie"]
    assert "Secure" in cookie


def test_every_process_accepts_the_session_and_a_new_token_ends_it(
    client: FlaskClient, make_settings: Any
) -> None:
    sign_in(client)
    cookie = client.get_cookie("fullkit_console", path="/console")
    assert cookie is not None
    same = create_app(make_settings(FULLKIT_ADMIN_TOKEN=ADMIN_TOKEN)).test_client()
    same.set_cookie("fullkit_console", cookie.value, path="/console")
    assert same.get("/console/").status_code == 200
    rotated = create_app(make_settings(FULLKIT_ADMIN_TOKEN="another-admin-token-32-chars-long!"))
    other = rotated.test_client()
    other.set_cookie("fullkit_console", cookie.value, path="/console")
    assert other.get("/console/").status_code == 302


def test_a_wrong_token_is_refused_and_guesses_are_throttled(client: FlaskClient) -> None:
    guesser = {"REMOTE_ADDR": "203.0.113.9"}
    answer = sign_in(client, "not-the-token", **guesser)
    assert answer.status_code == 403 and "Wrong token" in text_of(answer)
    for n in range(MAX_FAILURES - 1):
        sign_in(client, f"guess-{n}", **guesser)
    throttled = sign_in(client, ADMIN_TOKEN, **guesser)
    assert throttled.status_code == 429 and "Too many wrong tokens" in text_of(throttled)
    assert int(throttled.headers["Retry-After"]) > 0
    assert client.get("/console/").status_code == 302  # still signed out
    assert sign_in(client, ADMIN_TOKEN, REMOTE_ADDR="198.51.100.4").status_code == 302


def test_without_an_admin_token_the_console_is_closed(make_settings: Any) -> None:
    client = create_app(make_settings()).test_client()
    for answer in (client.get("/console/"), client.post("/console/login", data={"token": "x"})):
        assert answer.status_code == 503
        assert "FULLKIT_ADMIN_TOKEN" in text_of(answer)


def test_a_post_without_its_csrf_token_is_refused(signed_in: FlaskClient) -> None:
    answer = signed_in.post("/console/handoffs/hubspot/1003/replay", data={"attempt": "1"})
    assert answer.status_code == 400 and "reload the page" in text_of(answer)
    assert signed_in.post("/console/logout").status_code == 400
    assert signed_in.get("/console/").status_code == 200  # still signed in: nothing happened


def test_the_receivers_and_the_api_need_no_csrf_token(client: FlaskClient) -> None:
    hubspot = client.post("/webhooks/hubspot", data="[]", content_type="application/json")
    assert hubspot.status_code == 401  # its own signature check, not a CSRF refusal
    api = client.get(
        "/api/handoffs/hubspot/1003", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert api.status_code == 200


def test_sign_out_is_a_post_and_ends_the_session(signed_in: FlaskClient) -> None:
    assert signed_in.get("/console/logout").status_code == 405
    page = text_of(signed_in.get("/console/"))
    answer = signed_in.post("/console/logout", data={"csrf_token": csrf_of(page)})
    assert answer.headers["Location"] == "/console/login"
    assert "Signed out" in text_of(signed_in.get("/console/login"))
    assert signed_in.get("/console/").status_code == 302


def test_console_pages_load_only_their_own_styles_and_are_never_framed(
    signed_in: FlaskClient,
) -> None:
    policy = signed_in.get("/console/").headers["Content-Security-Policy"]
    assert "style-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "script-src" not in policy  # default-src 'none': no script runs at all


# --- the list ----------------------------------------------------------------------------


def test_the_list_shows_each_deal_once_failed_first_then_newest(signed_in: FlaskClient) -> None:
    page = text_of(signed_in.get("/console/"))
    listed = deals_listed(page)
    assert listed[:2] == ["6666", "1003"]  # both failed, the newer first
    assert listed[2:] == ["1006", "1004", "1001", "1005", "1002", SALESFORCE_DEAL]
    assert "attempt 2" in page  # deal 1001's row is its latest attempt
    assert re.search(r"failed <span class=\"count\">2</span>", page)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("state=returned", ["1004"]),
        ("crm=salesforce", [SALESFORCE_DEAL]),
        ("kit=salesforce-new-customer", [SALESFORCE_DEAL]),
        ("sales=75311", ["1002"]),
        (f"ops={ANNA.upper()}", ["1001", SALESFORCE_DEAL]),
        ("since=2h", ["6666", "1003", "1006", "1004"]),
        ("state=ops_created&crm=hubspot", ["1001", "1002"]),
    ],
)
def test_filters_narrow_the_list(signed_in: FlaskClient, query: str, expected: list[str]) -> None:
    answer = signed_in.get(f"/console/?{query}")
    assert answer.status_code == 200
    assert deals_listed(text_of(answer)) == expected


def test_a_date_filter_and_the_counts_follow_the_other_filters(signed_in: FlaskClient) -> None:
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date().isoformat()
    assert "No hand-off matches these filters" in text_of(
        signed_in.get(f"/console/?since={tomorrow}")
    )
    page = text_of(signed_in.get("/console/?crm=hubspot&state=failed"))
    assert re.search(r"ops_created <span class=\"count\">2</span>", page)  # hubspot ones only


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("state=lost", "state 'lost' is not one of"),
        ("crm=pipedrive", "CRM 'pipedrive' is not one of hubspot, salesforce"),
        ("since=last-week", "since 'last-week' is not a number of days or hours"),
        ("page=0", "page '0' is not a page number"),
        ("kit=" + "k" * 201, "kit is longer than 200 characters"),
        ("sales=anna%00@example.com", "sales holds a control character"),
    ],
)
def test_a_bad_filter_is_a_clear_message(signed_in: FlaskClient, query: str, message: str) -> None:
    answer = signed_in.get(f"/console/?{query}")
    assert answer.status_code == 400
    assert message in text_of(answer).replace("&#39;", "'")


def test_a_control_character_in_the_insights_kit_is_a_clear_message(
    signed_in: FlaskClient,
) -> None:
    answer = signed_in.get("/console/insights?kit=new%00customer")
    assert answer.status_code == 400
    assert "the kit holds a control character" in text_of(answer)


def test_the_list_pages_through_many_hand_offs(app: Flask, signed_in: FlaskClient) -> None:
    many = [
        Seeded("hubspot", str(20000 + n), "new-customer", [Step("received", 10000 + n)])
        for n in range(PAGE_SIZE + 5)
    ]
    seed(app.config["FULLKIT"].sessions, many)
    first = text_of(signed_in.get("/console/?state=received"))
    assert len(deals_listed(first)) == PAGE_SIZE and "page 1 of 2" in first
    assert 'href="/console/?state=received&amp;page=2"' in first
    second = text_of(signed_in.get("/console/?state=received&page=2"))
    assert deals_listed(second) == [str(20000 + n) for n in range(PAGE_SIZE, PAGE_SIZE + 5)]


# --- the timeline ----------------------------------------------------------------------


def test_the_timeline_shows_owners_attempts_findings_and_links(signed_in: FlaskClient) -> None:
    page = text_of(signed_in.get("/console/handoffs/hubspot/1001"))
    owners = re.findall(r"<li class=\"owner-(\w+)\"><strong>", page)
    assert owners == ["sales", "ops"]
    assert "Add a billing contact with an email address" in page  # attempt 1's findings
    assert 'href="https://app.hubspot.com/contacts/4100001/record/0-3/1001"' in page
    assert 'href="https://app.hubspot.com/contacts/4100001/ticket/9001"' in page
    assert ANNA in page
    assert page.index("Attempt 2") < page.index("Attempt 1")  # newest first
    assert "Replay" not in page  # nothing failed


def test_a_salesforce_deal_opens_under_its_15_character_id(signed_in: FlaskClient) -> None:
    page = text_of(signed_in.get(f"/console/handoffs/salesforce/{SALESFORCE_DEAL[:15]}"))
    assert f"Deal {SALESFORCE_DEAL}" in page


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/console/handoffs/hubspot/999", "No hand-off recorded for hubspot:999"),
        ("/console/handoffs/hubspot/abc", "a HubSpot deal id is digits"),
        ("/console/handoffs/zoho/1", "unknown CRM"),
    ],
)
def test_an_unknown_deal_is_a_404_that_says_why(
    signed_in: FlaskClient, path: str, message: str
) -> None:
    answer = signed_in.get(path)
    assert answer.status_code == 404 and message in text_of(answer).replace("&#39;", "'")


def test_crm_values_are_shown_as_text_and_never_run(signed_in: FlaskClient) -> None:
    for path in ("/console/", "/console/handoffs/hubspot/6666"):
        page = text_of(signed_in.get(path))
        assert "<script>alert" not in page and "<img src=x" not in page and "<i>owner" not in page
        assert "javascript:" not in page.split("</header>")[1].split("CRM link not shown")[0]
    page = text_of(signed_in.get("/console/handoffs/hubspot/6666"))
    assert "&lt;script&gt;alert(&#39;error&#39;)&lt;/script&gt;" in page
    assert "CRM link not shown (not an http(s) URL)" in page
    assert 'href="javascript' not in page


# --- replay ----------------------------------------------------------------------------


def replay_form(client: FlaskClient, deal: str) -> dict[str, str]:
    page = text_of(client.get(f"/console/handoffs/hubspot/{deal}"))
    assert "Replay attempt 1" in page
    return {"csrf_token": csrf_of(page), "attempt": "1"}


def batch_jobs(app: Flask) -> list[Any]:
    queue = Queue(QUEUE_NAME, connection=app.config["FULLKIT"].redis)
    return [job for job in queue.jobs if job.func_name == batches.ADVANCE_READY]


def attempt_of(app: Flask, deal: str) -> Attempt:
    with app.config["FULLKIT"].sessions() as session:
        found = session.scalar(select(Attempt).where(Attempt.deal_id == deal))
        assert found is not None
        return found


def test_replay_requeues_the_failed_attempt_where_it_stopped(
    app: Flask, signed_in: FlaskClient
) -> None:
    form = replay_form(signed_in, "1003")
    answer = signed_in.post("/console/handoffs/hubspot/1003/replay", data=form)
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/console/handoffs/hubspot/1003"
    page = text_of(signed_in.get(answer.headers["Location"]))
    assert "Replay queued for hubspot:1003:1" in page
    attempt = attempt_of(app, "1003")
    assert (attempt.state, attempt.error, attempt.retries) == ("evaluating", None, 0)
    [job] = batch_jobs(app)
    assert job.args == ("hubspot", batches.DEFAULT_ACCOUNT)
    assert "replayed by an operator" in page


def test_a_double_click_queues_the_replay_once(app: Flask, signed_in: FlaskClient) -> None:
    form = replay_form(signed_in, "1003")
    signed_in.post("/console/handoffs/hubspot/1003/replay", data=form)
    again = signed_in.post("/console/handoffs/hubspot/1003/replay", data=form)
    assert "Nothing to replay: attempt 1 is no longer failed" in text_of(
        signed_in.get(again.headers["Location"])
    )
    assert len(batch_jobs(app)) == 1
    with app.config["FULLKIT"].sessions() as session:
        details = session.scalars(
            select(Transition.detail).join(Attempt).where(Attempt.deal_id == "1003")
        )
        assert list(details).count(replay.REPLAYED) == 1


def test_two_replays_at_once_reopen_the_attempt_once(app: Flask) -> None:
    state = app.config["FULLKIT"]
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(
                lambda _: replay.reopen_failed(state.sessions, [("hubspot", "1003")]), range(4)
            )
        )
    assert sorted(results) == [[], [], [], ["hubspot:1003:1"]]


def test_replay_with_the_queue_down_changes_nothing(make_settings: Any) -> None:
    app = create_app(make_settings(FULLKIT_ADMIN_TOKEN=ADMIN_TOKEN, REDIS_URL=UNREACHABLE_REDIS))
    seed(app.config["FULLKIT"].sessions)
    client = app.test_client()
    sign_in(client)
    answer = client.post("/console/handoffs/hubspot/1003/replay", data=replay_form(client, "1003"))
    assert "The queue cannot be reached: nothing was replayed" in text_of(
        client.get(answer.headers["Location"])
    )
    assert attempt_of(app, "1003").state == "failed"
