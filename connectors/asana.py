"""Ops target: an Asana task in a project, or a project made from a template, one per
hand-off id.

Asana has no unique key a create could be refused on, so a retry (`may_exist`) looks up
what an earlier try made before creating, by a consistent read:

* a task carries the hand-off id as its `external.gid` (custom external data), read back
  as `GET /tasks/external:<hand-off id>`: a read by id, not a search. Asana keeps external
  data only for OAuth apps' tokens, so the id is also the last line of the task's notes
  (`Fullkit hand-off hubspot:123:1`, which also tells ops where the task came from); when
  the read finds nothing, the project's tasks modified since shortly before ops took the
  deal over are listed (`GET /tasks?project=..&modified_since=..`, a consistent list, not
  Asana's search, which is premium-only and lags) for the one whose notes end so;
* a project made from a template (an asynchronous job) carries the hand-off id at the end
  of its name, `... [hubspot:123:1]`, and is found by listing its team's projects.

Either way the owner and the kit are then (re)written, so a retry after a crash between
Asana's create and our ledger write ends with the same single task or project, complete.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Mapping as MappingABC
from collections.abc import Sequence
from typing import Any, ClassVar

from connectors.asana_client import AsanaApi, NotFoundError, TokenRefused
from connectors.asana_oauth import RefreshRefused
from connectors.asana_settings import AsanaSettings
from connectors.registry import register_target
from kernel.connector import OpsRequest, OpsResult, OpsTarget
from kernel.errors import (
    AuthError,
    ConnectorError,
    PartialFailure,
    PermanentError,
    RetryableError,
)
from kernel.settings import SharedSettings
from kernel.text import inert

TASK_FIELDS = "name,permalink_url,assignee.email,external,due_on"
FOOTER = "Fullkit hand-off"
# How long before ops took the deal over a retry still looks for the first try's task:
# Asana's clock and ours may disagree, and listing a few more tasks costs little.
CLOCK_ALLOWANCE = dt.timedelta(minutes=15)
PROJECT_FIELDS = "name,permalink_url,owner.email"
_NOT_XML = re.compile("[\ufffe\uffff]")
# Asana's job statuses that end a job.
JOB_DONE, JOB_FAILED = "succeeded", "failed"
FIRST_POLL_SECONDS = 0.25
# When a project is still being made, look again after this long (by its name).
STILL_MAKING_SECONDS = 15.0


def html_notes(summary: str, handoff_id: str | None = None) -> str:
    """Asana rich text: XML under `<body>`, from a fixed tag set. The summary's lines stay
    lines (Asana keeps line breaks in rich text); every `<`, `>` and `&` is escaped, so
    nothing in it can become a tag or a link Fullkit did not build. With `handoff_id`, a
    last line names it (how a retry finds the task whatever the token)."""
    if handoff_id is not None:
        summary = f"{summary}\n\n{footer(handoff_id)}"
    text = inert(summary, markup="html", lines=True, links=True)
    # The two characters `inert` leaves that XML forbids: Asana would refuse the notes.
    return f"<body>{_NOT_XML.sub('', text)}</body>"


def footer(handoff_id: str) -> str:
    return f"{FOOTER} {inert(handoff_id)}"


def project_name(request: OpsRequest) -> str:
    """The project's name ends with the hand-off id: how a retry finds it again."""
    return f"{inert(request.subject, links=True)} [{inert(request.handoff_id)}]"


