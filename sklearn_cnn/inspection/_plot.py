"""Plots of a fitted classifier: training history and predictions on images."""

from __future__ import annotations

import math

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted


def _pyplot(function_name: str):
    """matplotlib.pyplot, or an ImportError saying how to get it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            f"{function_name} needs matplotlib, which is not installed. Install it "
            "with: pip install matplotlib"
        ) from error
    return plt


def _final_estimator(estimator):
    return estimator[-1] if isinstance(estimator, Pipeline) else estimator


# How the score of a task is named on its Axes; any other name is shown as is.
_SCORE_LABELS = {"accuracy": "accuracy", "r2": "R²"}


def _history_score(history: list[dict]) -> str:
    """The score that training recorded beside the loss: ``train_<name>``."""
    names = [
        key.removeprefix("train_")
        for key in history[0]
        if key.startswith("train_") and key != "train_loss"
    ]
    return names[0] if names else "accuracy"


def plot_history(estimator, ax=None):
    """Plot the loss and the score per epoch of a fitted classifier or regressor.

    Draws the training curves from ``history_``: the training loss and score,
    and beside them the validation loss and score whenever training held out a
    validation split (``early_stopping=True``), so that a model which learns
    its training images by heart shows it. The score is the one the estimator
    records: the accuracy of a classifier, the R² of a regressor.

    Parameters
    ----------
    estimator : CNNImageClassifier, CNNImageRegressor or Pipeline
        A fitted :class:`~sklearn_cnn.CNNImageClassifier` or
        :class:`~sklearn_cnn.CNNImageRegressor`, or a fitted Pipeline whose last
        step is one.
    ax : sequence of two matplotlib Axes, default=None
        Where to draw the loss and the score. None creates a new figure with
        two side-by-side Axes.

    Returns
    -------
    axes : ndarray of shape (2,) of matplotlib Axes
        The loss Axes and the score Axes. Each has a line labelled
        ``"training"`` and, with a validation split, one labelled
        ``"validation"``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cnn import CNNImageClassifier
    >>> from sklearn_cnn.inspection import plot_history
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randint(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    >>> y = np.array(["cat", "dog"] * 10)
    >>> clf = CNNImageClassifier(
    ...     filters=(4,), epochs=3, early_stopping=True, validation_fraction=0.2,
    ...     n_iter_no_change=3, random_state=0,
    ... ).fit(X, y)
    >>> loss_ax, accuracy_ax = plot_history(clf)
    >>> loss_ax.get_ylabel(), [line.get_label() for line in loss_ax.lines]
    ('loss', ['training', 'validation'])
    """
    plt = _pyplot("plot_history")
    fitted = _final_estimator(estimator)
    check_is_fitted(fitted)
    history = getattr(fitted, "history_", None)
    if not history:
        raise ValueError(
            f"{type(fitted).__name__} has no training history (history_) to "
            "plot; expected a fitted CNNImageClassifier or CNNImageRegressor."
        )
    if ax is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    else:
        axes = np.asarray(ax, dtype=object).ravel()
        if axes.size != 2:
            raise ValueError(
                "ax must hold two Axes, one for the loss and one for the score; "
                f"got {axes.size}."
            )
    epochs = [row["epoch"] for row in history]
    score = _history_score(history)
    for axis, metric in zip(axes, ("loss", score)):
        for split, style in (("train", "o-"), ("valid", "s--")):
            key = f"{split}_{metric}"
            if any(key in row for row in history):
                points = [(row["epoch"], row[key]) for row in history if key in row]
                xs, ys = zip(*points)
                label = "training" if split == "train" else "validation"
                axis.plot(xs, ys, style, label=label)
        name = _SCORE_LABELS.get(metric, metric)
        axis.set_xlabel("epoch")
        axis.set_ylabel(name)
        axis.set_title(f"{name[0].upper()}{name[1:]} per epoch")
        axis.set_xticks(epochs if len(epochs) <= 20 else axis.get_xticks())
        axis.grid(True, alpha=0.3)
        axis.legend()
    return np.asarray(axes, dtype=object)


def _displayable(X: np.ndarray, image_shape) -> np.ndarray:
    """Images as ``(n, H, W)`` or ``(n, H, W, 3)`` for ``imshow``."""
    if X.ndim == 2 and image_shape is not None:
        X = X.reshape(len(X), *image_shape)
    elif X.ndim == 2:
        side = math.isqrt(X.shape[1])
        X = X.reshape(len(X), side, -1)
    if X.ndim == 4:
        channels_first = X.shape[1] in (1, 3, 4) and X.shape[-1] not in (1, 3, 4)
        if image_shape is not None:
            channels_first = X.shape[1:] != tuple(image_shape)
        if channels_first:
            X = X.transpose(0, 2, 3, 1)
        if X.shape[-1] == 1:
            X = X[..., 0]
        elif X.shape[-1] not in (3, 4):
            X = X[..., 0]  # one channel of unusual images is better than none
    if X.dtype != np.uint8:
        X = X.astype(np.float64)
        low, high = np.nanmin(X), np.nanmax(X)
        if low < 0 or high > 1:
            # Standardized or 0-255 floats: stretch each batch to 0-1 for display.
            X = (X - low) / (high - low) if high > low else np.zeros_like(X)
    return X


def _shown_values(values) -> str:
    """A regressor's prediction (one value or several) as a title reads it."""
    values = np.atleast_1d(np.asarray(values, dtype=float))
    return ", ".join(f"{value:.3g}" for value in values)


def _shown_labels(classifier):
    """A multi-label indicator row as the labels it holds."""

    def shown(row) -> str:
        labels = np.asarray(classifier.classes_)[np.asarray(row).astype(bool)]
        return ", ".join(map(str, labels.tolist())) or "none"

    return shown


def plot_predictions(estimator, X, y=None, n=16, *, n_cols=None):
    """Show images with their predicted (and true) labels, in a grid.

    Each image's title is the predicted label with its probability and, when
    ``y`` is given, the true label; wrong predictions are titled in red. A
    multi-label classifier's titles list the labels predicted (those of
    probability above 0.5), a regressor's the predicted values.

    Parameters
    ----------
    estimator : fitted classifier, regressor or Pipeline
        Anything with ``predict``; ``predict_proba`` adds the probabilities.
    X : array-like of images
        Images as given to the estimator (uint8 0-255 or floats).
    y : array-like of shape (n_samples,) or (n_samples, n_outputs), default=None
        The true labels (a multi-label indicator matrix), or a regressor's true
        targets.
    n : int, default=16
        How many images to show: the first ``n`` of ``X``.
    n_cols : int, default=None
        Number of columns of the grid; None makes it about square.

    Returns
    -------
    figure : matplotlib Figure
        The figure holding the grid.

    Examples
    --------
    >>> from sklearn_cnn import CNNImageClassifier
    >>> from sklearn_cnn.datasets import load_cats_dogs
    >>> from sklearn_cnn.inspection import plot_predictions
    >>> X, y = load_cats_dogs(image_size=8, n_samples=20, return_X_y=True)
    >>> clf = CNNImageClassifier(filters=(4,), epochs=1, random_state=0).fit(X, y)
    >>> figure = plot_predictions(clf, X, y, n=6)
    >>> len([ax for ax in figure.axes if ax.get_title()])
    6
    """
    plt = _pyplot("plot_predictions")
    check_is_fitted(estimator)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}.")
    X = np.asarray(X)
    n = min(n, len(X))
    if y is not None:
        y = np.asarray(y)
        if len(y) != len(X):
            raise ValueError(
                f"X has {len(X)} images but y has {len(y)} labels; expected one "
                "label per image."
            )
        y = y[:n]
    X = X[:n]
    predicted = np.asarray(estimator.predict(X))
    classifier = _final_estimator(estimator)
    multilabel = bool(getattr(classifier, "multilabel_", False))
    probabilities = None
    if hasattr(estimator, "predict_proba") and not multilabel:
        probabilities = np.max(estimator.predict_proba(X), axis=1)
    regression = not hasattr(classifier, "classes_")
    first = estimator[0] if isinstance(estimator, Pipeline) else classifier
    image_shape = getattr(first, "image_shape_", None)
    images = _displayable(X, image_shape)

    n_cols = n_cols or math.ceil(math.sqrt(n))
    n_rows = math.ceil(n / n_cols)
    figure, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(2.0 * n_cols, 2.3 * n_rows),
        squeeze=False,
        layout="constrained",
    )
    for i, axis in enumerate(axes.ravel()):
        axis.axis("off")
        if i >= n:
            continue
        axis.imshow(images[i], cmap="gray" if images[i].ndim == 2 else None)
        shown = _shown_labels(classifier) if multilabel else _shown_values
        if not (multilabel or regression):
            shown = str
        title = f"pred: {shown(predicted[i])}"
        if probabilities is not None:
            title += f" ({probabilities[i]:.2f})"
        color = "black"
        if y is not None:
            title += f"\ntrue: {shown(y[i])}"
            if not regression:
                right = np.array_equal(predicted[i], y[i])
                color = "tab:green" if right else "tab:red"
        axis.set_title(title, fontsize=9, color=color)
    return figure
