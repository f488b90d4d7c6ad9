"""What a fitted classifier gets most wrong: top losses and confused pairs.

After fastai's ``ClassificationInterpretation``: the images with the highest
loss are those the model is most confidently wrong about (or least sure of
when right), and the pairs of classes most often mistaken for each other say
where more or cleaner data would help.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import confusion_matrix
from sklearn.utils.validation import check_is_fitted

from . import _fitted


def _classes(estimator) -> np.ndarray:
    check_is_fitted(estimator)
    _, final = _fitted.split_pipeline(estimator)
    classes = getattr(final, "classes_", None)
    if classes is None or not hasattr(estimator, "predict_proba"):
        raise TypeError(
            "Expected a fitted classifier with classes_ and predict_proba, such as "
            f"a CNNImageClassifier or a Pipeline ending in one; got "
            f"{type(estimator).__name__}."
        )
    if getattr(final, "multilabel_", False):
        raise TypeError(
            "Top losses and most_confused rank single-label predictions; this "
            f"{type(final).__name__} is multi-label. For its mistakes per label, "
            "use sklearn.metrics.multilabel_confusion_matrix(y, "
            "estimator.predict(X))."
        )
    return np.asarray(classes)


def _labels(classes, X, y) -> np.ndarray:
    y = np.asarray(y)
    n_images = len(X)
    if y.shape != (n_images,):
        raise ValueError(
            f"X has {n_images} images but y has shape {y.shape}; expected one "
            "label per image."
        )
    unknown = sorted(set(y.tolist()) - set(classes.tolist()), key=str)
    if unknown:
        raise ValueError(
            f"y has label(s) {unknown} that the model was not fitted on; its "
            f"classes are {classes.tolist()}."
        )
    return y


def top_losses(estimator, X, y):
    """``(order, losses, probabilities)``: images by decreasing log loss.

    ``losses[i]`` is ``-log p(y[i])`` of image ``i``; ``order`` sorts them from
    the largest, ties kept in the order of ``X``.
    """
    classes = _classes(estimator)
    y = _labels(classes, X, y)
    probabilities = estimator.predict_proba(X)
    true = _positions(classes, y)
    p_true = probabilities[np.arange(len(y)), true]
    losses = -np.log(np.clip(p_true, np.finfo(np.float64).tiny, None))
    order = np.argsort(-losses, kind="stable")
    return order, losses, probabilities


def _positions(classes, y) -> np.ndarray:
    lookup = {label: i for i, label in enumerate(classes.tolist())}
    return np.array([lookup[label] for label in y.tolist()])


def plot_top_losses(estimator, X, y, n=9, *, n_cols=None, heatmap=False):
    """Show the ``n`` images the classifier is most wrong about.

    The images are those with the largest log loss ``-log p(true class)``;
    each is titled with the predicted class, the true class, the loss and the
    probability of the prediction (and of the true class), as fastai's
    ``plot_top_losses`` does. Wrong predictions are titled in red.

    Parameters
    ----------
    estimator : fitted classifier or Pipeline
        Anything with ``classes_`` (on its last step) and ``predict_proba``.
    X : array-like of images or list of image file paths
        Images as ``predict_proba`` takes them.
    y : array-like of shape (n_samples,)
        The true labels.
    n : int, default=9
        How many images to show.
    n_cols : int, default=None
        Columns of the grid; None makes it about square.
    heatmap : bool, default=False
        Also lay each image's :func:`class_activation_map` of the predicted
        class over it (needs a network, as that function does).

    Returns
    -------
    figure : matplotlib Figure
        The figure holding the grid.

    See Also
    --------
    most_confused : The pairs of classes most often mistaken.

    Examples
    --------
    >>> from sklearn_cnn import CNNImageClassifier
    >>> from sklearn_cnn.datasets import load_cats_dogs
    >>> from sklearn_cnn.inspection import plot_top_losses
    >>> X, y = load_cats_dogs(image_size=8, n_samples=20, return_X_y=True)
    >>> clf = CNNImageClassifier(filters=(4,), epochs=1, random_state=0).fit(X, y)
    >>> figure = plot_top_losses(clf, X, y, n=4)
    >>> len([ax for ax in figure.axes if ax.get_title()])
    4
    """
    from ._activation_maps import class_activation_map, display_images
    from ._plot import _pyplot

    plt = _pyplot("plot_top_losses")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}.")
    order, losses, probabilities = top_losses(estimator, X, y)
    classes = _classes(estimator)
    y = np.asarray(y)
    shown = order[: min(n, len(order))]
    X_shown = _fitted.take_images(X, shown)
    images = display_images(estimator, X_shown)
    maps = class_activation_map(estimator, X_shown) if heatmap else None
    n = len(shown)
    n_cols = n_cols or math.ceil(math.sqrt(n))
    n_rows = math.ceil(n / n_cols)
    figure, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(2.2 * n_cols, 2.6 * n_rows),
        squeeze=False,
        layout="constrained",
    )
    for panel, axis in enumerate(axes.ravel()):
        axis.axis("off")
        if panel >= n:
            continue
        i = shown[panel]
        axis.imshow(images[panel], cmap="gray" if images[panel].ndim == 2 else None)
        if maps is not None:
            axis.imshow(maps[panel], cmap="jet", alpha=0.5, vmin=0, vmax=1)
        predicted = int(np.argmax(probabilities[i]))
        true = _positions(classes, y[i : i + 1])[0]
        axis.set_title(
            f"pred: {classes[predicted]} ({probabilities[i, predicted]:.2f})\n"
            f"true: {y[i]} ({probabilities[i, true]:.2f}), loss {losses[i]:.2f}",
            fontsize=8,
            color="tab:green" if predicted == true else "tab:red",
        )
    figure.suptitle("Top losses: predicted (probability), true (probability)")
    return figure


def most_confused(estimator, X, y, *, min_count=1):
    """The pairs of classes the classifier mistakes most often, with counts.

    Parameters
    ----------
    estimator : fitted classifier or Pipeline
        Anything with ``classes_`` (on its last step) and ``predict``.
    X : array-like of images or list of image file paths
        Images as ``predict`` takes them.
    y : array-like of shape (n_samples,)
        The true labels.
    min_count : int, default=1
        Leave out pairs mistaken fewer times than this.

    Returns
    -------
    pairs : list of tuple (true, predicted, count)
        One entry per pair of distinct classes, the true class first, from the
        most frequent mistake down (ties in the order of ``classes_``).

    See Also
    --------
    plot_top_losses : The images the classifier is most wrong about.

    Examples
    --------
    >>> from sklearn_cnn import CNNImageClassifier
    >>> from sklearn_cnn.datasets import load_cats_dogs
    >>> from sklearn_cnn.inspection import most_confused
    >>> X, y = load_cats_dogs(image_size=8, n_samples=20, return_X_y=True)
    >>> clf = CNNImageClassifier(filters=(4,), epochs=1, random_state=0).fit(X, y)
    >>> pairs = most_confused(clf, X, y)
    >>> all(true != predicted and count >= 1 for true, predicted, count in pairs)
    True
    """
    classes = _classes(estimator)
    y = _labels(classes, X, y)
    matrix = confusion_matrix(y, estimator.predict(X), labels=classes)
    np.fill_diagonal(matrix, 0)
    rows, columns = np.nonzero(matrix >= max(min_count, 1))
    counts = matrix[rows, columns]
    order = np.argsort(-counts, kind="stable")
    return [
        (_plain(classes[rows[k]]), _plain(classes[columns[k]]), int(counts[k]))
        for k in order
    ]


def _plain(value):
    """NumPy scalars as Python ones, so that the pairs print plainly."""
    return value.item() if isinstance(value, np.generic) else value
