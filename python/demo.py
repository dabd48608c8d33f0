"""llmroute demo: fake upstreams on loopback, one operator on (a copy of) deploy/examples
feeding two sidecars of different teams over gRPC, a walk through the features with real
requests from the official OpenAI client, a change reaching both sidecars, and the standalone
mode (a sidecar with no operator). No cluster, no internet. Ends by itself."""

from __future__ import annotations

import collections
import json
import shutil
import sys
import time

import openai

from llmroute_local import ROOT, Fakes, Operator, Sidecar, http, temp_dir, wait_until

# The example manifests point at these loopback ports.
INSTANCES = {
    "gpt4o-east": 18101, "gpt4o-west": 18102, "gpt4o-openai": 18103,
    "mini-a": 18111, "mini-b": 18112, "mini-backup": 18113, "gpt41-long": 18121,
    "team-a-llama-1": 18131, "team-a-llama-2": 18132, "team-a-openai-passthrough": 18141, "team-b-embed": 18151,
}
CHAT = [{"role": "user", "content": "hello"}]


def title(text: str) -> None:
    print(f"\n=== {text}")


def chat(client: openai.OpenAI, model: str, **headers: str):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=CHAT, extra_headers=headers or None)
    return raw.headers["x-llmroute-deployment"], int(raw.headers["x-llmroute-attempts"]), raw


NEW_GLOBAL = """apiVersion: llmroute.dev/v1alpha1
kind: ModelDeployment
metadata: {name: demo-new, namespace: llm}
spec: {modelName: gpt-4o-new, upstream: {baseUrl: 'http://127.0.0.1:18103/v1'}}
"""


ADAPTIVE = """apiVersion: llmroute.dev/v1alpha1
kind: ModelDeployment
metadata: {name: favourite, namespace: llm}
spec: {modelName: demo-adaptive, qualityTier: 5, upstream: {baseUrl: 'http://127.0.0.1:18111/v1'}}
---
apiVersion: llmroute.dev/v1alpha1
kind: ModelDeployment
metadata: {name: underdog, namespace: llm}
spec: {modelName: demo-adaptive, qualityTier: 1, upstream: {baseUrl: 'http://127.0.0.1:18112/v1'}}
---
apiVersion: llmroute.dev/v1alpha1
kind: TeamModel
metadata: {name: smart-mini, namespace: llm}
spec:
  team: team-a
  publicName: smart-mini
  modelName: demo-adaptive
  routing: {strategy: adaptive}
"""


def adaptive_feedback(operator: Operator, manifests, client: openai.OpenAI, sidecar: Sidecar) -> None:
    title("Adaptive routing learns from feedback: team-a's 'smart-mini' over 'favourite' (qualityTier 5) and "
          "'underdog' (tier 1); users rate the underdog's answers good and the favourite's bad")
    (manifests / "60-demo-adaptive.yaml").write_text(ADAPTIVE)

    def ready() -> bool:
        try:
            return chat(client, "smart-mini")[0] != ""
        except openai.NotFoundError:
            return False

    wait_until(ready, timeout=10, what="the adaptive TeamModel")
    picks = []
    for i in range(80):
        raw = client.chat.completions.with_raw_response.create(
            model="smart-mini", messages=[{"role": "user", "content": f"Write a haiku about the sea, take {i}"}])
        deployment = raw.headers["x-llmroute-deployment"]
        score = 1.0 if deployment == "llm/underdog" else 0.0
        status, body = http("POST", sidecar.base_url + "/feedback", {"response_id": raw.parse().id, "score": score})
        assert status == 200, body
        picks.append(deployment)
    early, late = collections.Counter(picks[:20]), collections.Counter(picks[-20:])
    print(f"  first 20 picks: {dict(sorted(early.items()))}")
    print(f"  last 20 picks:  {dict(sorted(late.items()))}")

    def merged() -> list:
        cells = json.loads(http("GET", operator.admin + "/adaptive")[1])["cells"]
        return [c for c in cells if c["group"] == "smart-mini"]

    wait_until(lambda: len({c["deployment"] for c in merged()}) == 2, timeout=10, what="the operator's merge")
    for c in sorted(merged(), key=lambda c: (c["requestType"], c["deployment"])):
        print(f"  operator /adaptive: {c['deployment']:13} {c['requestType']:8} mean {c['mean']:.2f} "
              f"over {c['samples']:.0f} samples")
    status, body = http("GET", sidecar.admin + "/debug/route?model=smart-mini")
    route = json.loads(body)
    print(f"  /debug/route?model=smart-mini: {route['route']['policy']['strategy']}, "
          f"{len(route['candidates'])} candidates, pick now {route['pick']}")


