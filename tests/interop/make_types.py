#!/usr/bin/env python3
"""Writes a model with one input per element type, each passed through to an output
(`x_<type>` -> `y_<type>`, shape [batch, 3]), so clients can send and read every type:
FP16 as GPU exports give it, and strings (`text`, BYTES) as tokenizer-free text models
take them."""
import sys

import onnx
from onnx import TensorProto, helper

TYPES = {
    "fp32": TensorProto.FLOAT, "fp64": TensorProto.DOUBLE, "int64": TensorProto.INT64,
    "int32": TensorProto.INT32, "int8": TensorProto.INT8, "uint8": TensorProto.UINT8,
    "bool": TensorProto.BOOL, "fp16": TensorProto.FLOAT16, "text": TensorProto.STRING,
}
nodes, inputs, outputs = [], [], []
for name, t in TYPES.items():
    inputs.append(helper.make_tensor_value_info(f"x_{name}", t, ["batch", 3]))
    outputs.append(helper.make_tensor_value_info(f"y_{name}", t, ["batch", 3]))
    nodes.append(helper.make_node("Identity", [f"x_{name}"], [f"y_{name}"]))
model = helper.make_model(helper.make_graph(nodes, "types", inputs, outputs),
                          opset_imports=[helper.make_opsetid("", 17)], producer_name="modeld-interop")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
