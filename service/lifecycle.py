"""Governed model versions (issue 13 part 4): each version's lifecycle state, changed only by a
recorded decision (who, when, why, evidence), kept in the audit database.

States: ``candidate`` (no decision yet: every version starts here) -> ``shadow`` (to be compared
on live traffic) -> ``approved`` (the model's default) -> ``retired`` (no longer to be served).
A shadow version may go back to candidate; any version may be retired; a retired version stays
retired (a new version is the way back). Approving a version retires the model's previously
approved one in the same transaction, with its own event ("superseded by ..."), so a model has
at most one approved version.

``lifecycle_events`` is append-only: the current state of a version is its latest event, and
the table is the audit trail of every change. An approval's evidence is attached by the
service, not typed by the approver: the version's validation figures from its manifest and its
live-validation and drift figures at the moment of the decision, plus the approver's note.
"""

from __future__ import annotations

import contextlib
import json
import threading
import weakref
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from models.manifest import Manifest
from service.audit import metadata
from service.errors import ServiceError

STATES = ("candidate", "shadow", "approved", "retired")
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "candidate": ("shadow", "retired"),
    "shadow": ("approved", "candidate", "retired"),
    "approved": ("retired",),
    "retired": (),
}
INITIAL = "candidate"

lifecycle_events = sa.Table(
    "lifecycle_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(64), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("from_state", sa.String(16), nullable=False),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("changed_by", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),
)


class TransitionRefused(ValueError):
    """A change the lifecycle does not allow; names the states."""

    def __init__(self, name: str, version: str, current: str, wanted: str) -> None:
        allowed = TRANSITIONS[current]
        super().__init__(
            f"Model '{name}' {version} is {current}; it cannot become {wanted}. "
            + (f"Allowed: {', '.join(allowed)}." if allowed else "A retired version stays retired.")
        )
        self.current, self.wanted, self.allowed = current, wanted, allowed


@dataclass(frozen=True)
class Event:
    model_name: str
    model_version: str
    from_state: str
    to_state: str
    changed_at: datetime
    changed_by: str
    reason: str
    evidence: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["changed_at"] = self.changed_at.isoformat()
        return out


def _event(row: Any) -> Event:
    changed_at = row.changed_at
    if changed_at.tzinfo is None:  # SQLite returns naive UTC
        changed_at = changed_at.replace(tzinfo=UTC)
    return Event(
        model_name=row.model_name,
        model_version=row.model_version,
        from_state=row.from_state,
        to_state=row.to_state,
        changed_at=changed_at,
        changed_by=row.changed_by,
        reason=row.reason,
        evidence=json.loads(row.evidence),
    )


def history(connection: sa.Connection, name: str, version: str | None = None) -> list[Event]:
    """Every change of a model's versions (or one version's), oldest first."""
    query = sa.select(lifecycle_events).where(lifecycle_events.c.model_name == name)
    if version is not None:
        query = query.where(lifecycle_events.c.model_version == version)
    return [_event(r) for r in connection.execute(query.order_by(lifecycle_events.c.id)).all()]


def states(connection: sa.Connection, name: str) -> dict[str, Event]:
    """The latest event per version (a version without one is a candidate)."""
    latest: dict[str, Event] = {}
    for event in history(connection, name):
        latest[event.model_version] = event
    return latest


def state_of(latest: dict[str, Event], version: str) -> str:
    event = latest.get(version)
    return event.to_state if event is not None else INITIAL


def approved_version(connection: sa.Connection, name: str) -> str | None:
    """The version an approval made the model's default, if any."""
    found = [v for v, e in states(connection, name).items() if e.to_state == "approved"]
    return found[0] if found else None


def evidence_of(
    manifest: Manifest, live: dict[str, Any] | None, drift: dict[str, Any] | None, note: str | None
) -> dict[str, Any]:
    """What the decision rested on: validation (manifest), local figures at this moment."""
    test = manifest.validation.test if manifest.validation is not None else None
    overall = (live or {}).get("overall") or {}
    figures = overall.get("live") or {}
    return {
        "validation": (
            {
                "n": test.n,
                "auroc": test.auroc,
                "auroc_ci": [test.auroc_ci_low, test.auroc_ci_high],
                "calibration_slope": test.calibration_slope,
                "calibration_intercept": test.calibration_intercept,
                "brier": test.brier,
            }
            if test is not None
            else None
        ),
        "local": {
            "predictions": overall.get("predictions"),
            "outcomes_known": overall.get("outcomes_known"),
            "suppressed": overall.get("suppressed"),
            "auroc": figures.get("auroc"),
            "observed_expected": figures.get("observed_expected"),
            "calibration_slope": figures.get("calibration_slope"),
            "worse_than_validation": overall.get("worse_than_validation"),
        }
        if live is not None
        else None,
        "drift_breaches": drift.get("breaches") if drift is not None else None,
        "model_file_sha256": manifest.files.get(manifest.model_file),
        "note": note,
    }


