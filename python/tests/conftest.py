import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmroute_local import Fakes, Sidecar, temp_dir  # noqa: E402

INSTANCES = ["chat-a", "chat-b", "resp-a", "resp-b", "resp-c", "emb", "down"]


def manifests(ports: dict[str, int]) -> str:
    def md(name: str, model: str, instance: str, extra: str = "") -> str:
        return (f"apiVersion: llmroute.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: {name}, namespace: llm}}\n"
                f"spec:\n  modelName: '{model}'\n  upstream: {{baseUrl: 'http://127.0.0.1:{ports[instance]}/v1'}}\n{extra}\n---\n")
    return (md("chat-a", "gpt-4o", "chat-a") + md("chat-b", "gpt-4o", "chat-b")
            + md("resp-a", "gpt-4.1", "resp-a") + md("resp-b", "gpt-4.1", "resp-b") + md("resp-c", "gpt-4.1", "resp-c")
            + md("emb", "text-embedding-3-small", "emb") + md("down", "broken", "down"))


CONFIG = "modelGroups:\n  gpt-4.1: {affinity: [responses]}\n  broken: {maxAttempts: 2}\n"


@pytest.fixture(scope="session")
def llmroute():
    work = temp_dir()
    fakes = Fakes({name: 0 for name in INSTANCES}, 0, work / "fakes.log")
    (work / "manifests").mkdir()
    (work / "manifests" / "all.yaml").write_text(manifests(fakes.instances))
    (work / "routing.yaml").write_text(CONFIG)
    sidecar = Sidecar("team-a", work / "manifests", work / "routing.yaml", work / "sidecar.log")
    fakes.behaviour("down", status=503)
    yield sidecar, fakes
    sidecar.stop()
    fakes.stop()
