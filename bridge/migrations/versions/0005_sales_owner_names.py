"""sales owner names: a decision keeps the deal owner's email and name as the CRM gave them

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Older decisions keep null: the CRM id they hold is still shown where no name is known.
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_email", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("owner_name", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_column("owner_name")
        batch_op.drop_column("owner_email")
