"""
=======================================
Multi-label images: several labels each
=======================================

An image can hold several things at once: a photo shows a cat *and* a sofa, a
part has a scratch *and* a dent. :class:`~sklearn_cnn.CNNImageClassifier`
learns such labels when ``y`` is a 0/1 indicator matrix, one column per label,
as :class:`~sklearn.preprocessing.MultiLabelBinarizer` makes from label sets.
The network then ends in one sigmoid per label instead of a softmax over the
classes, and each label is predicted on its own.

Here, small gray images hold none, one or two of three shapes: a square, a
horizontal bar and a ring. See :ref:`multilabel` for the details.
"""

# %%
# The images and their label sets
# --------------------------------
# Each noisy 16x16 image has four 8x8 corners; up to two of them get a shape.
# The ring is rare: one image in ten holds one.
import numpy as np


def draw(shape):
    """A 7x7 patch holding one shape."""
    patch = np.zeros((7, 7))
    if shape == "square":
        patch[1:6, 1:6] = 1
    elif shape == "bar":
        patch[2:5, :] = 1
    else:  # ring
        patch[[0, -1], :] = patch[:, [0, -1]] = 1
    return patch


def make_images(n_images, seed):
    rng = np.random.RandomState(seed)
    images = np.zeros((n_images, 16, 16))
    label_sets = []
    for image in images:
        shapes = [
            shape
            for shape, chance in (("square", 0.5), ("bar", 0.5), ("ring", 0.1))
            if rng.rand() < chance
        ][:2]
        corners = rng.permutation([(0, 0), (0, 8), (8, 0), (8, 8)])
        for shape, (top, left) in zip(shapes, corners):
            top, left = top + rng.randint(2), left + rng.randint(2)
            image[top : top + 7, left : left + 7] = draw(shape)
        label_sets.append(shapes)
    noise = rng.normal(30, 50, images.shape)
    pixels = np.clip(images * 200 + noise, 0, 255).astype(np.uint8)
    return pixels[..., None], label_sets


X_train, labels_train = make_images(300, seed=0)
X_test, labels_test = make_images(100, seed=1)
print(X_train.shape, X_train.dtype)
print(labels_train[:4])

# %%
# :class:`~sklearn.preprocessing.MultiLabelBinarizer` turns the label sets into
# the indicator matrix ``y``: column ``j`` is 1 where the image holds the label
# ``mlb.classes_[j]``.
from sklearn.preprocessing import MultiLabelBinarizer

mlb = MultiLabelBinarizer()
Y_train = mlb.fit_transform(labels_train)
Y_test = mlb.transform(labels_test)
print(mlb.classes_)
print(Y_train[:4])

# %%
# Training
# --------
# The same classifier as for single labels: a 2-D ``y`` of 0s and 1s makes it
# multi-label. The epoch table reports the sample-averaged F1 of the labels
# (``f1_samples``) instead of the accuracy.
from sklearn_cnn import CNNImageClassifier

clf = CNNImageClassifier(
    filters=(8, 16), dense_units=32, epochs=3, lr=0.01, random_state=0, verbose=1
)
_ = clf.fit(X_train, Y_train)
print("multi-label:", clf.multilabel_, " classes_:", clf.classes_)

# %%
# The classifier knows the labels by their column index (``classes_`` is
# ``[0, 1, 2]``); the binarizer keeps their names.
#
# Predictions
# -----------
# ``predict`` returns an indicator matrix like ``y``: a label is predicted
# where its probability is above 0.5.
# :meth:`~sklearn.preprocessing.MultiLabelBinarizer.inverse_transform` turns
# it back into label sets.
Y_pred = clf.predict(X_test)
print(Y_pred[:4])
for true, predicted in zip(labels_test[:4], mlb.inverse_transform(Y_pred[:4])):
    print(f"true: {sorted(true)!s:22} predicted: {list(predicted)}")

# %%
# ``predict_proba`` gives each label's own probability, from its own sigmoid:
# the rows do not sum to 1 (an image with two shapes has two probabilities
# close to 1, an empty image none).
proba = clf.predict_proba(X_test)
print(np.round(proba[:4], 3))
print("row sums:", np.round(proba[:4].sum(axis=1), 2))

# %%
# Scores
# ------
# ``score`` is scikit-learn's accuracy of a classifier, which for multi-label
# ``y`` is the *subset accuracy*: the share of images whose every label is
# right. It is strict: one missed label makes the whole image wrong. The
# sample-averaged F1 of the epoch table gives partial credit; it counts an
# image without true and without predicted labels as right
# (``zero_division=1.0``). Pass ``scoring="f1_samples"`` to
# :class:`~sklearn.model_selection.GridSearchCV` or
# :func:`~sklearn.model_selection.cross_val_score` to select models by it.
from sklearn.metrics import classification_report, f1_score

print(f"subset accuracy (score): {clf.score(X_test, Y_test):.3f}")
f1 = f1_score(Y_test, Y_pred, average="samples", zero_division=1.0)
print(f"f1_samples: {f1:.3f}")

# %%
# :func:`~sklearn.metrics.classification_report` gives the precision and the
# recall of each label, named by the binarizer's classes. The few rings are
# mostly missed: a label seen on one image in ten is easiest to leave out.
print(
    classification_report(Y_test, Y_pred, target_names=mlb.classes_, zero_division=1.0)
)

# %%
# Rare labels
# -----------
# A rare label tends to be predicted too seldom. ``class_weight='balanced'`` weighs
# each label's positive and negative images so that both count alike in the
# loss (a dict such as ``{1: 3.0}`` weighs a label's whole term instead, by its
# column index). The rings are found, at some cost to the other labels:
from sklearn.metrics import recall_score

balanced = CNNImageClassifier(
    filters=(8, 16),
    dense_units=32,
    epochs=3,
    lr=0.01,
    class_weight="balanced",
    random_state=0,
).fit(X_train, Y_train)
recall = recall_score(Y_test, clf.predict(X_test), average=None)
recall_balanced = recall_score(Y_test, balanced.predict(X_test), average=None)
for name, plain, weighted in zip(mlb.classes_, recall, recall_balanced):
    print(f"recall of {name:6}: {plain:.2f} unweighted, {weighted:.2f} balanced")

# %%
# Predictions on images
# ---------------------
# :func:`~sklearn_cnn.inspection.plot_predictions` titles every image with the
# label set predicted and the true one, by column index: green where the
# whole set is right, red otherwise.
from sklearn_cnn.inspection import plot_predictions

print(dict(enumerate(mlb.classes_)))
figure = plot_predictions(clf, X_test, Y_test, n=12)
