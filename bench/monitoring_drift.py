"""Issue 13 simulation: held-out rows replayed as traffic through the API, then the drift and
live-validation reports the monitoring page shows.

    .venv/bin/python bench/monitoring_drift.py [--rows 5000] [--url sqlite:///... | postgresql://...]
        [--out results.json]

It also times the prediction path's drift counting (``hot_path``: best of 5, microseconds per
row in a batch of 1000 and for one patient, beside the scoring itself).

Two scenarios on the diabetes model's held-out BRFSS test split (the rows its manifest was
validated on, never trained on):

- **unshifted**: a random sample, with the real outcomes. Expected: no drift breach and no
  "worse than validation".
- **shifted**: only patients aged 60 or more with a BMI of 30 or more (a different referral
  population), with miscalibrated outcomes: each drawn with probability
  ``expit(0.5 + 0.6 * logit(p))`` instead of ``p`` (risks too extreme, events under-predicted;
  what a changed case definition or care pathway does). Expected: drift alarms on age, BMI,
  predicted risk and tiers, and "worse than validation" on calibration and O/E.

Then **recalibration**: local outcomes of the shifted population recalibrate the model into a
candidate version (``training.recalibrate``), fresh shifted traffic is scored by it and judged,
and the candidate goes to shadow and to approved through the admin API: the trail is printed.

Each scenario runs in a fresh service (its own audit database), scoring through
``POST /v1/models/diabetes/predict/batch`` and recording outcomes through ``POST /v1/outcomes``.
Figures only; nothing is asserted here (tests/service/test_drift.py and
tests/ui/test_monitoring_page.py assert).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.registry import artifact_folder  # noqa: E402
from service.auth import create_key  # noqa: E402
from service.settings import Settings  # noqa: E402

MODEL = "diabetes"
MODELS_DIR = ROOT / "models"
DATA = "brfss2015/diabetes_binary_health_indicators_BRFSS2015.csv.gz"

Outcomes = Callable[[npt.NDArray[np.float64], npt.NDArray[np.int64]], npt.NDArray[np.int64]]


class Http(Protocol):
    """What the replay needs of a client: TestClient and httpx.Client both fit."""

    def post(self, url: str, *, json: Any = ..., headers: Any = ...) -> Any: ...


def version() -> str:
    return artifact_folder(MODELS_DIR, MODEL).name


@cache
def held_out() -> tuple[pd.DataFrame, npt.NDArray[np.int64]]:
    """The diabetes model's test split: features (manifest names) and real outcomes."""
    from training.datasets import SHARED_DATA, load_brfss
    from training.train import split_test

    manifest = json.loads((MODELS_DIR / MODEL / version() / "manifest.json").read_text())
    data = load_brfss(SHARED_DATA / DATA)
    split = manifest["split"]
    _, test = split_test(data, test_fraction=split["test_fraction"], seed=split["seed"])
    names = [f["name"] for f in manifest["features"]]
    frame = data.features.loc[test, names].reset_index(drop=True)
    return frame, np.asarray(data.y[test], dtype=np.int64)


def unshifted(rows: int, seed: int = 13) -> tuple[pd.DataFrame, npt.NDArray[np.int64]]:
    frame, y = held_out()
    pick = np.random.default_rng(seed).choice(len(frame), size=rows, replace=False)
    return frame.iloc[pick].reset_index(drop=True), y[pick]


def shifted(rows: int, seed: int = 13) -> tuple[pd.DataFrame, npt.NDArray[np.int64]]:
    """Patients aged 60+ with a BMI of 30+ only."""
    frame, y = held_out()
    members = np.flatnonzero(((frame["age_years"] >= 60) & (frame["bmi_kg_m2"] >= 30)).to_numpy())
    pick = np.random.default_rng(seed).choice(members, size=min(rows, members.size), replace=False)
    return frame.iloc[pick].reset_index(drop=True), y[pick]


