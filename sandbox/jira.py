"""A loopback Jira Cloud site: projects, users and issues, as strict as the real one for
what the `jira` target calls (REST API v3).

What it serves (`sandbox/jira_http.py` speaks the wire format, `start_jira_sandbox()`
serves it over real HTTP)::

    POST /rest/api/3/issue                       create (fields, properties)
    GET  /rest/api/3/issue/{idOrKey}             read (?properties=)
    GET  /rest/api/3/issue/{idOrKey}/properties/{key}
    GET  /rest/api/3/field                       the fields (the library maps JQL names)
    GET  /rest/api/3/user/search?query=          users by email or name prefix
    GET|POST /rest/api/3/search/jql              JQL: labels/project/key =, AND, ORDER BY

Facts mirrored from Jira Cloud:

* Basic auth with the account's email and API token; anything else is a 401 with Jira's
  plain-text "Client must be authenticated to access this resource.".
* Errors are `{"errorMessages": [...], "errors": {field: message}}`: an unknown project,
  issue type, component, priority, parent or assignee, a field not on the create screen,
  a summary with a newline or over 255 characters, a label with a space, and a
  description that is no Atlassian Document (v3) are each a 400 naming the field.
* Entity properties set at create are read back with the issue (`?properties=`), but JQL
  cannot search them (Jira indexes a property only for an app that declares it): a
  search on `issue.property[...]` is a 400 saying the field does not exist.
* Search is eventually consistent: with `search_lag_seconds` > 0 an issue shows up in
  search only that long after its create (`index_now()` catches up at once).
* Faults: `fail_next(n, status, path_prefix, retry_after=)` answers 429 (with Jira's
  rate-limit headers), 5xx, 401 or 403; `lose_next_answers(n)` applies the next n
  creates but answers 504, as a gateway that gave up on a slow backend.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sandbox.call_log import CallRecord, matching
from sandbox.faults import Fault, take_fault

SCREEN_FIELDS = frozenset(
    {"project", "issuetype", "summary", "description", "labels", "parent", "components",
     "priority", "assignee", "duedate", "reporter"}
)  # fmt: skip
PRIORITIES = ("Highest", "High", "Medium", "Low", "Lowest")
# ADF: the nodes and marks a description may hold, and what each block may contain.
_BLOCKS = frozenset({"paragraph", "heading", "bulletList", "orderedList", "codeBlock", "rule",
                     "blockquote", "panel", "table", "mediaSingle", "expand"})  # fmt: skip
_INLINE = frozenset({"text", "hardBreak", "mention", "emoji", "inlineCard", "date", "status"})
_MARKS = frozenset({"strong", "em", "code", "strike", "underline", "link", "textColor",
                    "subsup"})  # fmt: skip
_CHILDREN = {
    "doc": _BLOCKS,
    "paragraph": _INLINE,
    "heading": _INLINE,
    "bulletList": frozenset({"listItem"}),
    "orderedList": frozenset({"listItem"}),
    "listItem": frozenset({"paragraph", "bulletList", "orderedList", "codeBlock"}),
    "blockquote": frozenset({"paragraph", "bulletList", "orderedList"}),
    "codeBlock": frozenset({"text"}),
}


class JiraError(Exception):
    """An answer Jira gives instead of doing what was asked."""

    def __init__(
        self,
        status: int,
        messages: list[str] | None = None,
        errors: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, messages, errors)
        self.status = status
        self.messages = messages or []
        self.errors = errors or {}

    def body(self) -> dict[str, Any]:
        return {"errorMessages": self.messages, "errors": self.errors}


@dataclass
class Project:
    id: str
    key: str
    name: str
    issue_types: dict[str, str]  # name -> id
    components: dict[str, str]  # name -> id


@dataclass
class User:
    account_id: str
    email: str
    display_name: str
    active: bool = True
    account_type: str = "atlassian"
    email_hidden: bool = False


@dataclass
class Issue:
    id: str
    key: str
    project: Project
    fields: dict[str, Any]
    properties: dict[str, Any]
    created: float


@dataclass
class JiraSandbox:
    """An in-memory Jira Cloud site. Thread-safe: the server answers from many threads."""

    email: str = "fullkit-bot@example.com"
    access_token: str = "jira-sandbox-api-token"  # the account's API token
    search_lag_seconds: float = 0.0
    base_url: str = "http://127.0.0.1"
    lock: threading.RLock = field(default_factory=threading.RLock)
    projects: dict[str, Project] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    issues: dict[str, Issue] = field(default_factory=dict)
    call_log: list[CallRecord] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    lost_answers: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(10001))
    _numbers: dict[str, itertools.count[int]] = field(default_factory=dict)

    @property
    def api_token(self) -> str:
        return self.access_token

    def close(self) -> None:
        return None

    # --- set-up ----------------------------------------------------------------------

    def seed_default_site(self) -> None:
        """Project OPS (Task, Epic, Bug; components Onboarding and Enterprise), an
        epic OPS-1, and the ops users of the shipped kits."""
        self.add_project("OPS", "Operations", components=["Onboarding", "Enterprise"])
        self.add_user("ops-anna@example.com", "Anna Ops")
        self.add_user("ops-ben@example.com", "Ben Ops")
        self.add_user(self.email, "Fullkit", account_type="app")
        self.add_issue("OPS", "Epic", "Customer onboarding")

    def add_project(
        self,
        key: str,
        name: str,
        issue_types: tuple[str, ...] = ("Task", "Epic", "Bug"),
        components: list[str] | tuple[str, ...] = (),
    ) -> Project:
        with self.lock:
            project_id = str(10000 + len(self.projects))
            types = {t: str(10001 + i) for i, t in enumerate(issue_types)}
            parts = {c: str(10100 + i) for i, c in enumerate(components)}
            project = Project(project_id, key, name, types, parts)
            self.projects[key] = project
            self._numbers[key] = itertools.count(1)
            return project

    def add_user(
        self,
        email: str,
        name: str,
        *,
        active: bool = True,
        account_type: str = "atlassian",
        email_hidden: bool = False,
    ) -> User:
        with self.lock:
            account_id = f"712020:{len(self.users) + 1:08d}-fa11-4e5b-9c1d-000000000000"
            user = User(account_id, email, name, active, account_type, email_hidden)
            self.users[account_id] = user
            return user

    def add_issue(self, project_key: str, issue_type: str, summary: str) -> Issue:
        """An issue made by someone else (e.g. the epic ops files onboarding under)."""
        return self.create_issue(
            {
                "fields": {
                    "project": {"key": project_key},
                    "issuetype": {"name": issue_type},
                    "summary": summary,
                }
            }  # fmt: skip
        )

    def user_by_email(self, email: str) -> User | None:
        return next((u for u in self.users.values() if u.email.lower() == email.lower()), None)

    # --- faults ----------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        path_prefix: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next n API calls (under path_prefix) with `status`."""
        with self.lock:
            self.faults.append(Fault(n, status, path_prefix, retry_after))

    def lose_next_answers(self, n: int = 1) -> None:
        """The next n creates are applied, then answered 504: the client never learns of
        them, as when a worker dies between Jira's create and the ledger's write."""
        with self.lock:
            self.lost_answers += n

    def revoke_token(self) -> None:
        with self.lock:
            self.access_token = "revoked:" + self.access_token

    def index_now(self) -> None:
        """Jira's search index catches up with every create so far."""
        with self.lock:
            for issue in self.issues.values():
                issue.created = min(issue.created, time.time() - self.search_lag_seconds)

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            return take_fault(self.faults, path)

    def take_lost_answer(self) -> bool:
        with self.lock:
            if self.lost_answers <= 0:
                return False
            self.lost_answers -= 1
            return True

    # --- the call log ----------------------------------------------------------------

    def calls(self, method: str | None = None, path_prefix: str | None = None) -> list[CallRecord]:
        with self.lock:
            return matching(list(self.call_log), method, path_prefix)

    def reset_calls(self) -> None:
        with self.lock:
            self.call_log.clear()

    # --- issues ----------------------------------------------------------------------

    def create_issue(self, body: Any) -> Issue:
        """Jira's create: every problem with the fields at once, as one 400."""
        if not isinstance(body, dict):
            raise JiraError(400, ["Request body must be a JSON object"])
        unknown = set(body) - {"fields", "update", "properties", "historyMetadata", "transition"}
        if unknown:
            name = sorted(unknown)[0]
            raise JiraError(400, [f'Unrecognized field "{name}" (not marked as ignorable)'])
        fields = body.get("fields")
        if not isinstance(fields, dict):
            raise JiraError(400, ["Request body is missing fields"])
        with self.lock:
            errors: dict[str, str] = {}
            project = self._project(fields.get("project"), errors)
            values = self._fields(fields, project, errors)
            properties = _properties(body.get("properties"), errors)
            if errors:
                raise JiraError(400, [], errors)
            assert project is not None
            issue_id = str(next(self._ids))
            key = f"{project.key}-{next(self._numbers[project.key])}"
            issue = Issue(issue_id, key, project, values, properties, time.time())
            self.issues[issue_id] = issue
            return issue

    def issue(self, id_or_key: str) -> Issue:
        with self.lock:
            found = self.issues.get(id_or_key) or next(
                (i for i in self.issues.values() if i.key == id_or_key.upper()), None
            )
        if found is None:
            raise JiraError(404, ["Issue does not exist or you do not have permission to see it."])
        return found

    def all_issues(self, project_key: str | None = None) -> list[Issue]:
        with self.lock:
            return [
                i
                for i in self.issues.values()
                if project_key is None or i.project.key == project_key
            ]

    def searchable(self, issue: Issue) -> bool:
        return time.time() - issue.created >= self.search_lag_seconds

    def _project(self, value: Any, errors: dict[str, str]) -> Project | None:
        project = None
        if isinstance(value, dict):
            if "key" in value:
                project = self.projects.get(str(value["key"]))
            elif "id" in value:
                project = next((p for p in self.projects.values() if p.id == value["id"]), None)
        if project is None:
            errors["project"] = "Specify a valid project ID or key"
        return project

    def _fields(
        self, fields: dict[str, Any], project: Project | None, errors: dict[str, str]
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in sorted(set(fields) - SCREEN_FIELDS):
            errors[name] = (
                f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
            )
        checks = {
            "issuetype": self._issue_type,
            "summary": _summary,
            "description": _description,
            "labels": _labels,
            "components": self._components,
            "parent": self._parent,
            "priority": _priority,
            "assignee": self._assignee,
            "duedate": _due_date,
        }
        for name, check in checks.items():
            try:
                values[name] = check(fields.get(name), project)
            except ValueError as problem:
                errors[name] = str(problem)
        return {k: v for k, v in values.items() if v is not None}

    def _issue_type(self, value: Any, project: Project | None) -> dict[str, str] | None:
        if not isinstance(value, dict) or not ({"name", "id"} & set(value)):
            raise ValueError("Specify an issue type")
        if project is None:
            return None
        for name, type_id in project.issue_types.items():
            if value.get("name") == name or value.get("id") == type_id:
                return {"id": type_id, "name": name}
        raise ValueError("Specify a valid issue type")

    def _components(self, value: Any, project: Project | None) -> list[dict[str, str]] | None:
        if value is None or project is None:
            return None
        if not isinstance(value, list):
            raise ValueError("Operation value must be an array")
        found = []
        for item in value:
            name = item.get("name") if isinstance(item, dict) else None
            by_id = {v: k for k, v in project.components.items()}
            if name in project.components:
                found.append({"id": project.components[name], "name": name})
            elif isinstance(item, dict) and item.get("id") in by_id:
                found.append({"id": item["id"], "name": by_id[item["id"]]})
            else:
                raise ValueError(f"Component name '{name}' is not valid")
        return found

    def _parent(self, value: Any, project: Project | None) -> dict[str, str] | None:
        if value is None:
            return None
        ref = value.get("key") or value.get("id") if isinstance(value, dict) else None
        try:
            parent = self.issue(str(ref))
        except JiraError:
            raise ValueError("Could not find issue by id or key.") from None
        if parent.fields["issuetype"]["name"] != "Epic" or parent.project is not project:
            raise ValueError("Given parent work item does not belong to appropriate hierarchy.")
        return {"id": parent.id, "key": parent.key}

    def _assignee(self, value: Any, project: Project | None) -> dict[str, Any] | None:
        if value is None:
            return None
        account_id = value.get("accountId") if isinstance(value, dict) else None
        user = self.users.get(str(account_id))
        if user is None or not user.active or user.account_type != "atlassian":
            raise ValueError(f"User '{account_id}' cannot be assigned issues.")
        return user_json(user, self.base_url)


def _summary(value: Any, _project: Project | None) -> str:
    if value is None or value == "":
        raise ValueError("You must specify a summary of the issue.")
    if not isinstance(value, str):
        raise ValueError("Operation value must be a string")
    if "\n" in value or "\r" in value:
        raise ValueError("The summary is invalid because it contains newline characters.")
    if len(value) > 255:
        raise ValueError("Summary must be less than 255 characters.")
    return value


def _description(value: Any, _project: Project | None) -> Any:
    if value is None:
        return None
    if not valid_document(value):
        raise ValueError("Operation value must be an Atlassian Document (see the Atlassian "
                         "Document Format)")  # fmt: skip
    return value


def _labels(value: Any, _project: Project | None) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("Operation value must be an array of strings")
    for label in value:
        if not label or any(ch.isspace() for ch in label):
            raise ValueError(f"The label '{label}' contains spaces which is invalid.")
        if len(label) > 255:
            raise ValueError("The label must not exceed 255 characters.")
    return list(value)


def _priority(value: Any, _project: Project | None) -> dict[str, str] | None:
    if value is None:
        return {"name": "Medium", "id": "3"}
    name = value.get("name") if isinstance(value, dict) else None
    if name not in PRIORITIES:
        raise ValueError("Specify a valid 'id' or 'name' for Priority")
    return {"name": str(name), "id": str(PRIORITIES.index(str(name)) + 1)}


def _due_date(value: Any, _project: Project | None) -> str | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise ValueError(f"Error parsing date string: {value}") from None


def _properties(value: Any, errors: dict[str, str]) -> dict[str, Any]:
    if value is None:
        return {}
    found: dict[str, Any] = {}
    if not isinstance(value, list):
        errors["properties"] = "Operation value must be an array"
        return found
    for item in value:
        key = item.get("key") if isinstance(item, dict) else None
        if not isinstance(key, str) or not key or len(key) > 255:
            errors["properties"] = "The property key must be between 1 and 255 characters long."
            continue
        found[key] = item.get("value")
    return found


def valid_document(node: Any, kind: str = "doc") -> bool:
    """A well-formed Atlassian Document: `doc` version 1, known nodes in allowed places,
    non-empty text, known marks, links with an href."""
    if not isinstance(node, dict) or node.get("type") != kind:
        return False
    if kind == "doc" and (node.get("version") != 1 or not isinstance(node.get("content"), list)):
        return False
    if kind == "text":
        return _valid_text(node)
    content = node.get("content", [])
    if not isinstance(content, list):
        return False
    allowed = _CHILDREN.get(kind)
    if allowed is None:
        return True  # a node we do not look inside (tables, panels, media)
    return all(
        isinstance(child, dict)
        and child.get("type") in allowed
        and valid_document(child, str(child.get("type")))
        for child in content
    )


def _valid_text(node: dict[str, Any]) -> bool:
    text = node.get("text")
    if not isinstance(text, str) or not text:
        return False
    for mark in node.get("marks", []):
        if not isinstance(mark, dict) or mark.get("type") not in _MARKS:
            return False
        if mark["type"] == "link" and not str((mark.get("attrs") or {}).get("href") or ""):
            return False
    return True


def user_json(user: User, base_url: str) -> dict[str, Any]:
    found: dict[str, Any] = {
        "self": f"{base_url}/rest/api/3/user?accountId={user.account_id}",
        "accountId": user.account_id,
        "accountType": user.account_type,
        "displayName": user.display_name,
        "active": user.active,
        "timeZone": "Europe/Berlin",
    }
    if not user.email_hidden:
        found["emailAddress"] = user.email
    return found


__all__ = ["CallRecord", "Issue", "JiraError", "JiraSandbox", "Project", "User", "user_json"]
