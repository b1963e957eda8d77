#!/usr/bin/env python3
"""The performance benchmark: modeld against its baselines, side by side, in one run.

    python3 bench/run.py [--seconds 8] [--models tabular_mlp,squeezenet1_1] [--repeat 2]

Builds release (modeld, the in-process tract baseline, the plan study), installs what it
lacks (wrk with apt-get, FastAPI/uvicorn/onnxruntime/MLServer in target/bench-venv), then
for the tabular MLP and SqueezeNet drives, with wrk at concurrency 1, 16 and 64:

  - modeld over OIP JSON (POST /v2/models/M/infer), OIP binary tensors and /predict;
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
import struct
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
# wrk runs per measurement; the fastest is kept (set from --repeat).
REPEAT = 2


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
    """Request bodies for one example: OIP JSON, OIP binary (tritonclient's default: the
    JSON header, then the raw float32 bytes; its length in a `.len` file beside it, sent as
    Inference-Header-Content-Length), and /predict JSON."""
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
    header = {"inputs": [{"name": INPUTS[model], "shape": row, "datatype": "FP32", "parameters": {"binary_data_size": 4 * n}}],
              "parameters": {"binary_data_output": True}}
    header = json.dumps(header).encode()
    binary = Path(directory) / f"{model}.oip.bin"
    binary.write_bytes(header + struct.pack(f"<{n}f", *data[:n]))
    binary.with_suffix(".len").write_text(str(len(header)))
    paths["oip_binary"] = binary
    return paths


def body_headers(body):
    """The request headers a body file goes with."""
    body = Path(body)
    if body.suffix == ".bin":
        return {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": body.with_suffix(".len").read_text()}
    return {"Content-Type": "application/json"}


def tree_pids(pid):
    """A process and all its descendants."""
    found, stack = [], [pid]
    while stack:
        p = stack.pop()
        found.append(p)
        try:
            for t in Path(f"/proc/{p}/task").iterdir():
                stack.extend(int(c) for c in (t / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return found


def tree_rss(pid):
    """Resident memory of a process and all its descendants, in bytes."""
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return total


def tree_cpu(pid):
    """CPU seconds (user + system) used so far by a process, and by its descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    own = descendants = 0.0
    for p in tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        seconds = (int(fields[11]) + int(fields[12])) / ticks
        if p == pid:
            own = seconds
        else:
            descendants += seconds
    return own, descendants


class Server:
    def __init__(self, name, args, env=None, cwd=None, ready_path="/ready", port=None, ready_timeout=120):
        """Starts `args` ("{port}" replaced by the port, a free one unless given) and
        waits until GET `ready_path` answers 200."""
        self.name = name
        self.port = port or free_port()
        self.args = [a.replace("{port}", str(self.port)) for a in args]
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            self.args, env={**os.environ, **(env or {})}, cwd=cwd, stdout=self.log, stderr=self.log, start_new_session=True
        )
        self.wait_ready(ready_path, ready_timeout)

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
            self.proc.wait()


def parse_latency(text):
    found = re.match(r"([\d.]+)(us|ms|s)", text)
    if not found:
        return float("nan")
    value, unit = found.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def drain(server, path, body):
    """Sends one request and waits for its answer: a server still working through the
    requests a previous run left queued (wrk stops at its deadline, not the server) answers
    it only after them, so the next run starts on an idle server."""
    request = urllib.request.Request(server.url(path), data=Path(body).read_bytes(), headers=body_headers(body))
    with urllib.request.urlopen(request, timeout=300) as r:
        r.read()


def measure(server, path, body, concurrency, seconds):
    """The fastest of REPEAT wrk runs."""
    return max((wrk(server, path, body, concurrency, seconds) for _ in range(REPEAT)), key=lambda r: r["rps"])


