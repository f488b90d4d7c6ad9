"""
================================================
An image classifier in six stages, end to end
================================================

A complete image classification workflow in six stages: load 1000 images of
64x64 pixels with 3 colour channels, scale their pixels from 0-255 to 0.0-1.0,
split them into 800 training and 200 test images, augment the training images
(flip and rotate), train a convolutional network, and evaluate it.

This example runs the six stages on the cats and dogs silhouettes that ship with
the package, then looks inside the trained network layer by layer. To keep it
quick on a CPU it uses 32x32 images and 3 epochs; ``sklearn-cnn train`` runs the
same pipeline on 64x64 images from the command line.
"""

# %%
# 1. Data loading
# ---------------
# :func:`~sklearn_cnn.datasets.load_cats_dogs` returns uint8 images, channels
# last, and their labels.
from sklearn_cnn.datasets import load_cats_dogs

X, y = load_cats_dogs(image_size=32, n_samples=1000, return_X_y=True)
print(X.shape, X.dtype, y[:5])

# %%
# 2 to 5. Preprocessing, augmentation and the network, in one Pipeline
# ----------------------------------------------------------------------
# The scaler turns pixels into 0.0-1.0 floats. The augmenter flips and rotates
# the training images; inside the Pipeline, the classifier draws a fresh
# augmentation of every batch in every epoch, and test images are never
# augmented.
from sklearn.pipeline import Pipeline

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn.augmentation import (
    RandomAugment,
    RandomHorizontalFlip,
    RandomRotation,
)
from sklearn_cnn.preprocessing import ImageScaler

model = Pipeline(
    [
        ("scale", ImageScaler()),
        (
            "augment",
            RandomAugment(
                steps=[
                    ("flip", RandomHorizontalFlip()),
                    ("rotate", RandomRotation(degrees=15)),
                ]
            ),
        ),
        ("cnn", CNNImageClassifier(epochs=3, batch_size=32, random_state=0)),
    ]
)

# %%
# 3. Train/test split, then 5. training
# -------------------------------------
# ``verbose=1`` would print the loss and accuracy of every epoch.
from sklearn.model_selection import train_test_split

X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=200, stratify=y, random_state=0
)
model.fit(X_train, y_train)
for record in model[-1].history_:
    print(record)

# %%
# 6. Evaluation
# -------------
from sklearn.metrics import classification_report

y_pred = model.predict(X_test)
n_correct = (y_pred == y_test).sum()
print(f"predicted {n_correct} of {len(y_test)} test images correctly")
print(classification_report(y_test, y_pred))

# %%
# The confusion matrix, with scikit-learn's own display:
from sklearn.metrics import ConfusionMatrixDisplay

display = ConfusionMatrixDisplay.from_estimator(model, X_test, y_test, cmap="Blues")

# %%
# Training curves and predictions
# -------------------------------
from sklearn_cnn.inspection import layer_trace, plot_history, plot_predictions

axes = plot_history(model)

# %%
figure = plot_predictions(model, X_test, y_test, n=12)

# %%
# The prediction trace
# --------------------
# One test image through the network, layer by layer: convolution, pooling,
# fully connected, softmax, with each layer's output shape and parameters.
print(layer_trace(model, X_test[0]))
