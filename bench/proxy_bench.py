"""Sidecar hop benchmark (DESIGN §7), side by side in one run.

The same fixed-response upstream (an nginx process returning a canned chat completion) is
reached directly, through a plain nginx reverse-proxy hop (its own single-worker nginx
process, keep-alive upstream), and through the
llmroute sidecar (release build), with wrk at concurrency 1 and 16. Reports p50/p99 added
latency over the direct path and requests/s as a ratio to the nginx hop, then the idle RSS of
a sidecar holding a 1,000-deployment snapshot. Loopback only; every run is bounded in time."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
from llmroute_local import ROOT, announced, free_port, http, wait_until  # noqa: E402

DURATION = os.environ.get("BENCH_DURATION", "10s")
CANNED = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
})
BODY = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]})


def nginx_conf(work: Path, name: str, server: str) -> Path:
    """One single-worker nginx process; the upstream and the hop are separate processes, as the
    sidecar is a process of its own."""
    conf = f"""
worker_processes 1;
pid {work}/{name}.pid;
error_log {work}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/{name}-body; proxy_temp_path {work}/{name}-proxy; fastcgi_temp_path {work}/{name}-fcgi;
  uwsgi_temp_path {work}/{name}-uwsgi; scgi_temp_path {work}/{name}-scgi;
  tcp_nodelay on;
  keepalive_requests 1000000;
  {server}
}}
"""
    path = work / f"{name}.conf"
    path.write_text(conf)
    return path


def start_nginx(work: Path, upstream_port: int, hop_port: int) -> list[subprocess.Popen]:
    canned = CANNED.replace("'", "\\'")
    upstream = f"server {{ listen 127.0.0.1:{upstream_port}; location / {{ default_type application/json; return 200 '{canned}'; }} }}"
    hop = (f"upstream fixed {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}\n"
           f"  server {{ listen 127.0.0.1:{hop_port}; location / {{ proxy_pass http://fixed; "
           f"proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}")
    return [subprocess.Popen(["nginx", "-c", str(nginx_conf(work, name, server)), "-g", "daemon off;"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, server in (("upstream", upstream), ("hop", hop))]


def wrk(url: str, connections: int, script: Path, cpu: int | None = None) -> dict:
    threads = 1 if connections == 1 else 2
    pinned = ["taskset", "-c", str(cpu)] if cpu is not None else []
    out = subprocess.run([*pinned, "wrk", f"-t{threads}", f"-c{connections}", f"-d{DURATION}", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, timeout=120).stdout
    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"p50": ms("50"), "p99": ms("99"), "rps": rps, "non2xx": int(errors.group(1)) if errors else 0}


def manifests(directory: Path, port: int, deployments: int) -> None:
    docs = []
    for i in range(deployments):
        docs.append(f"apiVersion: llmroute.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: d{i}, namespace: bench}}\n"
                    f"spec: {{modelName: '{'gpt-4o' if i == 0 else f'model-{i % 100}'}', "
                    f"upstream: {{baseUrl: 'http://127.0.0.1:{port}/v1'}}, weight: 1}}\n")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "all.yaml").write_text("---\n".join(docs))


def start_sidecar(binary: Path, directory: Path, extra: tuple[str, ...] = (), name: str = "") -> tuple[subprocess.Popen, int, int]:
    log = directory.parent / f"{directory.name}{name}-sidecar.log"
    proc = subprocess.Popen([str(binary), "--team", "bench", "--manifests", str(directory),
                             "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", *extra],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"), env={**os.environ, "LLMROUTE_LOG": "info"})
    line = announced(log, "llmroute-sidecar serving")
    fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
    port, admin = int(fields["listen"].rsplit(":", 1)[1]), int(fields["admin"].rsplit(":", 1)[1])
    wait_until(lambda: http("GET", f"http://127.0.0.1:{admin}/readyz")[0] == 200, what="sidecar readiness")
    return proc, port, admin


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def main() -> int:
    binary = Path(os.environ.get("LLMROUTE_RELEASE_DIR", ROOT / "target" / "release")) / "llmroute-sidecar"
    work = Path(tempfile.mkdtemp(prefix="llmroute-bench-"))
    upstream_port, hop_port = free_port(), free_port()
    script = work / "post.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = {json.dumps(BODY)}\n')
    nginx = start_nginx(work, upstream_port, hop_port)
    try:
        return run(binary, work, upstream_port, hop_port, script, [proc.pid for proc in nginx])
    finally:
        # Whatever happened, no nginx outlives the benchmark.
        for proc in nginx:
            proc.terminate()
            proc.wait(5)


TRACE_ROUNDS = int(os.environ.get("BENCH_TRACE_ROUNDS", "10"))
TRACE_DURATION = os.environ.get("BENCH_TRACE_DURATION", "3s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def pin(pid: int, cpu: int) -> None:
    """Every thread of `pid` and of its child processes onto `cpu`."""
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), {cpu})
        children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        for child in children:
            pin(int(child), cpu)


def tracing_rounds(binary: Path, directory: Path, script: Path, configs: dict[str, tuple[str, ...]],
                   connections: int, others: list[int]) -> dict[str, list[dict]]:
    """Tracing off, unsampled and fully sampled, interleaved, each run in a sidecar process of
    its own (started for that run): on a shared machine whose speed drifts, only rows measured
    side by side, many times, compare. The sidecar runs alone on CPU 1; the load generator,
    the upstream and the collector (`others`) share CPU 0, so that req/s is the sidecar's
    own throughput on one core rather than the scheduler's mood."""
    for pid in others:
        pin(pid, 0)
    global DURATION
    names = list(configs)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    saved, DURATION = DURATION, TRACE_DURATION
    try:
        for round_ in range(TRACE_ROUNDS):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                proc, port, admin = start_sidecar(binary, directory, configs[name], f"-round{round_}")
                try:
                    pin(proc.pid, 1)
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    assert http("POST", url, json.loads(BODY))[0] == 200
                    before = cpu_seconds(proc.pid)
                    r = wrk(url, connections, script, cpu=0)
                    seconds = float(TRACE_DURATION.rstrip("s"))
                    r["cpu_us"] = (cpu_seconds(proc.pid) - before) / max(r["rps"] * seconds, 1) * 1e6
                    _, metrics = http("GET", f"http://127.0.0.1:{admin}/metrics")
                    dropped = re.search(r"llmroute_trace_spans_dropped_total (\d+)", metrics.decode())
                    r["dropped"] = int(dropped.group(1)) if dropped else 0
                    runs[name].append(r)
                finally:
                    proc.terminate()
                    proc.wait(5)
    finally:
        DURATION = saved
    return runs


