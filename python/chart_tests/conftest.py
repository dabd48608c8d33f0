"""Shared helpers of the chart, printer-column and deploy tests (no cluster, no binaries)."""

from __future__ import annotations

import pathlib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "llmroute"
CRDS = ROOT / "crds"
DEPLOY = ROOT / "deploy"
# The Kubernetes version rendered manifests are validated against.
KUBERNETES = "1.33.0"


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def crd(plural: str) -> dict:
    return yaml.safe_load((CRDS / f"{plural}.yaml").read_text())
