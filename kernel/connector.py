"""What every CRM connector and ops target offers the job layer.

Methods take and return collections keyed by id so one call can serve many deals
(batch endpoints take up to 100 ids); a single deal is a collection of one.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Mapping as MappingABC
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kernel.cache import SharedCache
from kernel.decision import Decision
from kernel.errors import ConnectorError, PartialFailure, PermanentError, Unsupported
from kernel.mapping import Mapping
from kernel.packet import Packet
from kernel.rate_budget import RateBudgets
from kernel.settings import Section, SharedSettings


@dataclass(frozen=True)
class PushBack:
    """Kit incomplete: send the deal back to sales."""

    handoff_id: str  # "<crm>:<deal id>:<attempt>", unique per attempt
    deal_id: str
    return_stage_ref: str  # the CRM's stage id/name to move the deal to
    missing: tuple[str, ...]  # requirement messages, kit order
    owner_ref: str | None  # the deal owner, who gets the task
    # When the kit was found incomplete. The task is due that same day, as the CRM's own
    # time zone counts days, so sales sees "due today" and not "overdue" or "tomorrow".
    returned_at: dt.datetime

    @classmethod
    def of(
        cls, handoff_id: str, deal_id: str, decision: Decision, returned_at: dt.datetime
    ) -> PushBack:
        """The push-back a stored decision calls for, whenever it is finally written."""
        if decision.return_stage_ref is None:
            raise PermanentError(f"{handoff_id}: the decision has no stage to return to")
        return cls(
            handoff_id=handoff_id,
            deal_id=deal_id,
            return_stage_ref=decision.return_stage_ref,
            missing=decision.missing,
            owner_ref=decision.owner_ref,
            returned_at=returned_at,
        )


@dataclass(frozen=True)
class Acceptance:
    """Kit complete: ops owns the deal; write back where the work now lives."""

    handoff_id: str
    deal_id: str
    ops_owner_email: str | None
    ops_link: str
    expected_kickoff: dt.date


@dataclass(frozen=True)
class KitItem:
    """One requirement of the accepted kit, for targets that list the kit as data."""

    id: str
    message: str
    # False: its `when` was false for this deal, so it was not required; True: it applied
    # and, the kit being complete, it is satisfied.
    applied: bool


@dataclass(frozen=True)
class OpsRequest:
    """Everything an ops target needs to open one onboarding ticket/project."""

    handoff_id: str
    crm: str
    deal_id: str
    kit_id: str
    kit_title: str
    options: dict[str, Any]  # the kit's target-specific `ops` keys
    owner_email: str | None
    # Plain text in which every CRM value is already inert (kernel.text): one line each,
    # no link. A target renders it for its own markup with `inert`, never raw.
    subject: str
    summary: str  # the whole kit, one item a line, so ops never has to open the deal
    expected_kickoff: dt.date
    packet: Packet
    # The kit's requirements in kit order, and when ops took the deal over: the same
    # facts `summary` tells in words, for targets that send data (a webhook document).
    requirements: tuple[KitItem, ...] = ()
    accepted_at: dt.datetime | None = None


@dataclass(frozen=True)
class OpsResult:
    ref: str  # the ticket/project id in the ops tool
    link: str  # its URL in the ops tool's UI
    # Who owns it in the ops tool as the tool reports it (an email, an account id); None
    # when the tool assigns no one or does not say.
    owner: str | None = None


@dataclass(frozen=True)
class StageEntry:
    """A deal found sitting in a stage, and when it entered it: a stage change, as of now."""

    deal_id: str
    stage_ref: str
    entered_at: dt.datetime


class CrmConnector(ABC):
    name: ClassVar[str]
    # Its own settings (its own environment prefix), read from the process's settings.
    settings_class: ClassVar[type[Section] | None] = None

    # The runtime hands every connector its process's shared rate budgets; None: unpaced
    # (one-off commands, tests of a single call).
    rate_budgets: RateBudgets | None = None
    # Facts about the CRM account (its time zone, owner ids) shared by every process of
    # the runtime; None: the connector remembers them itself.
    cache: SharedCache | None = None

    def __init__(self, settings: SharedSettings, mapping: Mapping) -> None:
        self.settings = settings
        self.mapping = mapping

    def deals_in_stages(
        self, stage_refs: Sequence[str], entered_after: dt.datetime, entered_before: dt.datetime
    ) -> list[StageEntry]:
        """Deals now in one of these stages that entered it between the two moments.

        What `fullkit sweep` asks to find hand-offs whose webhook never arrived.
        """
        raise Unsupported(f"{self.name}: finding deals by stage is not supported yet")

    def prepare(self) -> None:
        """Learn, when a worker starts, what its first batch would otherwise stop to ask
        (e.g. the account's time zone). May raise; the worker logs it and goes on."""
        return None  # nothing to learn unless a connector says otherwise

    @abstractmethod
    def fetch_packets(
        self, deal_ids: Sequence[str], *, with_attachments: bool = False
    ) -> dict[str, Packet]:
        """Current packets; an id the CRM does not know is missing from the answer.

        Attachments cost extra calls, so they are read (into `packet.attachments`) only
        when asked for: when a kit that may judge the deal uses them.
        """

    def fill_attachments(self, packets: Sequence[Packet]) -> None:
        """Read the attachments of packets fetched without them, in one batch.

        The job layer reads them only for the deals whose kit needs them, after seeing
        the rest of each packet. This default reads those deals again with attachments.
        """
        if not packets:
            return
        fetched = self.fetch_packets([p.deal_id for p in packets], with_attachments=True)
        for packet in packets:
            found = fetched.get(packet.deal_id)
            packet.attachments = found.attachments if found is not None else []

    @abstractmethod
    def create_return_tasks(
        self, items: Sequence[PushBack], *, may_exist: bool = False
    ) -> dict[str, str]:
        """One task per item for the deal owner -> {handoff_id: task id}.

        With may_exist (a retry after a crash), a task already made for the same
        handoff_id is found and returned instead of creating a second one.
        """

    @abstractmethod
    def write_returns(self, items: Sequence[PushBack]) -> None:
        """Stage <- return stage, status `returned`, the missing items. Idempotent."""

    @abstractmethod
    def write_acceptances(self, items: Sequence[Acceptance]) -> None:
        """Status `accepted`, ops owner, link, expected kickoff; missing emptied. Idempotent."""

    def write_outcomes(
        self, returns: Sequence[PushBack], acceptances: Sequence[Acceptance]
    ) -> None:
        """Both kinds of write-back of a batch at once (a connector may make it one call).

        Deals the CRM refuses raise PartialFailure keyed by deal id; the rest are written.
        """
        failed: dict[str, ConnectorError] = {}
        try:
            if returns:
                self.write_returns(returns)
        except PartialFailure as partial:
            failed.update(partial.failed)
        try:
            if acceptances:
                self.write_acceptances(acceptances)
        except PartialFailure as partial:
            failed.update(partial.failed)
        if failed:
            raise PartialFailure(f"{self.name} write-back", failed)


class OpsTarget(ABC):
    """An ops tool that receives onboarding tickets/projects. Registered by name."""

    name: ClassVar[str]
    option_keys: ClassVar[frozenset[str]] = frozenset()
    settings_class: ClassVar[type[Section] | None] = None  # as for CrmConnector
    # The CRMs whose deals this target can take (a Case needs a Salesforce opportunity and
    # account, a HubSpot ticket a HubSpot deal); None: any CRM (e.g. a webhook). Rules
    # loading refuses a kit that pairs its CRM with a target that cannot serve it.
    crms: ClassVar[frozenset[str] | None] = None
    # True when the tool itself refuses a second record with the same hand-off id (a
    # unique property or an external-id upsert): the create is then its own guard, and no
    # intent needs recording before it.
    unique_handoff_key: ClassVar[bool] = False

    rate_budgets: RateBudgets | None = None  # as for CrmConnector
    cache: SharedCache | None = None  # as for CrmConnector

    def __init__(self, settings: SharedSettings) -> None:
        self.settings = settings

    @classmethod
    def validate_options(cls, options: MappingABC[str, Any]) -> list[str]:
        """Problems with a kit's target-specific `ops` keys, each '<key>: problem'."""
        return [
            f"{key}: unknown key for target {cls.name}"
            for key in options
            if key not in cls.option_keys
        ]

    @classmethod
    def serves(cls, crm: str) -> bool:
        return cls.crms is None or crm in cls.crms

    def prepare(self, owner_emails: Sequence[str]) -> None:
        """As CrmConnector.prepare, given the ops owners the kits name for this target."""
        return None

    def disabled(self, options: MappingABC[str, Any]) -> str | None:
        """Why this process cannot open tickets for a kit with these `ops` keys (its
        settings are unset), or None; `fullkit kit validate` says it for each kit."""
        if self.settings_class is None:
            return None
        return "; ".join(self.settings.section(self.settings_class).unset()) or None

    @abstractmethod
    def create(
        self, requests: Sequence[OpsRequest], *, may_exist: bool = False
    ) -> dict[str, OpsResult]:
        """Open one ticket per request -> {handoff_id: result}. Idempotent by handoff_id.

        With may_exist (a retry of a create whose answer may have been lost), what an
        earlier try made for the same handoff_id is found and returned instead of a second
        one. A tool with a unique key makes the create itself the guard and may ignore it;
        a tool without one must look up by the hand-off id before creating.
        """


@dataclass
class Registry:
    """Maps names to connector classes so adding one never touches the core."""

    crms: dict[str, type[CrmConnector]] = field(default_factory=dict)
    targets: dict[str, type[OpsTarget]] = field(default_factory=dict)
