"""The admin API's guard (issue 15 item 8): a token long enough to be a secret, a throttle
on wrong guesses shared by every process, and security headers on every answer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from pydantic import SecretStr

from bridge import admin_auth
from bridge.admin_auth import MAX_FAILURES
from bridge.app import create_app
from bridge.server import CannotServe, serve_forever
from bridge.settings import load_settings
from bridge.valkey import EmbeddedValkeyError, Reviver
from tests.conftest import ADMIN_TOKEN, FIXTURES, ROOT
from tests.hubspot_signing import v3_headers
from tests.test_cli import UNREACHABLE_REDIS, fullkit

SECRET = "test-client-secret"
DEAL = "/api/handoffs/hubspot/1234"  # unknown deal: 404 once authorized


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def failures(client: FlaskClient, reason: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    found = re.search(
        rf'^fullkit_admin_auth_failures_total{{reason="{reason}"}} (\S+)$', text, re.M
    )
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("token", ["", "admin", "x" * 31])
def test_an_empty_or_short_admin_token_opens_nothing(make_settings: Any, token: str) -> None:
    client = create_app(make_settings(FULLKIT_ADMIN_TOKEN=token)).test_client()
    assert client.get(DEAL, headers=bearer(token)).status_code == 403


def test_a_long_enough_token_opens_the_api(settings: Any) -> None:
    client = create_app(settings).test_client()
    assert client.get(DEAL, headers=bearer(ADMIN_TOKEN)).status_code == 404


@pytest.mark.parametrize("token", ["admin", "x" * 31])
def test_serve_refuses_to_start_with_a_short_admin_token(make_settings: Any, token: str) -> None:
    with pytest.raises(CannotServe, match="FULLKIT_ADMIN_TOKEN is shorter than 32 characters"):
        serve_forever(make_settings(FULLKIT_ADMIN_TOKEN=token), "127.0.0.1", 0, 1)


def test_wrong_tokens_are_throttled_per_client_across_processes(settings: Any) -> None:
    # Two apps are two gunicorn processes: the count lives in the Redis they share.
    first, second = (create_app(settings).test_client() for _ in range(2))
    guesser = {"REMOTE_ADDR": "203.0.113.7"}
    wrong_before = failures(first, "wrong")
    for n in range(MAX_FAILURES):
        client = first if n % 2 else second
        answer = client.get(DEAL, headers=bearer(f"guess-{n}"), environ_base=guesser)
        assert answer.status_code == 403
    assert failures(first, "wrong") == wrong_before + MAX_FAILURES
    # Now even the right token is refused, so a guesser cannot tell when it hit.
    throttled = second.get(DEAL, headers=bearer(ADMIN_TOKEN), environ_base=guesser)
    assert throttled.status_code == 429
    assert 0 < int(throttled.headers["Retry-After"]) <= 15 * 60
    assert failures(first, "throttled") >= 1
    # Another client is not held up by the guesser.
    other = {"REMOTE_ADDR": "198.51.100.2"}
    assert first.get(DEAL, headers=bearer(ADMIN_TOKEN), environ_base=other).status_code == 404


def test_a_trusted_proxy_names_the_client_that_is_throttled(make_settings: Any) -> None:
    settings = make_settings(FULLKIT_ADMIN_TOKEN=ADMIN_TOKEN, FORWARDED_ALLOW_IPS="127.0.0.1")
    client = create_app(settings).test_client()
    for n in range(MAX_FAILURES):
        headers = bearer(f"guess-{n}") | {"X-Forwarded-For": "203.0.113.9"}
        assert client.get(DEAL, headers=headers).status_code == 403
    limited = bearer(ADMIN_TOKEN) | {"X-Forwarded-For": "203.0.113.9"}
    assert client.get(DEAL, headers=limited).status_code == 429
    # Everyone else behind the same proxy still gets in.
    assert client.get(DEAL, headers=bearer(ADMIN_TOKEN)).status_code == 404


def test_every_answer_carries_security_headers(settings: Any) -> None:
    client = create_app(settings).test_client()
    body = (FIXTURES / "hubspot" / "deal_stage__closedwon.json").read_text()
    url = "http://localhost/webhooks/hubspot"
    answers = [
        client.get("/healthz"),
        client.get("/metrics"),
        client.get(DEAL, headers=bearer(ADMIN_TOKEN)),
        client.get(DEAL),
        client.get("/nowhere"),
        client.post("/webhooks/hubspot", data=body, headers=v3_headers(SECRET, url, body)),
    ]
    for answer in answers:
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        assert answer.headers["Cache-Control"] == "no-store"
        assert "Strict-Transport-Security" not in answer.headers  # public URL not https


def test_hsts_when_the_public_url_is_https(make_settings: Any) -> None:
    settings = make_settings(FULLKIT_PUBLIC_URL="https://fullkit.example.com")
    answer = create_app(settings).test_client().get("/healthz")
    assert answer.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_no_token_guess_reaches_the_log(settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = create_app(settings).test_client()
    client.get(DEAL, headers=bearer("almost-" + ADMIN_TOKEN))
    assert "admin token refused" in caplog.text
    assert ADMIN_TOKEN not in caplog.text


def test_the_cli_says_why_serve_will_not_start(tmp_path: Path) -> None:
    done = fullkit(["serve", "--port", "8999"], FULLKIT_HOME=str(tmp_path),
                   FULLKIT_ADMIN_TOKEN="short", REDIS_URL=UNREACHABLE_REDIS)  # fmt: skip
    assert done.returncode == 1
    assert "FULLKIT_ADMIN_TOKEN is shorter than 32 characters" in done.stderr
    assert "short" not in done.stderr.replace("shorter", "") and "Traceback" not in done.stderr


def test_the_api_answers_while_the_embedded_queue_cannot_be_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The throttle lets requests through when Redis is down (the API must not go down with
    # the queue): also when the web process finds no embedded server and cannot start one.
    def cannot_start(_reviver: Reviver, wait: float) -> str:
        raise EmbeddedValkeyError("embedded Valkey exited at start")

    monkeypatch.setattr(Reviver, "revive", cannot_start)
    settings = load_settings(FULLKIT_HOME=str(tmp_path / "home"), FULLKIT_ADMIN_TOKEN=ADMIN_TOKEN,
                             FULLKIT_RULES_DIR=str(ROOT / "kit_rules"))  # fmt: skip
    client = create_app(settings).test_client()
    assert client.get(DEAL, headers=bearer(ADMIN_TOKEN)).status_code == 404
    assert client.get(DEAL, headers=bearer("guess")).status_code == 403


class _GuessesMeanwhile(SecretStr):
    """The admin token, but while one guess is compared the next one arrives: what a
    guesser's parallel requests do under gevent, made deterministic."""

    def __init__(self, value: str, guess: Any) -> None:
        super().__init__(value)
        self._guess = guess

    def get_secret_value(self) -> str:
        self._guess()
        return super().get_secret_value()


