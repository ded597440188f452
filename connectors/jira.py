"""Ops target: a Jira Cloud issue, exactly one per hand-off id.

Jira has no unique key a create could be refused on, so the hand-off id travels with the
issue twice, in the create itself: the entity property `fullkit` = {"handoffId": ...}
(exact, but JQL can search a property only when a Forge/Connect app indexes it) and the
label `fullkit-<crm>-<deal id>-<attempt>` (always searchable). A retry that may follow a
lost answer (`may_exist`) searches by the label, trusts a hit only when its property names
the same hand-off, and creates only when none is found.

Jira's search index trails a create by seconds, so "not found" right after a create whose
answer was lost could be wrong. As each create goes out (its budget slot taken) the
target notes in the shared cache when it sent it; a retry that finds nothing while that
note is younger than `JIRA_SEARCH_SETTLE_SECONDS` waits (a RetryableError with that
Retry-After) and searches again, rather than create a second issue. A create Jira refused
(any 4xx) made nothing, so its note is dropped at once. Without a note (a crash before
sending, a spent budget that held the create back, or a cache that lost it) the search
alone decides.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from typing import Any, ClassVar

from connectors.jira_client import JiraApi, TokenRefused
from connectors.jira_document import description
from connectors.jira_settings import JiraSettings
from connectors.registry import register_target
from kernel.cache import LocalCache, SharedCache, cache_key
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

PROPERTY_KEY = "fullkit"
LABEL_PREFIX = "fullkit-"
SUMMARY_LENGTH = 255  # Jira refuses a longer summary
OWNER_TTL = 600.0  # an ops user's account id, shared by every process for ten minutes

_PROJECT_KEY = re.compile(r"[A-Z][A-Z0-9_]{1,254}")
_ISSUE_KEY = re.compile(r"[A-Z][A-Z0-9_]{1,254}-[1-9][0-9]*")
_STRING_OPTIONS = ("issue_type", "priority")
_LIST_OPTIONS = ("components", "labels")
# Errors after which the rest of a batch would only spend calls to be told the same.
_STOPS = (RetryableError, TokenRefused)


def handoff_label(handoff_id: str) -> str:
    """`hubspot:123:1` -> `fullkit-hubspot-123-1`: a label needs no quoting in JQL."""
    return LABEL_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "-", handoff_id)


@dataclass(frozen=True)
class Account:
    """A Jira user as the target assigns issues to them."""

    account_id: str
    email: str | None  # None when the user hides their email from the API

    @property
    def shown(self) -> str:
        return self.email or self.account_id


@register_target
class JiraTarget(OpsTarget):
    name = "jira"
    settings_class = JiraSettings
    option_keys: ClassVar[frozenset[str]] = frozenset(
        {"project", "issue_type", "epic", "components", "labels", "priority", "due_date"}
    )

    def __init__(self, settings: SharedSettings) -> None:
        super().__init__(settings)
        self._api: JiraApi | None = None
        self._own_cache = LocalCache()
        # Wall-clock seconds: a note written by one process is read by another.
        self.clock: Callable[[], float] = time.time

    @property
    def api(self) -> JiraApi:
        if self._api is None:
            self._api = JiraApi(self.settings, budgets=self.rate_budgets)
        return self._api

    @property
    def memory(self) -> SharedCache:
        return self.cache if self.cache is not None else self._own_cache

    # --- options -------------------------------------------------------------------

    @classmethod
    def validate_options(cls, options: MappingABC[str, Any]) -> list[str]:
        problems = super().validate_options(options)
        project = options.get("project")
        if project is None:
            problems.append("project: required: the key of the Jira project, e.g. OPS")
        elif not isinstance(project, str) or not _PROJECT_KEY.fullmatch(project):
            problems.append(f"project: must be a Jira project key such as OPS, got {project!r}")
        for key in _STRING_OPTIONS:
            value = options.get(key)
            if key in options and (not isinstance(value, str) or not value.strip()):
                problems.append(f"{key}: must be a non-empty string, got {value!r}")
        epic = options.get("epic")
        if "epic" in options and (not isinstance(epic, str) or not _ISSUE_KEY.fullmatch(epic)):
            problems.append(f"epic: must be an issue key such as OPS-12, got {epic!r}")
        for key in _LIST_OPTIONS:
            if key in options:
                problems += _list_problems(key, options[key], spaces_allowed=key != "labels")
        if "due_date" in options and not isinstance(options["due_date"], bool):
            problems.append("due_date: must be true or false (true: due on the expected kickoff)")
        return problems

    # --- creating ------------------------------------------------------------------

    def prepare(self, owner_emails: Sequence[str]) -> None:
        for email in dict.fromkeys(owner_emails):
            self.account(email)

    def create(
        self, requests: Sequence[OpsRequest], *, may_exist: bool = False
    ) -> dict[str, OpsResult]:
        """One issue per request, each its own call (Jira's bulk create cannot say which
        input an issue came from when one fails). An issue Jira refuses fails alone (a
        403 too: it is one project's or issue type's permission); once Jira asks to slow
        down or refuses the token, the rest wait for the retry instead of spending calls.
        Whatever stops the batch, the issues already made are answered."""
        self.api  # noqa: B018 - a target without settings stops the whole call here
        todo = list({request.handoff_id: request for request in requests}.values())
        done: dict[str, OpsResult] = {}
        failed: dict[str, ConnectorError] = {}
        for request in todo:
            stop = next((e for e in failed.values() if isinstance(e, _STOPS)), None)
            if stop is not None:
                failed[request.handoff_id] = stop
                continue
            try:
                done[request.handoff_id] = self._open(request, may_exist)
            except TokenRefused as exc:
                if not done and not failed:
                    raise  # nothing made: the whole call stops
                failed[request.handoff_id] = exc
            except (PermanentError, RetryableError, AuthError) as exc:
                failed[request.handoff_id] = exc
        if failed:
            raise PartialFailure("Jira create issues", failed, done)
        return done

    def _open(self, request: OpsRequest, may_exist: bool) -> OpsResult:
        if may_exist:
            found = self.find(request.handoff_id)
            if found is not None:
                return found
            self._wait_for_index(request.handoff_id)
        body, owner = self._issue(request)
        note = self._sent_key(request.handoff_id)
        created = self.api.post(
            "create issue",
            "issue",
            body,
            refused=lambda: self.memory.forget(note),
            # Noted only once the budget let the create go: a spent budget sent nothing,
            # and its retry must not wait for an issue that was never made.
            sending=lambda: self.memory.set(note, str(self.clock()), self._note_ttl),
        )
        key = str(created["key"])
        return OpsResult(ref=key, link=self.api.browse_url(key), owner=owner)

    def find(self, handoff_id: str) -> OpsResult | None:
        """The issue made for this hand-off, if Jira's search shows one."""
        jql = f'labels = "{handoff_label(handoff_id)}" ORDER BY created ASC'
        # Asking for a field makes the library read the site's field list once per client
        # (GET /field), inside this call's budget slot; every later search is one request.
        answer = self.api.call(
            "find issue by hand-off id",
            lambda client: client.enhanced_search_issues(
                jql,
                maxResults=10,
                fields=["assignee"],
                properties=PROPERTY_KEY,
                json_result=True,
            ),
        )
        for issue in (answer or {}).get("issues") or []:
            mark = (issue.get("properties") or {}).get(PROPERTY_KEY) or {}
            if mark.get("handoffId") != handoff_id:
                continue  # someone copied the label onto another issue
            assignee = (issue.get("fields") or {}).get("assignee") or {}
            owner = assignee.get("emailAddress") or assignee.get("accountId")
            key = str(issue["key"])
            return OpsResult(ref=key, link=self.api.browse_url(key), owner=owner)
        return None

    def _wait_for_index(self, handoff_id: str) -> None:
        note = self.memory.get(self._sent_key(handoff_id))
        if note is None:
            return
        settle = self.api.config.search_settle_seconds
        age = self.clock() - float(note)
        if age < settle:
            raise RetryableError(
                f"Jira: the issue for {handoff_id} may have been created {age:.0f} s ago; "
                "searching again once Jira's index has caught up",
                retry_after=settle - age,
            )

    @property
    def _note_ttl(self) -> float:
        return max(60.0, 4 * self.api.config.search_settle_seconds)

    def _sent_key(self, handoff_id: str) -> str:
        return cache_key("jira", "create sent", self.api.base_url, handoff_id)

    def _issue(self, request: OpsRequest) -> tuple[dict[str, Any], str | None]:
        """The create-issue body, and the assignee as Jira will show them."""
        options = request.options
        labels = [*(options.get("labels") or []), handoff_label(request.handoff_id)]
        fields: dict[str, Any] = {
            "project": {"key": options["project"]},
            "issuetype": {"name": options.get("issue_type") or "Task"},
            "summary": inert(request.subject, links=True)[:SUMMARY_LENGTH],
            "description": description(request.summary, request.packet.url),
            "labels": list(dict.fromkeys(labels)),
        }
        if options.get("epic"):
            fields["parent"] = {"key": options["epic"]}
        if options.get("components"):
            fields["components"] = [{"name": name} for name in options["components"]]
        if options.get("priority"):
            fields["priority"] = {"name": options["priority"]}
        if options.get("due_date"):
            fields["duedate"] = request.expected_kickoff.isoformat()
        owner: str | None = None
        if request.owner_email:
            account = self.account(request.owner_email)
            fields["assignee"] = {"accountId": account.account_id}
            owner = account.shown
        properties = [{"key": PROPERTY_KEY, "value": {"handoffId": request.handoff_id}}]
        return {"fields": fields, "properties": properties}, owner

    # --- people --------------------------------------------------------------------

    def account(self, email: str) -> Account:
        """The active Jira user with this email (remembered by every process for minutes).

        Jira Cloud assigns by account id only. An email that is no Jira user fails its
        hand-off (PermanentError naming it), as for the other targets: an issue nobody
        owns would sit unseen, which is what the hand-off must prevent.
        """
        key = cache_key("jira", "account", self.api.base_url, email.lower())
        remembered = self.memory.get(key)
        if remembered is not None:
            value = json.loads(remembered)
            return Account(value["accountId"], value.get("email"))
        users = self.api.call(
            "find ops owner",
            lambda client: client.search_users(query=email, maxResults=50),
        )
        found = _pick([user.raw for user in users or []], email)
        if found is None:
            raise PermanentError(
                f"ops owner {email} is not a Jira user (no active account with that email); "
                "fix the kit's ops.owners or invite the user to the Jira site"
            )
        self.memory.set(
            key, json.dumps({"accountId": found.account_id, "email": found.email}), OWNER_TTL
        )
        return found


