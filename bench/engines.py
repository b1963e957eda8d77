#!/usr/bin/env python3
"""modeld's two engines (tract, ONNX Runtime) against their peers, in one run of ~7 minutes on 2 cores.

    python3 bench/engines.py [--seconds 8] [--repeat 1] [--mlp-concurrency 16] [--append]

For SqueezeNet (tests/fixtures/reference/squeezenet1_1.onnx, one image per request) and the
tabular MLP (tabular_mlp.onnx, one row per request), at concurrency 16 (the MLP also at 1
with --mlp-concurrency 1,16), drives with bench/run.py's wrk (`wrk -t2 -cC -d8s --latency -s
bench/post.lua`):

  - modeld, engine = "tract",       OIP JSON and OIP binary (Triton's binary tensor extension);
  - modeld, engine = "onnxruntime", OIP JSON and OIP binary, with the library of the onnxruntime
    wheel in target/bench-venv ([server] onnxruntime_library);
  - tract in-process (bench/tract_baseline.rs), OIP JSON;
  - FastAPI + uvicorn (--workers <cores>) + onnxruntime (bench/fastapi_server.py), /predict JSON;
  - Triton via PyTriton (bench/pytriton.sh) + onnxruntime behind Triton's dynamic batcher,
    OIP JSON and OIP binary.

Each server runs in the setups listed in its option (below; defaults in CONFIGS) and every
setup is a row; the summary takes each server's best setup per request kind. Both modeld
engines run in the same setups, one after the other, so a change in the machine's load hits
both alike. Before each row one request is sent and its answer checked against the model's
reference output (tests/fixtures/reference/M.ref.npz): a server that does not answer 200
gets no row (the run goes on), a wrong answer is shown in the row's "check" column; for
modeld the engine in use is read from GET /health (load_mode).

Setups, one comma-separated list per model (`--modeld squeezenet1_1=w2i1,w1i2`, repeatable):
  modeld   wWiI[bBdD]  W workers of 1 inference thread, I intra-op threads each; with bB, dynamic
                       batching, max_batch B, delay D microseconds (busy_poll 100us, as run.py)
  tract    tTiI        tract_baseline with T runtime threads, I intra-op threads
  triton   bBdDiI[nN]  PyTriton: max_batch B, max_queue_delay D us, onnxruntime intra-op threads I,
                       N model instances (default 1)

Reuses bench/run.py (request bodies, servers, wrk, RSS and CPU). Prints a markdown section
(command, date, machine, all rows, the best per server, ratios against the targets:
SqueezeNet modeld onnxruntime binary >= 1.5x Triton binary in images/s with a lower P99;
MLP modeld onnxruntime within 10 % of modeld tract); --append adds it to bench/RESULTS.md.
"""
import argparse
import datetime
import glob
import json
import os
import platform
import re
import shlex
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  bench/run.py

ROOT, BENCH, VENV, REFERENCE = run.ROOT, run.BENCH, run.VENV, run.REFERENCE
MODELS = ["squeezenet1_1", "tabular_mlp"]
LABELS = {"squeezenet1_1": "SqueezeNet 1.1", "tabular_mlp": "tabular MLP"}

# Default setups per model, for 2 cores (see the module doc for the notation).
CONFIGS = {
    "modeld": {
        # Images: one image per core (2 x 1), one image on both cores (1 x 2), and batches of
        # up to 8 images per worker (the 16 clients keep both workers' queues full).
        "squeezenet1_1": ["w2i1", "w1i2", "w2i1b8d2000"],
        # MLP: one worker (the supervisor's HTTP/JSON takes about half the CPU), two, and one
        # batching up to 16 rows (run.py's batching sweep: its best setting).
        "tabular_mlp": ["w1i1", "w2i1", "w1i1b16d100"],
    },
    # run.py's best at concurrency 16 on both models: one runtime thread per core.
    "tract": {"squeezenet1_1": ["t2i1"], "tabular_mlp": ["t2i1"]},
    # Triton's dynamic batcher, onnxruntime with 2 intra-op threads, one instance.
    "triton": {"squeezenet1_1": ["b8d2000i2"], "tabular_mlp": ["b16d200i2"]},
}


