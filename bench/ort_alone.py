"""ONNX Runtime alone: one process running a model on its reference input (one row, as one
request carries) in a loop, with no server, no client and no copies around it. Run as
several processes at once by bench/engines.py, their images/s added up is the most any
server built on this ONNX Runtime could serve on these cores: the ceiling for its targets.

    python ort_alone.py MODEL.onnx MODEL.ref.npz INPUT SECONDS [THREADS]

Prints one JSON line: {"runs": N, "seconds": S}.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    model, npz, name, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    threads = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    x = np.load(npz)[f"input_{name}"][:1].astype(np.float32)
    feed = {session.get_inputs()[0].name: x}
    for _ in range(5):
        session.run(None, feed)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, feed)
        runs += 1
    print(json.dumps({"runs": runs, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
