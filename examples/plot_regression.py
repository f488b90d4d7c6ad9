"""
======================================
Regression: measuring shapes in images
======================================

:class:`~sklearn_cnn.CNNImageRegressor` predicts numbers from images with the
same network and training loop as :class:`~sklearn_cnn.CNNImageClassifier`.
Here it measures a bright square in small gray images: the length of its side
and the column of its centre, two targets at once. See :ref:`regression`.
"""

# %%
# The images and their targets
# ----------------------------
# Each 24x24 image holds one square, 3 to 10 pixels wide, somewhere in the
# image, over noise. ``y`` has one column per target.
import numpy as np


def make_squares(n_images, seed):
    rng = np.random.RandomState(seed)
    images = rng.normal(40, 20, (n_images, 24, 24))
    targets = np.zeros((n_images, 2))
    for image, target in zip(images, targets):
        side = rng.randint(3, 11)
        top, left = rng.randint(0, 25 - side, size=2)
        image[top : top + side, left : left + side] += 160
        target[:] = side, left + (side - 1) / 2
    pixels = np.clip(images, 0, 255).astype(np.uint8)
    return pixels[..., None], targets


X_train, y_train = make_squares(600, seed=0)
X_test, y_test = make_squares(200, seed=1)
print(X_train.shape, y_train.shape)
print("side, centre column:", y_train[:3].tolist())

# %%
# Training
# --------
# The targets are standardized inside the regressor and put back on their own
# scale (pixels here) by ``predict``. The epoch table shows R².
from sklearn_cnn import CNNImageRegressor

regressor = CNNImageRegressor(
    filters=(8, 16, 32), epochs=6, lr=3e-3, random_state=0, verbose=1
)
_ = regressor.fit(X_train, y_train)

# %%
# Predictions and R²
# ------------------
# ``predict`` returns one column per target, as ``y`` was given. ``score`` is
# scikit-learn's R², averaged over the targets;
# :func:`~sklearn.metrics.r2_score` gives each target's own.
from sklearn.metrics import mean_absolute_error, r2_score

y_pred = regressor.predict(X_test)
print(y_pred.shape)
print(f"R² (score): {regressor.score(X_test, y_test):.3f}")
names = ["side", "centre column"]
r2 = r2_score(y_test, y_pred, multioutput="raw_values")
error = mean_absolute_error(y_test, y_pred, multioutput="raw_values")
for name, target_r2, target_error in zip(names, r2, error):
    print(f"{name}: R² {target_r2:.3f}, mean absolute error {target_error:.2f} px")

# %%
# Predicted against true values: a perfect regressor would put every test
# image on the diagonal.
import matplotlib.pyplot as plt

figure, axes = plt.subplots(1, 2, figsize=(8, 4), layout="constrained")
for axis, name, column in zip(axes, names, range(2)):
    true, predicted = y_test[:, column], y_pred[:, column]
    axis.scatter(true, predicted, s=12, alpha=0.6)
    limits = [min(true.min(), predicted.min()), max(true.max(), predicted.max())]
    axis.plot(limits, limits, "k--", linewidth=1)
    axis.set_xlabel(f"true {name} (px)")
    axis.set_ylabel(f"predicted {name} (px)")
    axis.set_title(f"{name.capitalize()}: R² = {r2[column]:.2f}")