def parse_spec(kind, spec):
    """A setup string as a dict of its numbers (see the module doc)."""
    patterns = {
        "modeld": r"w(?P<workers>\d+)i(?P<intra>\d+)(?:b(?P<max_batch>\d+)d(?P<delay>\d+))?",
        "tract": r"t(?P<threads>\d+)i(?P<intra>\d+)",
        "triton": r"b(?P<max_batch>\d+)d(?P<delay>\d+)i(?P<intra>\d+)(?:n(?P<instances>\d+))?",
    }
    found = re.fullmatch(patterns[kind], spec)
    if not found:
        raise SystemExit(f"engines.py: {kind} setup {spec!r} does not match {patterns[kind]}")
    return {k: int(v) for k, v in found.groupdict().items() if v is not None}


def describe(kind, spec):
    c = parse_spec(kind, spec)
    if kind == "modeld":
        text = f"{c['workers']} worker(s) x {c['intra']} intra-op"
        return text + (f", batching {c['max_batch']} / {c['delay']}us" if "max_batch" in c else "")
    if kind == "tract":
        return f"{c['threads']} runtime thread(s) x {c['intra']} intra-op"
    return f"batcher {c['max_batch']} / {c['delay']}us, ort intra-op {c['intra']}, {c.get('instances', 1)} instance(s)"


# ---------------------------------------------------------------- reference answers

def npy(model, key):
    """An array of the reference npz as (shape, flat list of floats): float32 little-endian."""
    with zipfile.ZipFile(REFERENCE / f"{model}.ref.npz") as z:
        raw = z.read(f"{key}.npy")
    header_len = struct.unpack("<H", raw[8:10])[0]
    header = raw[10 : 10 + header_len].decode()
    if "'<f4'" not in header:
        raise ValueError(f"{model} {key}: not float32 ({header})")
    shape = tuple(int(d) for d in re.search(r"\((.*?)\)", header).group(1).split(",") if d.strip())
    count = 1
    for d in shape:
        count *= d
    return shape, list(struct.unpack(f"<{count}f", raw[10 + header_len : 10 + header_len + 4 * count]))


def reference_output(model):
    """The reference output's name and its first row (the row the bodies carry)."""
    with zipfile.ZipFile(REFERENCE / f"{model}.ref.npz") as z:
        key = next(n[:-4] for n in z.namelist() if n.startswith("output_"))
    shape, data = npy(model, key)
    n = len(data) // shape[0]
    return key[len("output_"):], data[:n]


def oip_outputs(raw, headers):
    """Output name -> flat list of numbers from an OIP answer, JSON or binary tensors."""
    length = headers.get("Inference-Header-Content-Length")
    header = json.loads(raw[: int(length)] if length else raw)
    offset = int(length) if length else 0
    found = {}
    for out in header.get("outputs", []):
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            chunk = raw[offset : offset + size]
            offset += size
            if out.get("datatype") != "FP32":
                raise ValueError(f"binary output {out.get('name')} is {out.get('datatype')}, not FP32")
            found[out["name"]] = list(struct.unpack(f"<{size // 4}f", chunk))
        else:
            data = out.get("data", [])
            while data and isinstance(data[0], list):  # nested form
                data = [v for row in data for v in row]
            found[out["name"]] = [float(v) for v in data]
    return found


