"""`/console/`: every hand-off, one row per deal, failed ones first, with filters."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request
from flask.typing import ResponseReturnValue

from bridge.console.listing import STATES, BadFilter, Filters, handoffs, parse_filters
from bridge.container import Container
from bridge.deal_ids import CRMS
from bridge.ledger import utcnow


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/", "handoffs", handoff_list)


def handoff_list() -> ResponseReturnValue:
    state: Container = current_app.config["FULLKIT"]
    choices = {"states": STATES, "crms": CRMS, "kits": [kit.id for kit in state.rules.kits]}
    try:
        filters = parse_filters(request.args, utcnow())
    except BadFilter as bad:
        page = render_template(
            "console/handoffs.html", problems=bad.problems, filters=Filters(), listing=None,
            **choices,
        )  # fmt: skip
        return page, 400
    try:
        with state.sessions() as session:
            listing = handoffs(session, filters)
    except Exception:  # noqa: BLE001 - any database failure reads the same to the user
        message = "The ledger cannot be reached right now; /healthz says more."
        return render_template("console/message.html", message=message), 503
    choices["kits"] = sorted({*choices["kits"], *listing.kits})
    return render_template(
        "console/handoffs.html", problems=[], filters=filters, listing=listing, **choices
    )
