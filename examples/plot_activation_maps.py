"""
==============================================
Why did it predict that? Class activation maps
==============================================

A classifier can be right for the wrong reason: a watermark, a background, the
border of the scan. A class activation map shows where in an image the network
found the evidence for a class. Here the class of each image is decided by a
small shape at a random place on a blank image, a filled square or a plus
sign: a network that learned the task should look at the shape, and nowhere
else.

:func:`~sklearn_cnn.inspection.class_activation_map` computes Grad-CAM on a
copy of the fitted network, so the model is left exactly as it was;
:func:`~sklearn_cnn.inspection.plot_top_losses` and
:func:`~sklearn_cnn.inspection.most_confused` show what the model gets most
wrong.
"""

# %%
# Shapes on blank images
# ----------------------
import numpy as np

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn.inspection import (
    class_activation_map,
    most_confused,
    plot_class_activation_maps,
    plot_top_losses,
)

SIZE, SIDE = 24, 5


def make_shapes(n, seed):
    rng = np.random.default_rng(seed)
    X = np.zeros((n, SIZE, SIZE, 1), dtype=np.uint8)
    corners = rng.integers(0, SIZE - SIDE + 1, size=(n, 2))
    y = np.where(np.arange(n) % 2 == 0, "square", "cross")
    cross = np.zeros((SIDE, SIDE), dtype=np.uint8)
    cross[SIDE // 2, :] = cross[:, SIDE // 2] = 255
    for i, (row, column) in enumerate(corners):
        shape = 255 if y[i] == "square" else cross
        X[i, row : row + SIDE, column : column + SIDE, 0] = shape
    return X, y, corners


X_train, y_train, _ = make_shapes(240, seed=0)
X_test, y_test, corners = make_shapes(60, seed=1)
clf = CNNImageClassifier(filters=(8, 16), epochs=6, batch_size=32, random_state=0)
clf.fit(X_train, y_train)
print(f"test accuracy: {clf.score(X_test, y_test):.2f}")

# %%
# Where the network looks
# -----------------------
# Each map is in [0, 1], at the size of the images. Red is where the evidence
# for the predicted class is strongest.
_ = plot_class_activation_maps(clf, X_test, y_test, n=8)

# %%
# How often does the map's maximum fall on the shape? The shape covers 4 % of
# each image, so a map that looked anywhere would hit it about 4 % of the time.
maps = class_activation_map(clf, X_test)
peaks = np.unravel_index(maps.reshape(len(maps), -1).argmax(axis=1), maps.shape[1:])
inside = np.all(
    (np.stack(peaks, axis=1) >= corners) & (np.stack(peaks, axis=1) < corners + SIDE),
    axis=1,
)
print(f"map maximum on the shape: {inside.mean():.0%} of the test images")

# %%
# The maps of the other class say what speaks against it: ``target=`` chooses
# the class mapped.
_ = plot_class_activation_maps(clf, X_test, n=4, target="cross", method="layercam")

# %%
# What the model gets most wrong
# ------------------------------
# The images with the highest loss, each with the predicted class, the true one
# and their probabilities; then the pairs of classes mistaken most often.
_ = plot_top_losses(clf, X_test, y_test, n=6, heatmap=True)
print("most confused (true, predicted, count):", most_confused(clf, X_test, y_test))
