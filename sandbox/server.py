"""Serve sandboxes over real loopback HTTP (werkzeug, threaded, daemon thread)."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

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


class Servable(Protocol):
    """What a sandbox offers its server: where it is reached, its token, its shutdown."""

    base_url: str
    access_token: str

    def close(self) -> None: ...


BoxT = TypeVar("BoxT", bound=Servable)


class RunningServer(Generic[BoxT]):
    """A sandbox being served on a daemon thread: `.url`, `.sandbox`, `.stop()`; also a
    context manager. Subclasses add the CRM's own client."""

    thread_name = "sandbox"

    def __init__(self, sandbox: BoxT, server: BaseWSGIServer) -> None:
        self.sandbox = sandbox
        self._server = server
        self.url = f"http://{server.host}:{server.port}"
        sandbox.base_url = self.url
        # A short poll interval keeps stop() (and so every test teardown) fast.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"{self.thread_name}:{server.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def access_token(self) -> str:
        return self.sandbox.access_token

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.sandbox.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _server(host: str, port: int, app: Any, access_log: bool) -> BaseWSGIServer:
    handler = WSGIRequestHandler if access_log else _QuietHandler
    return make_server(host, port, app, threaded=True, request_handler=handler)


class RunningSandbox(RunningServer[HubSpotSandbox]):
    """A HubSpot portal being served: `.url`, `.sandbox`, `.client()`, `.stop()`."""

    thread_name = "hubspot-sandbox"

    def client(self, **config: Any) -> Any:
        """A hubspot-api-client `HubSpot` pointed at this sandbox."""
        from hubspot import HubSpot

        return HubSpot(
            access_token=self.sandbox.access_token, host=self.url, base_url=self.url, **config
        )


def start_sandbox(
    host: str = "127.0.0.1",
    port: int = 0,
    sandbox: HubSpotSandbox | None = None,
    *,
    access_log: bool = False,
) -> RunningSandbox:
    """Serve `sandbox` (a fresh one by default) on host:port (0 = any free port)."""
    box = sandbox if sandbox is not None else HubSpotSandbox()
    return RunningSandbox(box, _server(host, port, HubSpotApp(box), access_log))


# --- Salesforce ------------------------------------------------------------------


class RunningSalesforceSandbox(RunningServer[SalesforceSandbox]):
    """A Salesforce org being served: `.url`, `.sandbox`, `.client()`, `.stop()`."""

    thread_name = "salesforce-sandbox"

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


def start_salesforce_sandbox(
    host: str = "127.0.0.1",
    port: int = 0,
    sandbox: SalesforceSandbox | None = None,
    *,
    access_log: bool = False,
) -> RunningSalesforceSandbox:
    """Serve `sandbox` (a fresh org by default) on host:port (0 = any free port)."""
    box = sandbox if sandbox is not None else SalesforceSandbox()
    return RunningSalesforceSandbox(box, _server(host, port, SalesforceApp(box), access_log))
