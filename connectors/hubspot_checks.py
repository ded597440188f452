"""What `fullkit hubspot setup` checks besides the properties, before a real deal trips on it.

* the token has every scope the app config (`hubspot-app/`) requires;
* every kit that opens HubSpot tickets names a ticket pipeline and stage the portal has;
* every ops owner of those kits is a HubSpot owner (the ticket is assigned by email).

Each problem is one line naming what to fix. The checks only read, so running setup again
changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from connectors.hubspot_app import AppConfig, load_app
from connectors.hubspot_client import HubSpotApi, find_owner_id, results_of
from connectors.hubspot_settings import HubSpotSettings
from connectors.hubspot_setup import run_setup
from connectors.hubspot_ticket import DEFAULT_OPTIONS, HubSpotTicketTarget
from kernel.checks import CheckResult, KitLike
from kernel.errors import ConnectorError, PermanentError
from kernel.settings import SharedSettings

TOKEN_INFO_PATH = "/oauth/v2/private-apps/get/access-token-info"


def setup_portal(
    settings: SharedSettings,
    kits: Sequence[KitLike],
    app: AppConfig | None = None,
    api: HubSpotApi | None = None,
) -> CheckResult:
    """Scopes first (a missing one explains every refusal after it), then the properties,
    then what the kits name. A line for what is fine, a problem for what is not."""
    app = app or load_app()
    api = api or HubSpotApi(settings)
    result = CheckResult()
    check_scopes(api, app.required_scopes, result)
    _guarded("properties", result, lambda: run_setup(settings, api, result))
    ticket_kits = [kit for kit in kits if kit.ops.target == HubSpotTicketTarget.name]
    _guarded("ticket pipelines", result, lambda: check_ticket_stages(api, ticket_kits, result))
    _guarded("ops owners", result, lambda: check_owners(api, ticket_kits, result))
    return result


def token_scopes(api: HubSpotApi) -> frozenset[str] | None:
    """The scopes HubSpot granted the token; None when HubSpot does not say for this token."""
    secret = api.settings.section(HubSpotSettings).access_token
    token = secret.get_secret_value() if secret is not None else ""
    try:
        info = api.request(
            "read the token's scopes", "POST", TOKEN_INFO_PATH, body={"tokenKey": token}
        )
    except PermanentError:
        # Documented for private-app tokens; a kind of token it does not know is no
        # reason to stop. A refused token (AuthError) is: nothing after it would work.
        return None
    scopes = info.get("scopes") if isinstance(info, dict) else None
    return frozenset(str(s) for s in scopes) if isinstance(scopes, list) else None


def check_scopes(api: HubSpotApi, required: Iterable[str], result: CheckResult) -> None:
    required = tuple(required)
    granted = token_scopes(api)
    if granted is None:
        result.lines.append(
            "token scopes: HubSpot does not reveal them for this token; a call that lacks "
            "one fails naming it"
        )
        return
    # `oauth` comes with every app's install; token info need not list it.
    missing = [scope for scope in required if scope not in granted and scope != "oauth"]
    for scope in missing:
        result.problems.append(
            f"token lacks scope {scope}, which hubspot-app requires: run `hs project upload`, "
            "accept the new scopes on the app's install in HubSpot, and copy the token again"
        )
    if not missing:
        result.lines.append(f"token scopes: all {len(required)} required scopes granted")


def check_ticket_stages(api: HubSpotApi, kits: Sequence[KitLike], result: CheckResult) -> None:
    if not kits:
        return
    answer = api.call(
        "read ticket pipelines", api.client.crm.pipelines.pipelines_api.get_all, "tickets"
    )
    pipelines = {str(p.get("id")): p for p in results_of(answer)}
    for kit in kits:
        pipeline_id = str(kit.ops.options.get("pipeline", DEFAULT_OPTIONS["pipeline"]))
        stage_id = str(kit.ops.options.get("stage", DEFAULT_OPTIONS["stage"]))
        pipeline = pipelines.get(pipeline_id)
        if pipeline is None:
            result.problems.append(
                f"kit {kit.id}: ticket pipeline {pipeline_id!r} does not exist in HubSpot; "
                f"valid pipelines: {_choices(pipelines.values())}"
            )
            continue
        stages = {str(s.get("id")): s for s in pipeline.get("stages") or [] if isinstance(s, dict)}
        where = f"ticket pipeline {pipeline_id!r} ({pipeline.get('label', '')})"
        if stage_id not in stages:
            result.problems.append(
                f"kit {kit.id}: stage {stage_id!r} is not in {where}; "
                f"valid stages: {_choices(stages.values())}"
            )
            continue
        stage_label = stages[stage_id].get("label", "")
        result.lines.append(f"kit {kit.id}: {where}, stage {stage_id!r} ({stage_label}) found")


def check_owners(api: HubSpotApi, kits: Sequence[KitLike], result: CheckResult) -> None:
    known: dict[str, bool] = {}
    for kit in kits:
        for email in kit.ops.owners:
            key = email.strip().lower()
            if key not in known:
                # The same lookup the ticket target makes when it assigns a ticket.
                known[key] = find_owner_id(api, email) is not None
            if not known[key]:
                result.problems.append(
                    f"kit {kit.id}: ops owner {email} is not a HubSpot owner in this portal; "
                    "add the user in HubSpot or fix the kit's ops.owners"
                )
        if kit.ops.owners and all(known[e.strip().lower()] for e in kit.ops.owners):
            result.lines.append(f"kit {kit.id}: ops owners are HubSpot owners")


def _guarded(what: str, result: CheckResult, step: Callable[[], object]) -> None:
    # The token was accepted by the scope check, so an AuthError here is a missing scope:
    # named on its own line, it must not hide the checks that follow.
    # Likewise a 5xx or a spent rate limit: the lines gathered so far are still printed.
    try:
        step()
    except ConnectorError as exc:
        result.problems.append(f"{what} not checked: {exc}")


def _choices(items: Iterable[dict[str, Any]]) -> str:
    named = [f"{item.get('id')} ({item.get('label', '')})" for item in items]
    return ", ".join(named) or "none"
