"""`fullkit sweep`: hand-offs whose webhook never came, found through the CRM and queued.

HubSpot gives up on a delivery for good after some answers (a 4xx such as a 401 from a
proxy that rewrote the URL), and it sends no stage-change event at all for a deal created
straight into a hand-off stage. The sweep asks the CRM which deals have sat in a hand-off
stage for a while and turns each into the very stage change a webhook would have brought:
same job id, same ledger rules. So a webhook that comes late, or a second sweep, never
starts a second hand-off.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

import redis
from sqlalchemy.exc import DBAPIError

from bridge import db, intake, ledger
from bridge.queue import QueueUnavailable
from bridge.runtime import Runtime
from bridge.settings import Settings
from kernel.connector import StageEntry
from kernel.errors import ConnectorError, NotConfigured, Unsupported

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_LONGEST = dt.timedelta(days=3650)


def parse_duration(text: str) -> dt.timedelta:
    """`0`, `90s`, `15m`, `2h`, `7d` (a bare number is seconds); ValueError otherwise."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"expected seconds or a number with s, m, h or d (e.g. 15m), not {text!r}")
    seconds = float(found.group(1)) * _UNIT_SECONDS[found.group(2)]
    if seconds > _LONGEST.total_seconds():
        raise ValueError(f"{text!r} is longer than ten years")
    return dt.timedelta(seconds=seconds)


def describe(duration: dt.timedelta) -> str:
    seconds = int(duration.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class SweepFailed(Exception):
    """The sweep could not finish; the message is the operator's one line."""


@dataclass
class SweepReport:
    found: int = 0  # deals in a hand-off stage for longer than --older-than
    handled: int = 0  # the ledger (or the queue) knows their change already
    queued: list[tuple[str, StageEntry]] = field(default_factory=list)  # (crm, entry)
    skipped: list[str] = field(default_factory=list)  # "crm: why", for CRMs not swept
    swept: int = 0  # CRMs searched


def run_sweep(settings: Settings, older_than: dt.timedelta, within: dt.timedelta) -> list[str]:
    """`fullkit sweep`: one line per queued deal, then the counts."""
    rt = Runtime.build(settings)
    try:
        if settings.uses_default_database:
            db.upgrade(rt.engine)
        report = sweep(rt, older_than, within)
    except ConnectorError as exc:
        raise SweepFailed(f"sweep failed: {exc}") from None
    except QueueUnavailable as exc:
        raise SweepFailed(f"sweep failed: the queue is unavailable: {exc}") from None
    except (DBAPIError, redis.RedisError) as exc:
        raise SweepFailed(
            f"sweep failed: ledger or queue unavailable: {type(exc).__name__}"
        ) from None
    finally:
        rt.engine.dispose()
    if report.skipped and not report.swept:
        raise SweepFailed(f"sweep found no CRM to search: {'; '.join(report.skipped)}")
    lines = [f"skipped {why}" for why in report.skipped]
    lines += [
        f"queued {crm}:{entry.deal_id} (in {entry.stage_ref} since {ledger.iso(entry.entered_at)})"
        for crm, entry in report.queued
    ]
    lines.append(
        f"found {report.found} deal(s) in a hand-off stage for over {describe(older_than)}: "
        f"{report.handled} already handled, {len(report.queued)} queued"
    )
    return lines


def sweep(
    rt: Runtime,
    older_than: dt.timedelta,
    within: dt.timedelta,
    now: dt.datetime | None = None,
) -> SweepReport:
    """Queue every deal found in a hand-off stage whose change the ledger does not know."""
    moment = now or ledger.utcnow()
    report = SweepReport()
    for crm in sorted(rt.rules.mappings):
        stages = sorted(rt.rules.handoff_stage_refs(crm))
        if not stages:
            continue
        try:
            entries = rt.crm(crm).deals_in_stages(stages, moment - within, moment - older_than)
        except (NotConfigured, Unsupported) as exc:
            report.skipped.append(f"{crm}: {exc}")
            continue
        report.swept += 1
        report.found += len(entries)
        for entry in entries:
            if _queue(rt, crm, entry):
                report.queued.append((crm, entry))
            else:
                report.handled += 1
    return report


def _queue(rt: Runtime, crm: str, entry: StageEntry) -> bool:
    # For HubSpot the webhook's own key: a webhook that does arrive is the same change.
    change = intake.observed_change(
        crm, entry.deal_id, entry.stage_ref, entry.entered_at, f"{crm}-sweep"
    )
    with rt.sessions() as session:
        if not ledger.would_start(session, change):
            return False  # this change or a later one has an attempt; or ops owns the deal
    return intake.queue_changes(rt.queue, [change]) == 1
