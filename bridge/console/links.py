"""Template filters every console page shares: safe links and readable times.

Everything shown comes from a CRM, so it is hostile: Jinja escapes it, and only an
http(s) URL ever becomes a link (a `javascript:` deal URL stays text).
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from flask import Blueprint


def register(bp: Blueprint) -> None:
    bp.add_app_template_filter(web_link, "web_link")
    bp.add_app_template_filter(when, "when")
    bp.add_app_template_filter(ago, "ago")
    bp.add_app_template_filter(to_the_second, "to_the_second")
    bp.add_app_template_filter(crm_name, "crm_name")


CRM_NAMES = {"hubspot": "HubSpot", "salesforce": "Salesforce"}


def crm_name(crm: str) -> str:
    return CRM_NAMES.get(crm, crm)


def web_link(value: object) -> str | None:
    """The value when it is an http(s) URL with a host; None for anything else."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return text


def when(moment: dt.datetime | dt.date | None) -> str:
    if moment is None:
        return "–"
    if isinstance(moment, dt.datetime):
        return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return moment.isoformat()


def to_the_second(moment: dt.datetime | None) -> str:
    """A step's time: the steps of one attempt are often seconds apart."""
    if moment is None:
        return "–"
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(moment: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """How long ago, in the largest whole unit: "5 min ago", "3 h ago", "2 d ago"."""
    if moment is None:
        return "–"
    seconds = int(((now or dt.datetime.now(dt.UTC)) - moment).total_seconds())
    if seconds < 60:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now"
