"""CRM-neutral intake: the stage change every receiver produces, and how it is queued.

A stage change is identified by a change key, unique per CRM, as the SPEC defines it:
HubSpot's `objectId` + `propertyValue` + `occurredAt`; a Salesforce outbound message's
notification `Id`; the JSON receiver's `eventId`. A deal found sitting in a stage (the
sweep) is keyed by deal, stage and when it entered, which for HubSpot is the webhook's
own key, so a late webhook and a sweep are the same change.

The web process imports this module and never the worker side: the intake job is queued
by its dotted name, which the worker resolves.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import redis
from rq import Retry

from bridge.deal_ids import canonical_deal_id
from bridge.queue import Enqueuer, HandoffQueue, job_id

INTAKE_JOB = "bridge.jobs.handle_stage_changes"
# Changes one intake job records together: a webhook delivery's worth (HubSpot sends up to
# 100 events). One job per change cost a burst a queue hop and a ledger commit per deal,
# which held up its first API call by seconds.
CHANGES_PER_JOB = 100
# Recording a stage change only needs our own ledger; if that is down, try again for
# about an hour (the CRMs' redeliveries, which requeue a failed job, go on for a day).
INTAKE_RETRY = Retry(max=8, interval=[5, 15, 30, 60, 120, 300, 600, 1200])
MAX_KEY_LENGTH = 255  # the ledger column; longer keys keep a readable head and a digest
# Changes the ledger found recorded already (redelivered past the queue's de-duplication),
# per CRM: the one outcome of a change the ledger does not keep, so /metrics reads it here.
DUPLICATES_KEY = "fullkit:metrics:duplicate_changes"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS = dt.timedelta(milliseconds=1)


def epoch_ms(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // _ONE_MS


def from_epoch_ms(ms: int) -> dt.datetime:
    # Integer arithmetic: a float timestamp could land a microsecond off and miss the key.
    return _EPOCH + ms * _ONE_MS


@dataclass(frozen=True)
class StageChange:
    """A deal entering a stage, as any receiver (or the sweep) hands it to the ledger."""

    crm: str
    deal_id: str  # canonical (see bridge.deal_ids)
    stage_ref: str  # the stage as the CRM names it
    occurred_at: dt.datetime  # timezone-aware: compared with ledger times
    change_key: str  # unique per CRM: the same change delivered twice has the same key
    event_ref: str | None = None  # the delivery that brought it, for the record

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None:
            raise ValueError("a stage change needs a timezone-aware time")
        if len(self.change_key) > MAX_KEY_LENGTH:
            raise ValueError(f"change key longer than {MAX_KEY_LENGTH} characters")

    @property
    def job_key(self) -> str:
        """The intake job's id: a redelivery while the first is queued is a no-op."""
        return job_id(self.crm, self.change_key)

    def job_args(self) -> tuple[str, str, str, str, str, str]:
        """Arguments of the intake job: plain strings, so queue data stays readable."""
        return (
            self.crm, self.deal_id, self.stage_ref, self.occurred_at.isoformat(),
            self.event_ref or "", self.change_key,
        )  # fmt: skip

    @classmethod
    def from_job_args(
        cls,
        crm: str,
        deal_id: str,
        stage_ref: str,
        occurred_at: int | str,
        event_ref: str | None,
        change_key: str | None = None,
    ) -> StageChange:
        """The change a queued intake job carries, including jobs queued before change keys.

        Those carried `occurredAt` in epoch milliseconds and no key; their key is the one
        the migration gave their recorded changes, so a redelivery stays a duplicate.
        """
        if isinstance(occurred_at, int):
            moment = from_epoch_ms(occurred_at)
        else:
            moment = dt.datetime.fromisoformat(occurred_at)
        key = change_key or entry_key(deal_id, stage_ref, moment)
        return cls(crm, deal_id, stage_ref, moment, key, event_ref or None)