def wrk(server, path, body, concurrency, seconds):
    """Runs wrk against `path`; returns req/s, P50 and P99 (ms), errors, peak RSS, and CPU
    per request of the server's main process, its children and wrk."""
    threads = 1 if concurrency == 1 else 2
    drain(server, path, body)
    peak = [tree_rss(server.proc.pid)]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(server.proc.pid))
            time.sleep(0.5)  # RSS moves slowly; sampling more often takes CPU from the servers

    sampler = threading.Thread(target=sample)
    sampler.start()
    cpu_before = tree_cpu(server.proc.pid)
    load = subprocess.Popen(
        ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(BENCH / "post.lua"), server.url(path)],
        env={**os.environ, "BODY_FILE": str(body),
             **({"HEADER_LENGTH": body_headers(body)["Inference-Header-Content-Length"]} if Path(body).suffix == ".bin" else {})},
        stdout=subprocess.PIPE,
        text=True,
    )
    out = load.stdout.read()
    # wait4 on wrk itself: its own CPU time, whatever else this script reaps meanwhile.
    _, status, usage = os.wait4(load.pid, 0)
    load.returncode = os.waitstatus_to_exitcode(status)
    if load.returncode != 0:
        raise RuntimeError(f"wrk exited with {load.returncode}:\n{out}")
    cpu_after = tree_cpu(server.proc.pid)
    done.set()
    sampler.join()

    def field(pattern, parse):
        found = re.search(pattern, out)
        if not found:
            print(f"unreadable wrk output for {server.name} {path} c={concurrency}:\n{out}", flush=True)
            return float("nan")
        return parse(found.group(1))

    rps = field(r"Requests/sec:\s+([\d.]+)", float)
    p50 = field(r"(?m)^\s+50%\s+(\S+)", parse_latency)
    p99 = field(r"(?m)^\s+99%\s+(\S+)", parse_latency)
    errors = int(re.search(r"non-200 answers: (\d+)", out).group(1))
    sockets = re.search(r"Socket errors: (.*)", out)
    requests = max(int(re.search(r"(\d+) requests in", out).group(1)), 1)
    per_request = lambda seconds: seconds / requests * 1e6  # noqa: E731
    wrk_cpu = usage.ru_utime + usage.ru_stime
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errors, "socket_errors": sockets.group(1) if sockets else "", "rss": peak[0],
            # CPU microseconds per request: the server's main process, its children (modeld's workers,
            # uvicorn's workers), and the load generator.
            "cpu_main": per_request(cpu_after[0] - cpu_before[0]), "cpu_children": per_request(cpu_after[1] - cpu_before[1]),
            "cpu_wrk": per_request(wrk_cpu)}


def modeld_config(directory, model, batching=None, workers=None, busy_poll="100us", intra_op=1):
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
        f'busy_poll = "{busy_poll}"',
        f"intra_op_threads = {intra_op}",
    ]
    if batching:
        lines.append(f"batching = {batching}")
    config.write_text("\n".join(lines) + "\n")
    return config


def start_modeld(directory, model, batching=None, workers=None, busy_poll="100us", intra_op=1):
    config = modeld_config(directory, model, batching, workers, busy_poll, intra_op)
    run = Path(tempfile.mkdtemp(prefix="modeld-run-", dir="/tmp"))
    return Server(
        "modeld",
        [str(ROOT / "target/release/modeld"), "serve", "--config", str(config), "--listen", "127.0.0.1:{port}",
         "--run-dir", str(run), "--state-dir", str(run / "state")],
    )


