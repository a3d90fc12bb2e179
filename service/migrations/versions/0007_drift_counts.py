"""Drift counters (issue 13 part 3): per model version, UTC day, feature and bin, how many
scored inputs fell there (and their summed predicted risk, for the tier and risk bins). No
input value is stored; workers add their counts to the same row.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_counts",
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        # A manifest feature name, or @risk / @risk_logit / @tier (service/drift.py).
        sa.Column("feature", sa.String(64), nullable=False),
        sa.Column("bin", sa.Integer, nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("sum_p", sa.Float, nullable=False),
        # The key the flush adds to (INSERT ... ON CONFLICT DO UPDATE); reports read a model
        # version's days in order, which is this key's prefix.
        sa.PrimaryKeyConstraint("model_name", "model_version", "day", "feature", "bin"),
    )


def downgrade() -> None:
    op.drop_table("drift_counts")
