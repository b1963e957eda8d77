#!/usr/bin/env python3
"""Host autoscaling on a load ramp: fixed `workers = 1`, fixed `workers = MAX` and
autoscaled `workers = { min = 1, max = MAX }`, each on the same ramp in the same run.

    python3 bench/autoscale.py [--model squeezenet1_1] [--phase 20] [--high 8] [--max N]

The ramp is three phases of `--phase` seconds each: `--low` requests a second from one
paced keep-alive client (a worker busy a share of the time), then `--high` wrk connections
back to back (closed loop: every worker busy), then the paced client again. For each configuration it reports
per phase the requests/s and P50/P99 (wrk's), and over the whole ramp the worker-seconds
(worker processes alive, sampled every 100 ms, integrated over time) and the peak resident
memory of the daemon with its workers. MAX defaults to the host's cores (the autoscaler's
default budget). The autoscaled run decides every second and scales down after a 10 s
window instead of the default 5 minutes, so that the ramp shows the way down within it;
the timeline of its desired and actual workers is printed with the table.
"""

import argparse
import http.client
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (the shared helpers: servers, wrk, process trees)

ROOT = Path(__file__).resolve().parent.parent


def config(directory, model, workers, autoscaled):
    repo = Path(directory) / "models"
    dest = repo / model / "1"
    if not dest.exists():
        dest.mkdir(parents=True)
        (dest / "model.onnx").write_bytes((bench.REFERENCE / f"{model}.onnx").read_bytes())
    name = "autoscaled" if autoscaled else f"fixed{workers}"
    path = Path(directory) / f"modeld-{name}.toml"
    lines = [
        "[server]",
        f'repository = "{repo}"',
        'log_level = "info"',
        "max_inflight_per_model = 4096",
        "[[model]]",
        f'name = "{model}"',
        "version = 1",
        "threads = 1",
        f"workers = {{ min = 1, max = {workers} }}" if autoscaled else f"workers = {workers}",
    ]
    if autoscaled:
        lines += ["[model.scale]", 'interval = "1s"', "[model.scale.down]", 'stabilization = "10s"']
    path.write_text("\n".join(lines) + "\n")
    return path


class Sampler(threading.Thread):
    """Worker processes and resident memory of the daemon's tree every 100 ms, and the
    autoscaler's desired and actual workers from /health."""

    def __init__(self, server, model):
        super().__init__(daemon=True)
        self.server, self.model = server, model
        self.stop_event = threading.Event()
        self.worker_seconds, self.peak_rss, self.points = 0.0, 0, []
        self.started = time.time()

    def run(self):
        last = time.time()
        while not self.stop_event.is_set():
            now = time.time()
            pids = bench.tree_pids(self.server.proc.pid)
            workers = len(pids) - 1
            self.worker_seconds += workers * (now - last)
            last = now
            self.peak_rss = max(self.peak_rss, bench.tree_rss(self.server.proc.pid))
            try:
                with urllib.request.urlopen(self.server.url("/health"), timeout=2) as r:
                    scale = json.loads(r.read())["models"][self.model].get("scale") or {}
                self.points.append((now - self.started, workers, scale.get("desired"), scale.get("actual")))
            except Exception:
                self.points.append((now - self.started, workers, None, None))
            time.sleep(0.1)

    def stop(self):
        self.stop_event.set()
        self.join()


def paced(server, path, body, rate, seconds):
    """One keep-alive client sending `rate` requests a second for `seconds`; what wrk's
    report says, from its own timings."""
    payload, headers = Path(body).read_bytes(), bench.body_headers(body)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    latencies, errors = [], 0
    began = time.time()
    for k in range(int(rate * seconds)):
        time.sleep(max(0.0, began + k / rate - time.time()))
        sent = time.time()
        conn.request("POST", path, body=payload, headers=headers)
        response = conn.getresponse()
        response.read()
        latencies.append((time.time() - sent) * 1e3)
        errors += response.status != 200
    elapsed = time.time() - began
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return {"rps": len(latencies) / elapsed, "p50": pick(0.50), "p99": pick(0.99), "errors": errors}


