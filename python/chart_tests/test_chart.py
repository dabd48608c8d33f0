"""The Helm chart rendered and linted by real Helm (helm-python-sdk embeds Helm's Go SDK),
every rendered manifest validated for a current Kubernetes, RBAC checked against the list of
what the operator needs, and the pod hardened."""

from __future__ import annotations

import json

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest

from conftest import CHART, CRDS, KUBERNETES, crd, documents

NON_DEFAULT = {
    "replicas": 3,
    "tls": {"mode": "cert-manager"},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
    "dashboard": {"enabled": True, "namespace": "monitoring"},
    "networkPolicy": {"enabled": True, "metricsNamespaceSelector": {"matchLabels": {"name": "monitoring"}}},
    "operator": {"globalNamespaces": ["llmroute", "shared-models"], "statusWritesPerSecond": 2, "readyThreshold": 0.9},
    "routingConfig": {"name": "prod", "spec": {"defaults": {"maxAttempts": 4, "strategy": "least-busy"},
                                                "modelGroups": {"gpt-4o": {"fallbacks": ["gpt-4o-mini"]}}}},
}

# Third-party kinds kubernetes-validate has no schema for (their CRDs are not ours).
THIRD_PARTY = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("cert-manager.io/v1", "Certificate"),
               ("cert-manager.io/v1", "Issuer")}

# Everything the operator may do, and nothing else: (apiGroup, resource, verb, scope).
ALLOWED = {
    *{("llmroute.dev", r, v, "cluster") for r in ("modeldeployments", "teammodels", "routingconfigs") for v in ("get", "list", "watch")},
    ("llmroute.dev", "modeldeployments/status", "patch", "cluster"),
    ("llmroute.dev", "teammodels/status", "patch", "cluster"),
    *{("", r, v, "cluster") for r in ("namespaces", "secrets") for v in ("get", "list", "watch")},
    ("events.k8s.io", "events", "create", "cluster"),
    ("events.k8s.io", "events", "patch", "cluster"),
    ("authentication.k8s.io", "tokenreviews", "create", "cluster"),
    *{("", "configmaps", v, "cluster") for v in ("get", "list", "watch", "create", "patch")},
    *{("coordination.k8s.io", "leases", v, "namespace") for v in ("get", "create", "update", "patch")},
    ("", "secrets", "create", "namespace"),
    ("", "configmaps", "delete", "namespace"),
}


def render(values: dict) -> list[dict]:
    chart = helm.Chart.load(CHART)
    out = chart.render(values, name="llmroute", namespace="llmroute", is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(documents(text))
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["default", "non-default"])
def test_lint_is_clean(values):
    report = helm.lint(CHART, values, strict=True, namespace="llmroute", kube_version=f"v{KUBERNETES}")
    assert report["errors"] == [], report
    assert report["messages"] == [], report


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["default", "non-default"])
def test_every_rendered_manifest_is_valid(values):
    docs = render(values)
    assert docs
    routing = crd("routingconfigs")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key in THIRD_PARTY:
            assert doc["metadata"]["name"]
            continue
        if doc["kind"] == "RoutingConfig":
            jsonschema.validate(doc["spec"], routing["properties"]["spec"])
            continue
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_values_schema_refuses_a_typo():
    with pytest.raises(Exception, match="replcas"):
        helm.Chart.load(CHART).render({"replcas": 3}, name="llmroute", namespace="llmroute")
    with pytest.raises(Exception):
        helm.Chart.load(CHART).render({"tls": {"mode": "sometimes"}}, name="llmroute", namespace="llmroute")


