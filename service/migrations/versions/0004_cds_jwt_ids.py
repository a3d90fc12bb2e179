"""CDS Hooks JWT ids seen, so a replayed token is refused by every worker (issue 12).

One row per accepted token: a sha256 of issuer and ``jti`` (bounded length whatever the EHR
sends; no claim value is stored readable) and when the token stops being acceptable, as epoch
seconds (one integer comparison on SQLite and PostgreSQL alike). Expired rows are purged by the
service (service/cds_hooks/security.py).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cds_jwt_ids",
        sa.Column("token_key", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_cds_jwt_ids_expires_at", "cds_jwt_ids", ["expires_at"])


def downgrade() -> None:
    op.drop_table("cds_jwt_ids")
