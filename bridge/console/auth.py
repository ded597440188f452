"""Who may use the console: the admin token typed into a form, then a signed session cookie.

The cookie is Flask's own, signed with a key derived from the admin token: every gunicorn
process derives the same key, and a new token logs everyone out. CSRF tokens (Flask-WTF)
guard every POST of the console and only the console; receivers and the bearer API have
no session to ride on and stay exempt.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import time
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, CSRFProtect

from bridge import admin_auth
from bridge.container import Container
from bridge.headers import CONSOLE_POLICY

SESSION_LIFETIME = dt.timedelta(hours=12)
_KEY_PURPOSE = b"fullkit console session v1"
_OPEN_ENDPOINTS = {"console.login", "console.static"}

csrf = CSRFProtect()


def init_app(app: Flask) -> None:
    state: Container = app.config["FULLKIT"]
    token = state.settings.api_token
    if token is not None:
        app.secret_key = hmac.new(
            token.get_secret_value().encode(), _KEY_PURPOSE, hashlib.sha256
        ).hexdigest()
    public_url = state.settings.public_url or ""
    app.config.update(
        SESSION_COOKIE_NAME="fullkit_console",
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=public_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        # Only the console's before_request asks for a token (see guard).
        WTF_CSRF_CHECK_DEFAULT=False,
        # A form's token lives as long as the session: a page left open an hour still works.
        WTF_CSRF_TIME_LIMIT=None,
        # The strict check wants a Referer, which our Referrer-Policy never sends; the
        # token and the SameSite cookie are the guard.
        WTF_CSRF_SSL_STRICT=False,
    )
    csrf.init_app(app)


def register(bp: Blueprint) -> None:
    bp.before_request(guard)
    bp.after_request(_policy)
    bp.register_error_handler(CSRFError, _csrf_refused)
    bp.add_url_rule("/login", "login", login, methods=["GET", "POST"])
    bp.add_url_rule("/logout", "logout", logout, methods=["POST"])


def _state() -> Container:
    state: Container = current_app.config["FULLKIT"]
    return state


def guard() -> ResponseReturnValue | None:
    """Closed without a token; every POST carries a CSRF token; every page a login."""
    if request.endpoint == "console.static":
        return None
    if _state().settings.api_token is None:
        return render_template("console/closed.html"), 503
    if request.method == "POST":
        csrf.protect()
    if request.endpoint in _OPEN_ENDPOINTS or _signed_in():
        return None
    return redirect(url_for("console.login", next=request.full_path.rstrip("?")))


def _signed_in() -> bool:
    """Signed in, and less than SESSION_LIFETIME ago: Flask renews the cookie with every
    answer, so its own expiry only ends a session left idle, never one kept in use."""
    since = session.get("signed_in_at")
    if not session.get("signed_in") or not isinstance(since, int | float):
        return False
    if time.time() - since < SESSION_LIFETIME.total_seconds():
        return True
    session.clear()
    return False


def _policy(answer: Response) -> Response:
    answer.headers.setdefault("Content-Security-Policy", CONSOLE_POLICY)
    return answer


def _csrf_refused(error: CSRFError) -> tuple[str, int]:
    message = "This form has expired or did not come from the console: reload the page."
    return render_template("console/message.html", message=message), 400


def login() -> ResponseReturnValue:
    if request.method == "GET":
        if _signed_in():
            return redirect(_next_page())
        return render_template("console/login.html", next=_next_page())
    state = _state()
    try:
        admin_auth.check(
            request.form.get("token", ""),
            state.settings.api_token,
            request.remote_addr or "unknown",
            admin_auth.Throttle(lambda: state.redis),
        )
    except admin_auth.Refused as refused:
        return _login_refused(refused)
    session.clear()  # nothing from before the login carries over
    session.permanent = True
    session["signed_in"] = True
    session["signed_in_at"] = int(time.time())
    return redirect(_next_page())


def _login_refused(refused: admin_auth.Refused) -> Response:
    if refused.status == 429:
        minutes = max(1, round((refused.retry_after or 60) / 60))
        error = f"Too many wrong tokens from this address: try again in {minutes} min."
    else:
        error = "Wrong token. Use this deployment's FULLKIT_ADMIN_TOKEN."
    page = render_template("console/login.html", error=error, next=_next_page())
    answer = Response(page, status=refused.status)
    if refused.retry_after is not None:
        answer.headers["Retry-After"] = str(refused.retry_after)
    return answer


def logout() -> ResponseReturnValue:
    session.clear()
    flash("Signed out.")
    return redirect(url_for("console.login"))


def _next_page() -> str:
    """Where to go after the login: a console page named by `next`, or the list."""
    wanted = request.values.get("next", "")
    parts = urlsplit(wanted)
    if parts.scheme or parts.netloc or not wanted.startswith("/console") or "\\" in wanted:
        return url_for("console.handoffs")
    if not wanted.isprintable():
        # CR/LF would be refused in the Location header (a 500); a tab, browsers drop.
        return url_for("console.handoffs")
    return wanted
