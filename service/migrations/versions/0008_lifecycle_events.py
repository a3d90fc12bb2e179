"""Model version lifecycle (issue 13 part 4): every change of a version's state (candidate,
shadow, approved, retired) with who, when, why and the evidence; append-only, the current state
is a version's latest event.

Revision ID: 0008
Revises: 0009 (committed on 0007 first: the ids are names, the chain is 0007, 0009, 0008)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lifecycle_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=False),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        # JSON: validation and local figures at the moment of the decision.
        sa.Column("evidence", sa.Text, nullable=False),
    )
    op.create_index("ix_lifecycle_events_model", "lifecycle_events", ["model_name", "id"])


def downgrade() -> None:
    op.drop_index("ix_lifecycle_events_model", "lifecycle_events")
    op.drop_table("lifecycle_events")