def ramp(directory, model, workers, autoscaled, phase, low, high, path, body):
    cfg = config(directory, model, workers, autoscaled)
    run = Path(tempfile.mkdtemp(prefix="modeld-run-", dir="/tmp"))
    server = bench.Server(
        "modeld",
        [str(ROOT / "target/release/modeld"), "serve", "--config", str(cfg), "--listen", "127.0.0.1:{port}",
         "--run-dir", str(run), "--state-dir", str(run / "state")],
    )
    sampler = Sampler(server, model)
    sampler.start()
    phases = []
    try:
        for name, load in [("low", None), ("high", high), ("low again", None)]:
            began = time.time() - sampler.started
            if load is None:
                result, shown = paced(server, path, body, low, phase), f"{low}/s paced"
            else:
                result, shown = bench.wrk(server, path, body, load, phase), f"{load} busy"
            phases.append((name, shown, began, result))
    finally:
        sampler.stop()
        server.stop()
    return {"phases": phases, "worker_seconds": sampler.worker_seconds, "peak_rss": sampler.peak_rss,
            "points": sampler.points, "log": server.log.name}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="squeezenet1_1")
    parser.add_argument("--phase", type=int, default=20, help="seconds per phase")
    parser.add_argument("--low", type=float, default=10, help="requests a second in the low phases")
    parser.add_argument("--high", type=int, default=8, help="connections in the high phase")
    parser.add_argument("--max", type=int, default=os.cpu_count() or 1, help="workers at most")
    args = parser.parse_args()
    bench.ensure_tools()
    subprocess.run(["cargo", "build", "--release", "--bin", "modeld"], cwd=ROOT, check=True)
    directory = tempfile.mkdtemp(prefix="bench-autoscale-")
    bodies = bench.bodies(args.model, directory)
    path, body = f"/v2/models/{args.model}/infer", bodies["oip"]
    runs = [
        ("fixed workers = 1", 1, False),
        (f"fixed workers = {args.max}", args.max, False),
        (f"autoscaled 1..{args.max}", args.max, True),
    ]
    results = [
        (label, ramp(directory, args.model, n, auto, args.phase, args.low, args.high, path, body)) for label, n, auto in runs
    ]

    print(f"## Host autoscaling on a ramp, {datetime.date.today()}")
    print()
    print(f"- Command: `python3 bench/autoscale.py --model {args.model} --phase {args.phase} --low {args.low:g} "
          f"--high {args.high} --max {args.max}`")
    print(f"- Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; wrk shares the cores")
    print(f"- Ramp: {args.phase} s at {args.low:g} requests/s (one paced client), {args.phase} s of {args.high} wrk "
          f"connections back to back, {args.phase} s at {args.low:g}/s again")
    print()
    print("| configuration | phase | load | req/s | P50 ms | P99 ms | non-2xx |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, r in results:
        for name, connections, _, w in r["phases"]:
            print(f"| {label} | {name} | {connections} | {w['rps']:.0f} | {w['p50']:.2f} | {w['p99']:.2f} | {w['errors']} |")
    print()
    print("| configuration | requests | worker-seconds | requests per worker-second | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- |")
    for label, r in results:
        requests = sum(w["rps"] * args.phase for *_, w in r["phases"])
        print(f"| {label} | {requests:.0f} | {r['worker_seconds']:.1f} | {requests / r['worker_seconds']:.0f} | "
              f"{r['peak_rss'] / 2**20:.0f} |")
    fixed_max, auto = results[1][1], results[2][1]
    high_ratio = auto["phases"][1][3]["rps"] / fixed_max["phases"][1][3]["rps"]
    print()
    print(f"Autoscaled against fixed max: high-phase throughput {high_ratio:.2f}x, worker-seconds "
          f"{auto['worker_seconds'] / fixed_max['worker_seconds']:.2f}x, peak RSS "
          f"{auto['peak_rss'] / fixed_max['peak_rss']:.2f}x.")
    print()
    print("Autoscaled timeline (every second: workers alive, desired, actual):")
    print()
    print("```")
    shown = -1
    for t, alive, desired, actual in auto["points"]:
        if int(t) > shown:
            shown = int(t)
            phase = next((n for n, _, began, _ in reversed(auto["phases"]) if began <= t), "")
            print(f"t={shown:>3}s {phase:<9} workers alive {alive} desired {desired} actual {actual}")
    print("```")


if __name__ == "__main__":
    main()