def change(
    connection: sa.Connection,
    manifest: Manifest,
    to_state: str,
    *,
    who: str,
    reason: str,
    evidence: dict[str, Any],
    now: datetime | None = None,
) -> list[Event]:
    """Record a change (in the caller's transaction); returns the events written: the change,
    and for an approval the retirement of the previously approved version."""
    if to_state not in STATES:
        raise ValueError(f"unknown state {to_state!r}")
    name, version = manifest.name, manifest.version
    latest = states(connection, name)
    current = state_of(latest, version)
    if to_state not in TRANSITIONS[current]:
        raise TransitionRefused(name, version, current, to_state)
    when = now or datetime.now(UTC)
    events = []
    if to_state == "approved":
        for other, event in latest.items():
            if other != version and event.to_state == "approved":
                events.append(
                    Event(
                        name,
                        other,
                        "approved",
                        "retired",
                        when,
                        who,
                        f"superseded by {version}: {reason}",
                        {"superseded_by": version},
                    )
                )
    events.append(Event(name, version, current, to_state, when, who, reason, evidence))
    connection.execute(
        lifecycle_events.insert(),
        [
            {**asdict(e), "evidence": json.dumps(e.evidence, sort_keys=True, default=str)}
            for e in events
        ],
    )
    return events


def summary(connection: sa.Connection, name: str, versions: list[str]) -> list[dict[str, Any]]:
    """Per version: state, since when, by whom, why (a candidate without a decision says so)."""
    latest = states(connection, name)
    out = []
    for version in versions:
        event = latest.get(version)
        out.append(
            {
                "version": version,
                "state": state_of(latest, version),
                "since": event.changed_at.isoformat() if event else None,
                "by": event.changed_by if event else None,
                "reason": event.reason if event else "no decision recorded",
                "allowed_next": list(TRANSITIONS[state_of(latest, version)]),
            }
        )
    return out


def decide(
    engine: sa.Engine,
    manifest: Manifest,
    wanted: str,
    *,
    who: str,
    reason: str,
    note: str | None = None,
    min_group: int = 50,
    days: int = 7,
    thresholds: Any = None,
) -> list[Event]:
    """Attach the evidence (validation, live validation and drift now) and record the change,
    in one transaction: what the admin API and ``clinrisk models approve`` both do."""
    from service import drift, monitoring

    drift.flush(engine)
    with engine.begin() as connection:
        live = monitoring.report(connection, manifest, min_group=min_group)
        drifted = drift.report(
            connection, manifest, days=days, thresholds=thresholds or drift.Thresholds()
        )
        evidence = evidence_of(manifest, live, drifted, note)
        events = change(
            connection, manifest, wanted, who=who[:64], reason=reason, evidence=evidence
        )
    policy_for(engine).refresh()  # this process applies its own decision at once
    return events


# --- what the scoring routes serve ------------------------------------------------------------


class VersionRetired(ServiceError):
    status = 410
    title = "Model version retired"


@dataclass(frozen=True)
class Snapshot:
    approved: dict[str, str]
    retired: dict[tuple[str, str], Event]
    shadow: dict[str, tuple[str, ...]] = field(default_factory=dict)


class ServingPolicy:
    """The lifecycle decisions as the scoring routes apply them: a model's approved version is
    its default, a retired version is refused (410, saying when and why). Read from an
    immutable snapshot (no database call per request), refreshed by a thread every ``every``
    seconds and at once after a change made through this process."""

    def __init__(self, engine: sa.Engine, every: float = 5.0) -> None:
        self.engine, self.every = engine, every
        self._snapshot = Snapshot({}, {})
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(lifecycle_events).order_by(lifecycle_events.c.id)
            ).all()
        latest: dict[tuple[str, str], Event] = {}
        for row in rows:
            event = _event(row)
            latest[(event.model_name, event.model_version)] = event
        shadow: dict[str, tuple[str, ...]] = {}
        for (name, version), event in sorted(latest.items()):
            if event.to_state == "shadow":
                shadow[name] = (*shadow.get(name, ()), version)
        self._snapshot = Snapshot(
            approved={n: v for (n, v), e in latest.items() if e.to_state == "approved"},
            retired={k: e for k, e in latest.items() if e.to_state == "retired"},
            shadow=shadow,
        )

    def shadows(self, name: str) -> tuple[str, ...]:
        """The versions of ``name`` in shadow: scored beside the served one, never returned."""
        return self._snapshot.shadow.get(name, ())

    def version_to_score(self, name: str, requested: str | None, loaded: list[str]) -> str | None:
        """The version to score: the requested one unless retired (VersionRetired), else the
        approved one when it is loaded, else None (the registry's default)."""
        snapshot = self._snapshot
        if requested is None:
            approved = snapshot.approved.get(name)
            return approved if approved in loaded else None
        event = snapshot.retired.get((name, requested))
        if event is not None:
            current = snapshot.approved.get(name)
            raise VersionRetired(
                f"Model '{name}' {requested} was retired on {event.changed_at.date()} "
                f"({event.reason}); it is no longer used for scores."
                + (f" The approved version is {current}." if current else "")
            )
        return requested

    def start(self) -> ServingPolicy:
        with contextlib.suppress(SQLAlchemyError):
            self.refresh()
        self._thread = threading.Thread(target=self._run, name="lifecycle-policy", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            with contextlib.suppress(SQLAlchemyError):
                self.refresh()  # the store may be down: the last snapshot stays in force

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


_policies: weakref.WeakKeyDictionary[sa.Engine, ServingPolicy] = weakref.WeakKeyDictionary()
_policies_lock = threading.Lock()


def policy_for(engine: sa.Engine) -> ServingPolicy:
    """The serving policy of an audit database (one per engine, as drift's accumulators)."""
    found = _policies.get(engine)
    if found is None:
        with _policies_lock:
            found = _policies.setdefault(engine, ServingPolicy(engine))
    return found