def verify(server, path, body, model, kind):
    """Sends one request; returns (status, check text). Status 0: no answer."""
    request = urllib.request.Request(server.url(path), data=Path(body).read_bytes(), headers=run.body_headers(body))
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            status, raw, headers = r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, f"status {e.code}: {e.read()[:300]!r}"
    except Exception as e:  # noqa: BLE001
        return 0, f"no answer: {e}"
    if status != 200:
        return status, f"status {status}"
    name, expected = reference_output(model)
    tolerance = 2e-3 * max(1.0, max(abs(v) for v in expected))
    try:
        if kind == "fastapi":
            answer = json.loads(raw)
            best = max(range(len(expected)), key=lambda i: expected[i])
            error = abs(answer["probability"] - expected[best])
            ok = answer["prediction"] == best and error <= tolerance
            return status, f"{'ok' if ok else 'WRONG'} (argmax {answer['prediction']}, want {best}; err {error:.1e})"
        outputs = oip_outputs(raw, headers)
        got = outputs.get(name) or next(iter(outputs.values()))
        if len(got) != len(expected):
            return status, f"WRONG ({len(got)} values, want {len(expected)})"
        error = max(abs(a - b) for a, b in zip(got, expected))
        return status, f"{'ok' if error <= tolerance else 'WRONG'} (max err {error:.1e})"
    except Exception as e:  # noqa: BLE001
        return status, f"WRONG (unreadable answer: {e})"


def modeld_engine(server):
    """The load_mode(s) modeld's /health reports: "onnxruntime" for that engine."""
    try:
        health = json.loads(urllib.request.urlopen(server.url("/health"), timeout=10).read())
    except Exception as e:  # noqa: BLE001
        return f"? ({e})"
    modes = set()

    def walk(v):
        if isinstance(v, dict):
            for k, x in v.items():
                if k == "load_mode" and isinstance(x, str):
                    modes.add(x)
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(health)
    return ",".join(sorted(modes)) or "?"


# ---------------------------------------------------------------- servers

def onnxruntime_library(given):
    if given:
        return Path(given).resolve()
    found = sorted(glob.glob(str(VENV / "lib" / "python*" / "site-packages" / "onnxruntime" / "capi" / "libonnxruntime.so.*")))
    if not found:
        raise SystemExit(f"engines.py: no libonnxruntime.so.* under {VENV}; pass --onnxruntime-library")
    return Path(found[-1])


def start_modeld(directory, model, engine, spec, library):
    """modeld with run.py's config (workers of 1 thread, busy_poll 100us) plus the engine,
    the library and the setup's batching."""
    c = parse_spec("modeld", spec)
    batching = f'{{ max_batch = {c["max_batch"]}, delay = "{c["delay"]}us" }}' if "max_batch" in c else None
    config = run.modeld_config(directory, model, batching=batching, workers=c["workers"], intra_op=c["intra"])
    text = config.read_text().replace("[server]\n", f'[server]\nonnxruntime_library = "{library}"\n', 1)
    text += f'engine = "{engine}"\n'  # the [[model]] table is the file's last
    config = config.with_name(f"modeld-{model}-{engine}-{spec}.toml")
    config.write_text(text)
    state = Path(tempfile.mkdtemp(prefix="modeld-run-", dir="/tmp"))
    return run.Server(
        f"modeld-{engine}",
        [str(ROOT / "target/release/modeld"), "serve", "--config", str(config), "--listen", "127.0.0.1:{port}",
         "--run-dir", str(state), "--state-dir", str(state / "state")],
        ready_timeout=180,
    )


def start_tract(directory, model, spec):
    c = parse_spec("tract", spec)
    run.modeld_config(directory, model)  # copies the model into directory/models/M/1
    return run.Server("tract", [str(ROOT / "target/release/examples/tract_baseline"), str(Path(directory) / "models" / model / "1"),
                                "127.0.0.1:{port}", str(c["threads"]), str(c["intra"])])


def start_fastapi(model, cores):
    return run.Server("fastapi", [str(VENV / "bin/uvicorn"), "fastapi_server:app", "--workers", str(cores), "--port", "{port}",
                                  "--log-level", "warning"],
                      env={"MODEL_PATH": str(REFERENCE / f"{model}.onnx")}, cwd=BENCH)