def entry_key(deal_id: str, stage_ref: str, occurred_at: dt.datetime) -> str:
    """Key of a deal entering a stage at a moment (milliseconds, as the CRMs date them)."""
    return bounded(f"{deal_id}:{stage_ref}:{epoch_ms(occurred_at)}")


def bounded(key: str) -> str:
    if len(key) <= MAX_KEY_LENGTH:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{key[: MAX_KEY_LENGTH - len(digest) - 1]}#{digest}"


def hubspot_change(object_id: int, stage: str, occurred_at_ms: int, event_id: int) -> StageChange:
    """A HubSpot `dealstage` event: keyed by `objectId`, `propertyValue` and `occurredAt`."""
    deal_id = canonical_deal_id("hubspot", str(object_id))
    moment = from_epoch_ms(occurred_at_ms)
    key = entry_key(deal_id, stage, moment)
    return StageChange("hubspot", deal_id, stage, moment, key, f"hubspot-event:{event_id}")


def observed_change(
    crm: str, deal_id: str, stage: str, entered_at: dt.datetime, event_ref: str
) -> StageChange:
    """A deal found in a stage (no event brought it), dated when it entered the stage.

    Dated to the millisecond, as a webhook would have dated it, so both give one key.
    """
    canonical = canonical_deal_id(crm, deal_id)
    moment = from_epoch_ms(epoch_ms(entered_at))
    return StageChange(
        crm, canonical, stage, moment, entry_key(canonical, stage, moment), event_ref
    )


def salesforce_notification_key(notification_id: str) -> str:
    """An outbound message's notification: Salesforce redelivers it under the same `Id`."""
    return bounded(f"notification:{notification_id}")


def salesforce_event_key(event_id: str) -> str:
    """A JSON call from a Flow or Apex: its sender's `eventId` names the change."""
    return bounded(f"event:{event_id}")


def queue_changes(queue: Enqueuer, changes: Iterable[StageChange]) -> int:
    """Queue the changes, one intake job per CRM and up to CHANGES_PER_JOB of them; returns
    how many changes were new to the queue.

    A job's id is its changes' keys: a redelivery while the first is queued is a no-op, and
    a change that arrives again in another delivery is a duplicate the ledger recognises.
    Raises QueueUnavailable when the queue cannot be reached.
    """
    by_crm: dict[str, list[StageChange]] = {}
    for change in changes:
        by_crm.setdefault(change.crm, []).append(change)
    parts = [
        of_crm[start : start + CHANGES_PER_JOB]
        for of_crm in by_crm.values()
        for start in range(0, len(of_crm), CHANGES_PER_JOB)
    ]
    calls = [
        HandoffQueue.call(
            INTAKE_JOB, intake_job_key(part), [c.job_args() for c in part], retry=INTAKE_RETRY
        )
        for part in parts
    ]
    # One round trip for the whole batch (see HandoffQueue.enqueue_unique_many).
    queued = queue.enqueue_unique_many(calls)
    return sum(len(part) for part, new in zip(parts, queued, strict=True) if new)


def intake_job_key(changes: Sequence[StageChange]) -> str:
    """The id of the intake job of these changes (of one CRM); one change's is its job_key."""
    return job_id(changes[0].crm, *sorted(change.change_key for change in changes))


def count_duplicates(connection: redis.Redis, by_crm: Mapping[str, int]) -> None:
    """Add an intake job's duplicates (one round trip for the job, not one per change)."""
    counted = {crm: n for crm, n in by_crm.items() if n}
    if not counted:
        return
    pipe = connection.pipeline(transaction=False)
    for crm, n in counted.items():
        pipe.hincrby(DUPLICATES_KEY, crm, n)
    pipe.execute()


def duplicates(connection: redis.Redis) -> dict[str, int]:
    raw: dict[bytes, bytes] = connection.hgetall(DUPLICATES_KEY)  # type: ignore[assignment]
    return {crm.decode(): int(n) for crm, n in raw.items() if n.isdigit()}
