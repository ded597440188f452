"""Which peers may say how a request reached us: `FORWARDED_ALLOW_IPS`, as gunicorn names it.

A v3 signature covers the URL HubSpot called, so whoever decides the scheme and host we
check it against decides which captured signatures are replayable elsewhere. Forwarded
headers therefore count only from the operator's proxies; any other client is taken at the
address and `Host` it reached us with. gunicorn reads the same variable for the scheme
(`secure_scheme_headers`); it does not look at `X-Forwarded-Host` or `-For`, so werkzeug's
ProxyFix applies them here, for trusted peers only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from gunicorn.config import validate_string_to_addr_list
from werkzeug.middleware.proxy_fix import ProxyFix

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class TrustedProxies:
    """The peers whose `X-Forwarded-*` headers count; none unless the operator names them."""

    def __init__(self, allowed: str = "") -> None:
        # gunicorn's own parser: the same value means the same peers to both of us.
        entries = validate_string_to_addr_list(allowed)
        self.everyone = "*" in entries
        self.networks = tuple(ipaddress.ip_network(entry) for entry in entries if entry != "*")

    def trusts(self, address: str | None) -> bool:
        if self.everyone:
            return True
        if not self.networks:  # the default: no proxy to match, no address to parse
            return False
        try:
            peer = ipaddress.ip_address(address or "")
        except ValueError:  # a unix socket or no address: nothing to match, so not trusted
            return False
        return any(peer in network for network in self.networks)


class ForwardedFromTrustedProxies:
    """WSGI middleware: ProxyFix for requests whose peer is a trusted proxy, nothing else."""

    def __init__(self, app: WSGIApplication, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies
        # One proxy hop: the values the trusted proxy itself appended, never a client's.
        self.fixed = ProxyFix(app, x_for=1, x_proto=1, x_host=1, x_port=1)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[Any]:
        if self.proxies.trusts(environ.get("REMOTE_ADDR")):
            return self.fixed(environ, start_response)
        return self.app(environ, start_response)
