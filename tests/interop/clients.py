#!/usr/bin/env python3
"""Real clients against a running modeld: every call as its users write it, default
settings, and every output compared with onnxruntime's run of the same model.

    python3 tests/interop/clients.py HOST:PORT MODELS_DIR
"""
import asyncio
import sys

import numpy as np
import onnxruntime as ort
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

URL, MODELS = sys.argv[1], sys.argv[2]
BASE = f"http://{URL}"
PASSED = []


def check(what, ok, detail=""):
    if not ok:
        raise SystemExit(f"FAILED: {what} {detail}")
    PASSED.append(what)
    print(f"  ok  {what}")


def session(name, version=1):
    return ort.InferenceSession(f"{MODELS}/{name}/{version}/model.onnx", providers=["CPUExecutionProvider"])


def close(a, b, tol=1e-4):
    return a.shape == b.shape and np.allclose(a, b, atol=tol, rtol=1e-3)


RNG = np.random.default_rng(7)
MLP = session("tabular_mlp")
SQUEEZE = session("squeezenet")
TYPES = session("types")
TYPE_DATA = {
    "fp32": np.float32, "fp64": np.float64, "int64": np.int64, "int32": np.int32,
    "int8": np.int8, "uint8": np.uint8, "bool": np.bool_, "fp16": np.float16, "text": np.object_,
}
TRITON_NAMES = {
    np.float32: "FP32", np.float64: "FP64", np.int64: "INT64", np.int32: "INT32",
    np.int8: "INT8", np.uint8: "UINT8", np.bool_: "BOOL", np.float16: "FP16", np.object_: "BYTES",
}
# Strings a text model is sent: non-ASCII, a 4-byte character, JSON's escapes, the empty string.
TEXTS = ["naïve", "☃", "😀 emoji", "", 'tab\t"quote"', "plain"]


def typed(kind, rows):
    dtype = TYPE_DATA[kind]
    if dtype is np.bool_:
        return RNG.integers(0, 2, (rows, 3)).astype(np.bool_)
    if dtype is np.object_:
        return np.array([[TEXTS[(r * 3 + c) % len(TEXTS)] for c in range(3)] for r in range(rows)], dtype=np.object_)
    return (RNG.random((rows, 3)) * 100).astype(dtype)


def same(got, want):
    """Equal, element for element; strings compared as UTF-8 bytes (clients give str from
    JSON and bytes from binary data)."""
    if want.dtype == np.object_:
        as_bytes = lambda a: [v if isinstance(v, bytes) else str(v).encode() for v in a.reshape(-1)]
        return got.shape == want.shape and as_bytes(got) == as_bytes(want)
    return np.array_equal(got, want)