def real_outcomes(_p: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    return y


def miscalibrated(seed: int = 13) -> Outcomes:
    """Outcomes drawn with probability expit(0.5 + 0.6 logit(p))."""

    def draw(p: npt.NDArray[np.float64], _y: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        logit = np.log(p / (1 - p))
        truth = 1 / (1 + np.exp(-(0.5 + 0.6 * logit)))
        return (np.random.default_rng(seed).random(p.size) < truth).astype(np.int64)

    return draw


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {str(k): (None if v != v else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


@dataclass(frozen=True)
class Keys:
    batch: str
    outcomes: str
    admin: str

    @classmethod
    def create(cls, path: Path) -> Keys:
        return cls(
            batch=create_key(path, "replay", ["batch"]),
            outcomes=create_key(path, "registry", ["outcomes"]),
            admin=create_key(path, "monitor", ["admin"]),
        )


def replay(
    http: Http, keys: Keys, frame: pd.DataFrame, y: npt.NDArray[np.int64], outcomes: Outcomes
) -> dict[str, Any]:
    """Score the rows through the batch API, then record their outcomes: counts and timings."""
    rows = records(frame)
    ids: list[str] = []
    probabilities: list[float] = []
    kept: list[int] = []
    started = time.perf_counter()
    for start in range(0, len(rows), 1000):
        answer = http.post(
            f"/v1/models/{MODEL}/predict/batch",
            json={"items": [{"features": r} for r in rows[start : start + 1000]], "top_k": 1},
            headers={"Authorization": f"Bearer {keys.batch}"},
        )
        assert answer.status_code == 200, answer.text
        for offset, item in enumerate(answer.json()["results"]):
            result = item["result"]
            if result is not None and result["probability"] is not None:
                ids.append(result["prediction_id"])
                probabilities.append(result["probability"])
                kept.append(start + offset)
    scored_seconds = time.perf_counter() - started
    drawn = outcomes(np.array(probabilities), y[kept])
    for start in range(0, len(ids), 5000):
        answer = http.post(
            "/v1/outcomes",
            json={
                "outcomes": [
                    {"prediction_id": i, "outcome": int(o)}
                    for i, o in zip(
                        ids[start : start + 5000], drawn[start : start + 5000], strict=True
                    )
                ]
            },
            headers={"Authorization": f"Bearer {keys.outcomes}"},
        )
        assert answer.status_code == 200, answer.text
    return {
        "rows": len(rows),
        "scored": len(ids),
        "events": int(drawn.sum()),
        "mean_predicted": float(np.mean(probabilities)),
        "scoring_seconds": scored_seconds,
    }


@contextmanager
def service(url: str | None, folder: Path) -> Iterator[tuple[Any, Keys]]:
    """A fresh service (TestClient, lifespan run) on its own audit database."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    keys = Keys.create(folder / "keys.json")
    settings = Settings(
        models_dir=MODELS_DIR,
        database_url=url or f"sqlite:///{folder / 'audit.db'}",
        api_keys_file=folder / "keys.json",
        pseudonym_key="bench-pseudonym-key",  # type: ignore[arg-type]
        max_batch_size=1000,
        max_body_bytes=16 * 1024 * 1024,
        log_level="WARNING",
    )
    with TestClient(create_app(settings)) as client:
        yield client, keys


def reports(http: Any, keys: Keys) -> tuple[dict[str, Any], dict[str, Any]]:
    base = f"/v1/models/{MODEL}/versions/{version()}"
    headers = {"Authorization": f"Bearer {keys.admin}"}
    live = http.get(f"{base}/monitoring", headers=headers)
    drift = http.get(f"{base}/drift", headers=headers)
    assert live.status_code == 200 and drift.status_code == 200, (live.text, drift.text)
    return live.json(), drift.json()


def summary(live: dict[str, Any], drift: dict[str, Any]) -> dict[str, Any]:
    overall = live["overall"]
    figures = overall.get("live") or {}

    def value(name: str) -> float | None:
        item = figures.get(name)
        return None if item is None else item["value"]

    features = sorted(drift["features"], key=lambda f: -(f["psi"] or 0))
    return {
        "drift_breaches": drift["breaches"],
        "worse_than_validation": overall.get("worse_than_validation", []),
        "psi_top": {f["feature"]: round(f["psi"], 4) for f in features[:5]},
        "psi_risk": drift["predicted_risk"]["psi"],
        "psi_tiers": drift["tiers"]["psi"],
        "tier_shares": {
            t["tier"]: {"now": t["share"], "validation": t["validation_share"]}
            for t in drift["tiers"]["shares"]
        },
        "expected_auroc": drift["expected_performance"]["expected_auroc"],
        "validation_auroc": drift["expected_performance"]["validation_auroc"],
        "live_auroc": value("auroc"),
        "live_observed_expected": value("observed_expected"),
        "live_calibration_slope": value("calibration_slope"),
        "live_calibration_intercept": value("calibration_intercept"),
    }


def hot_path(rows: int = 1000, repeats: int = 20) -> dict[str, float]:
    """Microseconds per row that drift.observe adds to a batch of ``rows`` and to one patient,
    beside the scoring itself (Predictor.predict_many / predict), on held-out rows."""
    import timeit

    from models.predictor import Predictor
    from models.registry import Registry
    from service import drift

    registry: Registry[Predictor] = Registry(Predictor)
    registry.load_dir(MODELS_DIR)
    model = registry.get(MODEL)
    payloads = records(unshifted(rows)[0])
    scored = [s for s in model.predict_many(payloads, top_k=[1] * rows) if not isinstance(s, list)]
    accumulator = drift.Accumulator()

    def observe_batch() -> None:
        kept = [s for s in scored if s.result["probability"] is not None]
        accumulator.observe(
            model.manifest,
            [s.values for s in kept],
            [s.result["probability"] for s in kept],
            [(s.result["tier"] or {}).get("name") for s in kept],
        )

    one = scored[0]

    def observe_one() -> None:
        accumulator.observe(
            model.manifest,
            [one.values],
            [one.result["probability"]],
            [(one.result["tier"] or {}).get("name")],
        )

    def best(fn: Callable[[], Any], number: int) -> float:
        return min(timeit.repeat(fn, number=number, repeat=5)) / number

    return {
        "batch_rows": rows,
        "drift_us_per_row_batch": best(observe_batch, repeats) / rows * 1e6,
        "score_us_per_row_batch": best(lambda: model.predict_many(payloads, top_k=[1] * rows), 3)
        / rows
        * 1e6,
        "drift_us_single": best(observe_one, 2000) * 1e6,
        "score_us_single": best(lambda: model.predict(payloads[0]), 500) * 1e6,
    }


def recalibration_trail(rows: int) -> dict[str, Any]:
    """The closing scenario: local outcomes of the shifted population recalibrate the model
    (``clinrisk recalibrate``, intercept and slope) into a candidate version; fresh shifted
    traffic scored by it is judged against validation; the candidate goes to shadow, then to
    approved, through the admin API; the trail is returned. Signed with
    CLINRISK_SIGNING_KEY_FILE when set, else with a throwaway key trusted for this run."""
    import os

    from models.loader import load_artifact
    from models.predictor import Predictor
    from models.signing import generate_private_key, write_key_pair
    from training.recalibrate import recalibrate

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = folder / "models"
        shutil.copytree(MODELS_DIR / MODEL / version(), models / MODEL / version())
        local, _ = shifted(rows, seed=101)
        original = Predictor(load_artifact(models / MODEL / version()))
        p = np.array(
            [
                s.result["probability"]
                for s in original.predict_many(records(local), top_k=[1] * len(local))
            ]  # type: ignore[union-attr]
        )
        local = local.copy()
        local["outcome"] = miscalibrated(seed=101)(p, np.zeros(len(p), dtype=np.int64))
        local.to_csv(folder / "local_outcomes.csv", index=False)
        release = os.environ.get("CLINRISK_SIGNING_KEY_FILE")
        if release:
            key, trusted = Path(release), [MODELS_DIR / "trusted_keys"]
        else:
            key = folder / "bench.pem"
            write_key_pair(generate_private_key(), key, folder / "bench.pub")
            trusted = [MODELS_DIR / "trusted_keys", folder / "bench.pub"]
        _, figures = recalibrate(
            MODEL,
            folder / "local_outcomes.csv",
            models_dir=models,
            out_dir=models,
            method="slope",
            signing_key=key,
        )
        alpha, beta = figures["local"]["alpha"], figures["local"]["beta"]

        def truth_via_new(p_new: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> Any:
            # The same truth as before, expressed through the new version's risks.
            z_original = (np.log(p_new / (1 - p_new)) - alpha) / beta
            return miscalibrated(seed=202)(1 / (1 + np.exp(-z_original)), y)

        keys = Keys.create(folder / "keys.json")
        settings = Settings(
            models_dir=models,
            database_url=f"sqlite:///{folder / 'audit.db'}",
            api_keys_file=folder / "keys.json",
            pseudonym_key="bench-pseudonym-key",  # type: ignore[arg-type]
            trusted_keys=trusted,
            max_batch_size=1000,
            max_body_bytes=16 * 1024 * 1024,
            log_level="WARNING",
        )
        from fastapi.testclient import TestClient

        from service.app import create_app

        with TestClient(create_app(settings)) as http:
            fresh, y = shifted(rows, seed=303)
            replay(http, keys, fresh, y, truth_via_new)
            new = figures["version"]
            headers = {"Authorization": f"Bearer {keys.admin}"}
            live = http.get(f"/v1/models/{MODEL}/versions/{new}/monitoring", headers=headers)
            for state, reason in (
                ("shadow", "recalibrated on local outcomes of the 60+/BMI 30+ clinic"),
                ("approved", "live calibration consistent with validation on fresh patients"),
            ):
                answer = http.post(
                    f"/v1/models/{MODEL}/versions/{new}/lifecycle",
                    json={"state": state, "reason": reason},
                    headers=headers,
                )
                assert answer.status_code == 200, answer.text
            trail = http.get(f"/v1/models/{MODEL}/lifecycle", headers=headers).json()
        overall = live.json()["overall"]
        return {
            "recalibrated_version": new,
            "signed_by": "release key" if release else "throwaway bench key",
            "local": figures["local"],
            "before": figures["before"],
            "after": figures["after"],
            "fresh_traffic": {
                "outcomes_known": overall["outcomes_known"],
                "calibration_slope": (overall.get("live") or {}).get("calibration_slope"),
                "observed_expected": (overall.get("live") or {}).get("observed_expected"),
                "worse_than_validation": overall.get("worse_than_validation"),
            },
            "trail": [
                {
                    k: e[k]
                    for k in (
                        "model_version",
                        "from_state",
                        "to_state",
                        "changed_by",
                        "changed_at",
                        "reason",
                    )
                }
                for e in trail["history"]
            ],
            "approved": trail["approved"],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--url", default=None, help="audit database (default: a fresh SQLite)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()
    scenarios: dict[str, tuple[tuple[pd.DataFrame, npt.NDArray[np.int64]], Outcomes]] = {
        "unshifted": (unshifted(args.rows), real_outcomes),
        "shifted": (shifted(args.rows), miscalibrated()),
    }
    results: dict[str, Any] = {"model": MODEL, "version": version()}
    for name, ((frame, y), outcomes) in scenarios.items():
        with (
            tempfile.TemporaryDirectory() as folder,
            service(args.url, Path(folder)) as (
                http,
                keys,
            ),
        ):
            if args.url and args.url.startswith("postgresql"):
                _empty_postgres(args.url)
            counts = replay(http, keys, frame, y, outcomes)
            live, drift = reports(http, keys)
        results[name] = {**counts, **summary(live, drift)}
        alarm = bool(results[name]["drift_breaches"])
        worse = bool(results[name]["worse_than_validation"])
        print(f"\n== {name}: {counts['scored']} scored, {counts['events']} events")
        print(f"   drift alarm: {'FIRES' if alarm else 'quiet'} {results[name]['drift_breaches']}")
        print(
            f"   worse than validation: {'FIRES' if worse else 'quiet'} "
            f"{results[name]['worse_than_validation']}"
        )
        for key in (
            "psi_top",
            "psi_risk",
            "psi_tiers",
            "tier_shares",
            "expected_auroc",
            "validation_auroc",
            "live_auroc",
            "live_observed_expected",
            "live_calibration_slope",
            "live_calibration_intercept",
        ):
            print(f"   {key}: {_round(results[name][key])}")
    results["recalibration"] = recalibration_trail(args.rows)
    print(f"\n== recalibration: {_round(results['recalibration'])}")
    results["hot_path"] = hot_path()
    print(f"\n== drift hot path ({MODEL}): {_round(results['hot_path'])}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str))


def _empty_postgres(url: str) -> None:
    """Each scenario on an empty database (its migrations ran at start-up: keep the schema)."""
    import sqlalchemy as sa

    from service.database import make_engine

    engine = make_engine(url)
    with engine.begin() as connection:
        for table in ("outcome_history", "outcomes", "drift_counts", "audit_records"):
            connection.execute(sa.text(f"DELETE FROM {table}"))
    engine.dispose()


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value


if __name__ == "__main__":
    main()
