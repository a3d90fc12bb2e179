"""Observed outcomes of predictions, their correction history, and subgroup labels (issue 13).

``outcomes`` holds the current outcome of a prediction (one row per prediction id) with a copy
of the prediction's model, version, time, probability and subgroups;
``outcome_history`` every change to it: who, when, old and new value. ``audit_records.subgroups``
carries the manifest subgroups a patient's validated input placed them in when the prediction
was made (comma-separated keys such as ``sex=female``): the trail stores no feature values, so
live validation per subgroup needs the label stored then. Null for older records.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_records") as batch:
        batch.add_column(sa.Column("subgroups", sa.Text, nullable=True))
    # Live validation filters on model, version and time together.
    op.create_index(
        "ix_audit_records_model_version_created",
        "audit_records",
        ["model_name", "model_version", "created_at"],
    )
    op.create_table(
        "outcomes",
        sa.Column("prediction_id", sa.String(36), primary_key=True),
        sa.Column("outcome", sa.SmallInteger, nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(64), nullable=False),
        # The prediction's identity and score, copied from its (immutable) audit record: live
        # validation reads this table alone (a join of 1M text keys cost most of a second).
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("subgroups", sa.Text, nullable=True),
        # round(logit(probability) / 0.005): live validation aggregates by it (risk_bins.py).
        sa.Column("risk_bin", sa.Integer, nullable=False),
    )
    op.create_index(
        "ix_outcomes_model_version_predicted",
        "outcomes",
        ["model_name", "model_version", "predicted_at"],
    )
    op.create_table(
        "outcome_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("prediction_id", sa.String(36), nullable=False, index=True),
        sa.Column("old_outcome", sa.SmallInteger, nullable=True),
        sa.Column("new_outcome", sa.SmallInteger, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.String(64), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("outcome_history")
    op.drop_table("outcomes")
    op.drop_index("ix_audit_records_model_version_created", "audit_records")
    with op.batch_alter_table("audit_records") as batch:
        batch.drop_column("subgroups")
