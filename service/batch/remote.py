"""Score a file through a running service's batch endpoint (``clinrisk score --url URL``).

Each chunk is turned into the API's JSON (``models.tables.json_values``: read by the same rules as
a local table, so a row is refused for the same reason whichever way it is scored) and sent in
calls of ``batch_size`` patients, at most ``concurrency`` calls at a time. Results come back into
the same columns as local scoring, and each refusal is the service's own problem, error by error.

The one thing a table can hold and JSON cannot is a non-finite number (``inf`` in a CSV cell).
Such rows are decided here, by the same column validator as local scoring, and never sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from models.applicability import NOT_YES_NO, yes_no
from models.manifest import FeatureSpec
from models.tables import UNIT_SUFFIX, Cells, FrameValidator, cells_of, json_values, reason_text
from models.validation import FieldError
from service.api.schemas import BatchItemResult, ModelDetail, ProblemError
from service.batch.files import Chunk, check_paths, input_schema, rejects_path, write_ipc
from service.batch.job import BatchError, ChunkDone, ScoreOptions, ScoreSummary
from service.batch.plan import Plan, plan, split_scored, unreadable_reasons
from service.batch.progress import NoProgress, ProgressSink
from service.batch.resume import job_key, part_path, work_dir
from service.batch.runner import done, run_chunks
from service.client import ClinriskClient

MAX_PATIENT_ID = 256


def manifest_features(detail: ModelDetail) -> list[FeatureSpec]:
    """The service's public feature specs as the scoring core's own (validated again here)."""
    return [FeatureSpec.model_validate(f.model_dump()) for f in detail.features]


def local_validator(features: list[FeatureSpec]) -> FrameValidator:
    """The column validator for the service's features, to decide what JSON cannot carry."""
    return FrameValidator(features)


class HttpRunner:
    """Each chunk is sent to the batch endpoint in calls of ``batch_size`` patients, at most
    ``concurrency`` calls at a time; results come back in the same columns as local scoring."""

    def __init__(
        self,
        client: ClinriskClient,
        detail: ModelDetail,
        plan_: Plan,
        work: Path,
        *,
        batch_size: int,
        concurrency: int,
    ) -> None:
        if batch_size < 1 or concurrency < 1:
            raise BatchError("--batch-size and --concurrency must be at least 1")
        self.client = client
        self.detail = detail
        self.plan = plan_
        self.work = work
        self.batch_size = batch_size
        self.validator = local_validator(plan_.features)
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="clinrisk")

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, chunk: Chunk) -> Future[ChunkDone]:
        scores = self._score(chunk.table, unreadable_reasons(chunk))
        scored, rejects = split_scored(self.plan, chunk, scores)
        write_ipc(scored, part_path(self.work, chunk.index, "scored"))
        write_ipc(rejects, part_path(self.work, chunk.index, "rejects"))
        return done(ChunkDone(chunk.index, chunk.rows, scored.num_rows, rejects.num_rows))

    def _score(self, table: Any, unreadable: dict[int, str]) -> Any:
        """Score columns of ``table``; ``unreadable`` rows (a cell was not UTF-8) are rejected
        here, as local scoring rejects them, and never sent: the service would score (and
        audit) a patient this file then refuses."""
        n = table.num_rows
        fields = self.plan.score_fields()
        columns: dict[str, list[Any]] = {f.name: [None] * n for f in fields}
        cells, values, non_finite = self._json_columns(table)
        withheld = np.zeros(n, dtype=bool)
        for row, reason in unreadable.items():
            withheld[row] = True
            self._identify(columns, row)
            columns["reject_reason"][row] = reason
        kept = self._reject_locally(table, np.flatnonzero(non_finite & ~withheld), columns)
        sent = np.sort(np.concatenate([np.flatnonzero(~non_finite & ~withheld), kept])).tolist()
        for row, result in self._send(self._items(table, values, sent), sent):
            self._fill(columns, row, result, cells)
        answered = sum(
            p is not None or r is not None or s is not None
            for p, r, s in zip(
                columns["probability"], columns["reject_reason"], columns["status"], strict=True
            )
        )
        if answered != n:
            raise BatchError(
                f"the service answered {answered} of {n} patients in a chunk", resumable=True
            )
        return pa.table(columns, schema=pa.schema(fields))

    def _items(
        self, table: Any, values: dict[str, list[Any]], rows: list[int]
    ) -> list[dict[str, Any]]:
        """The batch items (features, patient id) of ``rows``."""
        column = self.plan.id_column
        ids = table.column(column).to_pylist() if column else [None] * table.num_rows
        # The context columns the model's applicability rules name (optional, yes/no cells).
        declared = {r.context for r in self.detail.applicability if r.context is not None}
        contexts = {
            name: table.column(name).to_pylist()
            for name in sorted(declared & set(table.column_names))
        }
        items: list[dict[str, Any]] = []
        for i in rows:
            item: dict[str, Any] = {
                "features": {k: v[i] for k, v in values.items() if v[i] is not None}
            }
            if ids[i] is not None and len(str(ids[i])) <= MAX_PATIENT_ID:
                item["patient_id"] = str(ids[i])
            context = {}
            for name, cells in contexts.items():
                parsed = yes_no(cells[i])
                # A cell that is not yes/no is sent as given: the service refuses it by name.
                if parsed is not None:
                    context[name] = cells[i] if parsed is NOT_YES_NO else parsed
            if context:
                item["context"] = context
            items.append(item)
        return items

    def _send(
        self, items: list[dict[str, Any]], rows: list[int]
    ) -> Iterator[tuple[int, BatchItemResult]]:
        """Each item's result with its row, from calls of ``batch_size`` items run in parallel."""
        starts = range(0, len(items), self.batch_size)
        calls = [
            self.pool.submit(
                self.client.predict_batch,
                self.detail.name,
                items[start : start + self.batch_size],
                top_k=self.plan.top_k,
                version=self.detail.version,
            )
            for start in starts
        ]
        for start, call in zip(starts, calls, strict=True):
            try:
                response = call.result()
            except Exception as exc:
                # NOTE: the service's problem names fields, never values of a refused request.
                raise BatchError(
                    f"the service refused a batch call: {exc}", resumable=True
                ) from exc
            for result in response.results:
                yield rows[start + result.index], result

    def _json_columns(self, table: Any) -> tuple[dict[str, Cells], dict[str, list[Any]], Any]:
        """Per feature the source cells and the JSON values; and the rows JSON cannot carry."""
        n = table.num_rows
        names = set(table.column_names)
        cells: dict[str, Cells] = {}
        values: dict[str, list[Any]] = {}
        non_finite = np.zeros(n, dtype=bool)
        for spec in self.plan.features:
            cells[spec.name] = cells_of(table.column(spec.name) if spec.name in names else None, n)
            unit_name = spec.name + UNIT_SUFFIX
            units = cells_of(table.column(unit_name), n) if unit_name in names else None
            values[spec.name], not_finite = json_values(spec, cells[spec.name], units)
            non_finite |= not_finite
        return cells, values, non_finite

    def _reject_locally(self, table: Any, rows: Any, columns: dict[str, list[Any]]) -> Any:
        """Rows holding a non-finite number, validated here; returns those still to be sent."""
        if not len(rows):
            return rows
        subset = table.take(pa.array(rows))
        frame = self.validator.validate(
            {name: subset.column(name) for name in subset.column_names}, subset.num_rows
        )
        for j, row in enumerate(rows.tolist()):
            if not frame.accepted[j]:
                self._identify(columns, row)
                columns["reject_reason"][row] = reason_text(frame.errors[j])
        return rows[frame.accepted]

    def _identify(self, columns: dict[str, list[Any]], row: int) -> None:
        columns["model_name"][row] = self.detail.name
        columns["model_version"][row] = self.detail.version
        columns["model_sha256"][row] = self.detail.sha256
        columns["clinical_use"][row] = self.detail.clinical_use.status

    def _fill(
        self,
        columns: dict[str, list[Any]],
        row: int,
        item: BatchItemResult,
        cells: dict[str, Cells],
    ) -> None:
        self._identify(columns, row)
        if item.result is None:
            columns["reject_reason"][row] = reason_text(_item_errors(item, row, cells))
            return
        result = item.result
        quality = result.data_quality
        columns["model_name"][row] = result.model.name
        columns["model_version"][row] = result.model.version
        columns["model_sha256"][row] = result.model.sha256
        columns["clinical_use"][row] = result.clinical_use.status
        columns["probability"][row] = result.probability
        columns["tier"][row] = result.tier.name if result.tier is not None else None
        columns["status"][row] = result.status
        columns["not_applicable"][row] = (
            "; ".join(f"{f.description}: {f.detail}" for f in result.applicability.failed)
            if result.status == "not_applicable"
            else None
        )
        scored = result.status == "scored"
        columns["uncertainty"][row] = result.uncertainty.statement if result.uncertainty else None
        columns["warnings"][row] = ";".join(w.code for w in result.warnings) if scored else None
        columns["missing_features"][row] = ";".join(m.feature for m in quality.missing)
        columns["out_of_training_range"][row] = ";".join(
            o.feature for o in quality.out_of_training_range
        )
        columns["unit_conversions"][row] = ";".join(u.feature for u in quality.unit_conversions)
        columns["trustworthy"][row] = quality.trustworthy
        if self.plan.explain and result.explanation is not None:
            contributions = result.explanation.contributions
            top = [c for c in contributions if c.feature != "other_features"]
            for k, contribution in enumerate(top[: self.plan.top_k], start=1):
                columns[f"top{k}_feature"][row] = contribution.feature
                columns[f"top{k}_contribution"][row] = contribution.contribution
            columns["other_contribution"][row] = next(
                (c.contribution for c in contributions if c.feature == "other_features"), 0.0
            )


