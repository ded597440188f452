"""One hand-off attempt, step by step, each step written to the ledger before the next.

A step that talks to a CRM is idempotent or guarded, so running an attempt again after
a crash, a retry or on a second worker finishes it without a second task or ticket.
Evaluation reads the deal once and stores a decision with the packet it judged; every
later step acts on that decision, so what ops and sales are told is what was judged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from bridge import ledger
from bridge.decision import Decision
from bridge.evaluator import applicable, evaluate, select_kit
from bridge.kickoff import expected_kickoff
from bridge.models import Attempt
from bridge.packet import Packet
from bridge.rules import Kit, packet_from_json
from bridge.runtime import Runtime
from bridge.summary import ticket_subject, ticket_summary
from connectors.base import Acceptance, OpsRequest, PushBack
from connectors.errors import PermanentError


@dataclass
class Handoff:
    runtime: Runtime
    session: Session
    attempt: Attempt

    def run(self) -> None:
        """Advance the attempt until it reaches a terminal state (or a step raises)."""
        while self.attempt.state in ledger.IN_PROGRESS:
            step = {
                "received": self._start,
                "evaluating": self._evaluate_or_return,
                "accepted": self._open_ops_ticket,
            }[self.attempt.state]
            step()
            # Each step gets its own retry window and backoff from the start.
            self.attempt.next_run_at = None
            self.attempt.first_retry_at = None
            self.attempt.retries = 0
            if self.attempt.state in ledger.TERMINAL:
                self.attempt.error = None  # a retried step that finally worked leaves no error
            self.session.commit()

    def _start(self) -> None:
        ledger.move(self.attempt, "evaluating")

    def _evaluate_or_return(self) -> None:
        # `evaluating` runs twice for a push-back: once to judge, once to write the
        # judgement back. The stored decision tells the two apart.
        decision = ledger.decision_of(self.attempt)
        if decision is None:
            self._evaluate()
        else:
            self._push_back(decision)

    def _evaluate(self) -> None:
        kits = self._kits_for_trigger()
        packet = self._fetch(with_attachments=any(kit.uses("attachments") for kit in kits))
        today = ledger.utcnow().date()
        kit = select_kit(kits, packet, today)
        if kit is None:
            ledger.move(self.attempt, "no_kit", "no kit applies to this deal")
            return
        findings = evaluate(kit, packet, today)
        decision = Decision.judged(
            kit.id,
            packet,
            findings,
            applied=[req.id for req in applicable(kit, packet, today)],
            judged_on=today,
            return_stage_ref=self._return_stage(kit, packet) if findings else None,
        )
        ledger.record_decision(self.attempt, decision)
        if findings:
            self.attempt.updated_at = ledger.utcnow()
            return
        self._accept(kit, packet)

    def _fetch(self, *, with_attachments: bool) -> Packet:
        connector = self.runtime.crm(self.attempt.crm)
        packets = connector.fetch_packets([self.attempt.deal_id], with_attachments=with_attachments)
        if self.attempt.deal_id not in packets:
            raise PermanentError(f"the CRM has no deal {self.attempt.deal_id}")
        return packets[self.attempt.deal_id]

    def _kits_for_trigger(self) -> list[Kit]:
        """Only the kits whose hand-off stage is the one the deal entered."""
        mapping = self.runtime.rules.mappings[self.attempt.crm]
        entered = mapping.canonical_stage(self.attempt.trigger_stage)
        return [kit for kit in self.runtime.rules.kits if kit.handoff_stage == entered]

    def _return_stage(self, kit: Kit, packet: Packet) -> str:
        mapping = self.runtime.rules.mappings[self.attempt.crm]
        if kit.return_stage:
            return mapping.stage_ref(kit.return_stage)
        if packet.previous_stage_ref:
            return packet.previous_stage_ref
        raise PermanentError("the deal has no earlier stage to return to and the kit sets none")

    def _accept(self, kit: Kit, packet: Packet) -> None:
        self.attempt.ops_target = kit.ops.target
        self.attempt.ops_owner = ledger.next_ops_owner(self.session, kit.id, kit.ops.owners)
        ledger.move(self.attempt, "accepted", f"kit {kit.id} complete")
        self.attempt.expected_kickoff = expected_kickoff(
            self.attempt.owner_since.date(),
            kit.ops.kickoff_within_days,
            packet.deal.get("kickoff_date"),
        )

    def _push_back(self, decision: Decision) -> None:
        item = PushBack.of(self.attempt.handoff_id, self.attempt.deal_id, decision, ledger.utcnow())
        connector = self.runtime.crm(self.attempt.crm)
        if self.attempt.task_ref is None:
            may_exist = self.attempt.task_started
            self.attempt.task_started = True
            self.session.commit()
            tasks = connector.create_return_tasks([item], may_exist=may_exist)
            self.attempt.task_ref = tasks[item.handoff_id]
            self.session.commit()
        connector.write_returns([item])
        count = len(item.missing)
        ledger.move(self.attempt, "returned", f"{count} item{'s' if count != 1 else ''} missing")

    def _open_ops_ticket(self) -> None:
        decision = ledger.decision_of(self.attempt)
        if decision is None:
            raise PermanentError(f"{self.attempt.handoff_id} was accepted without a decision")
        kit = self._kit(decision)
        kickoff = self.attempt.expected_kickoff or decision.judged_on
        if self.attempt.ops_ref is None:
            packet = self._judged_packet(decision, kit)
            request = OpsRequest(
                handoff_id=self.attempt.handoff_id,
                crm=self.attempt.crm,
                deal_id=self.attempt.deal_id,
                kit_id=kit.id,
                kit_title=kit.title,
                options=dict(kit.ops.options),
                owner_email=self.attempt.ops_owner,
                subject=ticket_subject(kit.title, packet),
                summary=ticket_summary(
                    kit, packet, self.attempt.ops_owner, kickoff, checked=decision.applied
                ),
                expected_kickoff=kickoff,
                packet=packet,
            )
            target = self.runtime.target(self.attempt.ops_target or kit.ops.target)
            result = target.create([request])[request.handoff_id]
            self.attempt.ops_ref, self.attempt.ops_link = result.ref, result.link
            self.session.commit()
        acceptance = Acceptance(
            handoff_id=self.attempt.handoff_id,
            deal_id=self.attempt.deal_id,
            ops_owner_email=self.attempt.ops_owner,
            ops_link=self.attempt.ops_link or "",
            expected_kickoff=kickoff,
        )
        self.runtime.crm(self.attempt.crm).write_acceptances([acceptance])
        ledger.move(self.attempt, "ops_created", f"ops ticket {self.attempt.ops_ref}")

    def _kit(self, decision: Decision) -> Kit:
        kit = self.runtime.rules.kit_by_id(decision.kit_id)
        if kit is None:
            raise PermanentError(f"kit {decision.kit_id} is no longer in the rules folder")
        return kit

    def _judged_packet(self, decision: Decision, kit: Kit) -> Packet:
        """The packet the decision judged, as evaluation saw it."""
        if decision.snapshot is None:
            # Judged before decisions kept their packet (see migration `decision`).
            return self._fetch(with_attachments=kit.uses("attachments"))
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
