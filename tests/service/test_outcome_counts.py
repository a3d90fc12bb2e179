"""Live validation from the kept outcome counts (migration 0010) gives the report aggregated from
the outcome rows themselves, on real predictions with real outcomes: the cvd model's held-out
Framingham rows scored through the API by the served version and a shadow version, spread over
several UTC days, outcomes recorded then corrected (and corrected back); every window kind
(all time, whole days, partial days at either end, inside one day, open ends, empty). Counts
must agree exactly, sums of probabilities to rounding. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import math
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

from models.manifest import Manifest
from service.app import create_app
from service.audit import Pseudonymizer, audit_records
from service.auth import create_key
from service.database import _alembic_config, make_engine
from service.monitoring import Binned, Window, direct, known_outcomes, report
from service.outcome_counts import Scored, add, outcome_bins, outcome_day_bins
from service.outcomes import OutcomeStore, outcomes
from service.settings import Settings
from tests.conftest import MODELS_DIR, SHIPPED_VERSION, Keys
from training.datasets import SHARED_DATA, load_framingham
from training.train import membership, split_test

SHADOW_VERSION = SHIPPED_VERSION
SERVED_VERSION = "{}.{}.{}".format(*SHIPPED_VERSION.split(".")[:2], 99)
DAYS = 4
"""The predictions are moved back over this many UTC days, at varied hours."""


@dataclass(frozen=True)
class Recorded:
    engine: sa.Engine
    manifests: dict[str, Manifest]
    start: datetime
    """Midnight (UTC) of the first day with predictions."""


def _models(tmp_path: Path) -> Path:
    """The shipped cvd artifact with subgroup membership, and an unsigned copy of it as a newer
    version (served by default; the shipped one goes into shadow beside it)."""
    root = tmp_path / "models"
    for version in (SHADOW_VERSION, SERVED_VERSION):
        target = root / "cvd" / version
        shutil.copytree(MODELS_DIR / "cvd" / SHIPPED_VERSION, target)
        manifest = json.loads((target / "manifest.json").read_text())
        manifest["version"] = version
        features = {f["name"] for f in manifest["features"]}
        for group in manifest["validation"]["subgroups"]:
            if not group.get("feature"):
                group.update(membership(group["factor"], group["level"], features))
        (target / "manifest.json").write_text(json.dumps(manifest))
        (target / "manifest.sig").unlink(missing_ok=True)
    return root


def _outcomes(client: TestClient, key: str, rows: list[dict[str, Any]]) -> None:
    answer = client.post(
        "/v1/outcomes", json={"outcomes": rows}, headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["rejected"] == []


@pytest.fixture
def recorded(tmp_path: Path, keys: Keys, database_url: str) -> Iterator[Recorded]:
    models_dir = _models(tmp_path)
    manifests = {
        v: Manifest.model_validate_json((models_dir / "cvd" / v / "manifest.json").read_text())
        for v in (SHADOW_VERSION, SERVED_VERSION)
    }
    split = manifests[SHADOW_VERSION].split
    assert split is not None
    data = load_framingham(SHARED_DATA / "framingham" / "framingham.csv")
    _, test = split_test(data, test_fraction=split.test_fraction, seed=split.seed)
    names = [f.name for f in manifests[SHADOW_VERSION].features]
    rows = [
        {k: (None if v != v else v) for k, v in row.items() if k in names}
        for row in data.features[test].to_dict("records")
    ]
    by_row = dict(enumerate(data.y[test].astype(int).tolist()))
    outcomes_key = create_key(keys.file, "registry", ["outcomes"])
    settings = Settings(
        models_dir=models_dir,
        database_url=database_url,
        api_keys_file=keys.file,
        pseudonym_key="test-pseudonym-key",
        allow_unsigned_models=True,
        max_batch_size=1000,
        max_body_bytes=4 * 1024 * 1024,
    )
    engine = make_engine(database_url)
    with TestClient(create_app(settings)) as client:
        shadow = client.post(
            f"/v1/models/cvd/versions/{SHADOW_VERSION}/lifecycle",
            json={"state": "shadow", "reason": "compared beside the served version"},
            headers=keys.header("admin"),
        )
        assert shadow.status_code == 200, shadow.text
        answer = client.post(
            "/v1/models/cvd/predict/batch",
            json={"items": [{"features": r} for r in rows]},
            headers=keys.header("batch"),
        )
        assert answer.status_code == 200, answer.text
        served = {
            r["result"]["prediction_id"]: i
            for i, r in enumerate(answer.json()["results"])
            if r["result"] and r["result"]["probability"] is not None
        }
        with engine.begin() as connection:
            audited = connection.execute(
                sa.select(
                    audit_records.c.prediction_id,
                    audit_records.c.model_version,
                    audit_records.c.input_sha256,
                ).where(audit_records.c.status == "scored", audit_records.c.model_name == "cvd")
            ).all()
            versions = {row[1] for row in audited}
            assert versions == {SHADOW_VERSION, SERVED_VERSION}, versions
            # Spread over UTC days at varied hours (before any outcome copies the time).
            start = (datetime.now(UTC) - timedelta(days=DAYS)).replace(
                hour=0, minute=0, second=0, microsecond=0
            )
            moved = [
                {"target": row[0], "created_at": start + timedelta(minutes=37 * i % (DAYS * 1440))}
                for i, row in enumerate(sorted(audited))
            ]
            connection.execute(
                audit_records.update()
                .where(audit_records.c.prediction_id == sa.bindparam("target"))
                .values(created_at=sa.bindparam("created_at")),
                moved,
            )
        # A shadow prediction scored the same input as a served one: the same real outcome.
        outcome_of_input = {row[2]: by_row[served[row[0]]] for row in audited if row[0] in served}
        truth = {row[0]: outcome_of_input[row[2]] for row in audited}
        everyone = sorted(truth)
        _outcomes(
            client, outcomes_key, [{"prediction_id": i, "outcome": truth[i]} for i in everyone]
        )
        # Corrections: a fifth flipped, then a third of those flipped back.
        flipped = everyone[::5]
        _outcomes(
            client, outcomes_key, [{"prediction_id": i, "outcome": 1 - truth[i]} for i in flipped]
        )
        _outcomes(
            client, outcomes_key, [{"prediction_id": i, "outcome": truth[i]} for i in flipped[::3]]
        )
        with engine.connect() as connection:
            corrected = connection.execute(
                sa.text("SELECT count(*) FROM outcome_history WHERE old_outcome IS NOT NULL")
            ).scalar()
        assert corrected == len(flipped) + len(flipped[::3])
    yield Recorded(engine, manifests, start)
    engine.dispose()


def _windows(start: datetime) -> list[Window]:
    day = timedelta(days=1)
    return [
        Window(),
        Window(start + day, start + 3 * day),  # whole days only
        Window(start + day + timedelta(hours=5), start + 3 * day + timedelta(hours=7)),
        Window(start + timedelta(hours=30)),  # partial first day, open end
        Window(None, start + 2 * day + timedelta(minutes=1)),  # open start, partial last day
        Window(start + timedelta(hours=2), start + timedelta(hours=9)),  # inside one day
        Window(start + 2 * day, start + 2 * day + timedelta(hours=3)),  # from a midnight
        Window(start + 30 * day),  # no outcome in it
        # Partial days read as whole days less the rest (the smaller part) at both ends, up to
        # the last day with outcomes.
        Window(start + day + timedelta(hours=3), start + 3 * day + timedelta(hours=20)),
        Window(start + timedelta(hours=11), start + (DAYS - 1) * day + timedelta(hours=22)),
    ]


def _same(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two reports differ: integers and text exactly, floats to rounding."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in _same(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} != {len(b)} items"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _same(x, y, f"{path}[{i}]")
        ]
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) else [f"{path}: {a} != {b}"]
    return [] if type(a) is type(b) and a == b else [f"{path}: {a!r} != {b!r}"]


def _binned_same(a: Binned, b: Binned) -> bool:
    keep_a, keep_b = a.n > 0, b.n > 0
    return (
        np.array_equal(a.bins[keep_a], b.bins[keep_b])
        and np.array_equal(a.n[keep_a], b.n[keep_b])
        and np.array_equal(a.events[keep_a], b.events[keep_b])
        and np.array_equal(a.flagged, b.flagged)
        and np.array_equal(a.true_positives, b.true_positives)
        and all(
            math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
            for x, y in ((a.sum_p, b.sum_p), (a.sum_pp, b.sum_pp), (a.sum_py, b.sum_py))
        )
    )


def _differences(recorded: Recorded) -> list[str]:
    out = []
    with recorded.engine.connect() as connection:
        for version, manifest in recorded.manifests.items():
            thresholds = [t.lower for t in manifest.tiers if t.lower > 0]
            for window in _windows(recorded.start):
                fast = report(connection, manifest, window, min_group=20)
                rows = report(connection, manifest, window, min_group=20, from_rows=True)
                out += [f"{version} {window}: {d}" for d in _same(fast, rows)]
                kept = known_outcomes(connection, manifest, window, thresholds)
                reference = direct(connection, manifest, window, thresholds)
                if kept.keys() != reference.keys():
                    out.append(f"{version} {window}: groups {sorted(kept)} != {sorted(reference)}")
                out += [
                    f"{version} {window}: group {g!r} differs"
                    for g in reference
                    if g in kept and not _binned_same(kept[g], reference[g])
                ]
    return out


def test_kept_counts_give_the_report_from_the_rows(recorded: Recorded) -> None:
    differences = _differences(recorded)

    assert differences == []
    with recorded.engine.connect() as connection:
        whole = report(connection, recorded.manifests[SERVED_VERSION], Window(), min_group=20)
        shadow = report(connection, recorded.manifests[SHADOW_VERSION], Window(), min_group=20)
        days = connection.execute(
            sa.select(sa.func.count(sa.distinct(outcome_day_bins.c.day)))
        ).scalar()
    # The comparison is not vacuous: real figures overall and in subgroups, for both versions,
    # with tier flags on both sides of the thresholds, on every day.
    for result in (whole, shadow):
        assert result["overall"]["outcomes_known"] > 500 and not result["overall"]["suppressed"]
        assert sum(not g["suppressed"] for g in result["subgroups"]) >= 4
        sensitivity = [t["sensitivity"]["value"] for t in result["overall"]["live"]["tiers"]]
        assert any(0 < s < 1 for s in sensitivity)
    assert days == DAYS


def test_a_correction_counted_as_a_new_outcome_is_caught(recorded: Recorded) -> None:
    # The error the kept counts must not make: a correction added without taking away the
    # superseded outcome (one more prediction with an outcome, in every group it is in).
    with recorded.engine.begin() as connection:
        row = connection.execute(
            sa.select(
                outcomes.c.model_name,
                outcomes.c.model_version,
                outcomes.c.predicted_at,
                outcomes.c.probability,
                outcomes.c.subgroups,
                outcomes.c.risk_bin,
                outcomes.c.outcome,
            ).where(outcomes.c.model_version == SERVED_VERSION)
        ).first()
        assert row is not None
        predicted_at = row[2] if row[2].tzinfo else row[2].replace(tzinfo=UTC)
        scored = Scored(row[0], row[1], predicted_at, row[3], row[4], row[5])
        add(connection, [(scored, None, 1 - int(row[6]))])

    differences = _differences(recorded)

    assert any(".overall.outcomes_known" in d for d in differences)
    assert all(d.startswith(SERVED_VERSION) for d in differences)


def test_the_migration_fills_the_counts_from_recorded_outcomes(recorded: Recorded) -> None:
    with recorded.engine.connect() as connection:
        kept = {
            t.name: connection.execute(sa.select(t)).all() for t in (outcome_bins, outcome_day_bins)
        }
    with recorded.engine.connect() as connection:
        config = _alembic_config(connection)
        command.downgrade(config, "0008")
        connection.commit()
        assert not sa.inspect(connection).has_table("outcome_bins")
        command.upgrade(config, "head")
        connection.commit()
    with recorded.engine.connect() as connection:
        filled = {
            t.name: connection.execute(sa.select(t)).all() for t in (outcome_bins, outcome_day_bins)
        }

    for name, rows in kept.items():
        before = {tuple(r[:-3]): r[-3:] for r in rows}
        after = {tuple(r[:-3]): r[-3:] for r in filled[name]}
        assert before.keys() == after.keys() and len(before) > 100
        for key, sums in before.items():
            assert after[key] == pytest.approx(sums, rel=1e-9, abs=1e-12)
    assert _differences(recorded) == []


def test_concurrent_corrections_count_each_change_once(
    recorded: Recorded, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: recorders cannot interleave")
    with recorded.engine.connect() as connection:
        ids = list(
            connection.execute(
                sa.select(outcomes.c.prediction_id)
                .where(outcomes.c.model_version == SERVED_VERSION)
                .order_by(outcomes.c.prediction_id)
                .limit(300)
            ).scalars()
        )
    store = OutcomeStore(recorded.engine)
    pseudonymize = Pseudonymizer(b"test-pseudonym-key")
    start = threading.Barrier(2)

    def recorder(first: int) -> None:
        start.wait()
        for round_ in range(12):
            value = (first + round_) % 2
            store.record(
                [{"prediction_id": i, "outcome": value} for i in ids],
                who="test",
                source="api",
                pseudonymize=pseudonymize,
                models=["cvd"],
            )

    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(recorder, 0), pool.submit(recorder, 1)]:
            done.result()

    assert _differences(recorded) == []
