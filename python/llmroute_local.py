"""Start fake upstreams and a standalone llmroute sidecar on loopback (used by the demo and
the compatibility suite). Binaries come from LLMROUTE_BIN_DIR (default: target/debug)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bin_dir() -> Path:
    return Path(os.environ.get("LLMROUTE_BIN_DIR", ROOT / "target" / "debug"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until(check, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def announced(log: Path, needle: str, timeout: float = 15.0) -> str:
    """The first line of a process log containing `needle` (binaries announce bound ports)."""
    found: list[str] = []

    def check() -> bool:
        found[:] = [line for line in log.read_text().splitlines() if needle in line]
        return bool(found)

    wait_until(check, timeout, what=f"'{needle}' in {log}")
    return found[0]


class Fakes:
    """A fake-upstream process with named instances; port 0 means "pick one"."""

    def __init__(self, instances: dict[str, int], control: int, log: Path):
        args = [str(bin_dir() / "fake-upstream"), "--control", f"127.0.0.1:{control}"]
        for name, port in instances.items():
            args += ["--instance", f"{name}=127.0.0.1:{port}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        bound = json.loads(announced(log, '"fake_upstream"'))["fake_upstream"]
        self.control = f"http://{bound['control']}"
        self.instances = {name: int(addr.rsplit(":", 1)[1]) for name, addr in bound["instances"].items()}

    def behaviour(self, name: str, **fields) -> None:
        status, body = http("POST", f"{self.control}/{name}/behaviour", fields)
        assert status == 200, body

    def stats(self, name: str) -> dict:
        return json.loads(http("GET", f"{self.control}/{name}/stats")[1])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


class Operator:
    """An llmroute-operator on a manifests directory, on free ports."""

    def __init__(self, manifests: Path, config: Path | None, log: Path):
        args = [str(bin_dir() / "llmroute-operator"), "--manifests", str(manifests),
                "--grpc-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
        if config:
            args += ["--config", str(config)]
        self.log = log
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                                     env={**os.environ, "LLMROUTE_LOG": "info"})
        line = announced(log, "llmroute-operator serving")
        fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
        self.grpc = f"http://{fields['grpc']}"
        self.admin = f"http://{fields['admin']}"
        wait_until(lambda: http("GET", self.admin + "/readyz")[0] == 200, what="operator readiness")

    def status(self) -> dict:
        return json.loads(http("GET", self.admin + "/status")[1])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


class Sidecar:
    """An llmroute-sidecar on free ports: standalone on `manifests`, or fed by `operator`."""

    def __init__(self, team: str, manifests: Path | None, config: Path | None, log: Path,
                 extra: list[str] | None = None, operator: str | None = None):
        args = [str(bin_dir() / "llmroute-sidecar"), "--team", team,
                "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
        if operator:
            args += ["--operator", operator, "--pod-name", f"{team}-demo", "--namespace", team]
        else:
            args += ["--manifests", str(manifests), "--poll-interval-ms", "100"]
        if config and not operator:
            args += ["--config", str(config)]
        self.log = log
        self.proc = subprocess.Popen(args + (extra or []), stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                                     env={**os.environ, "LLMROUTE_LOG": "info"})
        line = announced(log, "llmroute-sidecar serving")
        fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
        self.base_url = f"http://{fields['listen']}/v1"
        self.admin = f"http://{fields['admin']}"
        wait_until(lambda: http("GET", self.admin + "/readyz")[0] == 200, what="sidecar readiness")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def temp_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="llmroute-"))
