"""The Asana sandbox over HTTP: the endpoints the `asana` target calls, in Asana's shapes.

Answers wrap their object in `data`; `opt_fields` (comma-separated, dotted for nested
objects, e.g. `assignee.email`) picks what an answer holds besides `gid`, and without it
nested objects come compact (`gid`, `resource_type`, `name`), as Asana answers.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import time
from collections.abc import Callable
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml import ElementTree
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from sandbox.asana import (
    API_PREFIX,
    FAULT_MESSAGES,
    AsanaError,
    AsanaSandbox,
    Job,
    _now,
)
from sandbox.call_log import CallRecord
from sandbox.faults import Fault
from sandbox.server import RunningServer

Answer = tuple[int, dict[str, Any]]
OAUTH_PATH = "/-/oauth_token"

_RULES = [
    ("GET", "/users/<user_gid>", "get_user"),
    ("POST", "/tasks", "create_task"),
    ("GET", "/tasks", "list_tasks"),
    ("GET", "/tasks/<task_gid>", "get_task"),
    ("GET", "/project_templates/<template_gid>", "get_template"),
    ("POST", "/project_templates/<template_gid>/instantiateProject", "instantiate"),
    ("GET", "/jobs/<job_gid>", "get_job"),
    ("GET", "/teams/<team_gid>/projects", "team_projects"),
    ("PUT", "/projects/<project_gid>", "update_project"),
]

# Asana's rich text: XML under <body>, from this tag set; attributes only on links.
RICH_TAGS = frozenset({
    "body", "strong", "em", "u", "s", "code", "ol", "ul", "li", "a", "blockquote", "pre",
    "h1", "h2", "hr", "img", "table", "tr", "td",
})  # fmt: skip
LINK_ATTRIBUTES = frozenset({"href", "data-asana-gid", "data-asana-type", "data-asana-dynamic"})
TASK_FIELDS = frozenset({
    "name", "html_notes", "notes", "due_on", "assignee", "projects", "memberships",
    "workspace", "external",
})  # fmt: skip
PROJECT_WRITABLE = frozenset({"name", "owner", "html_notes", "notes", "due_on", "start_on",
                              "archived", "public", "color"})  # fmt: skip
INSTANTIATE_FIELDS = frozenset({"name", "team", "public", "is_strict", "requested_dates",
                                "requested_roles"})  # fmt: skip
EXTERNAL_GID_LIMIT, EXTERNAL_DATA_LIMIT = 1024, 32768


class AsanaApp:
    """The WSGI application in front of one `AsanaSandbox`."""

    def __init__(self, sandbox: AsanaSandbox) -> None:
        self.sandbox = sandbox
        self.url_map = Map(
            [Rule(API_PREFIX + path, methods=[m], endpoint=name) for m, path, name in _RULES],
            strict_slashes=False,
            merge_slashes=False,
        )

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, request: Request) -> Response:
        path = request.path.removeprefix(API_PREFIX)
        if request.path == OAUTH_PATH and request.method == "POST":
            response = self._token(request)
        else:
            response = self._answer(request, path)
        with self.sandbox.lock:
            self.sandbox.call_log.append(
                CallRecord(request.method, path, response.status_code, time.time())
            )
        return response

    def _answer(self, request: Request, path: str) -> Response:
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except MethodNotAllowed:
            return _error(AsanaError(405, "Method not allowed"))
        except NotFound:
            return _error(AsanaError(404, f"No matching route for request: {path}"))
        except HTTPException as exc:
            return _error(AsanaError(exc.code or 400, str(exc)))
        writing = request.method in {"POST", "PUT"}
        fault, lose = self.sandbox.take_fault(path, writing)
        if fault is not None:
            return _fault(fault)
        token = _bearer(request)
        if not self.sandbox.token_ok(token):
            return _error(AsanaError(401, "Not Authorized"))
        limited = self._rate_limited()
        if limited is not None:
            return _error(limited)
        try:
            body = _body(request) if writing else None
            handler: Callable[..., Answer] = getattr(self, f"do_{endpoint}")
            with self.sandbox.lock:
                status, payload = handler(body=body, query=request.args, token=token, **args)
        except AsanaError as exc:
            return _error(exc)
        if lose:
            # Carried out; the answer never reaches the caller.
            return _error(AsanaError(504, FAULT_MESSAGES[504]))
        return _json(status, payload)

    def _token(self, request: Request) -> Response:
        """OAuth's token endpoint, for the refresh-token grant (form-encoded, as OAuth)."""
        form = request.form
        if form.get("grant_type") != "refresh_token":
            return _json(400, {"error": "unsupported_grant_type"})
        try:
            token = self.sandbox.issue_token(
                form.get("client_id", ""),
                form.get("client_secret", ""),
                form.get("refresh_token", ""),
            )
        except AsanaError as refused:
            said = {"error": refused.message, "error_description": "Refused by the sandbox"}
            return _json(refused.status, said)
        return _json(200, {
            "access_token": token, "token_type": "bearer",
            "expires_in": int(self.sandbox.token_seconds),
            "data": {"id": self.sandbox.me, "gid": self.sandbox.me, "name": "Fullkit"},
        })  # fmt: skip

    def _rate_limited(self) -> AsanaError | None:
        box = self.sandbox
        if box.rate_limit is None:
            return None
        limit, window = box.rate_limit
        with box.lock:
            now = time.monotonic()
            hits = [t for t in box.request_times.get(box.access_token, []) if t > now - window]
            if len(hits) >= limit:
                wait = math.ceil(hits[0] + window - now)
                box.request_times[box.access_token] = hits
                return AsanaError(429, FAULT_MESSAGES[429], {"Retry-After": str(max(1, wait))})
            box.request_times[box.access_token] = [*hits, now]
        return None

    # ------------------------------------------------------------- endpoints

    def do_get_user(self, user_gid: str, query: Any, **_: Any) -> Answer:
        return 200, {"data": self._view("user", self._user(user_gid, "user", 404), query)}

    def do_create_task(self, body: Any, query: Any, token: str | None, **_: Any) -> Answer:
        box = self.sandbox
        data = _data(body)
        _only(data, TASK_FIELDS)
        if "notes" in data and "html_notes" in data:
            raise AsanaError(400, "You may only provide one of notes or html_notes")
        memberships = self._memberships(data)
        if not memberships and "workspace" not in data:
            raise AsanaError(400, "workspace: Missing input")
        if "workspace" in data and str(data["workspace"]) != box.workspace:
            raise AsanaError(404, f"workspace: Unknown object: {data['workspace']}")
        task: dict[str, Any] = {
            "gid": box.new_gid(),
            "name": _string(data, "name"),
            "html_notes": _rich(data["html_notes"]) if "html_notes" in data else "<body></body>",
            "due_on": _date(data, "due_on"),
            "assignee": self._user(data["assignee"], "assignee", 400)
            if data.get("assignee") else None,
            "memberships": memberships,
            "external": _external(data.get("external")),
            "completed": False,
            "created_at": _now(),
            "modified_at": _now(),
        }  # fmt: skip
        if not box.keeps_external(token):
            task["external"] = None  # validated, then dropped: a personal access token
        if "notes" in data:
            task["html_notes"] = f"<body>{_escape(_string(data, 'notes'))}</body>"
        box.tasks[task["gid"]] = task
        return 201, {"data": self._view("task", task["gid"], query)}

    def do_get_task(self, task_gid: str, query: Any, **_: Any) -> Answer:
        box = self.sandbox
        if task_gid.startswith("external:"):
            wanted = task_gid.removeprefix("external:")
            found = next(
                (g for g, t in box.tasks.items() if (t["external"] or {}).get("gid") == wanted),
                None,
            )
        else:
            found = task_gid if task_gid in box.tasks else None
        if found is None:
            raise AsanaError(404, f"task: Unknown object: {task_gid}")
        return 200, {"data": self._view("task", found, query)}

    def do_list_tasks(self, query: Any, **_: Any) -> Answer:
        """GET /tasks?project=..: a consistent list (not search), paged, oldest first."""
        box = self.sandbox
        project = query.get("project")
        if not project:
            raise AsanaError(
                400,
                "You must specify a project or tag if you do not specify assignee and workspace",
            )
        self._project(project)
        since = _instant(query.get("modified_since"), "modified_since")
        limit = _limit(query)
        start = _offset(query.get("offset"))
        gids = [
            gid
            for gid, t in box.tasks.items()
            if project in _member_of(t) and (since is None or _modified(t) >= since)
        ]
        page = gids[start : start + limit]
        return 200, {
            "data": [self._view("task", gid, query) for gid in page],
            "next_page": self._next_page(f"/tasks?project={project}", start, limit, len(gids)),
        }

    def do_get_template(self, template_gid: str, query: Any, **_: Any) -> Answer:
        if template_gid not in self.sandbox.templates:
            raise AsanaError(404, f"project_template: Unknown object: {template_gid}")
        return 200, {"data": self._view("project_template", template_gid, query)}

    def do_instantiate(self, template_gid: str, body: Any, query: Any, **_: Any) -> Answer:
        box = self.sandbox
        template = box.templates.get(template_gid)
        if template is None:
            raise AsanaError(404, f"project_template: Unknown object: {template_gid}")
        data = _data(body)
        _only(data, INSTANTIATE_FIELDS)
        name = _string(data, "name")
        if not name:
            raise AsanaError(400, "name: Missing input")
        team = str(data.get("team") or template.team)
        if team not in box.teams:
            raise AsanaError(404, f"team: Unknown object: {team}")
        dates = self._requested_dates(data, template.requested_dates)
        project = box.add_project(name, team)
        box.projects[project]["public"] = bool(data.get("public", False))
        if dates:
            box.projects[project]["start_on"] = next(iter(dates.values()))
        for task_name in template.task_names:
            gid = box.new_gid()
            box.tasks[gid] = {
                "gid": gid, "name": task_name, "html_notes": "<body></body>", "due_on": None,
                "assignee": None, "memberships": [{"project": project, "section": None}],
                "external": None, "completed": False, "created_at": _now(),
                "modified_at": _now(),
            }  # fmt: skip
        job = Job(box.new_gid(), project, box.job_polls)
        box.jobs[job.gid] = job
        return 201, {"data": self._view("job", job.gid, query)}

    def do_get_job(self, job_gid: str, query: Any, **_: Any) -> Answer:
        job = self.sandbox.jobs.get(job_gid)
        if job is None:
            raise AsanaError(404, f"job: Unknown object: {job_gid}")
        job.polls_left -= 1
        return 200, {"data": self._view("job", job_gid, query)}

    def do_team_projects(self, team_gid: str, query: Any, **_: Any) -> Answer:
        box = self.sandbox
        if team_gid not in box.teams:
            raise AsanaError(404, f"team: Unknown object: {team_gid}")
        limit = _limit(query)
        start = _offset(query.get("offset"))
        archived = query.get("archived")
        if archived not in (None, "true", "false"):
            raise AsanaError(400, f"archived: Not a boolean: {archived}")
        gids = [
            gid
            for gid, p in box.projects.items()
            if p["team"] == team_gid and (archived is None or p["archived"] == (archived == "true"))
        ]
        page = gids[start : start + limit]
        return 200, {
            "data": [self._view("project", gid, query) for gid in page],
            "next_page": self._next_page(f"/teams/{team_gid}/projects?", start, limit, len(gids)),
        }

    def _next_page(self, path: str, start: int, limit: int, total: int) -> dict[str, str] | None:
        if start + limit >= total:
            return None
        token = base64.urlsafe_b64encode(json.dumps({"i": start + limit}).encode()).decode()
        joiner = "" if path.endswith("?") else "&"
        path = f"{path}{joiner}limit={limit}&offset={token}"
        return {"offset": token, "path": path, "uri": f"{self.sandbox.ui_base}{API_PREFIX}{path}"}

    def do_update_project(self, project_gid: str, body: Any, query: Any, **_: Any) -> Answer:
        project = self._project(project_gid)
        data = _data(body)
        _only(data, PROJECT_WRITABLE)
        changes = dict(data)
        if "owner" in changes:
            owner = changes["owner"]
            changes["owner"] = self._user(owner, "owner", 400) if owner else None
        if "html_notes" in changes:
            changes["html_notes"] = _rich(changes["html_notes"])
        for key in ("due_on", "start_on"):
            if key in changes:
                changes[key] = _date(changes, key)
        project.update(changes)
        return 200, {"data": self._view("project", project_gid, query)}

    # --------------------------------------------------------------- helpers

    def _user(self, ref: Any, field: str, status: int) -> str:
        box = self.sandbox
        text = str(ref)
        if text == "me":
            return box.me
        if text in box.users:
            return text
        found = box.user_gid(text) if "@" in text else None
        if found is None:
            raise AsanaError(status, f"{field}: Unknown object: {text}")
        return found

    def _project(self, gid: str) -> dict[str, Any]:
        found = self.sandbox.projects.get(gid)
        if found is None:
            raise AsanaError(404, f"project: Unknown object: {gid}")
        return found

    def _memberships(self, data: dict[str, Any]) -> list[dict[str, str | None]]:
        found: list[dict[str, str | None]] = []
        projects = data.get("projects", [])
        if not isinstance(projects, list):
            raise AsanaError(400, "projects: Not an array")
        for gid in projects:
            self._project(str(gid))
            found.append({"project": str(gid), "section": None})
        memberships = data.get("memberships", [])
        if not isinstance(memberships, list):
            raise AsanaError(400, "memberships: Not an array")
        for item in memberships:
            if not isinstance(item, dict) or set(item) - {"project", "section"}:
                raise AsanaError(400, "memberships: Each must be an object with project, section")
            project = str(item.get("project"))
            self._project(project)
            section = item.get("section")
            if section is not None:
                known = self.sandbox.sections.get(str(section))
                if known is None:
                    raise AsanaError(404, f"section: Unknown object: {section}")
                if known["project"] != project:
                    raise AsanaError(
                        400, f"memberships: section {section} is not in project {project}"
                    )
            found.append({"project": project, "section": None if section is None else str(section)})
        return found

    def _requested_dates(
        self, data: dict[str, Any], variables: list[dict[str, str]]
    ) -> dict[str, str]:
        known = {v["gid"] for v in variables}
        values: dict[str, str] = {}
        given = data.get("requested_dates", [])
        if not isinstance(given, list):
            raise AsanaError(400, "requested_dates: Not an array")
        for item in given:
            gid = str(item.get("gid")) if isinstance(item, dict) else ""
            if gid not in known:
                raise AsanaError(400, f"requested_dates: Unknown date variable: {gid}")
            values[gid] = _date(item, "value") or ""
        missing = known - {g for g, v in values.items() if v}
        if data.get("is_strict") and missing:
            raise AsanaError(
                422, f"requested_dates: a value is required for date variable {sorted(missing)[0]}"
            )
        return values

    def _full(self, kind: str, gid: str) -> dict[str, Any]:
        """The whole object, nested objects whole too (projection picks from it)."""
        box = self.sandbox
        if kind == "user":
            user = box.users[gid]
            return {
                "gid": gid,
                "resource_type": "user",
                "name": user["name"],
                "email": user["email"],
            }
        if kind == "team":
            return {"gid": gid, "resource_type": "team", "name": box.teams[gid]["name"]}
        if kind == "section":
            section = box.sections[gid]
            return {"gid": gid, "resource_type": "section", "name": section["name"]}
        if kind == "project":
            p = box.projects[gid]
            return {
                **{k: v for k, v in p.items() if k not in {"owner", "team"}},
                "resource_type": "project",
                "owner": self._full("user", p["owner"]) if p["owner"] else None,
                "team": self._full("team", p["team"]),
                "workspace": self._workspace(),
                "permalink_url": box.project_permalink(gid),
            }
        if kind == "task":
            t = box.tasks[gid]
            return {
                **{k: v for k, v in t.items() if k not in {"assignee", "memberships"}},
                "resource_type": "task",
                "notes": _plain(t["html_notes"]),
                "assignee": self._full("user", t["assignee"]) if t["assignee"] else None,
                "projects": [self._full("project", m["project"]) for m in t["memberships"]],
                "memberships": [
                    {
                        "project": self._full("project", m["project"]),
                        "section": self._full("section", m["section"]) if m["section"] else None,
                    }
                    for m in t["memberships"]
                ],
                "workspace": self._workspace(),
                "permalink_url": box.task_permalink(t),
            }
        if kind == "project_template":
            template = box.templates[gid]
            return {
                "gid": gid, "resource_type": "project_template", "name": template.name,
                "team": self._full("team", template.team),
                "requested_dates": [dict(d) for d in template.requested_dates],
                "requested_roles": [],
            }  # fmt: skip
        job = box.jobs[gid]
        return {
            "gid": gid, "resource_type": "job", "resource_subtype": "instantiate_project",
            "status": "succeeded" if job.polls_left <= 0 else "in_progress",
            "new_project": self._full("project", job.project),
            "new_task": None, "new_project_template": None,
        }  # fmt: skip

    def _workspace(self) -> dict[str, Any]:
        box = self.sandbox
        return {"gid": box.workspace, "resource_type": "workspace", "name": box.workspace_name}

    def _view(self, kind: str, gid: str, query: Any) -> dict[str, Any]:
        full = self._full(kind, gid)
        fields = query.get("opt_fields")
        if not fields:
            return {key: _compact(value) for key, value in full.items()}
        return _select(full, _tree(fields))


