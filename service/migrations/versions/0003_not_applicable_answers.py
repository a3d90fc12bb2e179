"""Not-applicable answers are audited too (issue 14): a status column, no score for them.

A patient outside a model's intended population gets a typed "not_applicable" answer with no
probability or tier; it is still an answer given to a clinician, so it is recorded. Research
use scores such a patient and says so in the channel (e.g. ``single+research``), which needs
more than 16 characters for ``cds_hooks+research``.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch_alter_table: SQLite cannot ALTER a column's nullability in place (it copies the
    # table); on PostgreSQL it issues plain ALTER TABLE statements.
    with op.batch_alter_table("audit_records") as batch:
        batch.alter_column("probability", existing_type=sa.Float, nullable=True)
        batch.alter_column("tier", existing_type=sa.String(32), nullable=True)
        batch.alter_column(
            "channel", existing_type=sa.String(16), type_=sa.String(32), nullable=False
        )
        batch.add_column(
            sa.Column("status", sa.String(16), nullable=False, server_default="scored")
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_records") as batch:
        batch.drop_column("status")
        batch.alter_column(
            "channel", existing_type=sa.String(32), type_=sa.String(16), nullable=False
        )
        batch.alter_column("tier", existing_type=sa.String(32), nullable=False)
        batch.alter_column("probability", existing_type=sa.Float, nullable=False)