def change_reaches_both(operator: Operator, manifests, client_a: openai.OpenAI, client_b: openai.OpenAI) -> None:
    title("A change reaches every sidecar: a new global deployment, gpt-4o-new, is added to the manifests")
    (manifests / "50-demo-new.yaml").write_text(NEW_GLOBAL)
    started = time.monotonic()

    def served(client: openai.OpenAI) -> bool:
        try:
            return chat(client, "gpt-4o-new")[0] == "llm/demo-new"
        except openai.NotFoundError:
            return False

    wait_until(lambda: served(client_a) and served(client_b), timeout=10, what="the new view on both sidecars")
    print(f"  team-a and team-b both serve gpt-4o-new after {(time.monotonic() - started) * 1000:.0f} ms")
    teams = {t["team"]: t for t in operator.status()["teams"]}
    for team in ("team-a", "team-b"):
        t = teams[team]
        print(f"  /status {team}: version {t['version']}, {t['acknowledged']} of {t['connected']} sidecars acknowledged")


def standalone(work, fakes: Fakes) -> None:
    title("Standalone mode: a sidecar with no operator compiles the manifests itself")
    sidecar = Sidecar("team-b", ROOT / "deploy/examples/manifests", ROOT / "deploy/examples/routing-config.yaml",
                      work / "standalone.log")
    try:
        client = openai.OpenAI(base_url=sidecar.base_url, api_key="not-forwarded", max_retries=0)
        counts = collections.Counter(chat(client, "gpt-4o", **{"x-llmroute-session-id": f"x{i}"})[0] for i in range(50))
        print(f"  team-b, standalone: 50 requests for gpt-4o -> {dict(sorted(counts.items()))}")
    finally:
        sidecar.stop()


