"""stored decisions: one per judged attempt, with the packet it judged

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

attempts = sa.table(
    "attempts",
    sa.column("id", sa.Integer()),
    sa.column("kit_id", sa.String()),
    sa.column("state", sa.String()),
    sa.column("owner_since", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
    sa.column("findings", sa.JSON()),
    sa.column("owner_ref", sa.String()),
    sa.column("return_stage_ref", sa.String()),
)


def upgrade() -> None:
    decisions = op.create_table(
        "decisions",
        sa.Column("attempt_id", sa.Integer(), nullable=False),
        sa.Column("kit_id", sa.String(length=200), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("judged_on", sa.Date(), nullable=False),
        sa.Column("owner_ref", sa.String(length=100), nullable=True),
        sa.Column("company_ref", sa.String(length=100), nullable=True),
        sa.Column("deal_url", sa.Text(), nullable=True),
        sa.Column("return_stage_ref", sa.String(length=100), nullable=True),
        sa.Column("applied", sa.JSON(), nullable=True),
        sa.Column("snapshot", sa.JSON(), nullable=True),
        sa.Column("digest", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["attempt_id"], ["attempts.id"]),
        sa.PrimaryKeyConstraint("attempt_id"),
    )
    _backfill(decisions)
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_column("owner_ref")
        batch_op.drop_column("return_stage_ref")


def _backfill(decisions: sa.Table) -> None:
    """Attempts judged before this revision keep what their columns said.

    They carry no snapshot: an attempt still waiting for its ticket then reads the
    deal once more, as it did before decisions were stored.
    """
    bind = op.get_bind()
    rows = bind.execute(sa.select(attempts).where(attempts.c.kit_id.is_not(None))).all()
    now = dt.datetime.now(dt.UTC)
    values = []
    for row in rows:
        findings = row.findings or []
        # Acceptance starts ops' ownership; a push-back is judged where the row last moved.
        judged_at = row.updated_at if findings else row.owner_since
        values.append(
            {
                "attempt_id": row.id,
                "kit_id": row.kit_id,
                "outcome": "returned" if findings else "accepted",
                "findings": findings,
                "judged_on": (judged_at or now).date(),
                "owner_ref": row.owner_ref,
                "company_ref": None,
                "deal_url": None,
                "return_stage_ref": row.return_stage_ref,
                "applied": None,
                "snapshot": None,
                "digest": None,
                "created_at": now,
            }
        )
    if values:
        op.bulk_insert(decisions, values)


def downgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("return_stage_ref", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("owner_ref", sa.String(length=100), nullable=True))
    decisions = sa.table(
        "decisions",
        sa.column("attempt_id", sa.Integer()),
        sa.column("owner_ref", sa.String()),
        sa.column("return_stage_ref", sa.String()),
    )
    for attempt_id, owner_ref, return_stage_ref in op.get_bind().execute(
        sa.select(decisions.c.attempt_id, decisions.c.owner_ref, decisions.c.return_stage_ref)
    ):
        op.execute(
            attempts.update()
            .where(attempts.c.id == attempt_id)
            .values(owner_ref=owner_ref, return_stage_ref=return_stage_ref)
        )
    op.drop_table("decisions")