def test_parallel_wrong_guesses_get_no_more_tries_than_sequential_ones(settings: Any) -> None:
    state = create_app(settings).config["FULLKIT"]
    throttle = admin_auth.Throttle(lambda: state.redis)
    client = "203.0.113.9"
    compared: list[int] = []
    answers: list[int] = []

    def guess() -> None:
        if len(answers) + len(compared) >= 3 * MAX_FAILURES:
            return
        compared.append(1)
        try:
            admin_auth.check("a wrong guess", token, client, throttle)
        except admin_auth.Refused as refused:
            answers.append(refused.status)

    token = _GuessesMeanwhile(ADMIN_TOKEN, guess)
    try:
        admin_auth.check("a wrong guess", token, client, throttle)
    except admin_auth.Refused as refused:
        answers.append(refused.status)
    assert answers.count(403) == MAX_FAILURES
    assert set(answers) == {403, 429}


def test_parallel_requests_with_the_right_token_are_never_throttled(settings: Any) -> None:
    state = create_app(settings).config["FULLKIT"]
    throttle = admin_auth.Throttle(lambda: state.redis)
    client = "198.51.100.9"
    admitted: list[str] = []

    def request() -> None:
        if len(admitted) + 1 < 3 * MAX_FAILURES:
            admitted.append("started")
            admin_auth.check(ADMIN_TOKEN, token, client, throttle)

    token = _GuessesMeanwhile(ADMIN_TOKEN, request)
    admin_auth.check(ADMIN_TOKEN, token, client, throttle)  # raises on a refusal
    assert len(admitted) == 3 * MAX_FAILURES - 1