def main() -> int:
    work = temp_dir()
    fakes = Fakes(INSTANCES, 18100, work / "fakes.log")
    manifests = work / "manifests"
    shutil.copytree(ROOT / "deploy/examples/manifests", manifests)
    operator = Operator(manifests, ROOT / "deploy/examples/routing-config.yaml", work / "operator.log")
    sidecar = Sidecar("team-a", None, None, work / "sidecar.log", operator=operator.grpc)
    sidecar_b = Sidecar("team-b", None, None, work / "sidecar-b.log", operator=operator.grpc)
    client = openai.OpenAI(base_url=sidecar.base_url, api_key="not-forwarded", max_retries=0)
    client_b = openai.OpenAI(base_url=sidecar_b.base_url, api_key="not-forwarded", max_retries=0)
    try:
        print(f"llmroute-operator on {operator.grpc} (admin {operator.admin}) feeding two sidecars:")
        print(f"  team-a sidecar on {sidecar.base_url}, view {http('GET', sidecar.admin + '/readyz')[1].decode().split()[1]}")
        print(f"  team-b sidecar on {sidecar_b.base_url}, view {http('GET', sidecar_b.admin + '/readyz')[1].decode().split()[1]}")

        title("Weighted split: gpt-4o = gpt4o-east (weight 80) + gpt4o-west (weight 20), 200 requests")
        counts = collections.Counter(chat(client, "gpt-4o", **{"x-llmroute-session-id": f"s{i}"})[0] for i in range(200))
        for deployment, n in sorted(counts.items()):
            print(f"  {deployment:24} {n:4} ({n / 2:.0f}%)")

        title("Failover in the same request: mini-a answers 500, the request is retried on mini-b")
        fakes.behaviour("mini-a", status=500)
        for i in range(30):
            served, attempts, _ = chat(client, "gpt-4o-mini")
            if attempts > 1:
                print(f"  request {i + 1}: served by {served} after {attempts} attempts (mini-a failed first)")
                break
        fakes.behaviour("mini-a", status=200)

        title("Order escalation: both order-1 regions fail, order-2 gpt4o-openai serves")
        fakes.behaviour("gpt4o-east", status=503)
        fakes.behaviour("gpt4o-west", status=503)
        served, attempts, _ = chat(client, "gpt-4o", **{"x-llmroute-session-id": "escalation"})
        print(f"  served by {served} after {attempts} attempts")
        fakes.behaviour("gpt4o-east", status=200)
        fakes.behaviour("gpt4o-west", status=200)

        title("Session affinity (gpt-4o): the same x-llmroute-session-id always lands on the same deployment")
        time.sleep(0.1)
        for session in ("alice", "bob", "carol", "dave", "erin", "frank"):
            served = {chat(client, "gpt-4o", **{"x-llmroute-session-id": session})[0] for _ in range(5)}
            print(f"  session {session:6} -> {', '.join(sorted(served))} (5 requests, one deployment)")

        title("Team alias and wildcard: team-a's 'smart' and 'openai/*'")
        served, _, raw = chat(client, "smart")
        print(f"  smart                -> {served} (TeamModel alias of the global gpt-4o group)")
        served, _, _ = chat(client, "openai/gpt-4.1-nano")
        upstream_model = fakes.stats("team-a-openai-passthrough")["last_model"]
        print(f"  openai/gpt-4.1-nano  -> {served}, upstream model {upstream_model!r}")
        siblings = collections.Counter(chat(client, "llama-3-70b")[0] for _ in range(20))
        print(f"  llama-3-70b          -> {dict(siblings)} (team-a's private siblings)")
        try:
            client.chat.completions.create(model="chat", messages=CHAT)
        except openai.NotFoundError as e:
            print(f"  chat (team-b's)      -> 404 {e.code}: team isolation")

        title("Context-window fallback: the gpt-4o deployments refuse a long prompt, gpt-4.1 takes it")
        for name in ("gpt4o-east", "gpt4o-west", "gpt4o-openai"):
            fakes.behaviour(name, context_window=20)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "a long document " * 20}])
        print(f"  served by {raw.headers['x-llmroute-deployment']} (group {raw.headers['x-llmroute-model-group']}) "
              f"after {raw.headers['x-llmroute-attempts']} attempts")
        for name in ("gpt4o-east", "gpt4o-west", "gpt4o-openai"):
            fakes.behaviour(name, context_window=0)

        title("Responses API affinity: previous_response_id returns to the deployment holding the conversation")
        first = client.responses.with_raw_response.create(model="smart", input="remember this")
        response = first.parse()
        print(f"  first  -> {first.headers['x-llmroute-deployment']}, id {response.id[:40]}...")
        for i in range(3):
            follow = client.responses.with_raw_response.create(model="smart", input="and this", previous_response_id=response.id)
            print(f"  follow-up {i + 1} -> {follow.headers['x-llmroute-deployment']}")
            response = follow.parse()

        title("Health check: gpt4o-east goes down; the operator's probe takes it out of every sidecar's rotation")
        fakes.behaviour("gpt4o-east", healthy=False)
        wait_until(lambda: b'llmroute_deployment_healthy{deployment="llm/gpt4o-east"} 0'
                   in http("GET", sidecar.admin + "/metrics")[1], timeout=10, what="the probe")
        print('  /metrics: llmroute_deployment_healthy{deployment="llm/gpt4o-east"} 0')
        counts = collections.Counter(chat(client, "gpt-4o", **{"x-llmroute-session-id": f"h{i}"})[0] for i in range(50))
        print(f"  50 requests -> {dict(counts)}")
        fakes.behaviour("gpt4o-east", healthy=True)

        adaptive_feedback(operator, manifests, client, sidecar)
        change_reaches_both(operator, manifests, client, client_b)
        standalone(work, fakes)

        print("\nDone. Every answer above came through a sidecar on loopback; see README.md for more.")
        return 0
    except Exception as e:  # the demo must end with a clear message, never a hang
        logs = "".join(f"--- {name} ---\n{(work / name).read_text()}" for name in ("operator.log", "sidecar.log")
                       if (work / name).exists())
        print(f"\ndemo failed: {e}\n{logs}", file=sys.stderr)
        return 1
    finally:
        sidecar.stop()
        sidecar_b.stop()
        operator.stop()
        fakes.stop()


if __name__ == "__main__":
    sys.exit(main())
