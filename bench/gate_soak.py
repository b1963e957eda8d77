#!/usr/bin/env python3
"""The gate's soak: the bundled defaults untouched (full bakes), good and faulty versions
deployed under paced load at 1, 20 and 500 requests/s, with every answer checked.

    python3 bench/gate_soak.py [--only soak,r1,r20,r500] [--no-append]

Builds release (modeld and the `gate_models` example, which writes the tests' softmax
classifier and its versions), then runs, each on a fresh daemon whose config has no
[health] and no [model.deploy] (canary 10/25/50/100, 60 s bakes, a 30 s shadow, 60 s
windows, 20 samples, PSI 0.25):

  soak   20 models at 20 requests/s each, each deploying an honest retrain (weights
         moved by up to 3 %) at the same moment: every one must be promoted;
  r1     one model per kind at 1 request/s each, deployed at the same moment, after the
         models served long enough for their request samples to fill;
  r20    the same at 20 requests/s each;
  r500   the same at 500 requests/s, one kind at a time.

The kinds: a good retrain, and the faults the gate must stop — an export without its
softmax (the output contract), serving skew (feature 2 read 5x), features read in each
other's place, NaN weights, classes in another order than the labels, a signature change.

For each deploy it records the outcome and its reason (from `modeld history`), the time
from `modeld deploy` to its verdict, and the users' answers: how many the new version
gave, and how many were wrong (failed, not a distribution, or another top class than the
stable version's for that row). Prints a table and appends it to bench/RESULTS.md.
"""
import argparse
import datetime
import http.client
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELD = ROOT / "target" / "release" / "modeld"
sys.path.insert(0, str(ROOT / "bench"))
from run import free_port  # noqa: E402  (the benchmark's own helper)

# The stable classifier (tests/it/onnx.rs, `classes`), to tell a right answer.
W = [1.0, -1.0, 0.0, 0.0, 2.0, -2.0, -0.3, 0.0, 0.3, 0.4, -0.4, 0.0]
B = [-1.85, 4.0, -2.15]
MEANS = [2.0, -1.0, 0.5, 0.0]
SPREADS = [1.0, 0.5, 2.0, 1.0]

# Where each deploy's report (`modeld report --last --format json`) is kept (--reports).
REPORTS = None

FAULTS = ["no_softmax", "serving_skew", "swapped_features", "nan", "label_order", "signature"]


def stable_class(row):
    logits = [sum(row[i] * W[i * 3 + c] for i in range(4)) + B[c] for c in range(3)]
    return max(range(3), key=lambda c: logits[c])


