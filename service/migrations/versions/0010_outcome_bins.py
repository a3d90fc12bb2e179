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

from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None

SUMS = ("n", "events", "sum_p", "sum_pp", "sum_py")
BATCH = 20_000


def _sum_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("sum_p", sa.Float, nullable=False),
        sa.Column("sum_pp", sa.Float, nullable=False),
        sa.Column("sum_py", sa.Float, nullable=False),
    ]


def _day(value: Any) -> date:
    # SQLite hands back the stored text; PostgreSQL an aware datetime.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.date() if value.tzinfo is None else value.astimezone(UTC).date()


def upgrade() -> None:
    totals = op.create_table(
        "outcome_bins",
        sa.Column("model_name", sa.String(64), primary_key=True),
        sa.Column("model_version", sa.String(32), primary_key=True),
        sa.Column("subgroup", sa.Text, primary_key=True),
        sa.Column("risk_bin", sa.Integer, primary_key=True),
        *_sum_columns(),
    )
    days = op.create_table(
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
    # The backfill: the same grouping as service.outcome_counts (copied: a migration must do
    # what it did when written, whatever that module becomes).
    by_total: dict[tuple[Any, ...], list[float]] = {}
    by_day: dict[tuple[Any, ...], list[float]] = {}
    rows = op.get_bind().execute(
        sa.text(
            "SELECT model_name, model_version, predicted_at, subgroups, risk_bin, outcome, "
            "probability FROM outcomes"
        )
    )
    for name, version, predicted_at, label, risk_bin, outcome, p in rows:
        delta = (1, outcome, p, p * p, p * outcome)
        day = _day(predicted_at)
        parts = sorted({part for part in (label or "").split(",") if "=" in part})
        for group in ["", *parts]:
            for store, key in (
                (by_total, (name, version, group, risk_bin)),
                (by_day, (name, version, day, group, risk_bin)),
            ):
                sums = store.setdefault(key, [0, 0, 0.0, 0.0, 0.0])
                for i, value in enumerate(delta):
                    sums[i] += value
    for table, store in ((totals, by_total), (days, by_day)):
        keys = [c.name for c in table.primary_key.columns]
        items = [
            {**dict(zip(keys, key, strict=True)), **dict(zip(SUMS, sums, strict=True))}
            for key, sums in sorted(store.items())
        ]
        for start in range(0, len(items), BATCH):
            op.bulk_insert(table, items[start : start + BATCH])


def downgrade() -> None:
    op.drop_index("ix_outcomes_model_version_risk_bin", "outcomes")
    op.drop_table("outcome_day_bins")
    op.drop_table("outcome_bins")
