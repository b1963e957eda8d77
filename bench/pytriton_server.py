#!/usr/bin/env python3
"""Triton via PyTriton, a benchmark peer: one ONNX model run by onnxruntime (CPU) behind
Triton Inference Server's dynamic batcher, served over the Open Inference Protocol v2 on
Triton's own HTTP endpoint (POST /v2/models/NAME/infer, JSON and Triton's binary tensor
extension; GET /v2/health/ready, /v2/models/NAME/ready).

    bench/pytriton.sh --model tests/fixtures/reference/tabular_mlp.onnx --name tabular_mlp --port 8000

(bench/pytriton.sh makes the venv and sets LD_LIBRARY_PATH, which PyTriton's Python stub
needs; see bench/PYTRITON.md.) Inputs and outputs are named and typed as the ONNX model
declares them. A model whose first dimension is symbolic is served with batching: that
dimension is Triton's batch dimension, and the dynamic batcher merges requests up to
--max-batch rows, waiting at most --delay-us for more. A model whose first dimension is fixed
is served without batching, each request run on its own. Prints one line starting with
"pytriton ready" once the model answers, and serves until SIGTERM or SIGINT.
"""
import argparse
import signal
import sys
import threading
import time

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

try:  # PyTriton >= 0.7 guards some endpoints with a random access token
    from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, TritonSecurityConfig
except ImportError:
    TritonSecurityConfig = None

# onnxruntime's type strings to the numpy types PyTriton maps to Triton datatypes.
ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.bytes_,
}


def dim(d):
    """An ONNX dimension as Triton writes it: fixed, or -1 for a symbolic/unknown one."""
    return d if isinstance(d, int) and d >= 0 else -1


def symbolic(d):
    return not (isinstance(d, int) and d >= 0)


def tensors(args, batching):
    """Triton tensor definitions for onnxruntime's inputs or outputs; with batching, the
    first (batch) dimension is left out, as Triton expects."""
    found = []
    for a in args:
        if a.type not in ONNX_TYPES:
            sys.exit(f"pytriton_server: {a.name} has type {a.type}, not served")
        shape = [dim(d) for d in a.shape]
        found.append(Tensor(name=a.name, dtype=ONNX_TYPES[a.type], shape=tuple(shape[1:] if batching else shape)))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the ONNX model file")
    parser.add_argument("--name", required=True, help="the model's name in /v2/models/NAME")
    parser.add_argument("--port", type=int, default=8000, help="Triton's HTTP port")
    parser.add_argument("--max-batch", type=int, default=16, help="Triton's max_batch_size (rows per model run)")
    parser.add_argument("--delay-us", type=int, default=200, help="dynamic batcher's max_queue_delay_microseconds")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra_op_num_threads")
    parser.add_argument("--instances", type=int, default=1,
                        help="model instances (inference callables sharing one session; Triton runs one batch per instance at a time)")
    parser.add_argument("--http-threads", type=int, default=None, help="Triton's --http-thread-count (its default when left out)")
    parser.add_argument("--no-batching", action="store_true", help="serve without batching even when the first dimension is symbolic")
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    model_inputs, model_outputs = session.get_inputs(), session.get_outputs()
    output_names = [o.name for o in model_outputs]
    # Batch along the first dimension only where every input and output leaves it open.
    batching = not args.no_batching and all(a.shape and symbolic(a.shape[0]) for a in model_inputs + model_outputs)

    def run(inputs):
        return dict(zip(output_names, session.run(output_names, inputs)))

    if batching:
        # @batch: Triton's dynamic batcher hands over several requests at once; the decorator
        # concatenates them along the batch dimension and splits the outputs back.
        @batch
        def infer(**inputs):
            return run(inputs)

        config = ModelConfig(batching=True, max_batch_size=args.max_batch,
                             batcher=DynamicBatcher(max_queue_delay_microseconds=args.delay_us))
    else:
        def infer(requests):
            return [run({k: v for k, v in request.items()}) for request in requests]

        config = ModelConfig(batching=False)

    triton_config = TritonConfig(
        http_port=args.port,
        http_address="127.0.0.1",
        allow_grpc=False,
        allow_metrics=False,
        log_verbose=0,
        **({"http_thread_count": args.http_threads} if args.http_threads else {}),
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    # GET /v2/models/NAME/stats (rows per model run, queue and compute times) left open, as
    # the bench reads it; the rest PyTriton guards with its random token stays guarded.
    security = {}
    if TritonSecurityConfig is not None:
        security["security_config"] = TritonSecurityConfig(
            restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])
    triton = Triton(config=triton_config, **security)
    try:
        triton.bind(
            model_name=args.name,
            infer_func=[infer] * args.instances,
            inputs=tensors(model_inputs, batching),
            outputs=tensors(model_outputs, batching),
            config=config,
            strict=False,
        )
        # Starts tritonserver and its Python stub, and waits until the model is loaded.
        triton.run()
        print(f"pytriton ready: model {args.name} ({args.model}) on http://127.0.0.1:{args.port}/v2/models/{args.name}/infer, "
              + (f"batching max_batch {args.max_batch} delay {args.delay_us}us" if batching else "no batching")
              + f", onnxruntime {ort.__version__} intra_op {args.threads}, {args.instances} instance(s)", flush=True)
        while not stop.wait(1.0):
            if not triton.is_alive():
                print("pytriton_server: Triton or the model proxy died", file=sys.stderr, flush=True)
                return 1
    finally:
        triton.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