@register_target
class AsanaTarget(OpsTarget):
    name = "asana"
    settings_class = AsanaSettings
    option_keys: ClassVar[frozenset[str]] = frozenset({"project", "section", "template", "team"})

    def __init__(self, settings: SharedSettings) -> None:
        super().__init__(settings)
        self._api: AsanaApi | None = None
        self._templates: dict[str, dict[str, Any]] = {}

    @property
    def api(self) -> AsanaApi:
        if self._api is None:
            self._api = AsanaApi(self.settings, budgets=self.rate_budgets, cache=self.cache)
        return self._api

    @classmethod
    def validate_options(cls, options: MappingABC[str, Any]) -> list[str]:
        problems = super().validate_options(options)
        for key in sorted(cls.option_keys & set(options)):
            value = options[key]
            # YAML reads `project: 1204` as an int; gids are strings of digits.
            if not isinstance(value, str) or not value.strip().isdigit():
                problems.append(f'{key}: must be an Asana gid in quotes, e.g. "1204567890123"')
        if "project" in options and "template" in options:
            problems.append("template: give either project (a task) or template (a project)")
        elif "project" not in options and "template" not in options:
            problems.append(
                "project: required: a project gid (a task there per hand-off), "
                "or template: a project template gid (a project per hand-off)"
            )
        if "section" in options and "project" not in options:
            problems.append("section: only with project (the task's section in it)")
        if "team" in options and "template" not in options:
            problems.append("team: only with template (the team new projects belong to)")
        return problems

    def prepare(self, owner_emails: Sequence[str]) -> None:
        # The first batch would otherwise stop to look each ops owner up.
        for email in dict.fromkeys(owner_emails):
            self.api.user(email)

    def create(
        self, requests: Sequence[OpsRequest], *, may_exist: bool = False
    ) -> dict[str, OpsResult]:
        """One task or project per request, in turn. A request Asana refuses fails alone,
        a 402 or 403 too (a premium feature or a permission of that project or template);
        a 429, an outage or a refused token fails the rest of the batch with it (asking on
        only earns more), and stops the whole call when nothing was made yet."""
        self.api  # noqa: B018 - a target without settings stops the whole call here
        todo = list({request.handoff_id: request for request in requests}.values())
        done: dict[str, OpsResult] = {}
        failed: dict[str, ConnectorError] = {}
        for index, request in enumerate(todo):
            try:
                done[request.handoff_id] = self._create_one(request, may_exist)
            except (RetryableError, TokenRefused, RefreshRefused) as exc:
                if not done and not failed:
                    raise
                for rest in todo[index:]:
                    failed[rest.handoff_id] = exc
                break
            except (PermanentError, AuthError) as exc:
                failed[request.handoff_id] = exc
        if failed:
            raise PartialFailure("Asana create", failed, done)
        return done

    def _create_one(self, request: OpsRequest, may_exist: bool) -> OpsResult:
        owner = self.api.user(request.owner_email) if request.owner_email else None
        if request.options.get("template"):
            return self._project(request, owner, may_exist)
        return self._task(request, owner, may_exist)

    # ------------------------------------------------------------------ tasks

    def _task(
        self, request: OpsRequest, owner: dict[str, str] | None, may_exist: bool
    ) -> OpsResult:
        api = self.api
        project = str(request.options["project"])
        if may_exist:
            found = self._find_task(request.handoff_id) or self._find_listed_task(project, request)
            if found is not None:
                return _result(found, "assignee")
        section = request.options.get("section")
        task: dict[str, Any] = {
            "name": inert(request.subject, links=True),
            "html_notes": html_notes(request.summary, request.handoff_id),
            "due_on": request.expected_kickoff.isoformat(),
            "external": {"gid": request.handoff_id, "data": _external_data(request)},
        }
        if section:
            # Create-only: the project and the section in it, in one call.
            task["memberships"] = [{"project": project, "section": str(section)}]
        else:
            task["projects"] = [project]
        if owner is not None:
            task["assignee"] = owner["gid"]
        made = api.data(
            "create task", api.tasks.create_task, {"data": task}, {"opt_fields": TASK_FIELDS}
        )
        return _result(made, "assignee")

    def _find_task(self, handoff_id: str) -> dict[str, Any] | None:
        api = self.api
        try:
            return dict(
                api.data(
                    "read task by hand-off id",
                    api.tasks.get_task,
                    f"external:{handoff_id}",
                    {"opt_fields": TASK_FIELDS},
                )
            )
        except NotFoundError:
            return None

    def _find_listed_task(self, project: str, request: OpsRequest) -> dict[str, Any] | None:
        """The project's task whose notes carry this hand-off's footer line."""
        api = self.api
        opts: dict[str, Any] = {"project": project, "opt_fields": f"{TASK_FIELDS},notes"}
        if request.accepted_at is not None:
            since = request.accepted_at.astimezone(dt.UTC) - CLOCK_ALLOWANCE
            opts["modified_since"] = since.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        line = footer(request.handoff_id)
        for task in api.pages("find task by hand-off id", api.tasks.get_tasks, opts=opts):
            # Any line: ops may have written more below it since.
            if line in (text.strip() for text in str(task.get("notes") or "").splitlines()):
                return task
        return None

    # --------------------------------------------------------------- projects

    def _project(
        self, request: OpsRequest, owner: dict[str, str] | None, may_exist: bool
    ) -> OpsResult:
        api = self.api
        template_gid = str(request.options["template"])
        template = self._template(template_gid)
        team = str(request.options.get("team") or (template.get("team") or {}).get("gid") or "")
        if not team:
            raise PermanentError(
                f"Asana template {template_gid} belongs to no team: give the kit's ops.team"
            )
        found = self._find_project(team, request.handoff_id) if may_exist else None
        gid = found or self._instantiate(request, template_gid, template, team)
        changes: dict[str, Any] = {"html_notes": html_notes(request.summary)}
        if owner is not None:
            changes["owner"] = owner["gid"]
        project = api.data(
            "write project owner and kit",
            api.projects.update_project,
            {"data": changes},
            gid,
            {"opt_fields": PROJECT_FIELDS},
        )
        return _result(project, "owner")

    def _template(self, gid: str) -> dict[str, Any]:
        """A template's requested dates and team (remembered: templates rarely change)."""
        if gid not in self._templates:
            api = self.api
            self._templates[gid] = dict(
                api.data(
                    "read project template",
                    api.templates.get_project_template,
                    gid,
                    {"opt_fields": "name,team,requested_dates,requested_dates.name"},
                )
            )
        return self._templates[gid]

    def _instantiate(
        self,
        request: OpsRequest,
        template_gid: str,
        template: dict[str, Any],
        team: str,
    ) -> str:
        api = self.api
        kickoff = request.expected_kickoff.isoformat()
        # Every date the template asks for (its start or kickoff date) is the kickoff.
        dates = [
            {"gid": str(date["gid"]), "value": kickoff}
            for date in template.get("requested_dates") or []
            if isinstance(date, dict) and date.get("gid")
        ]
        body = {
            "data": {
                "name": project_name(request),
                "team": team,
                "public": True,  # ops in the team must see it
                "is_strict": True,
                "requested_dates": dates,
            }
        }
        job = api.post(
            "instantiate project",
            "/project_templates/{project_template_gid}/instantiateProject",
            {"project_template_gid": template_gid},
            body,
            "status,new_project,new_project.name",
        )
        gid = str((job.get("new_project") or {}).get("gid") or "")
        if not gid:
            raise RetryableError("Asana instantiate project: the job names no new project")
        self._wait(str(job.get("gid")), str(job.get("status")), gid)
        return gid

    def _wait(self, job_gid: str, status: str, project_gid: str) -> None:
        """Until the template's tasks are in the project: its owner is set after that."""
        api = self.api
        deadline = time.monotonic() + api.job_wait_seconds
        pause = FIRST_POLL_SECONDS
        while status != JOB_DONE:
            if status == JOB_FAILED:
                raise PermanentError(
                    f"Asana could not make project {project_gid} from the template (job {job_gid})"
                )
            if time.monotonic() > deadline:
                # The project exists and carries the hand-off id: the retry finds it.
                raise RetryableError(
                    f"Asana is still making project {project_gid} from the template",
                    retry_after=STILL_MAKING_SECONDS,
                )
            job = api.data("read job", api.jobs.get_job, job_gid, {"opt_fields": "status"})
            status = str(job.get("status"))
            if status not in {JOB_DONE, JOB_FAILED}:
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def _find_project(self, team: str, handoff_id: str) -> str | None:
        """The team's project named for this hand-off (whatever the deal is called now)."""
        api = self.api
        suffix = f"[{inert(handoff_id)}]"
        for project in api.pages(
            "find project by hand-off id",
            api.projects.get_projects_for_team,
            team,
            opts={"opt_fields": "name", "archived": "false"},
        ):
            if str(project.get("name") or "").endswith(suffix):
                return str(project["gid"])
        return None


def _external_data(request: OpsRequest) -> str:
    # App-only data (not shown in Asana's UI): what the task is about, for a reader app.
    return json.dumps({"crm": request.crm, "deal_id": request.deal_id, "kit": request.kit_id})


def _result(found: dict[str, Any], owner_field: str) -> OpsResult:
    gid = str(found.get("gid") or "")
    if not gid:
        raise RetryableError("Asana answered without the object's gid")
    link = str(found.get("permalink_url") or f"https://app.asana.com/0/0/{gid}")
    owner = found.get(owner_field) or {}
    email = owner.get("email") if isinstance(owner, dict) else None
    return OpsResult(ref=gid, link=link, owner=str(email) if email else None)
