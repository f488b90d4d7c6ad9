"""
=======================================
Deploying a model: export it to ONNX
=======================================

A fitted model runs wherever Python, PyTorch and scikit-learn are installed. A
server, a phone or a browser may have none of them: an ONNX file runs on
onnxruntime alone, in C++, C#, Java or JavaScript.

:func:`~sklearn_cnn.export_onnx` writes the whole fitted Pipeline as one graph:
it takes uint8 images, as they are decoded, and returns the probabilities
``predict_proba`` gives, with the scaling, the standardization and the
backbone's normalization inside. The class labels are in the file's metadata.
"""

# %%
# Fit a Pipeline, export it
# -------------------------
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from sklearn.pipeline import make_pipeline

from sklearn_cnn import CNNImageClassifier, export_onnx
from sklearn_cnn.datasets import load_cats_dogs
from sklearn_cnn.preprocessing import ImageScaler, ImageStandardizer

X, y = load_cats_dogs(image_size=32, n_samples=200, return_X_y=True)
model = make_pipeline(
    ImageScaler(),
    ImageStandardizer(),
    # float32 arithmetic, as the graph's: the probabilities then match.
    CNNImageClassifier(epochs=3, precision="float32", random_state=0),
).fit(X, y)
path = export_onnx(model, Path(tempfile.mkdtemp()) / "cats_dogs.onnx")
print(f"wrote {path}: {Path(path).stat().st_size / 1024:.0f} KiB")

# %%
# Run it with onnxruntime alone
# -----------------------------
# The input is named ``images``: uint8, (batch, height, width, channels), any
# batch size.
session = onnxruntime.InferenceSession(path)
(probabilities,) = session.run(None, {"images": X[:10]})
metadata = {prop.key: prop.value for prop in onnx.load(path).metadata_props}
classes = json.loads(metadata["classes"])
print("classes:", classes)
print("predicted:", [classes[i] for i in probabilities.argmax(axis=1)])
difference = np.abs(probabilities - model.predict_proba(X[:10])).max()
print(f"largest difference from predict_proba: {difference:.1e}")

# %%
# Over all the images, the graph's probability of the first class against the
# Pipeline's: every point lies on the diagonal.
import matplotlib.pyplot as plt

(exported,) = session.run(None, {"images": X})
figure, ax = plt.subplots(figsize=(4, 4), layout="constrained")
ax.scatter(model.predict_proba(X)[:, 0], exported[:, 0], s=10, alpha=0.6)
ax.plot([0, 1], [0, 1], "k--", linewidth=1)
ax.set_xlabel(f"predict_proba, P({classes[0]})")
ax.set_ylabel(f"onnxruntime, P({classes[0]})")
_ = ax.set_title("The exported graph's probabilities")
