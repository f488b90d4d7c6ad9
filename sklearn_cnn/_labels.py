"""The classifier's targets: labels and multi-label indicator matrices.

How ``y`` becomes what the loss is computed on: class labels become indices
into the sorted ``classes_`` (:func:`encode_labels`), a 0/1 indicator matrix
becomes float targets with ``classes_`` the label indices
(:func:`encode_indicator`); :func:`class_weights` and :func:`label_weights`
turn ``class_weight`` into the weights of the two losses.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import type_of_target


def is_multilabel(y) -> bool:
    """Whether ``y`` is a multi-label indicator matrix; refuses other 2-D labels."""
    y_type = type_of_target(y, input_name="y")
    # type_of_target calls any 2-D y of at most two integer values an
    # indicator: ours holds 0s and 1s only.
    if y_type == "multilabel-indicator" and np.isin(np.asarray(y), (0, 1)).all():
        return True
    if y_type in (
        "multilabel-indicator",
        "multiclass-multioutput",
        "continuous-multioutput",
    ):
        shape = np.shape(y)
        raise ValueError(
            "CNNImageClassifier takes 1-D class labels, or a 2-D multi-label "
            "indicator matrix of 0s and 1s, one column per label (as "
            "sklearn.preprocessing.MultiLabelBinarizer makes); got y of shape "
            f"{shape} whose values are not all 0 or 1. For numeric targets, use "
            "CNNImageRegressor."
        )
    return False


def encode_indicator(y, classes, fitted_classes):
    """A 0/1 indicator matrix as float32 targets, and the label indices."""
    indicator = np.asarray(y)
    n_labels = indicator.shape[1]
    if fitted_classes is not None:
        classes_ = fitted_classes
    elif classes is not None:
        classes_ = np.asarray(classes)
        if classes_.shape != (n_labels,):
            raise ValueError(
                f"y is a multi-label indicator matrix of {n_labels} labels, so "
                f"classes must be {n_labels} label indices "
                f"(np.arange({n_labels})); got classes of shape "
                f"{classes_.shape}."
            )
        classes_ = np.arange(n_labels)
    else:
        classes_ = np.arange(n_labels)
    if n_labels != len(classes_):
        raise ValueError(
            f"y has {n_labels} labels per image, but this model was fitted on "
            f"{len(classes_)}."
        )
    return indicator.astype(np.float32), classes_


def label_weights(class_weight, targets, sample_weight):
    """Per-label weights of the positive and the negative images in the loss.

    'balanced' weighs each label's positives and negatives so that both
    count alike: ``n / (2 * n_positive)`` and ``n / (2 * n_negative)``, as
    ``compute_class_weight('balanced')`` does for one binary label (sample
    weights counted). A dict maps label indices to a weight of that label's
    whole term.
    """
    n_labels = targets.shape[1]
    if class_weight == "balanced":
        weights = (
            np.ones(len(targets)) if sample_weight is None else sample_weight
        ).astype(np.float64)[:, None]
        total = weights.sum()
        positives = (weights * targets).sum(axis=0)
        negatives = total - positives
        with np.errstate(divide="ignore"):
            positive = np.where(positives > 0, total / (2 * positives), 1.0)
            negative = np.where(negatives > 0, total / (2 * negatives), 1.0)
        return positive.astype(np.float32), negative.astype(np.float32)
    weights = np.ones(n_labels, dtype=np.float32)
    for label, weight in class_weight.items():
        if not (isinstance(label, (int, np.integer)) and 0 <= label < n_labels):
            raise ValueError(
                f"class_weight names the label {label!r}; with a multi-label "
                f"indicator y its keys are label indices 0 to {n_labels - 1}."
            )
        weights[label] = weight
    return weights, weights.copy()


def encode_labels(y, classes, fitted_classes):
    """Labels as class indices (int64), and the sorted classes."""
    if fitted_classes is not None:
        classes_ = fitted_classes
    elif classes is not None:
        classes_ = np.unique(np.asarray(classes))
    else:
        classes_ = np.unique(y)
    unknown = np.setdiff1d(np.unique(y), classes_)
    if len(unknown):
        raise ValueError(
            f"y contains labels {unknown.tolist()} that are not in the classes "
            f"{classes_.tolist()} this model knows."
        )
    if len(classes_) < 2:
        raise ValueError(
            "CNNImageClassifier needs samples of at least 2 classes in the data, "
            f"but the data contains only one class: {classes_[0]!r}."
        )
    return np.searchsorted(classes_, y).astype(np.int64), classes_


def class_weights(class_weight, classes_, y_encoded, sample_weight=None):
    """The loss weight of each class: 'balanced', or a dict of class labels."""
    if class_weight == "balanced":
        present = np.unique(y_encoded)
        weights = np.ones(len(classes_))
        weights[present] = compute_class_weight(
            "balanced", classes=present, y=y_encoded, sample_weight=sample_weight
        )
        return weights
    weights = np.ones(len(classes_))
    for label, weight in class_weight.items():
        matches = np.flatnonzero(classes_ == label)
        if len(matches) == 0:
            raise ValueError(
                f"class_weight names the class {label!r}, which is not in the "
                f"classes {classes_.tolist()}."
            )
        weights[matches[0]] = weight
    return weights