def _pick(users: list[dict[str, Any]], email: str) -> Account | None:
    """The user the email names among Jira's prefix matches. A user who hides their email
    still matches it exactly, so a lone active person without one is taken as that user."""
    people = [u for u in users if u.get("active", True) and _is_person(u)]
    for user in people:
        if str(user.get("emailAddress") or "").lower() == email.lower():
            return Account(str(user["accountId"]), str(user["emailAddress"]))
    hidden = [u for u in people if not u.get("emailAddress")]
    if len(people) == 1 and hidden:
        return Account(str(hidden[0]["accountId"]), None)
    return None


def _is_person(user: dict[str, Any]) -> bool:
    # App and customer accounts cannot own an ops issue.
    return user.get("accountType", "atlassian") == "atlassian"


def _list_problems(key: str, value: Any, *, spaces_allowed: bool) -> list[str]:
    if not isinstance(value, list) or not value:
        return [f"{key}: must be a non-empty list of names, got {value!r}"]
    bad = [
        item
        for item in value
        if not isinstance(item, str)
        or not item.strip()
        or len(item) > 255
        or (not spaces_allowed and any(ch.isspace() for ch in item))
    ]
    if not bad:
        return []
    rule = "names" if spaces_allowed else "labels without spaces, at most 255 characters"
    return [f"{key}: must be {rule}; not {', '.join(repr(b) for b in bad)}"]
