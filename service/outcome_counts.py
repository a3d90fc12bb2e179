"""Outcome counts per risk bin, kept beside the outcomes in the same transaction (issue 13
follow-up): live validation reads these instead of every outcome row.

Per model version, group and risk bin: ``n``, ``events`` and the sums of p, p^2 and p*y; once
over all time (``outcome_bins``) and once per UTC day of the prediction (``outcome_day_bins``,
for time windows). A group is :data:`ALL` (every outcome) or one subgroup key of the
prediction's stored label (``sex=female``): a report asks for a manifest subgroup by its key.
Counts per stored label (one per combination of levels) would be ~90k rows at 1M outcomes,
0.2-0.35 s just to fetch; per key they are ~25k (bench/monitoring.py).

A recorded outcome adds its prediction to its groups; a correction moves only ``events`` and
the p*y sum, by the new minus the superseded value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa

from service.audit import metadata

ALL = ""
"""The group of every outcome (a subgroup key always holds "=", so never a key)."""
SUMS = ("n", "events", "sum_p", "sum_pp", "sum_py")


def _sum_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("sum_p", sa.Float, nullable=False),
        sa.Column("sum_pp", sa.Float, nullable=False),
        sa.Column("sum_py", sa.Float, nullable=False),
    ]


outcome_bins = sa.Table(
    "outcome_bins",
    metadata,
    sa.Column("model_name", sa.String(64), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("subgroup", sa.Text, primary_key=True),
    sa.Column("risk_bin", sa.Integer, primary_key=True),
    *_sum_columns(),
)
outcome_day_bins = sa.Table(
    "outcome_day_bins",
    metadata,
    sa.Column("model_name", sa.String(64), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("subgroup", sa.Text, primary_key=True),
    sa.Column("risk_bin", sa.Integer, primary_key=True),
    *_sum_columns(),
)


def groups(label: str | None) -> list[str]:
    """:data:`ALL` and each subgroup key of a stored label (a label is the prediction's keys,
    comma-separated; live validation places a prediction in subgroup ``key`` when ``key`` is
    one of them)."""
    return [ALL, *sorted({part for part in (label or "").split(",") if "=" in part})]


def as_utc(moment: datetime) -> datetime:
    """A stored or given time in UTC (naive times are UTC, as the store keeps them)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def utc_day(moment: datetime) -> date:
    """The UTC day of a stored time."""
    return as_utc(moment).date()


@dataclass(frozen=True)
class Scored:
    """What an outcome's prediction contributes: its identity, time, score and label."""

    model_name: str
    model_version: str
    predicted_at: datetime
    probability: float
    subgroups: str | None
    risk_bin: int


def add(connection: sa.Connection, changes: Iterable[tuple[Scored, int | None, int]]) -> None:
    """Count each change of a prediction's outcome, ``(prediction, superseded or None, new)``,
    in the caller's transaction."""
    totals: dict[tuple[Any, ...], list[float]] = {}
    days: dict[tuple[Any, ...], list[float]] = {}
    labels: dict[str | None, list[str]] = {}  # a batch repeats few labels
    for s, old, new in changes:
        if old == new:
            continue
        first = 1 if old is None else 0
        moved = new - (old or 0)
        p = s.probability
        delta = (first, moved, p * first, p * p * first, p * moved)
        day = utc_day(s.predicted_at)
        if s.subgroups not in labels:
            labels[s.subgroups] = groups(s.subgroups)
        for group in labels[s.subgroups]:
            for store, key in (
                (totals, (s.model_name, s.model_version, group, s.risk_bin)),
                (days, (s.model_name, s.model_version, day, group, s.risk_bin)),
            ):
                sums = store.get(key)
                if sums is None:
                    store[key] = list(delta)
                else:
                    for i, value in enumerate(delta):
                        sums[i] += value
    _upsert(connection, outcome_bins, totals)
    _upsert(connection, outcome_day_bins, days)


# Column types of the arrays PostgreSQL unnests into rows (in table order).
_PG_TYPES = {
    "model_name": "text",
    "model_version": "text",
    "day": "date",
    "subgroup": "text",
    "risk_bin": "integer",
    "n": "bigint",
    "events": "bigint",
    "sum_p": "float8",
    "sum_pp": "float8",
    "sum_py": "float8",
}


def _upsert(
    connection: sa.Connection, table: sa.Table, rows: dict[tuple[Any, ...], list[float]]
) -> None:
    """Add ``rows`` (key -> sums) to ``table``. One statement of arrays on PostgreSQL and a
    driver-level executemany on SQLite: per-row parameter sets through SQLAlchemy cost ~45 us a
    row, which made recording 100k outcomes 2.8x slower (bench/monitoring.py)."""
    if not rows:
        return
    keys = [c.name for c in table.primary_key.columns]
    names = [*keys, *SUMS]
    # In key order: concurrent recorders then lock shared rows in one order (no deadlock).
    ordered = [(*key, *sums) for key, sums in sorted(rows.items())]
    update = ", ".join(f"{name} = {table.name}.{name} + excluded.{name}" for name in SUMS)
    conflict = f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {update}"
    if connection.dialect.name == "postgresql":
        # %b: arrays sent in binary (text arrays are quoted element by element: ~2x slower).
        arrays = ", ".join(f"%({name})b::{_PG_TYPES[name]}[]" for name in names)
        columns = list(zip(*ordered, strict=True))
        connection.exec_driver_sql(
            f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({arrays}) "
            + conflict,
            {name: list(values) for name, values in zip(names, columns, strict=True)},
        )
        return
    marks = ", ".join("?" * len(names))
    # NOTE: SQLite keeps a Date as ISO text (what SQLAlchemy's Date writes and reads).
    day = names.index("day") if "day" in names else -1
    connection.exec_driver_sql(
        f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks}) {conflict}",
        [tuple(v.isoformat() if i == day else v for i, v in enumerate(r)) for r in ordered],
    )


def read(
    connection: sa.Connection, name: str, version: str, days: tuple[date | None, date | None] | None
) -> list[Any]:
    """``(group, risk bin, n, events, sum_p, sum_pp, sum_py)`` of a model version, ordered:
    over all time (``days`` None) or over the UTC days ``[first, end)`` (None: unbounded)."""
    if days is None:
        t = outcome_bins
        query = sa.select(t.c.subgroup, t.c.risk_bin, *(t.c[s] for s in SUMS))
    else:
        t = outcome_day_bins
        query = sa.select(
            t.c.subgroup, t.c.risk_bin, *(sa.func.sum(t.c[s]) for s in SUMS)
        ).group_by(t.c.subgroup, t.c.risk_bin)
        if days[0] is not None:
            query = query.where(t.c.day >= days[0])
        if days[1] is not None:
            query = query.where(t.c.day < days[1])
    query = query.where(t.c.model_name == name, t.c.model_version == version).order_by(
        t.c.subgroup, t.c.risk_bin
    )
    return list(connection.execute(query).all())