def _tree(fields: str) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in fields.split(","):
        node = tree
        for part in path.strip().split("."):
            if part:
                node = node.setdefault(part, {})
    return tree


def _select(value: Any, tree: dict[str, Any]) -> Any:
    if isinstance(value, list):
        return [_select(item, tree) for item in value]
    if not isinstance(value, dict):
        return value
    if not tree:
        return _compact(value)
    chosen: dict[str, Any] = {"gid": value["gid"]} if "gid" in value else {}
    for key, sub in tree.items():
        if key in value:
            chosen[key] = _select(value[key], sub) if sub else _compact(value[key])
    return chosen


def _compact(value: Any) -> Any:
    """A nested object as Asana shows it unasked: gid, resource_type, name."""
    if isinstance(value, list):
        return [_compact(item) for item in value]
    if isinstance(value, dict) and "resource_type" in value:
        return {k: value[k] for k in ("gid", "resource_type", "name") if k in value}
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items()}
    return value


def _body(request: Request) -> Any:
    try:
        return json.loads(request.get_data(as_text=True) or "null")
    except ValueError:
        raise AsanaError(400, "Could not parse request data, invalid JSON") from None


def _data(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise AsanaError(400, "Request data must be a JSON object, not null")
    data: dict[str, Any] = body["data"]
    return data


def _only(data: dict[str, Any], allowed: frozenset[str]) -> None:
    for key in data:
        if key not in allowed:
            raise AsanaError(400, f"{key}: Invalid field")


def _string(data: dict[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise AsanaError(400, f"{key}: Not a string: {value!r}")
    return value


def _date(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    text = str(value)
    try:
        parsed = dt.date.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is None or len(text) != 10:  # Asana takes YYYY-MM-DD only
        raise AsanaError(400, f"{key}: Invalid date: {value}")
    return parsed.isoformat()


def _external(value: Any) -> dict[str, str | None] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"gid", "data"}:
        raise AsanaError(400, "external: Must be an object with gid and data")
    gid, data = value.get("gid"), value.get("data")
    if gid is not None and (not isinstance(gid, str) or len(gid) > EXTERNAL_GID_LIMIT):
        raise AsanaError(400, f"external.gid: Must be a string of at most {EXTERNAL_GID_LIMIT}")
    if data is not None and (not isinstance(data, str) or len(data) > EXTERNAL_DATA_LIMIT):
        raise AsanaError(400, f"external.data: Must be a string of at most {EXTERNAL_DATA_LIMIT}")
    return {"gid": gid, "data": data}


def _rich(value: Any) -> str:
    """Asana's rule for html_notes: well-formed XML under <body>, its own tag set only."""
    if not isinstance(value, str):
        raise AsanaError(400, "html_notes: XML is invalid")
    try:
        root = ElementTree.fromstring(value)
    except Exception:  # noqa: BLE001 - any parse failure (or a DTD) is invalid XML
        raise AsanaError(400, "html_notes: XML is invalid") from None
    if root.tag != "body" or not _rich_ok(root):
        raise AsanaError(400, "html_notes: XML is invalid")
    return value


def _rich_ok(element: Element) -> bool:
    if element.tag not in RICH_TAGS:
        return False
    allowed = LINK_ATTRIBUTES if element.tag == "a" else frozenset()
    if set(element.attrib) - allowed:
        return False
    return all(_rich_ok(child) for child in element)


def _plain(html: str) -> str:
    """`notes`: the rich text's characters without its tags, as Asana derives it."""
    return "".join(ElementTree.fromstring(html).itertext())


def _member_of(task: dict[str, Any]) -> list[str]:
    return [m["project"] for m in task["memberships"]]


def _modified(task: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(task["modified_at"])


def _instant(value: str | None, name: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        found = dt.datetime.fromisoformat(value)
    except ValueError:
        raise AsanaError(400, f"{name}: Invalid date-time: {value}") from None
    if found.tzinfo is None:
        raise AsanaError(400, f"{name}: Invalid date-time: {value} (no time zone)")
    return found


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _limit(query: Any) -> int:
    raw = query.get("limit", "20")
    if not str(raw).isdigit() or not 1 <= int(raw) <= 100:
        raise AsanaError(400, "limit: Must be between 1 and 100")
    return int(raw)


def _offset(raw: str | None) -> int:
    if raw is None:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(raw.encode()))["i"])
    except (ValueError, KeyError, TypeError):
        raise AsanaError(400, "offset: Your pagination token is invalid") from None


def _bearer(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:] if header.startswith("Bearer ") else None


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(payload), status=status, headers=headers, content_type="application/json"
    )


def _error(error: AsanaError) -> Response:
    return _json(error.status, error.body(), error.headers)


def _fault(fault: Fault) -> Response:
    headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
    return _error(AsanaError(fault.status, FAULT_MESSAGES.get(fault.status, "Error"), headers))


class RunningAsanaSandbox(RunningServer[AsanaSandbox]):
    """An Asana workspace being served: `.url`, `.api_base`, `.sandbox`, `.stop()`."""

    thread_name = "asana-sandbox"

    @property
    def api_base(self) -> str:
        """What ASANA_API_BASE is set to."""
        return self.url + API_PREFIX

    @property
    def oauth_token_url(self) -> str:
        """What ASANA_OAUTH_TOKEN_URL is set to."""
        return self.url + OAUTH_PATH


def start_asana_sandbox(
    host: str = "127.0.0.1", port: int = 0, sandbox: AsanaSandbox | None = None
) -> RunningAsanaSandbox:
    """Serve `sandbox` (a fresh workspace by default) on host:port (0 = any free port)."""
    box = sandbox if sandbox is not None else AsanaSandbox()
    server = make_server(host, port, AsanaApp(box), threaded=True, request_handler=_Quiet)
    return RunningAsanaSandbox(box, server)


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass
