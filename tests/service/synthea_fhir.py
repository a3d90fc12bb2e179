"""The 18 Synthea patients behind a small FHIR R4 server, for the CDS Hooks tests.

What a FHIR server does with the transaction bundles in ``shared/data/synthea_fhir_r4``: every
``urn:uuid:`` reference becomes a relative one (``Patient/<id>``), reads by id, and searches
with the parameters the discovery templates use: ``patient``, ``code`` (``system|code`` lists),
``status``, ``clinical-status``, ``encounter``, ``_sort=-date`` and ``_count``. The same search
fills the prefetch of a test (what an EHR would send for each template) and answers the HTTP
server the fallback tests call (:func:`app`, bearer token required).
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.cds_hooks import fhir
from service.cds_hooks.services import HookService
from service.settings import REPO_ROOT

DATA = REPO_ROOT.parent / "shared" / "data"
BUNDLES = sorted((DATA / "synthea_fhir_r4").glob("*.json"))
FHIR_JSON = "application/fhir+json"


def _rewrite(value: Any, kinds: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        out = {k: _rewrite(v, kinds) for k, v in value.items()}
        reference = out.get("reference")
        if isinstance(reference, str) and reference.startswith("urn:uuid:"):
            target = reference.removeprefix("urn:uuid:")
            if target in kinds:
                out["reference"] = f"{kinds[target]}/{target}"
        return out
    if isinstance(value, list):
        return [_rewrite(v, kinds) for v in value]
    return value


@functools.cache
def store() -> Store:
    return Store(BUNDLES)


def _when(resource: Mapping[str, Any]) -> datetime:
    kind = resource.get("resourceType")
    if kind == "Observation":
        found = fhir.observation_time(resource)
    elif kind == "Encounter":
        period = resource.get("period") or {}
        found = fhir.parse_datetime(period.get("start"))
    elif kind == "MedicationRequest":
        found = fhir.parse_datetime(resource.get("authoredOn"))
    elif kind == "Condition":
        found = fhir.parse_datetime(resource.get("onsetDateTime")) or fhir.parse_datetime(
            resource.get("recordedDate")
        )
    else:
        period = resource.get("performedPeriod") or {}
        found = fhir.parse_datetime(resource.get("performedDateTime")) or fhir.parse_datetime(
            period.get("start")
        )
    return found or datetime(1, 1, 1, tzinfo=UTC)


class Store:
    def __init__(self, paths: list[Path]) -> None:
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.patients: dict[str, str] = {}
        """File name prefix (first name) -> patient id."""
        for path in paths:
            entries = [e["resource"] for e in json.loads(path.read_text())["entry"]]
            kinds = {r["id"]: r["resourceType"] for r in entries}
            for resource in entries:
                resource = _rewrite(resource, kinds)
                self.resources[(resource["resourceType"], resource["id"])] = resource
                if resource["resourceType"] == "Patient":
                    self.patients[path.name.split("_")[0]] = resource["id"]

    def read(self, kind: str, rid: str) -> dict[str, Any] | None:
        found = self.resources.get((kind, rid))
        return copy.deepcopy(found) if found is not None else None

    def of(self, kind: str, patient_id: str) -> Iterator[dict[str, Any]]:
        for (k, _), resource in self.resources.items():
            if k == kind and (resource.get("subject") or {}).get("reference") == (
                f"Patient/{patient_id}"
            ):
                yield resource

    def search(self, kind: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        query = dict(params)
        patient = query.get("patient") or query.get("subject", "").removeprefix("Patient/")
        found = list(self.of(kind, patient))
        if "code" in query:
            wanted = {tuple(c.split("|", 1)) for c in query["code"].split(",")}
            found = [r for r in found if set(fhir.codings(r.get("code"))) & wanted]
        if "status" in query:
            statuses = set(query["status"].split(","))
            found = [r for r in found if r.get("status") in statuses]
        if "clinical-status" in query:
            statuses = set(query["clinical-status"].split(","))
            found = [
                r for r in found if {c for _, c in fhir.codings(r.get("clinicalStatus"))} & statuses
            ]
        if "encounter" in query:
            target = f"Encounter/{query['encounter'].removeprefix('Encounter/')}"
            found = [r for r in found if (r.get("encounter") or {}).get("reference") == target]
        if query.get("_sort") == "-date":
            found.sort(key=_when, reverse=True)
        total = len(found)
        if "_count" in query:
            found = found[: int(query["_count"])]
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": total,
            "entry": [
                {
                    "fullUrl": f"{r['resourceType']}/{r['id']}",
                    "resource": copy.deepcopy(r),
                    "search": {"mode": "match"},
                }
                for r in found
            ],
        }

    def query(self, path_and_query: str) -> dict[str, Any] | None:
        """A FHIR REST query (``Patient/1`` or ``Observation?patient=1&...``)."""
        path, _, raw = path_and_query.partition("?")
        parts = path.strip("/").split("/")
        if len(parts) == 2:
            return self.read(parts[0], parts[1])
        return self.search(parts[0], parse_qsl(raw))

    def prefetch(
        self,
        service: HookService,
        patient_id: str,
        encounter_id: str | None = None,
    ) -> dict[str, Any]:
        """What an EHR sends for the service's templates (a key it cannot fill is null)."""
        out: dict[str, Any] = {}
        for key, spec in service.prefetch.items():
            query = spec.template.replace("{{context.patientId}}", patient_id)
            if encounter_id is not None:
                query = query.replace("{{context.encounterId}}", encounter_id)
            out[key] = self.query(query)
        return out


def app(token: str, calls: list[str] | None = None) -> Starlette:
    """A FHIR server over :func:`store`, requiring ``Authorization: Bearer <token>``; each
    answered query is appended to ``calls``."""

    async def handle(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {token}":
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "login"}],
            }
            return JSONResponse(outcome, status_code=401, media_type=FHIR_JSON)
        path = request.path_params["path"]
        query = path + ("?" + request.url.query if request.url.query else "")
        if calls is not None:
            calls.append(query)
        found = store().query(query)
        if found is None:
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "not-found"}],
            }
            return JSONResponse(outcome, status_code=404, media_type=FHIR_JSON)
        return JSONResponse(found, media_type=FHIR_JSON)

    return Starlette(routes=[Route("/fhir/{path:path}", handle)])
