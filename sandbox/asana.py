"""A loopback fake of the Asana API endpoints the `asana` ops target calls.

An in-memory workspace (users, teams, projects with sections, tasks with app-specific
`external` data, project templates with requested dates, instantiation jobs), served over
real HTTP by `sandbox.asana_http.start_asana_sandbox()` under `/api/1.0`, so tests and the
demo drive the official `asana` client against it::

    with start_asana_sandbox() as running:
        box = running.sandbox
        box.seed_default_workspace()     # ops-anna/ops-ben, "Customer onboarding", a template
        settings = Settings(ASANA_ACCESS_TOKEN=box.access_token, ASANA_API_BASE=running.api_base)

As strict as Asana where the target relies on it: requests wrap their fields in `data`;
an unknown field, project, section, user, template or team is refused; `html_notes` must
be XML under `<body>` from Asana's rich-text tag set ("XML is invalid" otherwise); dates
are `YYYY-MM-DD`; a strict instantiation must fill every requested date. Errors have
Asana's shape, `{"errors": [{"message": ..., "help": ...}]}` (a 5xx carries a `phrase`),
a 429 its `Retry-After`. Asana does not promise that an `external.gid` is unique, so
neither does the fake: only a lookup before a retry prevents a second task.

Fault hooks: `fail_next(n, status, retry_after=)` answers the next n calls with that
error (nothing done); `lose_next_answers(n)` carries out the next n writes and answers
504, as when the worker dies between Asana's create and the ledger write; `rate_limit`
answers 429 past n calls per window; `external_needs_oauth` keeps tasks' `external`
data only for OAuth tokens, dropping a personal access token's, as Asana does. `call_log`
records every call.
"""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sandbox.call_log import CallRecord, matching
from sandbox.faults import Fault, take_fault

API_PREFIX = "/api/1.0"
HELP = (
    "For more information on API status codes and how to handle them, "
    "read the docs on errors: https://developers.asana.com/docs/errors"
)


