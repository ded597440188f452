"""A `requests.Session` that carries simple-salesforce's `https://` URLs to a
plain-HTTP loopback server.

simple-salesforce strips the scheme from `instance_url` and always builds `https://`
URLs (and `https://<domain>.salesforce.com/...` for the token request), so a client
aimed at an `http://` sandbox hands it this session, a public knob of the SDK: every
request keeps its path and query and goes to `base_url` instead.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter


class LoopbackAdapter(HTTPAdapter):
    def __init__(self, base_url: str) -> None:
        super().__init__()
        target = urlsplit(base_url)
        self._scheme, self._netloc = target.scheme, target.netloc

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(request.url or "")
        request.url = urlunsplit((self._scheme, self._netloc, parts.path, parts.query, ""))
        return super().send(request, *args, **kwargs)


def loopback_session(base_url: str) -> requests.Session:
    session = requests.Session()
    adapter = LoopbackAdapter(base_url)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
