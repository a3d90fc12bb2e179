"""The shipped Prometheus alert rules (deploy/prometheus/clinrisk-alerts.yml) name only gauges
and labels the service exports, with the breach checks the drift report produces."""

from __future__ import annotations

import re
from typing import Any

import yaml
from prometheus_client import REGISTRY

from service import drift, monitoring
from service.settings import REPO_ROOT

RULES = REPO_ROOT / "deploy" / "prometheus" / "clinrisk-alerts.yml"


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_alert_rules_use_exported_gauges_and_labels() -> None:
    gauges = {
        "clinrisk_drift_breach": drift.BREACH,
        "clinrisk_live_validation": monitoring.LIVE,
    }
    registered = {metric.name for metric in REGISTRY.collect()}

    rules = _rules()

    assert {r["alert"] for r in rules} >= {
        "ClinriskInputDrift",
        "ClinriskPredictedRiskDrift",
        "ClinriskAlertBurdenChanged",
        "ClinriskExpectedDiscriminationDrop",
        "ClinriskWorseThanValidation",
    }
    for rule in rules:
        names = set(re.findall(r"\b(clinrisk_[a-z_]+)\b", rule["expr"]))
        assert names and names <= set(gauges), rule["expr"]
        assert names <= registered
        for name in names:
            labels = set(gauges[name]._labelnames)
            used = set(re.findall(r"(\w+)\s*=~?\s*\"", rule["expr"]))
            grouped = re.findall(r"by \(([^)]*)\)", rule["expr"])
            used |= {label.strip() for group in grouped for label in group.split(",")}
            assert used <= labels, (rule["alert"], used - labels)
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_breach_checks_in_the_rules_are_the_report_checks() -> None:
    checks = {m for rule in _rules() for m in re.findall(r'check="([^"]+)"', rule["expr"])}

    assert checks == {"risk", "tiers", "expected_auroc"}
