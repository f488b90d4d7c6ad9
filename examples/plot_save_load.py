"""
=============================
Saving and loading a model
=============================

A fitted classifier, or a whole Pipeline, can be saved in two ways:

* :func:`sklearn_cnn.save_model` writes a safetensors file with a JSON
  description of the model; :func:`sklearn_cnn.load_model` reads it back
  without running any code from the file, so it is safe to share.
* ``pickle`` or ``joblib``, as for any scikit-learn estimator; load such files
  only from sources you trust.

The ``sklearn-cnn train --output PATH`` command saves its pipeline with the
first (``--format safetensors``, the default) or the second
(``--format pickle``).
"""

# %%
# sphinx_gallery_thumbnail_path = "_static/save_load_thumbnail.png"
import tempfile
from pathlib import Path

import joblib
import numpy as np
from sklearn.pipeline import make_pipeline

from sklearn_cnn import CNNImageClassifier, load_model, save_model
from sklearn_cnn.datasets import load_cats_dogs
from sklearn_cnn.preprocessing import ImageScaler

X, y = load_cats_dogs(image_size=16, n_samples=200, return_X_y=True)
model = make_pipeline(
    ImageScaler(), CNNImageClassifier(filters=(8,), epochs=2, random_state=0)
)
model.fit(X, y)

folder = Path(tempfile.mkdtemp())

# %%
# Without pickle
# --------------
path = save_model(model, folder / "cats_dogs.safetensors")
print(f"{path.name}: {path.stat().st_size / 1024:.1f} KiB")
loaded = load_model(path)
print(np.allclose(loaded.predict_proba(X), model.predict_proba(X)))

# %%
# With joblib
# -----------
joblib.dump(model, folder / "cats_dogs.joblib")
loaded = joblib.load(folder / "cats_dogs.joblib")
print(np.allclose(loaded.predict_proba(X), model.predict_proba(X)))

# %%
# A loaded model keeps its fitted attributes, such as the classes and the
# training history:
print(loaded.classes_, len(loaded[-1].history_), "epochs")
