"""
==============================================
Fine-tuning a pretrained network on few labels
==============================================

A network pretrained on one task learns a new one from far fewer labels than a
network trained from scratch. With photographs, the pretrained network is one
of torchvision's, ``CNNImageClassifier(backbone="resnet18", weights="DEFAULT")``,
whose ImageNet weights torchvision downloads once into its cache (see
:ref:`pretrained` for putting the file there by hand on a machine without a
network).

This example runs offline, so it makes its own pretrained network: a
``resnet18`` trained on the handwritten digits 0 to 4, saved as a state-dict
file. That file is then the ``weights`` of three models of the digits 5 to 9,
given only ten labelled images of each:

* the same ``resnet18`` trained from scratch (``weights=None``);
* the pretrained one, fine-tuned: the body frozen for the first epoch while the
  new head learns, then everything trained with a ten times lower learning rate
  for the body;
* the pretrained body as a fixed feature extractor, with a logistic
  regression on its features.
"""

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from sklearn_cnn import CNNFeatureExtractor, CNNImageClassifier
from sklearn_cnn.preprocessing import ImageResizer

digits = load_digits()
X = (digits.images * (255 / 16)).astype(np.uint8)  # 8x8 grayscale, 0-255
y = digits.target
resize = ImageResizer(16)  # a little room for resnet18's strided layers

# %%
# Task A: pretrain on the digits 0 to 4
# -------------------------------------
# All of their images, a few epochs. The body's weights go to a file, as a
# state dict: ``clf.net_.module_`` is the torch network (``body`` and ``head``).
task_a = y < 5
pretrain = make_pipeline(
    resize,
    CNNImageClassifier(backbone="resnet18", epochs=4, batch_size=32, random_state=0),
)
pretrain.fit(X[task_a], y[task_a])
# Seeded: with the same number of torch threads, every run prints these losses.
losses = ", ".join(f"{loss:.4f}" for loss in pretrain[-1].loss_curve_)
print(f"training loss per epoch: {losses}")
weights_file = Path(tempfile.mkdtemp()) / "resnet18_digits_0_4.pt"
torch.save(pretrain[-1].net_.module_.state_dict(), weights_file)
print(f"{weights_file.name}: {weights_file.stat().st_size / 2**20:.1f} MiB")

# %%
# Task B: ten labels of each of the digits 5 to 9
# -----------------------------------------------
rng = np.random.RandomState(0)
task_b = np.flatnonzero(y >= 5)
train = np.concatenate(
    [
        rng.choice(task_b[y[task_b] == digit], 10, replace=False)
        for digit in range(5, 10)
    ]
)
test = np.setdiff1d(task_b, train)

# Fifty images make four batches an epoch: a higher learning rate than the
# default 0.001 lets the new head settle in ten epochs (the same for all).
common = dict(backbone="resnet18", epochs=10, batch_size=16, lr=3e-3, random_state=0)
models = {
    "from scratch": make_pipeline(resize, CNNImageClassifier(**common)),
    "fine-tuned": make_pipeline(
        resize, CNNImageClassifier(weights=weights_file, **common)
    ),
    "features +\nlogistic regression": make_pipeline(
        resize,
        CNNFeatureExtractor("resnet18", weights=weights_file),
        LogisticRegression(max_iter=1000),
    ),
}
scores = {}
for name, model in models.items():
    model.fit(X[train], y[train])
    scores[name] = model.score(X[test], y[test])
    print(f"{name.replace(chr(10), ' ')}: test accuracy {scores[name]:.3f}")

# %%
# The pretrained body carries over what it learned about strokes and shapes,
# which fifty images alone teach a network trained from scratch less well. The
# fixed features and a logistic regression have no network weight to move and
# are fitted to convergence, which makes them a strong first try with a few
# dozen labels; fine-tuning adapts the features themselves, and gains with
# more labels.
figure, ax = plt.subplots(figsize=(6, 3), layout="constrained")
ax.barh(list(scores), list(scores.values()), color=["0.6", "C0", "C1"])
ax.set_xlim(0, 1)
ax.set_xlabel(f"test accuracy on {len(test)} images of the digits 5-9")
_ = ax.set_title("50 labelled images, resnet18")
