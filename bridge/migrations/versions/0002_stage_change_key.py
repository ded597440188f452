"""stage changes keyed by a CRM-neutral change key

Each recorded stage change gets the key its CRM names it by (see bridge.intake), unique
per CRM, in place of the HubSpot-shaped (deal, stage, time) constraint: a Salesforce
outbound message is named by its notification Id, a JSON call by its eventId.

Every change recorded before this revision came from HubSpot (webhook or sweep), keyed
by deal, stage and `occurredAt`; each gets exactly the key a redelivery of it carries
now, so a late redelivery is still recognised as a duplicate.

Downgrading restores the old constraint; it fails if two changes of one deal, stage and
time were recorded under different keys meanwhile (e.g. two Salesforce notifications).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_BATCH = 5000
_changes = sa.table(
    "stage_changes",
    sa.column("id", sa.Integer()),
    sa.column("deal_id", sa.String()),
    sa.column("stage_ref", sa.String()),
    sa.column("occurred_at", sa.DateTime(timezone=True)),
    sa.column("change_key", sa.String()),
)


def _key(deal_id: str, stage_ref: str, occurred_at: dt.datetime) -> str:
    """`bridge.intake.entry_key` as of this revision, copied: later edits there must not
    change what this migration writes."""
    if occurred_at.tzinfo is None:  # SQLite keeps the UTC time without its zone
        occurred_at = occurred_at.replace(tzinfo=dt.UTC)
    milliseconds = (occurred_at - _EPOCH) // dt.timedelta(milliseconds=1)
    return f"{deal_id}:{stage_ref}:{milliseconds}"


def _fill_keys() -> None:
    connection = op.get_bind()
    last_id = 0
    while True:
        rows = connection.execute(
            sa.select(
                _changes.c.id, _changes.c.deal_id, _changes.c.stage_ref, _changes.c.occurred_at
            )
            .where(_changes.c.id > last_id)
            .order_by(_changes.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        connection.execute(
            _changes.update()
            .where(_changes.c.id == sa.bindparam("row_id"))
            .values(change_key=sa.bindparam("key")),
            [
                {"row_id": row.id, "key": _key(row.deal_id, row.stage_ref, row.occurred_at)}
                for row in rows
            ],
        )
        last_id = rows[-1].id


def upgrade() -> None:
    with op.batch_alter_table("stage_changes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("change_key", sa.String(length=255), nullable=True))
    _fill_keys()
    with op.batch_alter_table("stage_changes", schema=None) as batch_op:
        batch_op.alter_column("change_key", existing_type=sa.String(length=255), nullable=False)
        batch_op.drop_constraint("uq_stage_change", type_="unique")
        batch_op.create_unique_constraint("uq_stage_change_key", ["crm", "change_key"])


def downgrade() -> None:
    with op.batch_alter_table("stage_changes", schema=None) as batch_op:
        batch_op.drop_constraint("uq_stage_change_key", type_="unique")
        batch_op.create_unique_constraint(
            "uq_stage_change", ["crm", "deal_id", "stage_ref", "occurred_at"]
        )
        batch_op.drop_column("change_key")
