"""
=========================================
Cross-validating an image classifier
=========================================

:func:`~sklearn.model_selection.cross_val_score` clones and fits the
classifier once per fold, as for any scikit-learn classifier. With a fixed
``random_state`` every fold trains reproducibly.
"""

# %%
import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn.datasets import load_cats_dogs
from sklearn_cnn.preprocessing import ImageScaler

X, y = load_cats_dogs(image_size=16, n_samples=300, return_X_y=True)
model = make_pipeline(
    ImageScaler(),
    CNNImageClassifier(filters=(8, 16), epochs=4, batch_size=16, random_state=0),
)
cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
scores = cross_val_score(model, X, y, cv=cv)
print("accuracy per fold:", np.round(scores, 3))
print(f"mean accuracy: {scores.mean():.3f} +/- {scores.std():.3f}")

# %%
# The scores of a baseline that always predicts the most frequent class, for
# comparison:
from sklearn.dummy import DummyClassifier

baseline = cross_val_score(DummyClassifier(), X.reshape(len(X), -1), y, cv=cv)
print(f"baseline accuracy: {baseline.mean():.3f}")

# %%
# Fold by fold:
import matplotlib.pyplot as plt

figure, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
folds = np.arange(1, len(scores) + 1)
ax.bar(folds - 0.2, scores, width=0.4, label="CNNImageClassifier")
ax.bar(folds + 0.2, baseline, width=0.4, label="most frequent class")
ax.set_xticks(folds)
ax.set_xlabel("fold")
ax.set_ylabel("accuracy")
ax.set_ylim(0, 1)
ax.legend(loc="lower right")
_ = ax.set_title("Cross-validated accuracy")
