#!/usr/bin/env python3
"""The performance benchmark: modeld against its baselines, side by side, in one run.

    python3 bench/run.py [--seconds 8] [--models tabular_mlp,squeezenet1_1]

Builds release (modeld, the in-process tract baseline, the plan study), installs what it
lacks (wrk with apt-get, FastAPI/uvicorn/onnxruntime/MLServer in target/bench-venv), then
for the tabular MLP and SqueezeNet drives, with wrk at concurrency 1, 16 and 64:

  - modeld over OIP JSON (POST /v2/models/M/infer) and over /predict;
  - the same model in-process with tract behind a minimal hyper server (OIP JSON);
  - FastAPI + uvicorn (workers = cores) + onnxruntime (/predict);
  - MLServer with a minimal onnxruntime runtime (the same OIP JSON as modeld);

and prints requests/s, P50, P99 and peak RSS (server and its children), with the ratios
against the targets. Then dynamic batching on against off at concurrency 64 on the MLP,
worker cold start and RSS per reference model, supervisor RSS idle and under load, and the
symbolic-vs-concrete plan study. Appends everything to bench/RESULTS.md.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = ROOT / "target" / "bench-venv"
REFERENCE = ROOT / "tests" / "fixtures" / "reference"
INPUTS = {"tabular_mlp": "features", "lstm_clf": "frames", "kws_conv_gru": "mfcc", "squeezenet1_1": "input"}
CONCURRENCY = [1, 16, 64]


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ensure_tools():
    if not shutil.which("wrk"):
        sh("apt-get", "update", "-qq")
        sh("apt-get", "install", "-y", "-qq", "wrk")
    if not (VENV / "bin" / "mlserver").exists():
        sh(sys.executable, "-m", "venv", str(VENV))
        # MLServer 1.7 breaks with uvloop 0.21+ (its inference pool calls get_event_loop).
        sh(str(VENV / "bin" / "pip"), "install", "-q", "fastapi", "uvicorn", "onnxruntime", "mlserver", "numpy", "uvloop<0.21")
    sh("cargo", "build", "--release", "--quiet", "--bin", "modeld", "--examples", cwd=ROOT)


def reference_input(model):
    """The model's reference input as (shape, flat list of floats)."""
    import zipfile
    import io
    import struct

    with zipfile.ZipFile(REFERENCE / f"{model}.ref.npz") as z:
        raw = z.read(f"input_{INPUTS[model]}.npy")
    header_len = struct.unpack("<H", raw[8:10])[0]
    header = raw[10 : 10 + header_len].decode()
    shape = tuple(int(d) for d in re.search(r"\((.*?)\)", header).group(1).split(",") if d.strip())
    count = 1
    for d in shape:
        count *= d
    data = struct.unpack(f"<{count}f", raw[10 + header_len : 10 + header_len + 4 * count])
    return shape, list(data)


def bodies(model, directory):
    """Request bodies for one example: OIP JSON and /predict JSON."""
    shape, data = reference_input(model)
    row = [1] + list(shape[1:])
    n = 1
    for d in shape[1:]:
        n *= d
    row_data = [round(v, 6) for v in data[:n]]
    oip = {"inputs": [{"name": INPUTS[model], "shape": row, "datatype": "FP32", "data": row_data}]}
    predict = {"model": model, "features": row_data}
    paths = {}
    for name, body in [("oip", oip), ("predict", predict), ("fastapi", {"features": row_data})]:
        path = Path(directory) / f"{model}.{name}.json"
        path.write_text(json.dumps(body))
        paths[name] = path
    return paths


