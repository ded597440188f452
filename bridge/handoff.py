"""One hand-off attempt, step by step, each step written to the ledger before the next.

A step that talks to a CRM is idempotent or guarded, so running an attempt again after
a crash, a retry or on a second worker finishes it without a second task or ticket.
Evaluation reads the deal once and stores a decision with the packet it judged; every
later step acts on that decision, so what ops and sales are told is what was judged.

Steps take a list of attempts and make one connector call per list (connectors take
collections keyed by id), so the batching job advances up to a hundred attempts at the
price of one. What fails for one item (a deal the CRM lacks, an ops owner who is no
user, a per-item error in a 207 answer) sets that attempt aside with its error and the
others go on; an error of a whole call (429, 5xx, a refused token) sets aside every
attempt of that step. The job layer then retries or fails each attempt set aside.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar, cast

from sqlalchemy.orm import Session

from bridge import ledger
from bridge.evaluator import LimitExceeded, applicable, evaluate, needs, select_kit
from bridge.kickoff import expected_kickoff
from bridge.models import Attempt
from bridge.rules import Kit, packet_from_json
from bridge.runtime import Runtime
from bridge.summary import ticket_subject, ticket_summary
from kernel.connector import Acceptance, KitItem, OpsRequest, OpsResult, PushBack
from kernel.decision import Decision
from kernel.errors import ConnectorError, PartialFailure, PermanentError
from kernel.packet import Packet

Step = Callable[[list[Attempt]], None]
_Made = TypeVar("_Made")


@dataclass
class Handoffs:
    runtime: Runtime
    session: Session
    attempts: list[Attempt]
    # Attempts a step could not advance (by id), with why: the job layer's to handle.
    failures: dict[int, ConnectorError] = field(default_factory=dict)

    def run(self) -> None:
        """Advance every attempt until each is terminal or set aside with an error."""
        while True:
            groups = self._next_steps()
            if not groups:
                return
            for step, attempts in groups:
                try:
                    step(attempts)
                except ConnectorError as exc:
                    # The whole call failed: what the step did not commit is undone, and
                    # every attempt it was carrying waits for the same retry or failure.
                    self.session.rollback()
                    for attempt in attempts:
                        self._set_aside(attempt, exc)
                    continue
                for attempt in attempts:
                    if self._aside(attempt):
                        continue
                    # Each step gets its own retry window and backoff from the start.
                    attempt.next_run_at = None
                    attempt.first_retry_at = None
                    attempt.retries = 0
                    if attempt.state in ledger.TERMINAL:
                        attempt.error = None  # a retried step that finally worked leaves none
                self.session.commit()

    def _set_aside(self, attempt: Attempt, error: ConnectorError) -> None:
        self.failures.setdefault(attempt.id, error)

    def _aside(self, attempt: Attempt) -> bool:
        return attempt.id in self.failures

    def _next_steps(self) -> list[tuple[Step, list[Attempt]]]:
        """The attempts still in progress, grouped by the step each takes next."""
        groups: dict[Step, list[Attempt]] = {}
        for attempt in self.attempts:
            if self._aside(attempt):
                continue
            if attempt.state == "received":
                groups.setdefault(self._start, []).append(attempt)
            elif attempt.state == "evaluating":
                # `evaluating` runs twice for a push-back: once to judge, once to write the
                # judgement back. The stored decision tells the two apart.
                step = self._evaluate if attempt.decision is None else self._write_back
                groups.setdefault(step, []).append(attempt)
            elif attempt.state == "accepted":
                groups.setdefault(self._write_back, []).append(attempt)
        return list(groups.items())

    def _start(self, attempts: list[Attempt]) -> None:
        for attempt in attempts:
            ledger.move(attempt, "evaluating")

    # --- judging ---------------------------------------------------------------------

    def _evaluate(self, attempts: list[Attempt]) -> None:
        for crm, of_crm in _by_crm(attempts).items():
            kits = {attempt.id: self._kits_for_trigger(attempt) for attempt in of_crm}
            connector = self.runtime.crm(crm)
            packets = connector.fetch_packets([attempt.deal_id for attempt in of_crm])
            today = ledger.utcnow().date()
            connector.fill_attachments(
                [
                    packet
                    for attempt in of_crm
                    if (packet := packets.get(attempt.deal_id)) is not None
                    and needs("attachments", kits[attempt.id], packet, today)
                ]
            )
            complete: dict[str, list[tuple[Attempt, Kit, Packet]]] = {}
            for attempt in of_crm:
                packet = packets.get(attempt.deal_id)
                if packet is None:
                    self._set_aside(
                        attempt, PermanentError(f"the CRM has no deal {attempt.deal_id}")
                    )
                    continue
                try:
                    kit = self._judge(attempt, kits[attempt.id], packet)
                except PermanentError as exc:
                    self._set_aside(attempt, exc)
                    continue
                if kit is not None:
                    complete.setdefault(kit.id, []).append((attempt, kit, packet))
            for accepted in complete.values():
                self._accept(accepted)

    def _judge(self, attempt: Attempt, kits: list[Kit], packet: Packet) -> Kit | None:
        """Store the decision; the kit when the deal is complete and ops must accept it."""
        today = ledger.utcnow().date()
        try:
            kit = select_kit(kits, packet, today)
        except LimitExceeded as exc:
            raise PermanentError(f"no kit could be chosen for this deal: {exc}") from None
        if kit is None:
            ledger.move(attempt, "no_kit", "no kit applies to this deal")
            ledger.record_no_kit(attempt, packet, today)
            return None
        findings = evaluate(kit, packet, today)
        decision = Decision.judged(
            kit.id,
            packet,
            findings,
            applied=[req.id for req in applicable(kit, packet, today)],
            judged_on=today,
            return_stage_ref=self._return_stage(attempt, kit, packet) if findings else None,
        )
        ledger.record_decision(attempt, decision)
        if findings:
            attempt.updated_at = ledger.utcnow()
            return None
        return kit

    def _fetch(self, crm: str, deal_ids: list[str], *, with_attachments: bool) -> dict[str, Packet]:
        packets = self.runtime.crm(crm).fetch_packets(deal_ids, with_attachments=with_attachments)
        unknown = [deal_id for deal_id in deal_ids if deal_id not in packets]
        if unknown:
            raise PermanentError(f"the CRM has no deal {', '.join(unknown)}")
        return packets

    def _kits_for_trigger(self, attempt: Attempt) -> list[Kit]:
        return self.runtime.rules.kits_entered(attempt.crm, attempt.trigger_stage)

    def _return_stage(self, attempt: Attempt, kit: Kit, packet: Packet) -> str:
        mapping = self.runtime.rules.mappings[attempt.crm]
        if kit.return_stage:
            return mapping.stage_ref(kit.return_stage)
        if packet.previous_stage_ref:
            return packet.previous_stage_ref
        raise PermanentError("the deal has no earlier stage to return to and the kit sets none")

    def _accept(self, accepted: list[tuple[Attempt, Kit, Packet]]) -> None:
        """Ops accepts these complete deals of one kit, each with its next ops owner."""
        kit = accepted[0][1]
        owners = ledger.next_ops_owners(self.session, kit.id, kit.ops.owners, len(accepted))
        for (attempt, _, packet), owner in zip(accepted, owners, strict=True):
            attempt.ops_target = kit.ops.target
            attempt.ops_owner = owner
            ledger.move(attempt, "accepted", f"kit {kit.id} complete")
            attempt.expected_kickoff = expected_kickoff(
                attempt.owner_since.date(),
                kit.ops.kickoff_within_days,
                packet.deal.get("kickoff_date"),
            )

    # --- acting on the decision ------------------------------------------------------

    def _write_back(self, attempts: list[Attempt]) -> None:
        """Tasks for the push-backs, tickets for the acceptances, then every deal of the
        batch written back in one call."""
        pushbacks = self._carried(
            self._make_tasks, [a for a in attempts if a.state == "evaluating"]
        )
        acceptances = self._carried(
            self._open_ops_tickets, [a for a in attempts if a.state == "accepted"]
        )
        live = [a for a in attempts if a.id in pushbacks or a.id in acceptances]
        for crm, of_crm in _by_crm(live).items():
            try:
                self.runtime.crm(crm).write_outcomes(
                    [pushbacks[a.id] for a in of_crm if a.id in pushbacks],
                    [acceptances[a.id] for a in of_crm if a.id in acceptances],
                )
            except PartialFailure as partial:
                self._set_aside_by(of_crm, partial, key=_deal_key)
            for attempt in of_crm:
                if self._aside(attempt):
                    continue
                if attempt.id in pushbacks:
                    count = len(pushbacks[attempt.id].missing)
                    detail = f"{count} item{'s' if count != 1 else ''} missing"
                    ledger.move(attempt, "returned", detail)
                else:
                    ledger.move(attempt, "ops_created", f"ops ticket {attempt.ops_ref}")

    def _carried(
        self, make: Callable[[list[Attempt]], dict[int, _Made]], attempts: list[Attempt]
    ) -> dict[int, _Made]:
        """One kind of write (tasks, or tickets) whose whole call failed sets aside only
        the attempts it carried: the other kind still goes out in this batch."""
        if not attempts:
            return {}
        try:
            return make(attempts)
        except ConnectorError as exc:
            self.session.rollback()  # what the failed call began; earlier commits stand
            for attempt in attempts:
                self._set_aside(attempt, exc)
            return {}

    def _make_tasks(self, attempts: list[Attempt]) -> dict[int, PushBack]:
        """The push-back of each attempt whose task exists, by attempt id."""
        items: dict[int, PushBack] = {}
        now = ledger.utcnow()
        for attempt in attempts:
            try:
                decision = _decision(attempt)
                items[attempt.id] = PushBack.of(attempt.handoff_id, attempt.deal_id, decision, now)
            except PermanentError as exc:
                self._set_aside(attempt, exc)
        untasked = [a for a in attempts if not self._aside(a) and a.task_ref is None]
        if untasked:
            # A retry after a crash looks for the tasks the first try may have made.
            may_exist = any(attempt.task_started for attempt in untasked)
            for attempt in untasked:
                attempt.task_started = True
            self.session.commit()
            for crm, of_crm in _by_crm(untasked).items():
                try:
                    tasks = self.runtime.crm(crm).create_return_tasks(
                        [items[attempt.id] for attempt in of_crm], may_exist=may_exist
                    )
                except PartialFailure as partial:
                    tasks = cast(dict[str, str], partial.done or {})
                    self._set_aside_by(of_crm, partial, key=_handoff_key)
                for attempt in of_crm:
                    if attempt.handoff_id in tasks:
                        attempt.task_ref = tasks[attempt.handoff_id]
            self.session.commit()
        return {a.id: items[a.id] for a in attempts if not self._aside(a)}

    def _set_aside_by(
        self, attempts: list[Attempt], partial: PartialFailure, *, key: Callable[[Attempt], str]
    ) -> None:
        for attempt in attempts:
            error = partial.failed.get(key(attempt))
            if error is not None:
                self._set_aside(attempt, error)

    def _open_ops_tickets(self, attempts: list[Attempt]) -> dict[int, Acceptance]:
        """The acceptance of each attempt whose ticket exists, by attempt id."""
        kickoffs: dict[int, dt.date] = {}
        for attempt in attempts:
            try:
                kickoffs[attempt.id] = attempt.expected_kickoff or _decision(attempt).judged_on
            except PermanentError as exc:
                self._set_aside(attempt, exc)
        unticketed = [a for a in attempts if not self._aside(a) and a.ops_ref is None]
        by_target: dict[str, list[OpsRequest]] = {}
        carried: dict[str, list[Attempt]] = {}
        for attempt in unticketed:
            try:
                kit = self._kit(_decision(attempt))
                request = self._ops_request(attempt, kit, kickoffs[attempt.id])
            except PermanentError as exc:
                self._set_aside(attempt, exc)
                continue
            target = attempt.ops_target or kit.ops.target
            by_target.setdefault(target, []).append(request)
            carried.setdefault(target, []).append(attempt)
        results: dict[str, OpsResult] = {}
        # A retry after a crash asks the ops tool for what the first try may have made.
        may_exist = {
            target: any(attempt.ops_started for attempt in of_target)
            for target, of_target in carried.items()
        }
        # The intent is recorded before the create for tools with no unique key; where the
        # tool refuses a second record with the same hand-off id, the create itself is the
        # guard, and the commit would only delay the ticket.
        intents = [
            attempt
            for target, of_target in carried.items()
            if not self.runtime.target(target).unique_handoff_key
            for attempt in of_target
            if not attempt.ops_started
        ]
        if intents:
            for attempt in intents:
                attempt.ops_started = True
            self.session.commit()
        for target, requests in by_target.items():
            try:
                results.update(
                    self.runtime.target(target).create(requests, may_exist=may_exist[target])
                )
            except PartialFailure as partial:
                results.update(cast(dict[str, OpsResult], partial.done or {}))
                self._set_aside_by(unticketed, partial, key=_handoff_key)
            except ConnectorError as exc:
                # One tool down sets aside its own attempts only: the tickets other tools
                # made in this batch are kept, and their attempts go on.
                for attempt in carried[target]:
                    self._set_aside(attempt, exc)
        for attempt in unticketed:
            result = results.get(attempt.handoff_id)
            if result is not None:
                attempt.ops_ref, attempt.ops_link = result.ref, result.link
        if unticketed:
            self.session.commit()
        return {
            attempt.id: Acceptance(
                handoff_id=attempt.handoff_id,
                deal_id=attempt.deal_id,
                ops_owner_email=attempt.ops_owner,
                ops_link=attempt.ops_link or "",
                expected_kickoff=kickoffs[attempt.id],
            )
            for attempt in attempts
            if not self._aside(attempt)
        }

    def _ops_request(self, attempt: Attempt, kit: Kit, kickoff: dt.date) -> OpsRequest:
        decision = _decision(attempt)
        packet = self._judged_packet(attempt, decision, kit)
        return OpsRequest(
            handoff_id=attempt.handoff_id,
            crm=attempt.crm,
            deal_id=attempt.deal_id,
            kit_id=kit.id,
            kit_title=kit.title,
            options=dict(kit.ops.options),
            owner_email=attempt.ops_owner,
            subject=ticket_subject(kit.title, packet),
            summary=ticket_summary(kit, packet, attempt.ops_owner, kickoff, decision.applied),
            expected_kickoff=kickoff,
            packet=packet,
            requirements=_kit_items(kit, decision),
            accepted_at=attempt.owner_since if attempt.owner == "ops" else None,
        )

    def _kit(self, decision: Decision) -> Kit:
        kit = self.runtime.rules.kit_by_id(decision.kit_id)
        if kit is None:
            raise PermanentError(f"kit {decision.kit_id} is no longer in the rules folder")
        return kit

    def _judged_packet(self, attempt: Attempt, decision: Decision, kit: Kit) -> Packet:
        """The packet the decision judged, as evaluation saw it."""
        if decision.snapshot is None:
            # Judged before decisions kept their packet (see migration 0003).
            fetched = self._fetch(
                attempt.crm, [attempt.deal_id], with_attachments=kit.uses("attachments")
            )
            return fetched[attempt.deal_id]
        try:
            packet = self.runtime.rules.packet_from_json(decision.snapshot)
        except ValueError:
            # The mapping changed since the judgement; the snapshot's JSON types will do
            # for a ticket's text.
            packet = packet_from_json(decision.snapshot)
        return replace(
            packet,
            owner_ref=decision.owner_ref,
            company_ref=decision.company_ref,
            url=decision.deal_url,
        )


def _kit_items(kit: Kit, decision: Decision) -> tuple[KitItem, ...]:
    applied = set(decision.applied) if decision.applied is not None else None
    return tuple(
        KitItem(req.id, req.message, applied is None or req.id in applied)
        for req in kit.requirements
    )


def _decision(attempt: Attempt) -> Decision:
    decision = ledger.decision_of(attempt)
    if decision is None:
        raise PermanentError(f"{attempt.handoff_id} has no stored decision to act on")
    return decision


def _handoff_key(attempt: Attempt) -> str:
    return attempt.handoff_id


def _deal_key(attempt: Attempt) -> str:
    return attempt.deal_id


def _by_crm(attempts: list[Attempt]) -> dict[str, list[Attempt]]:
    groups: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        groups.setdefault(attempt.crm, []).append(attempt)
    return groups
