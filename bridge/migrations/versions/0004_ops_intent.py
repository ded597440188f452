"""ops intent: an attempt records that its ops create began, before the call

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        # Attempts that already hold a ticket need no guard; one still waiting for its
        # ticket may have been created by a try whose answer was lost, so it looks first.
        batch_op.add_column(
            sa.Column("ops_started", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_column("ops_started")
