"""Live validation from counts kept as outcomes are recorded (issue 13 follow-up).

``outcome_bins`` (all time) and ``outcome_day_bins`` (per UTC day of the prediction) hold, per
model version, group and risk bin, the outcomes' count, events and sums of p, p^2 and p*y; a
group is "" (every outcome) or one subgroup key of the prediction's stored label. Aggregating
1M outcome rows took ~1 s on PostgreSQL (sorting ~1M rows by label and bin); these tables are
~25k rows at that size (service/outcome_counts.py). Both are filled here from the outcomes
already recorded. An index on (model, version, risk bin) finds the outcomes in the bins next to
a tier threshold, the only ones whose flag a bin does not decide.

Revision ID: 0010
Revises: 0008
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def _sum_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("sum_p", sa.Float, nullable=False),
        sa.Column("sum_pp", sa.Float, nullable=False),
        sa.Column("sum_py", sa.Float, nullable=False),
    ]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # The index and the backfill are work, not waits: at 1M outcomes each takes longer
        # than the audit timeout the service's engines give a statement (this transaction).
        op.execute("SET LOCAL statement_timeout = 0")
    op.create_table(
        "outcome_bins",
        sa.Column("model_name", sa.String(64), primary_key=True),
        sa.Column("model_version", sa.String(32), primary_key=True),
        sa.Column("subgroup", sa.Text, primary_key=True),
        sa.Column("risk_bin", sa.Integer, primary_key=True),
        *_sum_columns(),
    )
    op.create_table(
        "outcome_day_bins",
        sa.Column("model_name", sa.String(64), primary_key=True),
        sa.Column("model_version", sa.String(32), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("subgroup", sa.Text, primary_key=True),
        sa.Column("risk_bin", sa.Integer, primary_key=True),
        *_sum_columns(),
    )
    op.create_index(
        "ix_outcomes_model_version_risk_bin",
        "outcomes",
        ["model_name", "model_version", "risk_bin"],
    )
    # The backfill, in SQL (Python took 93 s and 0.5 GB for 1M outcomes): the grouping of
    # service.outcome_counts.groups, written again here (a migration must keep doing what it
    # did when written): every outcome in "", and in each distinct part of its label with "=".
    columns = "model_name, model_version, day, subgroup, risk_bin, n, events, sum_p, sum_pp, sum_py"
    sums = (
        "count(*), sum(o.outcome), sum(o.probability), sum(o.probability * o.probability), "
        "sum(o.probability * o.outcome)"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"INSERT INTO outcome_day_bins ({columns}) "
            "SELECT o.model_name, o.model_version, "
            "CAST(o.predicted_at AT TIME ZONE 'UTC' AS DATE), "
            f"g.subgroup, o.risk_bin, {sums} FROM outcomes o CROSS JOIN LATERAL ("
            "SELECT '' AS subgroup UNION SELECT part "
            "FROM unnest(string_to_array(coalesce(o.subgroups, ''), ',')) AS part "
            "WHERE strpos(part, '=') > 0) g "
            "GROUP BY 1, 2, 3, 4, 5"
        )
    else:
        op.execute(
            "WITH RECURSIVE split(prediction_id, part, rest, seed) AS ("
            "SELECT prediction_id, '', coalesce(subgroups, '') || ',', 1 FROM outcomes "
            "UNION ALL SELECT prediction_id, substr(rest, 1, instr(rest, ',') - 1), "
            "substr(rest, instr(rest, ',') + 1), 0 FROM split WHERE rest <> ''), "
            "member AS (SELECT DISTINCT prediction_id, part FROM split "
            "WHERE seed = 1 OR instr(part, '=') > 0) "
            f"INSERT INTO outcome_day_bins ({columns}) "
            "SELECT o.model_name, o.model_version, date(o.predicted_at), m.part, o.risk_bin, "
            f"{sums} FROM member m JOIN outcomes o ON o.prediction_id = m.prediction_id "
            "GROUP BY o.model_name, o.model_version, date(o.predicted_at), m.part, o.risk_bin"
        )
    op.execute(
        "INSERT INTO outcome_bins (model_name, model_version, subgroup, risk_bin, n, events, "
        "sum_p, sum_pp, sum_py) SELECT model_name, model_version, subgroup, risk_bin, sum(n), "
        "sum(events), sum(sum_p), sum(sum_pp), sum(sum_py) FROM outcome_day_bins "
        "GROUP BY model_name, model_version, subgroup, risk_bin"
    )


def downgrade() -> None:
    op.drop_index("ix_outcomes_model_version_risk_bin", "outcomes")
    op.drop_table("outcome_day_bins")
    op.drop_table("outcome_bins")