def tritonclient(binary):
    mode = "binary" if binary else "JSON"
    c = triton.InferenceServerClient(URL)
    check(f"tritonclient ({mode}): server live, ready", c.is_server_live() and c.is_server_ready())
    check(f"tritonclient ({mode}): model ready", c.is_model_ready("tabular_mlp"))
    meta = c.get_model_metadata("tabular_mlp")
    check(f"tritonclient ({mode}): metadata", meta["inputs"][0]["shape"] == [-1, 30], meta)
    for rows in (1, 8):
        x = RNG.random((rows, 30), dtype=np.float32)
        inp = triton.InferInput("features", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outputs = None if binary else [triton.InferRequestedOutput("probabilities", binary_data=False)]
        got = c.infer("tabular_mlp", [inp], outputs=outputs).as_numpy("probabilities")
        want = MLP.run(None, {"features": x})[0]
        check(f"tritonclient ({mode}): tabular_mlp batch {rows} matches onnxruntime", close(got, want))
    image = RNG.random((1, 3, 224, 224), dtype=np.float32)
    inp = triton.InferInput("input", list(image.shape), "FP32")
    inp.set_data_from_numpy(image, binary_data=binary)
    got = c.infer("squeezenet", [inp]).as_numpy(SQUEEZE.get_outputs()[0].name)
    want = SQUEEZE.run(None, {"input": image})[0]
    check(f"tritonclient ({mode}): squeezenet image matches onnxruntime", close(got, want, 2e-3))
    inputs, feeds = [], {}
    for kind in TYPE_DATA:
        data = typed(kind, 2)
        inp = triton.InferInput(f"x_{kind}", list(data.shape), TRITON_NAMES[TYPE_DATA[kind]])
        inp.set_data_from_numpy(data, binary_data=binary)
        inputs.append(inp)
        feeds[f"x_{kind}"] = data
    outputs = None if binary else [triton.InferRequestedOutput(o.name, binary_data=False) for o in TYPES.get_outputs()]
    result = c.infer("types", inputs, outputs=outputs)
    want = dict(zip([o.name for o in TYPES.get_outputs()], TYPES.run(None, feeds)))
    differ = [name for name, value in want.items() if not same(result.as_numpy(name), value)]
    check(f"tritonclient ({mode}): every dtype round-trips, FP16 and BYTES included", not differ, differ)
    # FP16 numbers that are not FP16 values: rounded to nearest even as numpy rounds them.
    halves = np.array([[0.1, 1.00048828125, 65519.0], [-0.1, 2049.0, 1e-8]], np.float64)
    inp = triton.InferInput("x_fp16", [2, 3], "FP16")
    inp.set_data_from_numpy(halves.astype(np.float16), binary_data=binary)
    others = [i for i in inputs if i.name() != "x_fp16"]
    fp16 = c.infer("types", others + [inp], outputs=None if binary else [triton.InferRequestedOutput("y_fp16", binary_data=False)])
    check(f"tritonclient ({mode}): FP16 values as numpy rounds them", np.array_equal(fp16.as_numpy("y_fp16"), halves.astype(np.float16)))
    if binary:
        # Bytes that are not UTF-8 are no ONNX string: refused with the element named.
        bad = triton.InferInput("x_text", [1, 3], "BYTES")
        bad.set_data_from_numpy(np.array([[b"ok", b"\xff\xfe", b"x"]], dtype=np.object_))
        rows = [i for i in inputs if i.name() != "x_text"]
        two = [triton.InferInput(i.name(), [1, 3], i.datatype()) for i in rows]
        for i, kind in zip(two, [n.name()[2:] for n in rows]):
            i.set_data_from_numpy(typed(kind, 1))
        try:
            c.infer("types", two + [bad])
            check("tritonclient (binary): BYTES that are not UTF-8 are refused", False)
        except InferenceServerException as e:
            check("tritonclient (binary): BYTES that are not UTF-8 are refused, naming the element",
                  "input 'x_text': element 1 is not UTF-8" in e.message(), e.message())
    iris = triton.InferInput("X", [1, 4], "FP32")
    iris.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], np.float32), binary_data=binary)
    labels = c.infer("iris", [iris]).get_response()["outputs"]
    label_output = next(o["name"] for o in labels if o["datatype"] == "BYTES")
    got = c.infer("iris", [iris]).as_numpy(label_output)
    check(f"tritonclient ({mode}): BYTES output", got.reshape(-1)[0] in (b"setosa", "setosa"), got)
    # Triton's classification: the top classes as "value:index:label", labels from the model.
    probabilities = next(o["name"] for o in labels if o["datatype"] == "FP32")
    top = triton.InferRequestedOutput(probabilities, binary_data=binary, class_count=2)
    got = [v.decode() if isinstance(v, bytes) else v for v in c.infer("iris", [iris], outputs=[top]).as_numpy(probabilities).reshape(-1)]
    check(f"tritonclient ({mode}): classification with labels", len(got) == 2 and got[0].endswith(":0:setosa")
          and float(got[0].split(":")[0]) > 0.99, got)
    x = RNG.random((3, 30), dtype=np.float32)
    inp = triton.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    top = triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=1)
    got = c.infer("tabular_mlp", [inp], outputs=[top]).as_numpy("probabilities").reshape(-1)
    want = MLP.run(None, {"features": x})[0]
    parsed = [(float(v.split(b":" if isinstance(v, bytes) else ":")[0]), int(v.split(b":" if isinstance(v, bytes) else ":")[1])) for v in got]
    check(f"tritonclient ({mode}): classification matches onnxruntime's top class",
          [i for _, i in parsed] == list(np.argmax(want, axis=1))
          and np.allclose([p for p, _ in parsed], np.max(want, axis=1), atol=1e-5), (got, want))
    bad = triton.InferInput("features", [1, 29], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 29), np.float32), binary_data=binary)
    try:
        c.infer("tabular_mlp", [bad])
        check(f"tritonclient ({mode}): a wrong shape is refused", False)
    except InferenceServerException as e:
        check(f"tritonclient ({mode}): the error carries modeld's message",
              "dimension 1 must be 30, got 29" in e.message(), e.message())


