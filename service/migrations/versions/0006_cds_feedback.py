"""CDS Hooks card feedback (issue 12): what the clinician did with each card.

One row per card uuid (feedback is idempotent per card: a repeated post is not a second row):
the service, accepted or overridden, the override reason (the coding the card offered) and the
clinician's comment, the suggestions accepted, when the EHR says it happened and when it was
received, and the caller (EHR issuer or API key name). The card uuid of a risk card is its
prediction id, so feedback joins the audit trail without storing any patient identifier.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cds_feedback",
        sa.Column("card_uuid", sa.String(128), primary_key=True),
        sa.Column("service_id", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason_system", sa.String(256), nullable=True),
        sa.Column("reason_code", sa.String(128), nullable=True),
        sa.Column("reason_display", sa.String(256), nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        # JSON list of the accepted suggestion uuids.
        sa.Column("accepted_suggestions", sa.Text, nullable=False),
        sa.Column("outcome_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("caller", sa.String(64), nullable=False),
    )
    op.create_index(
        "ix_cds_feedback_service_received", "cds_feedback", ["service_id", "received_at"]
    )


def downgrade() -> None:
    op.drop_table("cds_feedback")
