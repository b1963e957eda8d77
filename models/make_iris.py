#!/usr/bin/env python3
"""Builds the bundled scikit-learn classifier: models/iris/{1,2}/model.onnx.

Two versions of a logistic-regression iris classifier exported with skl2onnx using its
defaults, so the graph ends in a ZipMap node (what users bring from scikit-learn) and the
labels are the species names. Version 2 is trained with weaker regularisation; both serve.

    pip install scikit-learn skl2onnx onnx numpy
    python3 models/make_iris.py

The model.toml files beside the models (warm-up and golden examples) are written too; the
golden outputs are the probabilities scikit-learn itself computes.
"""
from pathlib import Path

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from skl2onnx import to_onnx

HERE = Path(__file__).resolve().parent
VERSIONS = {1: 1.0, 2: 10.0}  # version -> inverse regularisation strength C


def main() -> None:
    iris = load_iris()
    x = iris.data.astype(np.float32)
    y = np.array([iris.target_names[t] for t in iris.target])
    golden = x[[0, 75, 149]]
    for version, c in VERSIONS.items():
        clf = LogisticRegression(C=c, max_iter=1000).fit(x, y)
        onx = to_onnx(clf, x[:1], target_opset={"": 17, "ai.onnx.ml": 3})
        out = HERE / "iris" / str(version)
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.onnx").write_bytes(onx.SerializeToString())
        probs = clf.predict_proba(golden)
        (out / "model.toml").write_text(model_toml(version, golden, probs))
        print(f"wrote {out}/model.onnx classes={list(clf.classes_)}")


def model_toml(version: int, golden: np.ndarray, probs: np.ndarray) -> str:
    def rows(a: np.ndarray) -> str:
        return ", ".join(f"{v:.7g}" for v in a.ravel())

    return f"""# iris version {version}: written by models/make_iris.py (scikit-learn + skl2onnx).
# Labels come from the model's ZipMap node; nothing to declare here.

# Run once after loading, before the version takes traffic.
[warmup.inputs.X]
shape = [1, 4]
data = [5.8, 3.0, 4.3, 1.3]

# Must match within tolerance, or the version fails before it serves.
# Outputs are scikit-learn's own predict_proba for the three inputs.
[[golden]]
atol = 1e-4
rtol = 1e-3
inputs.X = {{ shape = [3, 4], data = [{rows(golden)}] }}
outputs.output_probability = {{ shape = [3, 3], data = [{rows(probs)}] }}
"""


if __name__ == "__main__":
    main()
