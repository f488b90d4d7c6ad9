"""Input validation for image batches: the one place that knows image layouts.

Every estimator of the package calls :func:`validate_images`. It accepts

* ``(n, H, W, C)``: channels last, what Pillow and most loaders give;
* ``(n, C, H, W)``: channels first, what PyTorch uses;
* ``(n, H, W)``: grayscale;
* ``(n, H * W * C)``: flattened images (``X.reshape(n, -1)`` of channels-last
  images), whose shape is given by ``image_shape`` or, for square grayscale
  images, inferred.

and returns a channels-first *view* of the data (no copy, dtype unchanged)
together with an :class:`ImageLayout` that restores the caller's layout.

Every estimator takes the same ``image_shape`` parameter (documented once, in
:data:`IMAGE_SHAPE_DOC`), so a 4-D array whose channel axis cannot be told
(``(n, 3, 5, 3)``) gets the same error, naming ``image_shape``, everywhere.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from sklearn.utils.validation import validate_data

from ..augmentation._images import AugmentedImages

# Channel counts we recognise when guessing which axis holds the channels.
_CHANNEL_COUNTS = (1, 2, 3, 4)

# The ``image_shape`` parameter, as every estimator of the package declares and
# documents it (numpydoc, indented for a class docstring).
IMAGE_SHAPE_CONSTRAINT = [tuple, list, None]
IMAGE_SHAPE_DOC = """\
    image_shape : tuple of int or None, default=None
        ``(height, width)`` or ``(height, width, channels)`` of the images when
        ``X`` is 2-D (flattened ``(n, height * width * channels)`` arrays, as
        from ``X.reshape(n, -1)``), or to say which axis holds the channels of an
        ambiguous 4-D array. Without it, flattened rows of a square length are
        taken as square grayscale images, other lengths as a single row."""


@dataclass(frozen=True)
class ImageLayout:
    """How a batch of images was laid out by the caller.

    Attributes
    ----------
    kind : {"nhwc", "nchw", "nhw", "flat"}
        The layout of the caller's array.
    image_shape : tuple of int
        ``(channels, height, width)`` of one image.
    """

    kind: str
    image_shape: tuple[int, int, int]

    @property
    def hwc(self) -> tuple[int, int, int]:
        channels, height, width = self.image_shape
        return (height, width, channels)

    def to_nchw(self, X: np.ndarray) -> np.ndarray:
        """A channels-first view of ``X`` (a copy only where reshaping needs one)."""
        channels, height, width = self.image_shape
        if self.kind == "nchw":
            return X
        if self.kind == "nhwc":
            return X.transpose(0, 3, 1, 2)
        if self.kind == "nhw":
            return X[:, None, :, :]
        return X.reshape(len(X), height, width, channels).transpose(0, 3, 1, 2)

    def from_nchw(self, X: np.ndarray) -> np.ndarray:
        """Put channels-first images back into this layout."""
        if self.kind == "nchw":
            return X
        if self.kind == "nhwc":
            return X.transpose(0, 2, 3, 1)
        if self.kind == "nhw":
            return X[:, 0]
        return X.transpose(0, 2, 3, 1).reshape(len(X), -1)

    def describe(self, n_samples: int | None = None) -> str:
        """The shape of a batch in this layout, as the caller would write it."""
        channels, height, width = self.image_shape
        n = "n" if n_samples is None else str(n_samples)
        shapes = {
            "nhwc": f"({n}, {height}, {width}, {channels})",
            "nchw": f"({n}, {channels}, {height}, {width})",
            "nhw": f"({n}, {height}, {width})",
            "flat": f"({n}, {height * width * channels})",
        }
        return shapes[self.kind]


def _normalize_image_shape(image_shape) -> tuple[int, int, int] | None:
    """``(H, W)`` or ``(H, W, C)`` -> ``(C, H, W)``."""
    if image_shape is None:
        return None
    shape = tuple(int(side) for side in image_shape)
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            "image_shape must be (height, width) or (height, width, channels) "
            f"with positive sides; got {image_shape!r}."
        )
    height, width, channels = shape
    return (channels, height, width)


def _infer_layout(
    X: np.ndarray,
    image_shape: tuple[int, int, int] | None,
    fitted_shape: tuple[int, int, int] | None,
    estimator_name: str,
) -> ImageLayout:
    """Work out the layout of a validated array (ndim already checked)."""
    known = image_shape or fitted_shape
    if X.ndim == 2:
        n_features = X.shape[1]
        if known is not None:
            if math.prod(known) != n_features:
                channels, height, width = known
                raise ValueError(
                    f"X has {n_features} features per sample, but images of "
                    f"shape (height, width, channels) = ({height}, {width}, "
                    f"{channels}) have {math.prod(known)}. Pass image_shape that "
                    "matches the flattened images, or pass X as "
                    "(n_samples, height, width, channels)."
                )
            return ImageLayout("flat", known)
        side = math.isqrt(n_features)
        if side * side == n_features:
            return ImageLayout("flat", (1, side, side))
        # Not square: one row of pixels, so tabular data still works.
        return ImageLayout("flat", (1, 1, n_features))
    if X.ndim == 3:
        return ImageLayout("nhw", (1, X.shape[1], X.shape[2]))
    # 4-D: find the channel axis.
    _, d1, d2, d3 = X.shape
    as_nhwc, as_nchw = (d3, d1, d2), (d1, d2, d3)
    if known is not None:
        if as_nhwc == known:
            return ImageLayout("nhwc", known)
        if as_nchw == known:
            return ImageLayout("nchw", known)
        channels, height, width = known
        raise ValueError(
            f"X has images of shape {X.shape[1:]}, but "
            + (
                "this model was fitted on images of"
                if image_shape is None
                else "image_shape says"
            )
            + f" shape (height, width, channels) = ({height}, {width}, {channels})"
            f", that is {(height, width, channels)} channels last or "
            f"{(channels, height, width)} channels first."
            + (
                " Resize the images (sklearn_cnn.preprocessing.ImageResizer) or "
                "refit the model."
                if image_shape is None
                else ""
            )
        )
    last_is_channel = d3 in _CHANNEL_COUNTS
    first_is_channel = d1 in _CHANNEL_COUNTS
    if last_is_channel and not first_is_channel:
        return ImageLayout("nhwc", as_nhwc)
    if first_is_channel and not last_is_channel:
        return ImageLayout("nchw", as_nchw)
    if last_is_channel and first_is_channel and (d1 == d2) != (d2 == d3):
        # Both axes could hold channels; only one reading gives square images.
        return (
            ImageLayout("nhwc", as_nhwc) if d1 == d2 else ImageLayout("nchw", as_nchw)
        )
    raise ValueError(
        f"Cannot tell which axis of images of shape {X.shape[1:]} holds the "
        f"channels. State it with {estimator_name}(image_shape=(height, width, "
        f"channels)), for example image_shape={(d1, d2, d3)} for channels-last "
        f"images or image_shape={(d2, d3, d1)} for channels-first images."
    )


def is_file_paths(X) -> bool:
    """True when ``X`` is a non-empty list, tuple or 1-D array of paths.

    Paths are ``str`` or ``os.PathLike``; a 1-D array of them is what
    ``train_test_split`` and the cross-validation splitters hand on.
    """
    if isinstance(X, AugmentedImages):
        # Augmenters pass image files on inside their container.
        X = X.to_numpy()
    if isinstance(X, (list, tuple)):
        if not X or not isinstance(X[0], (str, os.PathLike)):
            return False
        X = np.asarray(X, dtype=object)
    elif not isinstance(X, np.ndarray):
        # pandas Series and other 1-D containers of strings.
        if getattr(X, "ndim", None) != 1 or getattr(X, "dtype", None) is None:
            return False
        X = np.asarray(X)
    if X.ndim != 1 or len(X) == 0 or X.dtype.kind not in "OU":
        return False
    return X.dtype.kind == "U" or all(
        isinstance(path, (str, os.PathLike)) for path in X
    )


def reject_file_paths(estimator, X) -> None:
    """A clear error for an estimator that needs pixels but was given file paths."""
    if is_file_paths(X):
        example = str(next(iter(X.to_numpy() if hasattr(X, "to_numpy") else X)))
        raise TypeError(
            f"{type(estimator).__name__} needs decoded pixels but got image file "
            f"paths (for example {example!r}). Only CNNImageClassifier reads image "
            "files: drop this step and give the classifier image_size=(height, "
            "width), or load the images first with "
            "sklearn_cnn.datasets.load_image_folder."
        )


def _without_recipe(X):
    """The images an :class:`AugmentedImages` holds, quietly; anything else as is.

    Estimators of the package read the recipe themselves, so their validation
    is not the loss of per-epoch augmentation that the container warns about.
    Feature names travel with it as a DataFrame's columns, for ``validate_data``.
    """
    if not isinstance(X, AugmentedImages):
        return X
    if X.feature_names is None:
        return X.to_numpy()
    import pandas as pd  # only set_output(transform="pandas") gives names

    return pd.DataFrame(X.to_numpy(), columns=X.feature_names, copy=False)


def validate_images(
    estimator,
    X,
    y="no_validation",
    *,
    reset: bool,
    image_shape=None,
):
    """Validate a batch of images (and labels) for ``estimator``.

    Parameters
    ----------
    estimator : estimator instance
        Receives ``n_features_in_``, ``image_shape_`` (height, width, channels)
        and ``feature_names_in_`` when ``reset=True``; its ``image_shape_`` is
        checked when ``reset=False``.
    X : array-like or AugmentedImages
        Images in any supported layout; an :class:`AugmentedImages` is read as
        the augmented images it holds, without its conversion warning.
    y : array-like, None or "no_validation"
        Labels, validated together with ``X``; None raises the error
        scikit-learn gives for a missing target of a supervised estimator.
    reset : bool
        True in ``fit``: record the input's shape. False afterwards: check it.
    image_shape : tuple or None
        The estimator's ``image_shape`` parameter, ``(H, W)`` or ``(H, W, C)``.

    Returns
    -------
    X_nchw : ndarray of shape (n_samples, channels, height, width)
        A view of the validated data; its dtype is the caller's (uint8 stays
        uint8, float64 stays float64: conversion happens batch by batch).
    layout : ImageLayout
        The caller's layout, to put transformed images back.
    y : ndarray or None
        The validated labels, when ``y`` was given.
    """
    reject_file_paths(estimator, X)
    check_params = dict(
        accept_sparse=False,
        dtype="numeric",
        ensure_2d=False,
        allow_nd=True,
        ensure_all_finite=True,
        ensure_min_samples=1,
    )
    X = _without_recipe(X)
    validate_y = not (isinstance(y, str) and y == "no_validation")
    if validate_y:
        X, y = validate_data(estimator, X, y, reset=reset, **check_params)
    else:
        X = validate_data(estimator, X, reset=reset, **check_params)
    if X.ndim == 1:
        raise ValueError(
            "Expected images, got a 1D array of shape "
            f"{X.shape} instead. Reshape your data either using X.reshape(-1, 1) "
            "if your data has a single feature or X.reshape(1, -1) if it contains "
            "a single sample; images go as (n_samples, height, width, channels)."
        )
    if X.ndim > 4:
        raise ValueError(
            "Expected images as (n_samples, height, width, channels), "
            "(n_samples, channels, height, width), (n_samples, height, width) or "
            f"flattened (n_samples, height * width * channels); got a {X.ndim}D "
            f"array of shape {X.shape}."
        )
    if 0 in X.shape[1:]:
        raise ValueError(
            f"Found an image dimension of size 0 in X of shape {X.shape}; "
            "images need at least one pixel and one channel."
        )
    if np.iscomplexobj(X):
        raise ValueError("Complex data not supported; pass real-valued pixels.")
    if X.dtype == np.bool_:
        X = X.astype(np.float32)
    fitted_shape = None if reset else _normalize_image_shape(estimator.image_shape_)
    if not reset and X.ndim == 2 and fitted_shape is not None:
        n_expected = math.prod(fitted_shape)
        if X.shape[1] != n_expected:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(estimator).__name__} is "
                f"expecting {n_expected} features as input."
            )
    layout = _infer_layout(
        X,
        None if not reset else _normalize_image_shape(image_shape),
        fitted_shape,
        type(estimator).__name__,
    )
    if reset:
        estimator.n_features_in_ = math.prod(layout.image_shape)
        estimator.image_shape_ = layout.hwc
    X_nchw = layout.to_nchw(X)
    if not validate_y:
        return X_nchw, layout
    return X_nchw, layout, y
