"""Jira Cloud's REST v3 wire format over WSGI for `JiraSandbox`, and its server.

URLs, parameters and bodies follow what the `jira` library (3.10) sends: basic auth,
`GET /rest/api/3/user/search?query=&maxResults=`, `GET /rest/api/3/search/jql` with
`fields` and `properties` as repeated parameters, `POST /rest/api/3/issue`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from sandbox.call_log import RecordingApp
from sandbox.jira import SCREEN_FIELDS, Issue, JiraError, JiraSandbox, user_json
from sandbox.server import RunningServer

_API = "/rest/api/3"
_RULES = [
    ("POST", f"{_API}/issue", "create_issue"),
    ("GET", f"{_API}/issue/<ref>", "get_issue"),
    ("GET", f"{_API}/issue/<ref>/properties/<key>", "get_property"),
    ("GET", f"{_API}/field", "fields"),
    ("GET", f"{_API}/user/search", "user_search"),
    ("GET", f"{_API}/search/jql", "search"),
    ("POST", f"{_API}/search/jql", "search"),
]
UNAUTHENTICATED = "Client must be authenticated to access this resource."
# What the search understands: `field = "value"` (or unquoted) joined by AND, then an
# optional ORDER BY created ASC|DESC. Jira's own JQL is far larger; production asks this.
_CLAUSE = re.compile(r'\s*(labels|project|key)\s*=\s*(?:"([^"]*)"|([A-Za-z0-9_.:-]+))\s*', re.I)
_ORDER = re.compile(r"\s+ORDER\s+BY\s+created\s*(ASC|DESC)?\s*$", re.I)
MAX_RESULTS = 5000


class JiraApp(RecordingApp):
    """The WSGI application in front of one `JiraSandbox`."""

    def __init__(self, sandbox: JiraSandbox) -> None:
        super().__init__(sandbox, _RULES)
        self.sandbox = sandbox

    def handle(self, request: Request) -> Response:
        if not self._authenticated(request):
            return Response(
                UNAUTHENTICATED,
                401,
                content_type="text/plain;charset=UTF-8",
                headers={
                    "WWW-Authenticate": 'Basic realm="protected-area"',
                    "X-Seraph-LoginReason": "AUTHENTICATED_FAILED",
                },  # fmt: skip
            )
        fault = self.sandbox.take_fault(request.path)
        if fault is not None:
            return _fault(fault.status, fault.retry_after)
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except (NotFound, MethodNotAllowed):
            return _json(404, JiraError(404, ["Not Found"]).body())
        try:
            body = request.get_json(silent=True) if request.method == "POST" else None
            if request.method == "POST" and body is None:
                raise JiraError(400, ["Unexpected character: the body is not JSON"])
            handler: Callable[..., tuple[int, Any]] = getattr(self, f"do_{endpoint}")
            status, payload = handler(request=request, body=body, **args)
        except JiraError as error:
            return _json(error.status, error.body())
        if endpoint == "create_issue" and self.sandbox.take_lost_answer():
            return Response("<html><body>504 Gateway Time-out</body></html>", 504,
                            content_type="text/html")  # fmt: skip
        return _json(status, payload)

    def _authenticated(self, request: Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            email, _, token = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        box = self.sandbox
        return email == box.email and token == box.api_token

    # --- endpoints -------------------------------------------------------------------

    def do_create_issue(self, body: Any, **_: Any) -> tuple[int, Any]:
        issue = self.sandbox.create_issue(body)
        return 201, {"id": issue.id, "key": issue.key, "self": self._self(issue)}

    def do_get_issue(self, request: Request, ref: str, **_: Any) -> tuple[int, Any]:
        issue = self.sandbox.issue(ref)
        return 200, self._issue(issue, None, _names(request, "properties"))

    def do_get_property(self, ref: str, key: str, **_: Any) -> tuple[int, Any]:
        issue = self.sandbox.issue(ref)
        if key not in issue.properties:
            raise JiraError(404, [f"The property with key '{key}' does not exist."])
        return 200, {"key": key, "value": issue.properties[key]}

    def do_fields(self, **_: Any) -> tuple[int, Any]:
        # The library reads this once per client to map JQL names to field ids.
        return 200, [
            {"id": name, "key": name, "name": name.capitalize(), "custom": False,
             "navigable": True, "searchable": True, "clauseNames": [name]}
            for name in sorted(SCREEN_FIELDS)
        ]  # fmt: skip

    def do_user_search(self, request: Request, **_: Any) -> tuple[int, Any]:
        query = (request.args.get("query") or "").strip().lower()
        if not query:
            raise JiraError(400, ["The query parameter 'query' is required"])
        limit = _int(request.args.get("maxResults"), 50)
        box = self.sandbox
        with box.lock:
            found = [
                user_json(u, box.base_url)
                for u in box.users.values()
                if u.email.lower() == query
                or (not u.email_hidden and u.email.lower().startswith(query))
                or any(word.lower().startswith(query) for word in u.display_name.split())
            ]
        return 200, found[:limit]

    def do_search(self, request: Request, body: Any, **_: Any) -> tuple[int, Any]:
        params: dict[str, Any] = dict(body) if isinstance(body, dict) else {}
        if request.method == "GET":
            params = {
                "jql": request.args.get("jql", ""),
                "maxResults": request.args.get("maxResults"),
                "fields": _names(request, "fields"),
                "properties": _names(request, "properties"),
                "nextPageToken": request.args.get("nextPageToken"),
            }
        clauses, descending = _parse_jql(str(params.get("jql") or ""))
        box = self.sandbox
        with box.lock:
            hits = [i for i in box.issues.values() if box.searchable(i) and _matches(i, clauses)]
        hits.sort(key=lambda i: int(i.id), reverse=descending)
        start = _int(params.get("nextPageToken"), 0)
        size = min(_int(params.get("maxResults"), 50), MAX_RESULTS)
        page = hits[start : start + size]
        fields = params.get("fields") or ["id"]
        answer: dict[str, Any] = {
            "issues": [self._issue(i, fields, params.get("properties") or []) for i in page],
            "isLast": start + size >= len(hits),
        }
        if not answer["isLast"]:
            answer["nextPageToken"] = str(start + size)
        return 200, answer

    def _issue(
        self, issue: Issue, fields: list[str] | None, properties: list[str]
    ) -> dict[str, Any]:
        values = {**issue.fields, "project": {"id": issue.project.id, "key": issue.project.key}}
        if fields is not None and "*all" not in fields:
            values = {k: v for k, v in values.items() if k in fields}
        for name in ("assignee",):
            if fields is None or name in fields or "*all" in fields:
                values.setdefault(name, None)
        found: dict[str, Any] = {
            "id": issue.id,
            "key": issue.key,
            "self": self._self(issue),
            "fields": values,
        }
        wanted = [k for k in properties if k in issue.properties]
        if properties:
            found["properties"] = {k: issue.properties[k] for k in wanted}
        return found

    def _self(self, issue: Issue) -> str:
        return f"{self.sandbox.base_url}{_API}/issue/{issue.id}"


def _parse_jql(jql: str) -> tuple[list[tuple[str, str]], bool]:
    descending = False
    order = _ORDER.search(jql)
    if order:
        descending = (order.group(1) or "ASC").upper() == "DESC"
        jql = jql[: order.start()]
    if not jql.strip():
        raise JiraError(
            400,
            ["Unbounded JQL queries are not allowed here. Please add a search restriction "
             "to your query."],
        )  # fmt: skip
    clauses = []
    for part in re.split(r"\s+AND\s+", jql.strip(), flags=re.I):
        found = _CLAUSE.fullmatch(part)
        field = part.split("=")[0].strip()
        if found is None and field.lower().startswith("issue.property"):
            # Jira knows a property in JQL only once an app's descriptor indexes it.
            message = f"Field '{field}' does not exist or you do not have permission to view it."
            raise JiraError(400, [message])
        if found is None:
            raise JiraError(400, [f"Error in the JQL Query: cannot search '{part.strip()}'."])
        clauses.append((found.group(1).lower(), found.group(2) or found.group(3)))
    return clauses, descending


def _matches(issue: Issue, clauses: list[tuple[str, str]]) -> bool:
    for name, value in clauses:
        if name == "labels" and value not in issue.fields.get("labels", []):
            return False
        if name == "project" and value not in (issue.project.key, issue.project.id):
            return False
        if name == "key" and value.upper() != issue.key:
            return False
    return True


def _names(request: Request, param: str) -> list[str]:
    return [n.strip() for v in request.args.getlist(param) for n in v.split(",") if n.strip()]


def _int(value: Any, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _fault(status: int, retry_after: float | None) -> Response:
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after)) if retry_after >= 1 else "1"
    if status == 429:
        wait = retry_after or 1
        reset = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=wait)
        headers.update({
            "X-RateLimit-Limit": "100",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": reset.strftime("%Y-%m-%dT%H:%MZ"),
            "RateLimit-Reason": "jira-burst-based",
        })  # fmt: skip
        headers.setdefault("Retry-After", str(int(wait)))
        return _json(429, JiraError(429, ["Rate limit exceeded."]).body(), headers)
    if status == 401:
        return Response(UNAUTHENTICATED, 401, content_type="text/plain;charset=UTF-8")
    if status == 403:
        body = JiraError(403, ["You do not have permission to create issues in this project."])
        return _json(403, body.body(), headers)
    return _json(status, JiraError(status, ["Internal server error"]).body(), headers)


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(payload),
        status,
        content_type="application/json;charset=UTF-8",
        headers=headers or {},
    )


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class RunningJiraSandbox(RunningServer[JiraSandbox]):
    """A Jira site being served: `.url`, `.sandbox`, `.client()`, `.stop()`."""

    thread_name = "jira-sandbox"

    def client(self) -> Any:
        """A `jira` JIRA client on the integration account, REST v3, as the target builds it."""
        from jira import JIRA

        box = self.sandbox
        client = JIRA(
            server=self.url,
            basic_auth=(box.email, box.api_token),
            options={"rest_api_version": "3"},
            get_server_info=False,
            max_retries=0,
        )
        client.deploymentType = "Cloud"
        return client


def start_jira_sandbox(
    host: str = "127.0.0.1", port: int = 0, sandbox: JiraSandbox | None = None
) -> RunningJiraSandbox:
    """Serve `sandbox` (a fresh, empty site by default) on host:port (0 = any free port)."""
    box = sandbox if sandbox is not None else JiraSandbox()
    server = make_server(host, port, JiraApp(box), threaded=True, request_handler=_QuietHandler)
    return RunningJiraSandbox(box, server)
