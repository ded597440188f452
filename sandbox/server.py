"""Serve sandboxes over real loopback HTTP (werkzeug, threaded, daemon thread)."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

import requests
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from sandbox.hubspot import HubSpotSandbox
from sandbox.hubspot_http import HubSpotApp
from sandbox.salesforce import SalesforceSandbox
from sandbox.salesforce_http import SalesforceApp
from sandbox.salesforce_session import loopback_session


class _QuietHandler(WSGIRequestHandler):
    # Tests and the demo would drown in one access-log line per API call.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class RunningSandbox:
    """A sandbox being served: `.url`, `.sandbox`, `.stop()`; also a context manager."""

    def __init__(self, sandbox: HubSpotSandbox, server: BaseWSGIServer) -> None:
        self.sandbox = sandbox
        self._server = server
        port = server.port
        self.url = f"http://{server.host}:{port}"
        sandbox.base_url = self.url
        # A short poll interval keeps stop() (and so every test teardown) fast.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"hubspot-sandbox:{port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def access_token(self) -> str:
        return self.sandbox.access_token

    def client(self, **config: Any) -> Any:
        """A hubspot-api-client `HubSpot` pointed at this sandbox."""
        from hubspot import HubSpot

        return HubSpot(
            access_token=self.sandbox.access_token, host=self.url, base_url=self.url, **config
        )

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.sandbox.close()

    def __enter__(self) -> RunningSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_sandbox(
    host: str = "127.0.0.1",
    port: int = 0,
    sandbox: HubSpotSandbox | None = None,
    *,
    access_log: bool = False,
) -> RunningSandbox:
    """Serve `sandbox` (a fresh one by default) on host:port (0 = any free port)."""
    box = sandbox if sandbox is not None else HubSpotSandbox()
    handler = WSGIRequestHandler if access_log else _QuietHandler
    server = make_server(host, port, HubSpotApp(box), threaded=True, request_handler=handler)
    return RunningSandbox(box, server)


# --- Salesforce ------------------------------------------------------------------


class RunningSalesforceSandbox:
    """A Salesforce org being served: `.url`, `.sandbox`, `.client()`, `.stop()`."""

    def __init__(self, sandbox: SalesforceSandbox, server: BaseWSGIServer) -> None:
        self.sandbox = sandbox
        self._server = server
        self.url = f"http://{server.host}:{server.port}"
        sandbox.base_url = self.url
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"salesforce-sandbox:{server.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def access_token(self) -> str:
        return self.sandbox.access_token

    def session(self) -> requests.Session:
        """A requests session that routes simple-salesforce's https URLs here."""
        return loopback_session(self.url)

    def client(self, **config: Any) -> Any:
        """A simple-salesforce `Salesforce` on the integration user's session."""
        from simple_salesforce import Salesforce

        options: dict[str, Any] = {
            "instance_url": self.url,
            "session_id": self.sandbox.access_token,
            "session": self.session(),
        }
        return Salesforce(**{**options, **config})

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.sandbox.close()

    def __enter__(self) -> RunningSalesforceSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_salesforce_sandbox(
    host: str = "127.0.0.1",
    port: int = 0,
    sandbox: SalesforceSandbox | None = None,
    *,
    access_log: bool = False,
) -> RunningSalesforceSandbox:
    """Serve `sandbox` (a fresh org by default) on host:port (0 = any free port)."""
    box = sandbox if sandbox is not None else SalesforceSandbox()
    handler = WSGIRequestHandler if access_log else _QuietHandler
    server = make_server(host, port, SalesforceApp(box), threaded=True, request_handler=handler)
    return RunningSalesforceSandbox(box, server)