def tree_rss(pid):
    """Resident memory of a process and all its descendants, in bytes."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for t in Path(f"/proc/{p}/task").iterdir():
                children = (t / "children").read_text().split()
                stack.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return total


class Server:
    def __init__(self, name, args, env=None, cwd=None, ready_path="/ready"):
        self.name = name
        self.port = free_port()
        self.args = [a.replace("{port}", str(self.port)) for a in args]
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            self.args, env={**os.environ, **(env or {})}, cwd=cwd, stdout=self.log, stderr=self.log, start_new_session=True
        )
        self.wait_ready(ready_path)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, path, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url(path), timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not get ready; see {self.log.name}:\n{Path(self.log.name).read_text()[-3000:]}")

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except Exception:
            os.killpg(self.proc.pid, signal.SIGKILL)


def parse_latency(text):
    found = re.match(r"([\d.]+)(us|ms|s)", text)
    if not found:
        return float("nan")
    value, unit = found.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(server, path, body, concurrency, seconds):
    """Runs wrk against `path`; returns req/s, P50 and P99 (ms), errors, peak RSS."""
    threads = 1 if concurrency == 1 else 2
    peak = [tree_rss(server.proc.pid)]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(server.proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(BENCH / "post.lua"), server.url(path)],
        env={**os.environ, "BODY_FILE": str(body)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    done.set()
    sampler.join()
    def field(pattern, parse):
        found = re.search(pattern, out)
        if not found:
            print(f"unreadable wrk output for {server.name} {path} c={concurrency}:\n{out}", flush=True)
            return float("nan")
        return parse(found.group(1))

    rps = field(r"Requests/sec:\s+([\d.]+)", float)
    p50 = field(r"50%\s+(\S+)", parse_latency)
    p99 = field(r"99%\s+(\S+)", parse_latency)
    errors = int(re.search(r"non-200 answers: (\d+)", out).group(1))
    sockets = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errors, "socket_errors": sockets.group(1) if sockets else "", "rss": peak[0]}


def modeld_config(directory, model, batching=None, workers=None):
    cores = os.cpu_count() or 1
    repo = Path(directory) / "models"
    dest = repo / model / "1"
    if not dest.exists():
        dest.mkdir(parents=True)
        shutil.copy(REFERENCE / f"{model}.onnx", dest / "model.onnx")
    config = Path(directory) / f"modeld-{model}-{'batch' if batching else 'plain'}.toml"
    lines = [
        "[server]",
        f'repository = "{repo}"',
        'log_level = "warn"',
        "max_inflight_per_model = 4096",
        "[[model]]",
        f'name = "{model}"',
        "version = 1",
        f"workers = {workers or cores}",
        "threads = 1",
    ]
    if batching:
        lines.append(f"batching = {batching}")
    config.write_text("\n".join(lines) + "\n")
    return config


def start_modeld(directory, model, batching=None, workers=None):
    config = modeld_config(directory, model, batching, workers)
    run = Path(tempfile.mkdtemp(prefix="modeld-run-", dir="/tmp"))
    return Server(
        "modeld",
        [str(ROOT / "target/release/modeld"), "serve", "--config", str(config), "--listen", "127.0.0.1:{port}",
         "--run-dir", str(run), "--state-dir", str(run / "state")],
    )


def metric(server, name):
    text = urllib.request.urlopen(server.url("/metrics")).read().decode()
    return [(line.split(" ")[0], float(line.split(" ")[-1])) for line in text.splitlines() if line.startswith(name)]


def fmt_row(name, r):
    return f"| {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rss'] / 2**20:.0f} | {r['errors']} |"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--models", default="tabular_mlp,squeezenet1_1")
    args = parser.parse_args()
    ensure_tools()
    cores = os.cpu_count()
    directory = tempfile.mkdtemp(prefix="modeld-bench-")
    report = [f"## Benchmark run {datetime.date.today()}", "",
              f"- Command: `python3 bench/run.py --seconds {args.seconds} --models {args.models}`",
              f"- Machine: {platform.machine()}, {cores} cores, {platform.platform()}; the load generator (wrk) shares the cores with the servers",
              f"- modeld {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=ROOT).stdout.strip()}, "
              f"{cores} workers of 1 thread; FastAPI with uvicorn --workers {cores}; MLServer with its default settings", ""]
    verdicts = []
    for model in args.models.split(","):
        paths = bodies(model, directory)
        results = {}
        servers = [
            ("modeld OIP", lambda: start_modeld(directory, model), f"/v2/models/{model}/infer", paths["oip"]),
            ("modeld /predict", None, "/predict", paths["predict"]),
            ("tract in-process", lambda: Server("tract", [str(ROOT / "target/release/examples/tract_baseline"),
                                                          str(Path(directory) / "models" / model / "1"), "127.0.0.1:{port}"]),
             "/v2/models/x/infer", paths["oip"]),
            ("FastAPI + onnxruntime", lambda: Server("fastapi", [str(VENV / "bin/uvicorn"), "fastapi_server:app", "--workers", str(cores),
                                                                 "--port", "{port}", "--log-level", "warning"],
                                                     env={"MODEL_PATH": str(REFERENCE / f"{model}.onnx")}, cwd=BENCH),
             "/predict", paths["fastapi"]),
            ("MLServer + onnxruntime", lambda: mlserver(directory, model), f"/v2/models/{model}/infer", paths["oip"]),
        ]
        server = None
        try:
            for name, start, path, body in servers:
                if start is not None:
                    if server:
                        server.stop()
                    server = start()
                for c in CONCURRENCY:
                    results[(name, c)] = wrk(server, path, body, c, args.seconds)
                    print(f"{model} {name} c={c}: {results[(name, c)]}", flush=True)
        finally:
            if server:
                server.stop()
        report += [f"### {model}", "", "| server | concurrency | req/s | P50 ms | P99 ms | peak RSS MiB | non-200 |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for (name, c), r in results.items():
            report.append(f"| {name} | {c} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rss'] / 2**20:.0f} | {r['errors']} |")
        report += ["", "| target | concurrency | measured | target | met |", "| --- | --- | --- | --- | --- |"]
        for c in CONCURRENCY:
            m, t, f, s = (results[(n, c)] for n in ["modeld OIP", "tract in-process", "FastAPI + onnxruntime", "MLServer + onnxruntime"])
            mp = results[("modeld /predict", c)]
            checks = [
                ("modeld OIP / tract in-process, req/s", m["rps"] / t["rps"], 0.85),
                ("modeld /predict / FastAPI, req/s", mp["rps"] / f["rps"], 5.0),
                ("FastAPI P99 / modeld /predict P99", f["p99"] / mp["p99"], 1.0),
                ("modeld OIP / MLServer, req/s", m["rps"] / s["rps"], 1.0),
            ]
            for what, ratio, target in checks:
                met = "yes" if ratio >= target else "no"
                verdicts.append((model, c, what, ratio, target, met))
                report.append(f"| {what} | {c} | {ratio:.2f}x | >= {target}x | {met} |")
        report.append("")
    report += batching_section(directory, args.seconds)
    report += cold_start_section(directory)
    report += plan_section()
    text = "\n".join(report) + "\n"
    print(text)
    with open(BENCH / "RESULTS.md", "a") as f:
        f.write("\n" + text)


def mlserver(directory, model):
    folder = Path(directory) / f"mlserver-{model}"
    folder.mkdir(exist_ok=True)
    shutil.copy(BENCH / "mlserver" / "runtime.py", folder / "runtime.py")
    http, grpc, metrics = free_port(), free_port(), free_port()
    (folder / "settings.json").write_text(json.dumps({"http_port": http, "grpc_port": grpc, "metrics_port": metrics, "debug": False}))
    (folder / "model-settings.json").write_text(json.dumps({
        "name": model, "implementation": "runtime.OnnxModel", "parameters": {"uri": str(REFERENCE / f"{model}.onnx")}}))
    server = Server.__new__(Server)
    server.name, server.port = "mlserver", http
    server.log = tempfile.NamedTemporaryFile(prefix="bench-mlserver-", suffix=".log", delete=False)
    server.proc = subprocess.Popen([str(VENV / "bin/mlserver"), "start", str(folder)], cwd=folder,
                                   stdout=server.log, stderr=server.log, start_new_session=True)
    server.wait_ready(f"/v2/models/{model}/ready", timeout=180)
    return server


def batching_section(directory, seconds):
    """Dynamic batching on against off, concurrency 64, tabular MLP."""
    paths = bodies("tabular_mlp", directory)
    path = "/v2/models/tabular_mlp/infer"
    lines = ["### Dynamic batching, tabular MLP, concurrency 64", "",
             "| batching | req/s | P50 ms | P99 ms | mean rows per run | mean compute per run ms |", "| --- | --- | --- | --- | --- | --- |"]
    measured = {}
    for name, batching in [("off", None), ("on: max_batch 64, delay 1ms", '{ max_batch = 64, delay = "1ms" }')]:
        server = start_modeld(directory, "tabular_mlp", batching=batching, workers=1)
        r = wrk(server, path, paths["oip"], 64, seconds)
        runs = sum(v for k, v in metric(server, "modeld_batch_size_count") if "tabular_mlp" in k)
        rows = sum(v for k, v in metric(server, "modeld_batch_size_sum") if "tabular_mlp" in k)
        compute = sum(v for k, v in metric(server, "modeld_inference_duration_seconds_sum") if "tabular_mlp" in k)
        requests = sum(v for k, v in metric(server, "modeld_inference_duration_seconds_count") if "tabular_mlp" in k)
        server.stop()
        per_run_ms = compute / max(requests, 1) * 1000
        measured[name] = (r, rows / max(runs, 1), per_run_ms)
        lines.append(f"| {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {rows / max(runs, 1):.1f} | {per_run_ms:.3f} |")
    off, on = measured["off"][0], measured["on: max_batch 64, delay 1ms"][0]
    compute_ms = measured["on: max_batch 64, delay 1ms"][2]
    bound = 1.0 + 2 * compute_ms
    lines += ["", f"- throughput on/off: {on['rps'] / off['rps']:.2f}x (target >= 2x)",
              f"- P99 with batching {on['p99']:.2f} ms against delay + 2 x batch compute = 1 + 2 x {compute_ms:.3f} = {bound:.2f} ms",
              "- one worker with one inference thread in both runs, so batching is the only difference", ""]
    return lines


def cold_start_section(directory):
    """Spawn-to-ready per reference model, worker RSS against the model's size, and the
    supervisor's RSS idle and under load."""
    lines = ["### Workers and supervisor", "",
             "| model | model file MiB | worker cold start ms (spawn to ready) | worker RSS MiB | supervisor RSS idle MiB |", "| --- | --- | --- | --- | --- |"]
    for model in INPUTS:
        server = start_modeld(directory, model, workers=1)
        time.sleep(1.5)  # a resource sample
        load = metric(server, "modeld_model_load_duration_seconds_sum")
        rss = [v for k, v in metric(server, "modeld_worker_rss_bytes")]
        supervisor = tree_rss(server.proc.pid) - sum(rss)
        size = (REFERENCE / f"{model}.onnx").stat().st_size
        lines.append(f"| {model} | {size / 2**20:.1f} | {load[0][1] * 1000:.0f} | {max(rss) / 2**20:.1f} | {supervisor / 2**20:.1f} |")
        if model == "tabular_mlp":
            paths = bodies(model, directory)
            r = wrk(server, f"/v2/models/{model}/infer", paths["oip"], 64, 5)
            under = r["rss"] - max(rss)
            lines_under = f"- supervisor RSS under load (c=64, tabular MLP, {r['rps']:.0f} req/s): {under / 2**20:.1f} MiB (peak of the tree less the worker)"
        server.stop()
    lines += ["", lines_under, ""]
    return lines


def plan_section():
    out = subprocess.run([str(ROOT / "target/release/examples/plan_speedup"), "30"], capture_output=True, text=True, check=True).stdout
    return ["### Plans for concrete shapes against one symbolic plan (tract, same input)", "", out]


if __name__ == "__main__":
    main()