class Load(threading.Thread):
    """Paced requests to one model from `threads` connections; records every answer."""

    def __init__(self, port, model, rate, seed):
        super().__init__(daemon=True)
        self.port, self.model, self.rate = port, model, rate
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.shots = []  # (seconds since start, status, version, wrong)
        self.lock = threading.Lock()

    def run(self):
        threads = max(1, math.ceil(self.rate / 125))
        workers = [threading.Thread(target=self.client, args=(self.rate / threads, i), daemon=True) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def client(self, rate, index):
        rng = random.Random(self.rng.random() + index)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        path = f"/v2/models/{self.model}/infer"
        started = time.monotonic()
        next_at = started + rng.random() / rate
        while not self.stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at += 1.0 / rate
            row = [MEANS[j] + SPREADS[j] * rng.gauss(0.0, 1.0) for j in range(4)]
            body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": row}]})
            try:
                conn.request("POST", path, body, {"content-type": "application/json"})
                answer = conn.getresponse()
                data = answer.read()
                status, version = answer.status, answer.getheader("x-modeld-version")
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                status, version, data = 0, None, b""
            wrong = status != 200 or not right(data, row)
            with self.lock:
                self.shots.append((time.monotonic() - started, status, version, wrong))


def right(data, row):
    try:
        p = json.loads(data)["outputs"][0]["data"]
    except (ValueError, KeyError, IndexError):
        return False
    if len(p) != 3 or any(not isinstance(v, (int, float)) for v in p) or abs(sum(p) - 1.0) > 1e-3:
        return False
    return max(range(3), key=lambda c: p[c]) == stable_class(row)


class Daemon:
    def __init__(self, work, models):
        """`models`: name -> (stable file, candidate file)."""
        self.work = work
        self.port = free_port()
        repo = work / "models"
        for name, (v1, v2) in models.items():
            for version, src in ((1, v1), (2, v2)):
                d = repo / name / str(version)
                d.mkdir(parents=True, exist_ok=True)
                (d / "model.onnx").write_bytes(src.read_bytes())
                (d / "model.toml").write_text((src.parent / "model.toml").read_text())
        config = [
            "[server]",
            f'listen = "127.0.0.1:{self.port}"',
            'repository = "models"',
            'run_dir = "run"',
            'state_dir = "state"',
            'log_level = "warn"',
        ]
        for name in models:
            config += ["[[model]]", f'name = "{name}"', "version = 1", "workers = 1"]
        (work / "modeld.toml").write_text("\n".join(config) + "\n")
        self.log = open(work / "modeld.log", "w")
        self.proc = subprocess.Popen(
            [str(MODELD), "serve", "--config", str(work / "modeld.toml")], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"modeld did not get ready; see {work / 'modeld.log'}")

    def cli(self, *args):
        cmd = [str(MODELD), *args, "--socket", str(self.work / "run" / "admin.sock")]
        return subprocess.run(cmd, capture_output=True, text=True)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def deploy(daemon, model, results):
    started = time.monotonic()
    done = daemon.cli("deploy", model, "--version", "2")
    seconds = time.monotonic() - started
    # The rollout's record reaches the history a moment after `modeld deploy` saw its end.
    for _ in range(50):
        history = json.loads(daemon.cli("history", model, "--output", "json").stdout or "[]")
        if history and history[-1].get("outcome"):
            break
        time.sleep(0.1)
    if REPORTS:
        report = daemon.cli("report", model, "--last", "--format", "json")
        (REPORTS / f"{model}.{int(time.time())}.json").write_text(report.stdout or report.stderr)
    last = history[-1] if history else {}
    results[model] = {
        "code": done.returncode,
        "seconds": seconds,
        "outcome": last.get("outcome"),
        "reason": last.get("reason") or "",
        "summary": [l for l in done.stdout.splitlines() if l.startswith("the new version answered")],
    }


def scenario(versions, kinds, rate, warm, parallel):
    """Deploys each (model, kind) under its own load of `rate`; returns rows of results."""
    rows = []
    groups = [kinds] if parallel else [[k] for k in kinds]
    for group in groups:
        with tempfile.TemporaryDirectory(prefix="gate-soak-") as tmp:
            work = Path(tmp)
            models = {f"m{i}_{kind}": (versions / "stable.onnx", versions / f"{kind}.onnx") for i, kind in enumerate(group)}
            daemon = Daemon(work, models)
            loads = {m: Load(daemon.port, m, rate, seed=i) for i, m in enumerate(models)}
            try:
                for load in loads.values():
                    load.start()
                time.sleep(warm)
                results = {}
                deploys = [threading.Thread(target=deploy, args=(daemon, m, results)) for m in models]
                for d in deploys:
                    d.start()
                for d in deploys:
                    d.join()
                time.sleep(2)
            finally:
                for load in loads.values():
                    load.stop.set()
                for load in loads.values():
                    load.join()
                daemon.close()
            for model, (_, src) in models.items():
                shots = loads[model].shots
                after = [s for s in shots if s[0] >= warm]
                by_v2 = [s for s in after if s[2] == "2"]
                r = results[model]
                rows.append(
                    {
                        "kind": src.stem,
                        "rate": rate,
                        "outcome": r["outcome"] or f"exit {r['code']}",
                        "seconds": r["seconds"],
                        "requests": len(after),
                        "by_v2": len(by_v2),
                        "wrong": sum(1 for s in after if s[3]),
                        "failed": sum(1 for s in after if s[1] != 200),
                        "reason": r["reason"],
                        "summary": r["summary"],
                    }
                )
    return rows


def table(rows, good_wrong_note):
    out = ["| version | rate/s | outcome | verdict after s | user requests | by new version | wrong (share) | failed |"]
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        share = 100.0 * r["wrong"] / max(1, r["requests"])
        out.append(
            f"| {r['kind']} | {r['rate']:g} | {r['outcome']} | {r['seconds']:.1f} | {r['requests']} | {r['by_v2']} | "
            f"{r['wrong']} ({share:.2f}%) | {r['failed']} |"
        )
    out.append("")
    out.append(good_wrong_note)
    out.append("")
    out.append("Reasons:")
    for r in rows:
        if r["reason"]:
            out.append(f"- {r['kind']} at {r['rate']:g}/s: {r['reason'][:300]}")
        for line in r["summary"]:
            out.append(f"- {r['kind']} at {r['rate']:g}/s: {line}")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="soak,r1,r20,r500")
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--reports", help="keep each deploy's report (JSON) in this directory")
    parser.add_argument("--profile", default="release", help="release, or dev for a quick try of the script")
    args = parser.parse_args()
    only = set(args.only.split(","))
    global MODELD, REPORTS
    if args.reports:
        REPORTS = Path(args.reports)
        REPORTS.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    target = "release" if args.profile == "release" else "debug"
    MODELD = ROOT / "target" / target / "modeld"
    build = ["cargo", "build", "--profile", args.profile, "--bin", "modeld", "--example", "gate_models"]
    subprocess.run(build, cwd=ROOT, check=True)
    versions = Path(tempfile.mkdtemp(prefix="gate-versions-"))
    subprocess.run([str(ROOT / "target" / target / "examples" / "gate_models"), str(versions)], check=True)
    started = time.time()
    sections = []
    note = (
        "Wrong: a failed answer, rows that are not a distribution, or another top class than the stable "
        "version's for that row; an honest retrain legitimately answers a few rows differently, so its wrong "
        "count is its disagreement with stable, not a fault."
    )
    if "soak" in only:
        kinds = [f"retrain_{i}" for i in range(1, 21)]
        rows = scenario(versions, kinds, rate=20, warm=30, parallel=True)
        promoted = sum(1 for r in rows if r["outcome"] == "promoted")
        sections.append(f"### 20 honest retrains at 20 requests/s each, deployed together: {promoted} of 20 promoted\n\n" + table(rows, note))
        print(sections[-1], flush=True)
    kinds = ["retrain_21"] + FAULTS
    for key, rate, warm, parallel in [("r1", 1, 150, True), ("r20", 20, 30, True), ("r500", 500, 15, False)]:
        if key in only:
            rows = scenario(versions, kinds, rate=rate, warm=warm, parallel=parallel)
            sections.append(f"### Each kind at {rate} requests/s\n\n" + table(rows, note))
            print(sections[-1], flush=True)
    elapsed = time.time() - started
    head = [
        f"## Gate soak {datetime.date.today().isoformat()}",
        "",
        f"- Command: `python3 bench/gate_soak.py --only {args.only}`",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; the Python load shares the cores",
        f"- modeld {commit}, bundled defaults (no [health], no [model.deploy]), one worker per model; {elapsed / 60:.0f} minutes",
        "",
    ]
    text = "\n".join(head) + "\n" + "\n\n".join(sections) + "\n"
    if not args.no_append:
        with open(ROOT / "bench" / "RESULTS.md", "a") as f:
            f.write("\n" + text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
