"""Ledger tables (SQLAlchemy 2). The schema itself is managed by Alembic."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    pass


class Attempt(Base):
    """One hand-off attempt of one deal; its state says who owns the deal."""

    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("crm", "deal_id", "number", name="uq_attempt_number"),
        Index("ix_attempts_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    crm: Mapped[str] = mapped_column(String(20))
    deal_id: Mapped[str] = mapped_column(String(64))
    number: Mapped[int] = mapped_column(Integer)
    # kit_id and findings repeat the stored decision for the ledger's readers (status,
    # API); the steps after evaluation act on the decision itself.
    kit_id: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20))
    owner: Mapped[str] = mapped_column(String(10))
    owner_since: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    findings: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    # The stage change that started the attempt.
    trigger_stage: Mapped[str] = mapped_column(String(100))
    trigger_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ops_target: Mapped[str | None] = mapped_column(String(50))
    ops_owner: Mapped[str | None] = mapped_column(String(320))
    ops_ref: Mapped[str | None] = mapped_column(String(100))
    ops_link: Mapped[str | None] = mapped_column(Text)
    expected_kickoff: Mapped[dt.date | None] = mapped_column()
    task_ref: Mapped[str | None] = mapped_column(String(100))
    # Set before a CRM create whose answer we might never see (a crash): the retry
    # then looks for what the first try made instead of making a second one.
    task_started: Mapped[bool] = mapped_column(default=False)
    # The same intent for the ops ticket/project: set and committed before the target's
    # create, so a retry asks the ops tool for what the first try made (targets with no
    # unique key look it up by the hand-off id) instead of opening a second one.
    ops_started: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(Text)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    first_retry_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    next_run_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # Optimistic concurrency: a runner whose lease lapsed cannot overwrite a newer one.
    version: Mapped[int] = mapped_column(Integer)
    __mapper_args__ = {"version_id_col": version}

    transitions: Mapped[list[Transition]] = relationship(
        back_populates="attempt", order_by="Transition.id", cascade="all, delete-orphan"
    )
    # Loaded only when a step acts on it: the snapshot may hold hundreds of contacts.
    decision: Mapped[DecisionRecord | None] = relationship(
        back_populates="attempt", cascade="all, delete-orphan", lazy="select"
    )

    @property
    def handoff_id(self) -> str:
        return f"{self.crm}:{self.deal_id}:{self.number}"


class Transition(Base):
    __tablename__ = "transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("attempts.id"), index=True)
    state: Mapped[str] = mapped_column(String(20))
    owner: Mapped[str] = mapped_column(String(10))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    detail: Mapped[str | None] = mapped_column(Text)

    attempt: Mapped[Attempt] = relationship(back_populates="transitions")


class DecisionRecord(Base):
    """An attempt's stored decision (kernel.decision.Decision), one per attempt."""

    __tablename__ = "decisions"

    attempt_id: Mapped[int] = mapped_column(ForeignKey("attempts.id"), primary_key=True)
    kit_id: Mapped[str] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(20))
    findings: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    judged_on: Mapped[dt.date] = mapped_column(Date)
    owner_ref: Mapped[str | None] = mapped_column(String(100))
    # The owner's email and name as the CRM gave them at judgement (null on older rows).
    owner_email: Mapped[str | None] = mapped_column(String(320))
    owner_name: Mapped[str | None] = mapped_column(String(255))
    company_ref: Mapped[str | None] = mapped_column(String(100))
    deal_url: Mapped[str | None] = mapped_column(Text)
    return_stage_ref: Mapped[str | None] = mapped_column(String(100))
    applied: Mapped[list[str] | None] = mapped_column(JSON)
    snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    digest: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    attempt: Mapped[Attempt] = relationship(back_populates="decision")


class StageChange(Base):
    """Every hand-off-stage change that reached us, once, and what it led to."""

    __tablename__ = "stage_changes"
    __table_args__ = (
        UniqueConstraint("crm", "change_key", name="uq_stage_change_key"),
        Index("ix_stage_changes_deal", "crm", "deal_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    crm: Mapped[str] = mapped_column(String(20))
    # How the CRM names this change (see bridge.intake): a redelivery carries the same key.
    change_key: Mapped[str] = mapped_column(String(255))
    deal_id: Mapped[str] = mapped_column(String(64))
    stage_ref: Mapped[str] = mapped_column(String(100))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    event_ref: Mapped[str | None] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(30))
    attempt_id: Mapped[int | None] = mapped_column(ForeignKey("attempts.id"))


class RoundRobin(Base):
    """Where each kit's ops-owner rotation stands."""

    __tablename__ = "round_robin"

    kit_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    next_index: Mapped[int] = mapped_column(Integer, default=0)
