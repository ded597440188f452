"""The access token the asana target sends: as given, or kept fresh from a refresh token.

Asana's OAuth access tokens last an hour. With ASANA_CLIENT_ID, ASANA_CLIENT_SECRET and
ASANA_REFRESH_TOKEN set, a new one is asked for (grant_type=refresh_token) before the
current one ends, and again when Asana refuses one (a revoked or early-expired token).
Tokens live in this process only, never in Redis, the ledger or a log.
"""

from __future__ import annotations

import threading
import time

import requests

from connectors.asana_settings import AsanaSettings
from kernel.errors import AuthError, RetryableError

# Ask for a new token this long before Asana says the current one ends.
EARLY_SECONDS = 60.0


class RefreshRefused(AuthError):
    """Asana refused the refresh token: no request can be sent until a human acts."""


class AccessTokens:
    def __init__(self, own: AsanaSettings, timeout: tuple[float, float]) -> None:
        self._own = own
        self._timeout = timeout
        self._lock = threading.Lock()
        given = own.access_token.get_secret_value() if own.access_token else ""
        self._token = given
        # A given token is used until Asana refuses it; a refreshed one until it ends.
        self._ends = float("inf") if given else 0.0

    @property
    def refreshable(self) -> bool:
        return self._own.refreshable

    def current(self) -> str:
        with self._lock:
            if self.refreshable and time.monotonic() >= self._ends - EARLY_SECONDS:
                self._refresh()
            return self._token

    def refused(self, token: str) -> bool:
        """Asana refused `token`: True when a fresh one was fetched (so asking again may
        succeed), False when there is none to fetch."""
        if not self.refreshable:
            return False
        with self._lock:
            if self._token == token:  # another thread may have refreshed it already
                self._refresh()
        return True

    def _refresh(self) -> None:
        own = self._own
        assert own.client_id and own.client_secret and own.refresh_token
        try:
            answer = requests.post(
                own.oauth_token_url,
                data={
                    "grant_type": "refresh_token",
                    "client_id": own.client_id,
                    "client_secret": own.client_secret.get_secret_value(),
                    "refresh_token": own.refresh_token.get_secret_value(),
                },
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            raise RetryableError("Asana token refresh: timed out") from None
        except requests.RequestException as exc:
            raise RetryableError(f"Asana token refresh: failed ({type(exc).__name__})") from None
        if answer.status_code == 429 or answer.status_code >= 500:
            wait = answer.headers.get("Retry-After")
            raise RetryableError(
                f"Asana token refresh: HTTP {answer.status_code}",
                retry_after=float(wait) if wait and wait.isdigit() else None,
            )
        try:
            body = answer.json()
        except ValueError:
            body = {}
        token = body.get("access_token") if isinstance(body, dict) else None
        if answer.status_code != 200 or not isinstance(token, str) or not token:
            # OAuth's own error code (e.g. invalid_grant), never the request's secrets.
            code = str(body.get("error") or "") if isinstance(body, dict) else ""
            raise RefreshRefused(
                f"Asana refused the refresh token (HTTP {answer.status_code}"
                f"{': ' + code[:60] if code else ''}): authorize the app again and set "
                "ASANA_REFRESH_TOKEN"
            )
        lasts = body.get("expires_in")
        self._token = token
        self._ends = time.monotonic() + (float(lasts) if isinstance(lasts, int | float) else 3600)
