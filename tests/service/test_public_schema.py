"""The API's public view of a manifest names the same fields as the manifest itself, so a
figure added to the artifacts is served (and documented) rather than refused as extra."""

from __future__ import annotations

from typing import get_args

import pytest

import models.manifest as manifest
import service.api.schemas as schemas

MIRRORED = [
    "AlternativeUnit",
    "ApplicabilityRule",
    "Baseline",
    "Calibration",
    "CalibrationBin",
    "Candidate",
    "Category",
    "Characteristic",
    "Distribution",
    "MissingPattern",
    "PublishedFigure",
    "RepeatedCV",
    "SubgroupMetrics",
    "TemporalCohort",
    "TemporalValidation",
    "ThresholdMetrics",
    "Tier",
    "ValidationSummary",
]


@pytest.mark.parametrize("name", MIRRORED)
def test_a_public_manifest_type_has_the_manifests_fields(name: str) -> None:
    public, own = getattr(schemas, name), getattr(manifest, name)
    assert set(public.model_fields) == set(own.model_fields)


def test_the_public_validation_has_the_manifests_fields() -> None:
    assert set(schemas.ValidationPublic.model_fields) == set(manifest.Validation.model_fields)


def test_the_public_figure_metrics_are_the_manifests() -> None:
    metric = schemas.PublishedFigure.model_fields["metric"].annotation
    assert set(get_args(metric)) == set(get_args(manifest.PublishedMetric))