def test_crds_are_the_generated_ones_kept_on_uninstall():
    docs = by_kind(render({}), "CustomResourceDefinition")
    assert sorted(d["metadata"]["name"] for d in docs) == [
        "modeldeployments.llmroute.dev", "routingconfigs.llmroute.dev", "teammodels.llmroute.dev"]
    for d in docs:
        assert d["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        generated = crd(d["spec"]["names"]["plural"])
        assert d["spec"] == generated["spec"], "charts/llmroute/files/crds is stale: run make crds"
    for f in CRDS.glob("*.yaml"):
        assert (CHART / "files" / "crds" / f.name).read_text() == f.read_text(), f"{f.name} differs: make crds"
    assert by_kind(render({"crds": {"install": False}}), "CustomResourceDefinition") == []


def rbac_rules(docs: list[dict]) -> set[tuple[str, str, str, str]]:
    granted = set()
    for doc in docs:
        if doc["kind"] not in ("ClusterRole", "Role"):
            continue
        scope = "cluster" if doc["kind"] == "ClusterRole" else "namespace"
        for rule in doc["rules"]:
            assert "resourceNames" not in rule or rule["resourceNames"]
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        granted.add((group, resource, verb, scope))
    return granted


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["default", "non-default"])
def test_rbac_grants_exactly_what_the_operator_needs_and_no_wildcard(values):
    docs = render(values)
    text = json.dumps([d for d in docs if d["kind"] in ("ClusterRole", "Role")])
    assert '"*"' not in text, "a wildcard in RBAC"
    granted = rbac_rules(docs)
    assert granted - ALLOWED == set(), f"beyond the list: {sorted(granted - ALLOWED)}"
    assert ALLOWED - granted == set(), f"missing: {sorted(ALLOWED - granted)}"
    bindings = by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding")
    assert {s["name"] for b in bindings for s in b["subjects"]} == {"llmroute-operator"}


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["default", "non-default"])
def test_the_operator_pod_is_hardened_and_probed(values):
    docs = render(values)
    (deployment,) = by_kind(docs, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == values.get("replicas", 2)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    (service,) = by_kind(docs, "Service")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"grpc": 50051, "metrics": 9090}
    assert by_kind(docs, "ServiceAccount")[0]["metadata"]["name"] == spec["serviceAccountName"]


def test_operator_flags_follow_values():
    args = by_kind(render(NON_DEFAULT), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--tls-mode=files" in args and "--tls-cert-file=/etc/llmroute/tls/tls.crt" in args
    assert "--global-namespaces=llmroute,shared-models" in args
    assert "--routing-config=prod" in args and "--status-writes-per-second=2" in args
    default = by_kind(render({}), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--tls-mode=self-signed" in default and "--ca-secret=llmroute-ca" in default
    assert not any(a.startswith("--global-namespaces") for a in default)
    assert by_kind(render({"tls": {"mode": "off"}}), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"].count("--tls-mode=off") == 1


def test_routing_config_optional_resources_and_notes():
    docs = render(NON_DEFAULT)
    (config,) = by_kind(docs, "RoutingConfig")
    assert config["metadata"] == {**config["metadata"], "name": "prod", "namespace": "llmroute"}
    assert config["spec"]["defaults"]["maxAttempts"] == 4
    assert len(by_kind(docs, "ServiceMonitor")) == 1 and len(by_kind(docs, "NetworkPolicy")) == 1
    assert {d["metadata"]["name"] for d in by_kind(docs, "Certificate")} == {"llmroute-ca", "llmroute-operator-tls"}
    default = render({})
    assert by_kind(default, "ServiceMonitor") == [] and by_kind(default, "NetworkPolicy") == []
    assert by_kind(default, "Certificate") == []
    notes = helm.Chart.load(CHART).render({}, name="llmroute", namespace="llmroute")["llmroute/templates/NOTES.txt"]
    for step in ("llmroute.dev/team=team-a", "llmroute.dev/credentials=true", "kubectl get md,tm", "llmroute-ca"):
        assert step in notes, step


def test_the_dashboard_is_the_one_in_deploy_and_optional():
    (dashboard,) = [d for d in by_kind(render(NON_DEFAULT), "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART.parent.parent / "deploy" / "grafana" / "llmroute-dashboard.json").read_text())
    assert json.loads(dashboard["data"]["llmroute.json"]) == shipped
    assert all(t["expr"] for p in shipped["panels"] for t in p["targets"])
    assert not [d for d in by_kind(render({}), "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