def start_sink(binary: Path, work: Path) -> tuple[subprocess.Popen, str, Path]:
    """The OTLP trace sink (a collector's TraceService that counts spans)."""
    log = work / "otlp-sink.log"
    proc = subprocess.Popen([str(binary)], stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    line = announced(log, "otlp_sink")
    return proc, json.loads(line)["otlp_sink"], log


def run(binary: Path, work: Path, upstream_port: int, hop_port: int, script: Path, nginx: list[int]) -> int:
    manifests(work / "one", upstream_port, 1)
    started: list[subprocess.Popen] = []
    try:
        sidecar, port, _ = start_sidecar(binary, work / "one")
        started.append(sidecar)
        sink, sink_addr, sink_log = start_sink(binary.parent / "otlp-sink", work)
        started.append(sink)
        wait_until(lambda: http("POST", f"http://127.0.0.1:{hop_port}/v1/chat/completions", {})[0] == 200, what="nginx")
        status, body = http("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json.loads(BODY))
        assert status == 200, body
        targets = {
            "direct": f"http://127.0.0.1:{upstream_port}/v1/chat/completions",
            "nginx hop": f"http://127.0.0.1:{hop_port}/v1/chat/completions",
            "llmroute sidecar": f"http://127.0.0.1:{port}/v1/chat/completions",
        }
        results = {}
        for connections in (1, 16):
            for name, url in targets.items():
                results[(name, connections)] = wrk(url, connections, script)
                time.sleep(0.5)
        endpoint = ("--otlp-endpoint", f"http://{sink_addr}", "--trace-sample-ratio")
        configs = {
            "tracing off": (),
            "tracing on, 0% sampled": (*endpoint, "0"),
            "tracing on, 100% sampled": (*endpoint, "1.0"),
        }
        others = [sink.pid, *nginx]
        tracing = {c: tracing_rounds(binary, work / "one", script, configs, c, others) for c in (16, 1)}
    finally:
        # Whatever happened, nothing started here outlives the benchmark.
        for proc in started:
            proc.terminate()
            proc.wait(5)
    received = re.search(r'"otlp_sink_spans":\s*(\d+)', sink_log.read_text())
    manifests(work / "thousand", upstream_port, 1000)
    idle, _, _ = start_sidecar(binary, work / "thousand")
    time.sleep(1.0)
    idle_rss = rss_mb(idle.pid)
    idle.terminate()
    idle.wait(5)

    print(f"\nwrk {DURATION} per row, POST /v1/chat/completions, canned 200 from nginx; 2-core machine, all on loopback\n")
    print("| path | conc. | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s | req/s vs nginx hop |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for connections in (1, 16):
        direct = results[("direct", connections)]
        hop = results[("nginx hop", connections)]
        for name in targets:
            r = results[(name, connections)]
            added50 = "" if name == "direct" else f"{r['p50'] - direct['p50']:+.3f}"
            added99 = "" if name == "direct" else f"{r['p99'] - direct['p99']:+.3f}"
            ratio = f"{r['rps'] / hop['rps'] * 100:.0f}%"
            errors = f" ({r['non2xx']} non-2xx)" if r["non2xx"] else ""
            print(f"| {name} | {connections} | {r['p50']:.3f} | {r['p99']:.3f} | {added50} | {added99} | {r['rps']:.0f}{errors} | {ratio} |")
    print(f"\nTracing, {TRACE_ROUNDS} rounds of {TRACE_DURATION} per sidecar and concurrency, the order rotating each "
          "round, the sidecar alone on CPU 1 and everything else on CPU 0; medians, the ratio taken within each round; "
          "CPU is the sidecar process's own (user + system) per request:\n")
    print("| sidecar | conc. | req/s | req/s vs tracing off | CPU µs per request | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for connections, by_name in tracing.items():
        off = by_name["tracing off"]
        for name, runs in by_name.items():
            ratio = median([r["rps"] / o["rps"] for r, o in zip(runs, off)]) * 100
            print(f"| {name} | {connections} | {median([r['rps'] for r in runs]):.0f} | {ratio:.1f}% "
                  f"| {median([r['cpu_us'] for r in runs]):.1f} | {median([r['p50'] for r in runs]):.3f} "
                  f"| {median([r['p99'] for r in runs]):.3f} |")
    dropped = sum(r["dropped"] for by_name in tracing.values() for runs in by_name.values() for r in runs)
    print(f"\nTraced sidecars: {received.group(1) if received else '?'} spans received by the collector, "
          f"{dropped} dropped by the export queue")
    print(f"\nIdle sidecar RSS with a 1,000-deployment snapshot: {idle_rss:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
