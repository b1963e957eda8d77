"""The stack most users would otherwise pick: FastAPI + uvicorn + onnxruntime, written as
the usual FastAPI model server is (a pydantic request, one InferenceSession per process,
run with `uvicorn --workers <cores>`). Serves POST /predict with {"features": [...]},
answering {"prediction", "probability"} like modeld's /predict.

    MODEL_PATH=models/tabular_mlp/1/model.onnx uvicorn fastapi_server:app --workers 2
"""
import os
from typing import List

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

session = ort.InferenceSession(os.environ["MODEL_PATH"], providers=["CPUExecutionProvider"])
model_input = session.get_inputs()[0]
# One example: the declared input shape without its batch dimension.
row_shape = [d if isinstance(d, int) else -1 for d in model_input.shape[1:]]

app = FastAPI()


class PredictRequest(BaseModel):
    features: List[float]


@app.get("/ready")
def ready():
    return {"ready": True}


@app.post("/predict")
def predict(request: PredictRequest):
    x = np.asarray(request.features, dtype=np.float32).reshape([1] + row_shape)
    scores = session.run(None, {model_input.name: x})[0][0]
    best = int(np.argmax(scores))
    return {"prediction": best, "probability": float(scores[best]), "model_version": "1"}