def start_triton(model, spec):
    c = parse_spec("triton", spec)
    return run.Server("pytriton", [str(BENCH / "pytriton.sh"), "--model", str(REFERENCE / f"{model}.onnx"), "--name", model,
                                   "--port", "{port}", "--max-batch", str(c["max_batch"]), "--delay-us", str(c["delay"]),
                                   "--threads", str(c["intra"]), "--instances", str(c.get("instances", 1))],
                      ready_path=f"/v2/models/{model}/ready", ready_timeout=240)


# ---------------------------------------------------------------- the run

class Bench:
    def __init__(self, args):
        self.args = args
        self.rows = []  # dicts: model, server, setup, request, c, result or failure, check
        self.failures = []
        self.ceiling = {}  # model: (runs/s of all processes, ms per run, processes), ONNX Runtime alone

    def measure_server(self, model, server_name, setup, start, requests, concurrencies):
        """Starts one server, and for each request kind (label, path, body, check kind)
        verifies one answer, then measures each concurrency."""
        print(f"--- {model}: {server_name}, {setup}", flush=True)
        try:
            server = start()
        except Exception as e:  # noqa: BLE001
            why = str(e).splitlines()[0] if str(e) else repr(e)
            print(f"    did not start: {e}", flush=True)
            self.failures.append(f"{model}, {server_name} ({setup}): did not start: {why}")
            return
        try:
            extra = ""
            if server_name.startswith("modeld"):
                engine = server_name.split()[-1]
                mode = modeld_engine(server)
                extra = f"; load_mode {mode}"
                if (engine == "onnxruntime") != ("onnxruntime" in mode):
                    self.failures.append(f"{model}, {server_name} ({setup}): /health load_mode is {mode}")
            for label, path, body, kind in requests:
                status, check = verify(server, path, body, model, kind)
                print(f"    {label}: one request: {check}{extra}", flush=True)
                if status != 200:
                    self.failures.append(f"{model}, {server_name} ({setup}), {label}: {check}")
                    continue
                for c in concurrencies:
                    try:
                        r = run.measure(server, path, body, c, self.args.seconds)
                    except Exception as e:  # noqa: BLE001
                        print(f"    {label} c={c}: failed: {e}", flush=True)
                        self.failures.append(f"{model}, {server_name} ({setup}), {label}, c={c}: {str(e).splitlines()[0]}")
                        continue
                    print(f"    {label} c={c}: {r['rps']:.0f} req/s, P50 {r['p50']:.2f} ms, P99 {r['p99']:.2f} ms, "
                          f"non-2xx {r['errors']}{', socket errors ' + r['socket_errors'] if r['socket_errors'] else ''}", flush=True)
                    self.rows.append({"model": model, "server": server_name, "setup": setup, "request": label, "c": c,
                                      "r": r, "check": check})
        finally:
            server.stop()

    def model(self, directory, model, concurrencies, library, cores):
        """Every server on `model`, then ONNX Runtime alone."""
        paths = run.bodies(model, directory)
        oip = f"/v2/models/{model}/infer"
        both = [("OIP JSON", oip, paths["oip"], "oip"), ("OIP binary", oip, paths["oip_binary"], "oip")]
        for spec in self.args.configs["modeld"][model]:
            for engine in ("tract", "onnxruntime"):
                self.measure_server(model, f"modeld {engine}", describe("modeld", spec),
                                    lambda e=engine, s=spec: start_modeld(directory, model, e, s, library), both, concurrencies)
        for spec in self.args.configs["tract"][model]:
            self.measure_server(model, "tract in-process", describe("tract", spec), lambda s=spec: start_tract(directory, model, s),
                                [("OIP JSON", "/v2/models/x/infer", paths["oip"], "oip")], concurrencies)
        self.measure_server(model, "FastAPI + onnxruntime", f"uvicorn --workers {cores}, ort default threads",
                            lambda: start_fastapi(model, cores), [("/predict JSON", "/predict", paths["fastapi"], "fastapi")],
                            concurrencies)
        for spec in self.args.configs["triton"][model]:
            self.measure_server(model, "Triton (PyTriton) + onnxruntime", describe("triton", spec),
                                lambda s=spec: start_triton(model, s), both, concurrencies)
        self.ort_alone(model, cores)

    def ort_alone(self, model, cores):
        """ONNX Runtime alone on the model, one process per core of one intra-op thread each,
        at once, for the wrk run's length: the ceiling of any server built on it."""
        script = [str(VENV / "bin/python"), str(BENCH / "ort_alone.py"), str(REFERENCE / f"{model}.onnx"),
                  str(REFERENCE / f"{model}.ref.npz"), run.INPUTS[model], str(self.args.seconds)]
        procs = [subprocess.Popen(script, stdout=subprocess.PIPE, text=True) for _ in range(cores)]
        results = [json.loads(p.communicate()[0]) for p in procs]
        rate = sum(r["runs"] / r["seconds"] for r in results)
        ms = sum(r["seconds"] * 1000 / r["runs"] for r in results) / len(results)
        self.ceiling[model] = (rate, ms, cores)

    def best(self, model, server, request, c):
        rows = [r for r in self.rows if r["model"] == model and r["server"] == server and r["request"] == request and r["c"] == c]
        return max(rows, key=lambda r: r["r"]["rps"]) if rows else None

    def report(self, header):
        lines = header + ["| model | server | setup | request | concurrency | req/s | P50 ms | P99 ms | non-2xx | peak RSS MiB "
                          "| CPU us/req (server, all processes) | CPU us/req wrk | check |",
                          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in self.rows:
            r = row["r"]
            errors = f"{r['errors']}" + (f" (socket: {r['socket_errors']})" if r["socket_errors"] else "")
            lines.append(f"| {LABELS[row['model']]} | {row['server']} | {row['setup']} | {row['request']} | {row['c']} | {r['rps']:.0f} "
                         f"| {r['p50']:.2f} | {r['p99']:.2f} | {errors} | {r['rss'] / 2**20:.0f} "
                         f"| {r['cpu_main'] + r['cpu_children']:.0f} | {r['cpu_wrk']:.0f} | {row['check']} |")
        keys = []
        for row in self.rows:
            key = (row["model"], row["c"], row["server"], row["request"])
            if key not in keys:
                keys.append(key)
        lines += ["", "Best setup per server and request (highest req/s; for SqueezeNet req/s = images/s):", "",
                  "| model | concurrency | server | request | best setup | req/s | P50 ms | P99 ms | non-2xx |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for model, c, server, request in keys:
            b = self.best(model, server, request, c)
            r = b["r"]
            lines.append(f"| {LABELS[model]} | {c} | {server} | {request} | {b['setup']} | {r['rps']:.0f} | {r['p50']:.2f} "
                         f"| {r['p99']:.2f} | {r['errors']} |")
        lines += ["", "| ratio | concurrency | measured | target | met |", "| --- | --- | --- | --- | --- |"]

        def ratio(what, model, a, b, c, target=None, p99=False):
            x, y = self.best(model, *a, c), self.best(model, *b, c)
            if not x or not y:
                lines.append(f"| {what} | {c} | (a row is missing) | {f'>= {target}x' if target else '-'} | {'no' if target else '-'} |")
                return
            q = x["r"]["rps"] / y["r"]["rps"]
            if target is None:
                lines.append(f"| {what} | {c} | {q:.2f}x | - | - |")
                return
            met = q >= target
            measured = f"{q:.2f}x"
            goal = f">= {target}x"
            if p99:
                lower = x["r"]["p99"] < y["r"]["p99"]
                measured += f"; P99 {x['r']['p99']:.1f} ms vs {y['r']['p99']:.1f} ms"
                goal += ", lower P99"
                met = met and lower
            lines.append(f"| {what} | {c} | {measured} | {goal} | {'yes' if met else 'no'} |")

        ort, tract = "modeld onnxruntime", "modeld tract"
        triton = "Triton (PyTriton) + onnxruntime"
        for c in sorted({r["c"] for r in self.rows if r["model"] == "squeezenet1_1"}):
            m = "squeezenet1_1"
            ratio("SqueezeNet: modeld onnxruntime binary / Triton binary, images/s", m, (ort, "OIP binary"), (triton, "OIP binary"), c, 1.5, True)
            ratio("SqueezeNet: modeld onnxruntime JSON / Triton JSON, images/s", m, (ort, "OIP JSON"), (triton, "OIP JSON"), c)
            ratio("SqueezeNet: modeld onnxruntime binary / modeld tract binary", m, (ort, "OIP binary"), (tract, "OIP binary"), c)
            ratio("SqueezeNet: modeld onnxruntime binary / FastAPI", m, (ort, "OIP binary"), ("FastAPI + onnxruntime", "/predict JSON"), c)
        for c in sorted({r["c"] for r in self.rows if r["model"] == "tabular_mlp"}):
            m = "tabular_mlp"
            ratio("MLP: modeld onnxruntime JSON / modeld tract JSON", m, (ort, "OIP JSON"), (tract, "OIP JSON"), c, 0.9)
            ratio("MLP: modeld onnxruntime binary / modeld tract binary", m, (ort, "OIP binary"), (tract, "OIP binary"), c, 0.9)
            ratio("MLP: modeld onnxruntime binary / Triton binary", m, (ort, "OIP binary"), (triton, "OIP binary"), c)
            ratio("MLP: modeld tract JSON / tract in-process JSON", m, (tract, "OIP JSON"), ("tract in-process", "OIP JSON"), c)
        if self.ceiling:
            lines += ["", "ONNX Runtime alone (`bench/ort_alone.py`: no server, no client, one row per run, one process per core "
                      "of 1 intra-op thread, all at once, the same onnxruntime): the most any server on it could serve here.", "",
                      "| model | processes | ms per run | runs/s, all processes | Triton binary / this | modeld onnxruntime binary / this |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for model, (rate, ms, procs) in self.ceiling.items():
                share = []
                for server in ("Triton (PyTriton) + onnxruntime", "modeld onnxruntime"):
                    best = [self.best(model, server, "OIP binary", c) for c in sorted({r["c"] for r in self.rows if r["model"] == model})]
                    best = [b for b in best if b]
                    share.append(f"{max(b['r']['rps'] for b in best) / rate:.2f}" if best else "-")
                lines.append(f"| {LABELS[model]} | {procs} | {ms:.2f} | {rate:.0f} | {share[0]} | {share[1]} |")
        lines.append("")
        if self.failures:
            lines += ["Did not work in this run:", ""] + [f"- {f}" for f in self.failures] + [""]
        return lines


def machine():
    model_name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                       if line.startswith("model name")), platform.processor() or "?")
    return f"{platform.machine()}, {os.cpu_count()} cores ({model_name}), {platform.platform()}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8, help="seconds per wrk run (default 8)")
    parser.add_argument("--repeat", type=int, default=1, help="wrk runs per row; the row shows the fastest (default 1)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--squeezenet-concurrency", default="16", help="comma-separated wrk connections (default 16)")
    parser.add_argument("--mlp-concurrency", default="16", help="comma-separated wrk connections (default 16; e.g. 1,16)")
    parser.add_argument("--onnxruntime-library", help="libonnxruntime.so for modeld (default: the one in target/bench-venv's onnxruntime)")
    for kind in ("modeld", "tract", "triton"):
        parser.add_argument(f"--{kind}", action="append", default=[], metavar="MODEL=SPEC[,SPEC...]",
                            help=f"{kind} setups for a model, replacing the defaults ("
                                 + "; ".join(m + "=" + ",".join(s) for m, s in CONFIGS[kind].items()) + ")")
    parser.add_argument("--no-build", action="store_true", help="skip run.py's tool install and release build")
    parser.add_argument("--append", action="store_true", help="append the report to bench/RESULTS.md")
    args = parser.parse_args()
    args.configs = {kind: dict(models) for kind, models in CONFIGS.items()}
    for kind in ("modeld", "tract", "triton"):
        for item in getattr(args, kind):
            model, _, specs = item.partition("=")
            if model not in MODELS or not specs:
                parser.error(f"--{kind} {item}: expected MODEL=SPEC[,SPEC...] with MODEL one of {', '.join(MODELS)}")
            args.configs[kind][model] = specs.split(",")
            for spec in args.configs[kind][model]:
                parse_spec(kind, spec)
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            parser.error(f"--models: {m} is not one of {', '.join(MODELS)}")
    concurrency = {"squeezenet1_1": [int(c) for c in args.squeezenet_concurrency.split(",")],
                   "tabular_mlp": [int(c) for c in args.mlp_concurrency.split(",")]}
    run.REPEAT = max(args.repeat, 1)

    started = time.time()
    library = onnxruntime_library(args.onnxruntime_library)
    if not args.no_build:
        run.ensure_tools()  # wrk, target/bench-venv, cargo build --release --bin modeld --examples
        run.sh(str(BENCH / "pytriton.sh"), "setup")  # target/pytriton-venv
    cores = os.cpu_count() or 1
    directory = tempfile.mkdtemp(prefix="modeld-engines-")
    bench = Bench(args)
    for model in models:
        bench.model(directory, model, concurrency[model], library, cores)

    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60).stdout.strip()
        except Exception:  # noqa: BLE001
            return "?"

    commit = version(["git", "rev-parse", "--short", "HEAD"])
    dirty = " (with uncommitted changes)" if version(["git", "status", "--porcelain", "--untracked-files=no"]) else ""
    triton_ort = version([str(ROOT / "target/pytriton-venv/bin/python"), "-c", "import onnxruntime; print(onnxruntime.__version__)"])
    fastapi_ort = version([str(VENV / "bin/python"), "-c", "import onnxruntime; print(onnxruntime.__version__)"])
    command = "python3 bench/engines.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    header = [
        "## Engines: tract vs ONNX Runtime vs peers", "",
        f"- Command: `{command}`",
        f"- Date: {datetime.datetime.now().astimezone().strftime('%a %Y-%m-%d %H:%M:%S %Z')}; took {(time.time() - started) / 60:.1f} min",
        f"- Machine: {machine()}; wrk shares the cores with the servers",
        f"- modeld {commit}{dirty}; ONNX Runtime library `{library.relative_to(ROOT) if library.is_relative_to(ROOT) else library}`; "
        f"onnxruntime {fastapi_ort} (FastAPI), {triton_ort} (PyTriton)",
        f"- Each row: the fastest of {run.REPEAT} wrk run(s) of {args.seconds} s, `wrk -t2 -cC --latency` "
        "(-t1 at concurrency 1); one request per image / row; before each row one request is checked against the reference output",
        "- modeld: workers of 1 inference thread, busy_poll 100us (run.py's config) plus `engine` and the setup; both engines in "
        "the same setups, back to back; FastAPI: uvicorn, onnxruntime's default threads per worker; Triton: PyTriton 0.7, "
        "onnxruntime in its Python callable behind Triton's dynamic batcher",
        "",
    ]
    text = "\n".join(bench.report(header)) + "\n"
    print(text)
    if args.append:
        with open(BENCH / "RESULTS.md", "a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