class AsanaError(Exception):
    """An answer in Asana's error shape."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message}
        if self.status >= 500:
            error["phrase"] = "6 sad squid snuggle softly"
        else:
            error["help"] = HELP
        return {"errors": [error]}


# What Asana says for each status the fault hooks can inject.
FAULT_MESSAGES = {
    400: "Bad request",
    401: "Not Authorized",
    402: "This feature is only available to premium users.",
    403: "Forbidden",
    404: "Not Found",
    429: (
        "You've made too many requests and hit a rate limit. "
        "Please retry after the given amount of time."
    ),
    500: "Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class Template:
    gid: str
    name: str
    team: str
    requested_dates: list[dict[str, str]]  # [{gid, name, description}]
    task_names: list[str]


@dataclass
class Job:
    gid: str
    project: str
    polls_left: int  # GETs answered in_progress before it succeeds


@dataclass
class AsanaSandbox:
    """One Asana organization, as the integration's token sees it."""

    base_url: str = "http://asana.invalid"
    access_token: str = field(default_factory=lambda: "2/" + secrets.token_hex(16))
    # (requests, window seconds) per token, as Asana's per-minute limit; None: unlimited.
    rate_limit: tuple[int, float] | None = None
    # GETs of a job that answer `in_progress` before it answers `succeeded`.
    job_polls: int = 1
    # The OAuth app (POST /-/oauth_token, grant_type=refresh_token) and how long the access
    # tokens it issues last; `access_token` above never ends.
    client_id: str = "1209000000000000"
    client_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    refresh_token: str = field(default_factory=lambda: "1/" + secrets.token_hex(16))
    token_seconds: float = 3600.0
    # True: `external` data is kept only for OAuth tokens (issued by the OAuth endpoint),
    # as Asana does; a personal access token's (`access_token`) is silently dropped.
    external_needs_oauth: bool = False

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.call_log: list[CallRecord] = []
        self.faults: list[Fault] = []
        self.lost_answers: list[Fault] = []
        self.request_times: dict[str, list[float]] = {}
        self.issued: dict[str, float] = {}  # OAuth access token -> when it ends (monotonic)
        self._gids = itertools.count(1_209_000_000_000_001)
        self.workspace = self.new_gid()
        self.workspace_name = "Acme Ops"
        self.users: dict[str, dict[str, str]] = {}
        self.teams: dict[str, dict[str, str]] = {}
        self.projects: dict[str, dict[str, Any]] = {}
        self.sections: dict[str, dict[str, str]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.templates: dict[str, Template] = {}
        self.jobs: dict[str, Job] = {}
        # The token's own user: Asana makes it the owner of what the token creates.
        self.me = self.add_user("fullkit-bot@example.com", "Fullkit")

    def close(self) -> None:
        """Nothing to release: the fake lives in memory."""

    @property
    def ui_base(self) -> str:
        return self.base_url.rstrip("/")

    def new_gid(self) -> str:
        return str(next(self._gids))

    # ------------------------------------------------------------- set-up

    def add_user(self, email: str, name: str) -> str:
        with self.lock:
            gid = self.new_gid()
            self.users[gid] = {"gid": gid, "email": email, "name": name}
            return gid

    def add_team(self, name: str) -> str:
        with self.lock:
            gid = self.new_gid()
            self.teams[gid] = {"gid": gid, "name": name}
            return gid

    def add_project(self, name: str, team: str, sections: tuple[str, ...] = ()) -> str:
        with self.lock:
            gid = self.new_gid()
            self.projects[gid] = {
                "gid": gid, "name": name, "team": team, "owner": self.me, "archived": False,
                "public": True, "html_notes": "<body></body>", "created_at": _now(),
            }  # fmt: skip
            for section in sections:
                self.add_section(gid, section)
            return gid

    def add_section(self, project: str, name: str) -> str:
        with self.lock:
            gid = self.new_gid()
            self.sections[gid] = {"gid": gid, "name": name, "project": project}
            return gid

    def add_template(
        self,
        name: str,
        team: str,
        dates: tuple[str, ...] = ("Start date",),
        tasks: tuple[str, ...] = (),
    ) -> str:
        with self.lock:
            gid = self.new_gid()
            requested = [
                {
                    "gid": self.new_gid(),
                    "name": date,
                    "description": f"The project's {date.lower()}",
                }
                for date in dates
            ]
            self.templates[gid] = Template(gid, name, team, requested, list(tasks))
            return gid

    def seed_default_workspace(self) -> dict[str, str]:
        """Ops users, an onboarding team, a project with sections and a template; their gids."""
        with self.lock:
            team = self.add_team("Onboarding")
            project = self.add_project("Customer onboarding", team, ("New", "Kickoff booked"))
            sections = [gid for gid, s in self.sections.items() if s["project"] == project]
            template = self.add_template(
                "Onboarding template", team, ("Kickoff date",),
                ("Kickoff call", "Provision the account", "Training"),
            )  # fmt: skip
            self.add_user("ops-anna@example.com", "Anna Ops")
            self.add_user("ops-ben@example.com", "Ben Ops")
            return {"team": team, "project": project, "section": sections[1], "template": template}

    # ---------------------------------------------------------------- OAuth

    def issue_token(self, client_id: str, client_secret: str, refresh_token: str) -> str:
        if client_id != self.client_id or client_secret != self.client_secret:
            raise AsanaError(401, "invalid_client")
        if refresh_token != self.refresh_token:
            raise AsanaError(400, "invalid_grant")
        token = "2/" + secrets.token_hex(16)
        with self.lock:
            self.issued[token] = time.monotonic() + self.token_seconds
        return token

    def keeps_external(self, token: str | None) -> bool:
        return not self.external_needs_oauth or token in self.issued

    def token_ok(self, token: str | None) -> bool:
        if token == self.access_token:
            return True
        with self.lock:
            return token is not None and self.issued.get(token, 0.0) > time.monotonic()

    def expire_issued_tokens(self) -> None:
        """Every OAuth access token issued so far ends now (as after an hour)."""
        with self.lock:
            self.issued = dict.fromkeys(self.issued, 0.0)

    # ---------------------------------------------------------- fault hooks

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        path_prefix: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next n calls (under path_prefix, after /api/1.0) with `status`, in
        Asana's error shape, doing nothing; a 429 carries Retry-After (default 30 s)."""
        if status == 429 and retry_after is None:
            retry_after = 30.0
        with self.lock:
            self.faults.append(Fault(n, status, path_prefix, retry_after))

    def lose_next_answers(self, n: int = 1, path_prefix: str | None = None) -> None:
        """Carry out the next n writes (POST/PUT) and answer 504: the create happened, but
        the caller never learns it (a crash between the tool's create and our ledger)."""
        with self.lock:
            self.lost_answers.append(Fault(n, 504, path_prefix))

    def take_fault(self, path: str, writing: bool) -> tuple[Fault | None, bool]:
        """(an error to answer instead, whether to lose this write's answer)."""
        with self.lock:
            fault = take_fault(self.faults, path)
            if fault is not None:
                return fault, False
            return None, writing and take_fault(self.lost_answers, path) is not None

    def calls(self, method: str | None = None, path_prefix: str | None = None) -> list[CallRecord]:
        """The calls received (path without /api/1.0), e.g. calls("POST", "/tasks")."""
        with self.lock:
            return matching(self.call_log, method, path_prefix)

    # ------------------------------------------------------- what tests read

    def user_gid(self, email: str) -> str | None:
        with self.lock:
            wanted = email.strip().lower()
            return next((g for g, u in self.users.items() if u["email"].lower() == wanted), None)

    def task_list(self, project: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                dict(t)
                for t in self.tasks.values()
                if project is None or project in _task_projects(t)
            ]

    def project_list(self, team: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(p) for p in self.projects.values() if team is None or p["team"] == team]

    def task_permalink(self, task: dict[str, Any]) -> str:
        projects = _task_projects(task)
        return f"{self.ui_base}/0/{projects[0] if projects else 0}/{task['gid']}"

    def project_permalink(self, gid: str) -> str:
        return f"{self.ui_base}/0/{gid}/list"


def _task_projects(task: dict[str, Any]) -> list[str]:
    return [m["project"] for m in task.get("memberships", [])]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
