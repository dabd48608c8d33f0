"""The example application and cluster resources in deploy/: valid for a current Kubernetes,
and the app runs the sidecar as a native sidecar the way the README says."""

from __future__ import annotations

import kubernetes_validate

from conftest import DEPLOY, KUBERNETES, documents

OURS = {"ModelDeployment", "TeamModel", "RoutingConfig"}


def deploy_documents() -> list[dict]:
    docs = []
    for directory in ("app", "cluster"):
        for path in sorted((DEPLOY / directory).glob("*.yaml")):
            docs.extend(documents(path.read_text()))
    return docs


def test_every_builtin_kind_in_deploy_is_valid():
    docs = deploy_documents()
    # Our own kinds are checked against the generated schemas and CEL rules by the Rust test
    # crates/manifests/tests/examples.rs (every_cluster_example_is_valid_and_accepted_under_tenancy).
    builtin = [d for d in docs if d["kind"] not in OURS]
    assert {d["kind"] for d in builtin} >= {"Namespace", "Secret", "Deployment", "ServiceAccount"}
    for doc in builtin:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_credential_secrets_carry_the_watched_label():
    for doc in deploy_documents():
        if doc["kind"] == "Secret":
            assert doc["metadata"]["labels"]["llmroute.dev/credentials"] == "true", doc["metadata"]["name"]


def test_the_app_runs_the_sidecar_as_a_native_sidecar():
    (app,) = [d for d in deploy_documents() if d["kind"] == "Deployment"]
    pod = app["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/readyz"
    args = sidecar["args"]
    assert any(a.startswith("--operator=https://") for a in args)
    assert "--operator-ca-file=/var/run/llmroute/ca/ca.crt" in args
    assert "--operator-token-file=/var/run/secrets/llmroute/token" in args
    volumes = {v["name"]: v for v in pod["volumes"]}
    token = volumes["llmroute-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "llmroute" and token["path"] == "token"
    assert volumes["llmroute-ca"]["configMap"]["name"] == "llmroute-ca"
    cache = volumes["llmroute-cache"]["emptyDir"]
    assert cache["medium"] == "Memory"
    cache_arg = next(a for a in args if a.startswith("--snapshot-cache="))
    mount = next(m for m in sidecar["volumeMounts"] if m["name"] == "llmroute-cache")
    assert cache_arg.split("=", 1)[1].startswith(mount["mountPath"])
    # Only the sidecar mounts the cache: it holds the team's credentials.
    for container in pod["containers"]:
        assert all(m["name"] != "llmroute-cache" for m in container.get("volumeMounts", []))
    app_env = {e["name"]: e.get("value") for c in pod["containers"] for e in c.get("env", [])}
    assert app_env["OPENAI_BASE_URL"] == "http://127.0.0.1:4000/v1"
    assert pod["securityContext"]["runAsNonRoot"] is True