def kserve_client():
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def run():
        v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
        check("kserve v2: server live", await v2.is_server_live(BASE))
        check("kserve v2: model ready", await v2.is_model_ready(BASE, "tabular_mlp"))
        x = RNG.random((4, 30), dtype=np.float32)
        for binary in (False, True):
            inp = InferInput("features", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            response = await v2.infer(BASE, InferRequest("tabular_mlp", [inp]), model_name="tabular_mlp")
            got = response.outputs[0].as_numpy()
            check(f"kserve v2 ({'binary' if binary else 'JSON'}): infer matches onnxruntime",
                  close(got, MLP.run(None, {"features": x})[0]))
        # FP16 and BYTES, as the SDK sends them. Its JSON encoder refuses FP16 itself
        # ("Sending FP16 data via JSON is not supported"), so the JSON round sends that one
        # input as binary data beside the others in JSON, as its users must.
        for binary in (False, True):
            feeds, inputs = {}, []
            for kind in TYPE_DATA:
                data = typed(kind, 2)
                inp = InferInput(f"x_{kind}", list(data.shape), TRITON_NAMES[TYPE_DATA[kind]])
                inp.set_data_from_numpy(data, binary_data=binary or kind == "fp16")
                inputs.append(inp)
                feeds[f"x_{kind}"] = data
            response = await v2.infer(BASE, InferRequest("types", inputs), model_name="types")
            got = {o.name: o.as_numpy() for o in response.outputs}
            want = dict(zip([o.name for o in TYPES.get_outputs()], TYPES.run(None, feeds)))
            differ = [n for n in ("y_fp16", "y_text") if not same(got[n], want[n])]
            check(f"kserve v2 ({'binary' if binary else 'JSON'}): FP16 and BYTES round-trip", not differ, differ)
        await v2.close()
        v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
        response = await v1.infer(BASE, {"instances": x.tolist()}, model_name="tabular_mlp")
        got = np.array(response["predictions"], np.float32)
        check("kserve v1 (TF Serving :predict): matches onnxruntime", close(got, MLP.run(None, {"features": x})[0]))
        await v1.close()

    asyncio.run(run())


def plain_requests():
    x = RNG.random((3, 30), dtype=np.float32)
    want = MLP.run(None, {"features": x})[0]
    r = requests.post(f"{BASE}/v1/models/tabular_mlp:predict", json={"instances": x.tolist()})
    check("requests: TF Serving row :predict", close(np.array(r.json()["predictions"], np.float32), want), r.text)
    r = requests.post(f"{BASE}/v1/models/tabular_mlp:predict", json={"inputs": {"features": x.tolist()}})
    check("requests: TF Serving columnar :predict", close(np.array(r.json()["outputs"], np.float32), want), r.text)
    r = requests.get(f"{BASE}/v1/models/tabular_mlp")
    check("requests: TF Serving status", r.json()["model_version_status"][0]["state"] == "AVAILABLE", r.text)
    r = requests.get(f"{BASE}/v1/models/tabular_mlp/metadata")
    sig = r.json()["metadata"]["signature_def"]["signature_def"]["serving_default"]
    check("requests: TF Serving metadata", sig["inputs"]["features"]["dtype"] == "DT_FLOAT", r.text)
    r = requests.post(f"{BASE}/v1/models/iris:classify", json={"examples": [{"X": [5.1, 3.5, 1.4, 0.2]}]})
    best = max(r.json()["result"][0], key=lambda c: c[1])[0]
    check("requests: TF Serving :classify", best == "setosa", r.text)
    r = requests.post(f"{BASE}/v1/models/tabular_mlp:predict", json={"instances": [[1.0] * 29]})
    check("requests: TF Serving error form", r.status_code == 400 and "dimension 1 must be 30" in r.json()["error"], r.text)
    r = requests.post(f"{BASE}/predict", json={"model": "tabular_mlp", "features": x[0].tolist()})
    # This copy of tabular_mlp has no model.toml: classes are answered by index.
    check("requests: /predict", r.json()["prediction"] == int(np.argmax(want[0])), r.text)
    r = requests.post(f"{BASE}/batch_predict", json=[{"model": "tabular_mlp", "features": row.tolist()} for row in x])
    check("requests: /batch_predict", len(r.json()) == 3, r.text)
    r = requests.post(f"{BASE}/v2/models/tabular_mlp/infer", json={"inputs": []})
    check("requests: an OIP error is {\"error\": ...}", r.status_code == 400 and "missing input" in r.json()["error"], r.text)


def openapi():
    from openapi_spec_validator import validate

    doc = requests.get(f"{BASE}/openapi.json").json()
    validate(doc)
    check("/openapi.json is a valid OpenAPI 3 document", "/v2/models/{model}/infer" in doc["paths"])


openapi()
tritonclient(binary=True)
tritonclient(binary=False)
kserve_client()
plain_requests()
print(f"interop suite ok: {len(PASSED)} checks passed")