def metric(server, name):
    text = urllib.request.urlopen(server.url("/metrics")).read().decode()
    return [(line.split(" ")[0], float(line.split(" ")[-1])) for line in text.splitlines() if line.startswith(name)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--models", default="tabular_mlp,squeezenet1_1")
    parser.add_argument("--repeat", type=int, default=2, help="wrk runs per row; the row shows the fastest")
    parser.add_argument("--models-only", action="store_true", help="skip the batching, cold-start and plan sections")
    args = parser.parse_args()
    global REPEAT
    REPEAT = max(args.repeat, 1)
    ensure_tools()
    cores = os.cpu_count()
    directory = tempfile.mkdtemp(prefix="modeld-bench-")
    report = [f"## Benchmark run {datetime.date.today()}", "",
              f"- Command: `python3 bench/run.py --seconds {args.seconds} --models {args.models} --repeat {REPEAT}"
              f"{' --models-only' if args.models_only else ''}`",
              f"- Each row is the fastest of {REPEAT} wrk runs of {args.seconds} s (every server alike): on 2 shared cores "
              "one run can be 15 % off the next",
              f"- Machine: {platform.machine()}, {cores} cores, {platform.platform()}; the load generator (wrk) shares the cores with the servers",
              f"- modeld {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=ROOT).stdout.strip()}, "
              "workers of 1 thread with busy_poll 100us (and one run without); FastAPI with uvicorn "
              f"--workers {cores}; MLServer with its default settings",
              f"- modeld runs with 1 and with {cores} workers, and 1 worker of {cores} intra-op threads; tract with 1 and "
              f"{cores} runtime threads, and 1 of {cores} intra-op threads; each ratio takes each side's best at that concurrency",
              "- CPU columns: CPU microseconds per request of the server's main process (modeld: the supervisor), of its "
              "children (modeld's workers, uvicorn's and MLServer's workers) and of wrk", "",
              "Wake-up cost on this machine (`target/release/examples/wake_cost`): "
              + "; ".join(subprocess.run([str(ROOT / "target/release/examples/wake_cost")], capture_output=True, text=True,
                                         check=True).stdout.strip().splitlines()), ""]
    for model in args.models.split(","):
        report += model_section(directory, model, cores, args.seconds)
    if not args.models_only:
        report += batching_section(directory, args.seconds)
        report += cold_start_section(directory)
        report += plan_section()
        report += gpu_section()
    text = "\n".join(report) + "\n"
    print(text)
    with open(BENCH / "RESULTS.md", "a") as f:
        f.write("\n" + text)


def model_section(directory, model, cores, seconds):
    """Every server on one model at each concurrency, and the ratios against the targets."""
    paths = bodies(model, directory)
    oip = f"/v2/models/{model}/infer"
    tract = str(ROOT / "target/release/examples/tract_baseline")
    servers = []
    for workers in sorted({1, cores}):
        servers += [(f"modeld OIP, {workers} worker(s)", lambda w=workers: start_modeld(directory, model, workers=w), oip, paths["oip"]),
                    (f"modeld OIP binary, {workers} worker(s)", None, oip, paths["oip_binary"]),
                    (f"modeld /predict, {workers} worker(s)", None, "/predict", paths["predict"])]
    servers.append(("modeld OIP, 1 worker(s), busy_poll off", lambda: start_modeld(directory, model, workers=1, busy_poll="0s"),
                    oip, paths["oip"]))
    if cores > 1:
        # One inference at a time on all cores, as onnxruntime runs by default.
        servers += [(f"modeld OIP, 1 worker(s) x {cores} intra-op threads",
                     lambda: start_modeld(directory, model, workers=1, intra_op=cores), oip, paths["oip"]),
                    (f"modeld OIP binary, 1 worker(s) x {cores} intra-op threads", None, oip, paths["oip_binary"]),
                    (f"modeld /predict, 1 worker(s) x {cores} intra-op threads", None, "/predict", paths["predict"])]
    for threads, intra_op in sorted({(1, 1), (cores, 1), (1, cores)}):
        label = f"tract in-process, {threads} thread(s)" + (f" x {intra_op} intra-op threads" if intra_op > 1 else "")
        servers.append((label, lambda t=threads, i=intra_op: Server(
            "tract", [tract, str(Path(directory) / "models" / model / "1"), "127.0.0.1:{port}", str(t), str(i)]),
            "/v2/models/x/infer", paths["oip"]))
    servers += [
        ("FastAPI + onnxruntime", lambda: Server("fastapi", [str(VENV / "bin/uvicorn"), "fastapi_server:app", "--workers", str(cores),
                                                             "--port", "{port}", "--log-level", "warning"],
                                                 env={"MODEL_PATH": str(REFERENCE / f"{model}.onnx")}, cwd=BENCH),
         "/predict", paths["fastapi"]),
        ("MLServer + onnxruntime", lambda: mlserver(directory, model), oip, paths["oip"]),
    ]
    results = {}
    server = None
    try:
        for name, start, path, body in servers:
            if start is not None:
                if server:
                    server.stop()
                server = start()
            for c in CONCURRENCY:
                results[(name, c)] = measure(server, path, body, c, seconds)
                print(f"{model} {name} c={c}: {results[(name, c)]}", flush=True)
    finally:
        if server:
            server.stop()
    lines = [f"### {model}", "",
             "| server | concurrency | req/s | P50 ms | P99 ms | peak RSS MiB | non-200 | CPU us/req main | CPU us/req children | CPU us/req wrk |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (name, c), r in results.items():
        lines.append(f"| {name} | {c} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rss'] / 2**20:.0f} | {r['errors']} "
                     f"| {r['cpu_main']:.1f} | {r['cpu_children']:.1f} | {r['cpu_wrk']:.1f} |")
    lines += ["", "| target | concurrency | measured | target | met |", "| --- | --- | --- | --- | --- |"]

    def best(prefix, c):
        # "modeld OIP" is the JSON rows only: the binary ones have their own prefix.
        rows = [(n, r) for (n, cc), r in results.items() if n.startswith(prefix) and cc == c
                and not (prefix == "modeld OIP" and n.startswith("modeld OIP binary"))]
        return max(rows, key=lambda nr: nr[1]["rps"])

    for c in CONCURRENCY:
        (m_name, m), (t_name, t) = best("modeld OIP", c), best("tract in-process", c)
        (p_name, mp) = best("modeld /predict", c)
        f, s = results[("FastAPI + onnxruntime", c)], results[("MLServer + onnxruntime", c)]
        (b_name, b) = best("modeld OIP binary", c)
        checks = [
            (f"{m_name} / {t_name}, req/s", m["rps"] / t["rps"], 0.85),
            (f"{b_name} / {t_name}, req/s", b["rps"] / t["rps"], 0.9),
            (f"{b_name} / FastAPI, req/s", b["rps"] / f["rps"], 2.5),
            (f"{b_name} / {m_name} (binary against JSON), req/s", b["rps"] / m["rps"], 1.0),
            (f"{p_name} / FastAPI, req/s", mp["rps"] / f["rps"], 5.0),
            (f"FastAPI P99 / {p_name} P99", f["p99"] / mp["p99"], 1.0),
            (f"{m_name} / MLServer, req/s", m["rps"] / s["rps"], 1.0),
        ]
        for what, ratio, target in checks:
            lines.append(f"| {what} | {c} | {ratio:.2f}x | >= {target}x | {'yes' if ratio >= target else 'no'} |")
    lines.append("")
    return lines


def mlserver(directory, model):
    folder = Path(directory) / f"mlserver-{model}"
    folder.mkdir(exist_ok=True)
    shutil.copy(BENCH / "mlserver" / "runtime.py", folder / "runtime.py")
    http, grpc, metrics = free_port(), free_port(), free_port()
    (folder / "settings.json").write_text(json.dumps({"http_port": http, "grpc_port": grpc, "metrics_port": metrics, "debug": False}))
    (folder / "model-settings.json").write_text(json.dumps({
        "name": model, "implementation": "runtime.OnnxModel", "parameters": {"uri": str(REFERENCE / f"{model}.onnx")}}))
    return Server("mlserver", [str(VENV / "bin/mlserver"), "start", str(folder)], cwd=folder,
                  ready_path=f"/v2/models/{model}/ready", port=http, ready_timeout=180)


# (max_batch, delay in microseconds); None is batching off.
BATCHING = [None, (64, 1000), (64, 100), (16, 1000), (64, 0)]


def batching_section(directory, seconds):
    """Dynamic batching on against off, concurrency 64, tabular MLP, one worker of one
    inference thread: batching is the only difference. A sweep of settings, each against
    its own P99 bound.

    The bound: batching may add to the P99 of batching off at most its delay plus twice a
    batch's compute. Read as an absolute P99, no setting could meet it at this concurrency:
    a closed loop of 64 clients waits 64 / throughput on average (Little's law), over a
    millisecond here with batching off, before the noise of 2 shared cores."""
    paths = bodies("tabular_mlp", directory)
    path = "/v2/models/tabular_mlp/infer"
    lines = ["### Dynamic batching, tabular MLP, concurrency 64, one worker", "",
             "| batching | req/s | vs off | P50 ms | P99 ms | P99 bound ms (off's P99 + delay + 2 x compute) | mean rows per run | mean compute per run ms "
             "| CPU us/req supervisor | CPU us/req worker | CPU us/req wrk |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    off = None
    best = None
    for setting in BATCHING:
        if setting is None:
            name, batching, delay_ms = "off", None, 0.0
        else:
            name = f"max_batch {setting[0]}, delay {setting[1]}us"
            batching, delay_ms = f'{{ max_batch = {setting[0]}, delay = "{setting[1]}us" }}', setting[1] / 1000
        server = start_modeld(directory, "tabular_mlp", batching=batching, workers=1)
        r = measure(server, path, paths["oip"], 64, seconds)
        runs = sum(v for k, v in metric(server, "modeld_batch_size_count") if "tabular_mlp" in k)
        rows = sum(v for k, v in metric(server, "modeld_batch_size_sum") if "tabular_mlp" in k)
        compute = sum(v for k, v in metric(server, "modeld_inference_duration_seconds_sum") if "tabular_mlp" in k)
        requests = sum(v for k, v in metric(server, "modeld_inference_duration_seconds_count") if "tabular_mlp" in k)
        server.stop()
        off = off or r
        per_run_ms = compute / max(requests, 1) * 1000
        bound = off["p99"] + delay_ms + 2 * per_run_ms
        if name != "off" and (best is None or r["rps"] > best[1]["rps"]):
            best = (name, r, bound)
        lines.append(f"| {name} | {r['rps']:.0f} | {r['rps'] / off['rps']:.2f}x | {r['p50']:.2f} | {r['p99']:.2f} | "
                     f"{'-' if setting is None else f'{bound:.2f}'} | {rows / max(runs, 1):.1f} | {per_run_ms:.3f} | {r['cpu_main']:.1f} | {r['cpu_children']:.1f} | {r['cpu_wrk']:.1f} |")
    name, r, bound = best
    cores = os.cpu_count() or 1

    def cpu(m):
        return m["cpu_main"] + m["cpu_children"] + m["cpu_wrk"]

    lines += ["", f"- best batching setting ({name}): {r['rps'] / off['rps']:.2f}x the throughput of batching off (target >= 2x); "
              f"P99 {r['p99']:.2f} ms against its bound {bound:.2f} ms ({'within' if r['p99'] <= bound else 'over'}); "
              f"with batching off, 64 clients wait {64 / off['rps'] * 1000:.2f} ms on average (Little's law)",
              f"- the cores are the limit: {cores} cores / CPU per request (supervisor + worker + wrk) predicts "
              f"{cores * 1e6 / cpu(off):.0f} req/s with batching off ({cpu(off):.1f} us, measured {off['rps']:.0f}) and "
              f"{cores * 1e6 / cpu(r):.0f} with {name} ({cpu(r):.1f} us, measured {r['rps']:.0f})",
              f"- 2x would need {cpu(off) / 2:.1f} us per request; the supervisor's HTTP and JSON ({r['cpu_main']:.1f} us) and wrk "
              f"({r['cpu_wrk']:.1f} us) take {r['cpu_main'] + r['cpu_wrk']:.1f} us of it with batching on, before any inference", ""]
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


def gpu_section():
    """CPU against CUDA for every reference model at 1 and 32 times its input, when this host
    has an NVIDIA GPU (the full GPU checks are bench/gpu_check.sh)."""
    if not os.path.exists("/dev/nvidiactl"):
        return ["### GPU", "", "No NVIDIA GPU on this host (/dev/nvidiactl): GPU variants not run.", ""]
    run = subprocess.run([str(ROOT / "target/release/examples/gpu_compare"), "20"], capture_output=True, text=True)
    return ["### GPU: CPU against CUDA (tract, same input)", "", run.stdout + run.stderr, ""]


if __name__ == "__main__":
    main()
