#!/usr/bin/env python3
# Run from the repository root with a python that has onnxruntime and numpy, e.g.
#   target/bench-venv/bin/python bench/ort_shape_sessions.py
# Does ONNX Runtime run faster on a session made for one concrete shape than on the
# model's own session with an open batch dimension? Same library as modeld loads.
import sys, time, numpy as np, onnxruntime as ort

def session(path, fixed=None):
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if fixed is not None:
        for name, size in fixed.items():
            o.add_free_dimension_override_by_name(name, size)
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])

def bench(s, feed, seconds):
    for _ in range(20):
        s.run(None, feed)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        s.run(None, feed); n += 1
    return (time.perf_counter() - t0) / n * 1e3

for path, batches in [("tests/fixtures/reference/squeezenet1_1.onnx", [1, 4]), ("tests/fixtures/reference/tabular_mlp.onnx", [1, 16, 64])]:
    base = session(path)
    inp = base.get_inputs()[0]
    dims = inp.shape
    sym = dims[0] if isinstance(dims[0], str) else None
    for b in batches:
        shape = [b] + [d if isinstance(d, int) else 1 for d in dims[1:]]
        if sym is None and b != dims[0]:
            continue
        feed = {inp.name: np.random.rand(*shape).astype(np.float32)}
        fixed = session(path, {sym: b}) if sym else None
        rounds = []
        for _ in range(3):
            a = bench(base, feed, 1.5)
            f = bench(fixed, feed, 1.5) if fixed else float("nan")
            rounds.append((a, f))
        a = min(r[0] for r in rounds); f = min(r[1] for r in rounds)
        print(f"{path.split('/')[-1]:22s} batch {b:3d}: open-dim session {a:8.3f} ms, fixed-shape session {f:8.3f} ms, ratio {f/a:5.3f}  (dims {dims}, symbol {sym})")