def _item_errors(item: BatchItemResult, row: int, cells: dict[str, Cells]) -> list[FieldError]:
    """The service's refusal of one patient, error by error, as the rejects file reports it."""
    problem = item.error
    if problem is None:
        return [FieldError("request", "the service returned neither a result nor an error")]
    errors = [_field_error(error, f"items[{item.index}].", row, cells) for error in problem.errors]
    return errors or [FieldError("request", problem.detail)]


def _field_error(error: ProblemError, prefix: str, row: int, cells: dict[str, Cells]) -> FieldError:
    field = error.field.removeprefix(prefix)
    value = error.value
    source = cells.get(field.removeprefix("features."))
    if value is not None and source is not None:
        # NOTE: the service shows the JSON value this runner made of the cell (a number parsed
        # from CSV text, a measurement object from a value and its unit column); the rejects
        # file shows the cell as the input holds it, as local scoring does.
        value = source.value_at(row)
    code = error.code if error.code is not None else FieldError.code
    return FieldError(field, error.message, value, error.allowed, code)


def score_file_http(
    input_path: Path,
    output: Path,
    *,
    client: ClinriskClient,
    model_name: str,
    version: str | None = None,
    options: ScoreOptions | None = None,
    batch_size: int = 100,
    concurrency: int = 4,
    progress: ProgressSink | None = None,
    service_url: str = "",
) -> ScoreSummary:
    """Score a file through a running service's batch endpoint (same output as local)."""
    options = options or ScoreOptions()
    check_paths(input_path, output)
    try:
        detail = client.get_model(model_name, version)
    except Exception as exc:
        raise BatchError(f"could not read model '{model_name}' from the service: {exc}") from exc
    what = f"model '{detail.name}' {detail.version} at {service_url or 'the service'}"
    contexts = sorted({r.context for r in detail.applicability if r.context is not None})
    plan_ = plan(manifest_features(detail), input_schema(input_path), options, what, contexts)
    model_ref = {"name": detail.name, "version": detail.version, "sha256": detail.sha256}
    summary = ScoreSummary(output=output, rejects=rejects_path(output), model=model_ref)
    runner = HttpRunner(
        client,
        detail,
        plan_,
        work_dir(output),
        batch_size=batch_size,
        concurrency=concurrency,
    )
    try:
        return run_chunks(
            input_path,
            output,
            plan_,
            options=options,
            key=job_key(input_path, model_ref, options, f"http {service_url}"),
            progress=progress or NoProgress(),
            runner=runner,
            summary=summary,
            in_flight=1,
        )
    finally:
        runner.close()
