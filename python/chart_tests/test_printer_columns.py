"""`kubectl get md,tm` columns: the CRDs' printer-column JSONPaths evaluated on example
objects with status by kubectl's own JSONPath engine, offline (`kubectl label --local`)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from conftest import crd

STATUS = {
    "observedGeneration": 2,
    "conditions": [
        {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "ok", "observedGeneration": 2,
         "lastTransitionTime": "2026-11-22T10:00:00Z"},
        {"type": "Ready", "status": "False", "reason": "Propagating", "message": "97 of 98", "observedGeneration": 2,
         "lastTransitionTime": "2026-11-22T10:00:00Z"},
        {"type": "Healthy", "status": "True", "reason": "ProbeSucceeded", "message": "HTTP 200", "observedGeneration": 2,
         "lastTransitionTime": "2026-11-22T10:00:00Z"},
    ],
    "snapshotVersion": "3f9c0a1d2e4b5c6d",
    "sidecars": {"acknowledged": 97, "connected": 98},
}

MD = {
    "apiVersion": "llmroute.dev/v1alpha1", "kind": "ModelDeployment",
    "metadata": {"name": "gpt4o-east", "namespace": "team-a", "creationTimestamp": "2026-11-22T09:00:00Z"},
    "spec": {"modelName": "gpt-4o", "team": "team-a", "weight": 80, "order": 1,
             "upstream": {"baseUrl": "https://east.example/v1"}},
    "status": STATUS,
}

TM = {
    "apiVersion": "llmroute.dev/v1alpha1", "kind": "TeamModel",
    "metadata": {"name": "smart", "namespace": "team-a", "creationTimestamp": "2026-11-22T09:00:00Z"},
    "spec": {"team": "team-a", "publicName": "smart", "deployments": ["gpt4o-east", "gpt4o-west"]},
    "status": {**STATUS, "conditions": STATUS["conditions"][:2]},
}


def columns(plural: str, wide: bool = False) -> list[dict]:
    cols = crd(plural)["spec"]["versions"][0]["additionalPrinterColumns"]
    return [c for c in cols if wide or c.get("priority", 0) == 0]


def kubectl_jsonpath(tmp_path, obj: dict, cols: list[dict]) -> list[str]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is required (client only; `--local` needs no server)"
    path = tmp_path / "object.yaml"
    path.write_text(yaml.safe_dump(obj))
    # kubectl's printer-column paths are relative JSONPaths: `{.spec.x}`.
    template = "{\"\\t\"}".join("{" + c["jsonPath"] + "}" for c in cols)
    out = subprocess.run(
        [kubectl, "label", "--local", "-f", str(path), "x=y", "-o", f"jsonpath={template}"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout
    return out.split("\t")


def test_model_deployment_columns(tmp_path):
    cols = columns("modeldeployments")
    assert [c["name"].upper() for c in cols] == [
        "MODEL", "TEAM", "WEIGHT", "ORDER", "ACCEPTED", "READY", "HEALTHY", "SNAPSHOT", "SIDECARS", "AGE"]
    values = dict(zip([c["name"].upper() for c in cols], kubectl_jsonpath(tmp_path, MD, cols)))
    assert values == {
        "MODEL": "gpt-4o", "TEAM": "team-a", "WEIGHT": "80", "ORDER": "1", "ACCEPTED": "True", "READY": "False",
        "HEALTHY": "True", "SNAPSHOT": "3f9c0a1d2e4b5c6d", "SIDECARS": "97", "AGE": "2026-11-22T09:00:00Z",
    }


def test_team_model_columns(tmp_path):
    cols = columns("teammodels")
    assert [c["name"].upper() for c in cols] == [
        "TEAM", "PUBLIC NAME", "DEPLOYMENTS", "ACCEPTED", "READY", "SNAPSHOT", "SIDECARS", "AGE"]
    values = dict(zip([c["name"].upper() for c in cols], kubectl_jsonpath(tmp_path, TM, cols)))
    assert values == {
        "TEAM": "team-a", "PUBLIC NAME": "smart", "DEPLOYMENTS": '["gpt4o-east","gpt4o-west"]', "ACCEPTED": "True",
        "READY": "False", "SNAPSHOT": "3f9c0a1d2e4b5c6d", "SIDECARS": "97", "AGE": "2026-11-22T09:00:00Z",
    }


@pytest.mark.parametrize("plural,obj", [("modeldeployments", MD), ("teammodels", TM)])
def test_wide_output_adds_connected_sidecars(tmp_path, plural, obj):
    cols = columns(plural, wide=True)
    index = next(i for i, c in enumerate(cols) if c["name"] == "Connected")
    assert cols[index]["priority"] == 1
    assert kubectl_jsonpath(tmp_path, obj, cols)[index] == "98"


def test_a_fresh_object_without_status_prints_empty_status_columns(tmp_path):
    fresh = {k: v for k, v in MD.items() if k != "status"}
    cols = columns("modeldeployments")
    values = kubectl_jsonpath(tmp_path, fresh, cols)
    assert values[:4] == ["gpt-4o", "team-a", "80", "1"]
    assert values[4:9] == ["", "", "", "", ""]
