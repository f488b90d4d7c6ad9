"""Pixel scaling and per-channel standardization."""

from __future__ import annotations

from numbers import Real

import numpy as np
import torch

from .._sources import IMAGE_SHAPE_DOC
from ..utils._image_steps import IMAGE_ATTRIBUTES_DOC
from ..utils._sklearn_private import Interval, StrOptions
from ._base import BaseImageTransformer, transform_batch_doc

# Statistics of the ImageNet training set for RGB pixels in [0, 1], the ones
# torchvision's pretrained weights expect.
_PRESETS = {
    "imagenet": (
        np.array([0.485, 0.456, 0.406]),
        np.array([0.229, 0.224, 0.225]),
    ),
}

# Images per chunk when computing statistics, so that fitting never holds a
# float64 copy of the whole training set.
_STATISTICS_CHUNK = 256


def _per_channel(values: np.ndarray, images: torch.Tensor) -> torch.Tensor:
    """``values`` of shape (channels,) as a broadcastable tensor like ``images``."""
    return torch.as_tensor(values, dtype=images.dtype, device=images.device).view(
        1, -1, 1, 1
    )


class ImageScaler(BaseImageTransformer):
    __doc__ = f"""Scale pixel values from 0-255 to 0.0-1.0, as float32.

    Divides every pixel by ``max_value`` whatever the input dtype, like Keras's
    ``Rescaling(1 / 255)``: a float64 array holding 0-255 pixels is scaled too.
    Pass images that are already in [0, 1] through unchanged by leaving this
    step out. The output is always float32, the dtype the network trains in,
    never float64. The layout of the input (channels last, channels first,
    grayscale or flattened) is kept.

    The scaler learns nothing from the data; ``fit`` only records the image
    shape, so that ``transform`` can check it.

    Parameters
    ----------
    max_value : float, default=255.0
        The pixel value that becomes 1.0: 255 for 8-bit images, 65535 for
        16-bit ones.
{IMAGE_SHAPE_DOC}

    Attributes
    ----------
{IMAGE_ATTRIBUTES_DOC}

    See Also
    --------
    ImageStandardizer : Per-channel standardization to zero mean, unit variance.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cnn.preprocessing import ImageScaler
    >>> X = np.full((2, 8, 8, 3), 255, dtype=np.uint8)
    >>> X_scaled = ImageScaler().fit_transform(X)
    >>> X_scaled.shape, X_scaled.dtype, float(X_scaled.max())
    ((2, 8, 8, 3), dtype('float32'), 1.0)
    """

    _parameter_constraints: dict = {
        **BaseImageTransformer._parameter_constraints,
        "max_value": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, max_value=255.0, *, image_shape=None):
        self.max_value = max_value
        self.image_shape = image_shape

    def transform_batch(self, images: torch.Tensor) -> torch.Tensor:
        return images / self.max_value

    transform_batch.__doc__ = transform_batch_doc(
        "Divide a channels-first batch by ``max_value`` (out of place)."
    )


class ImageStandardizer(BaseImageTransformer):
    __doc__ = f"""Standardize every channel to zero mean and unit variance, as float32.

    ``fit`` learns one mean and one standard deviation per channel from the
    training images (over all images and pixels), so inside a Pipeline or a
    cross-validation they come from the training folds only. With a
    ``preset``, fixed published statistics are used instead.

    Place it after :class:`ImageScaler` and after the augmenters: augmenters
    such as :class:`~sklearn_cnn.augmentation.ColorJitter` expect pixel values
    in [0, 1] or [0, 255].

    Parameters
    ----------
    preset : {"imagenet"} or None, default=None
        None learns the statistics from the data in ``fit``. ``"imagenet"``
        uses the ImageNet statistics (mean 0.485, 0.456, 0.406 and std 0.229,
        0.224, 0.225 for RGB pixels in [0, 1]) that pretrained torchvision
        networks expect; it needs 3-channel images. When the images given to
        ``fit`` are uint8, the preset is multiplied by 255 to match them.
{IMAGE_SHAPE_DOC}

    Attributes
    ----------
    mean_ : ndarray of shape (n_channels,)
        Mean of each channel.
    std_ : ndarray of shape (n_channels,)
        Standard deviation of each channel; a channel with no variance gets
        1.0, so that it is centred but not divided by zero.
{IMAGE_ATTRIBUTES_DOC}

    See Also
    --------
    ImageScaler : Scale pixel values from 0-255 to 0.0-1.0.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cnn.preprocessing import ImageStandardizer
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(size=(10, 8, 8, 3))
    >>> standardizer = ImageStandardizer().fit(X)
    >>> standardizer.mean_.shape
    (3,)
    >>> X_standard = standardizer.transform(X)
    >>> X_standard.dtype, bool(abs(X_standard.mean()) < 1e-5)
    (dtype('float32'), True)
    """

    _parameter_constraints: dict = {
        **BaseImageTransformer._parameter_constraints,
        "preset": [StrOptions(set(_PRESETS)), None],
    }

    def __init__(self, preset=None, *, image_shape=None):
        self.preset = preset
        self.image_shape = image_shape

    def _fit_images(self, X_nchw: np.ndarray) -> None:
        n_channels = X_nchw.shape[1]
        if self.preset is not None:
            mean, std = _PRESETS[self.preset]
            if n_channels != len(mean):
                raise ValueError(
                    f"preset={self.preset!r} needs images with {len(mean)} "
                    f"channels (RGB), but X has {n_channels}. Use preset=None "
                    "to learn the statistics from the data."
                )
            scale = 255.0 if X_nchw.dtype == np.uint8 else 1.0
            self.mean_ = mean * scale
            self.std_ = std * scale
            return
        n_values = X_nchw.shape[0] * X_nchw.shape[2] * X_nchw.shape[3]
        total = np.zeros(n_channels)
        for start in range(0, len(X_nchw), _STATISTICS_CHUNK):
            chunk = X_nchw[start : start + _STATISTICS_CHUNK]
            total += chunk.sum(axis=(0, 2, 3), dtype=np.float64)
        mean = total / n_values
        # A second pass over the centred values is exact where the
        # sum-of-squares shortcut would cancel catastrophically.
        squares = np.zeros(n_channels)
        for start in range(0, len(X_nchw), _STATISTICS_CHUNK):
            chunk = X_nchw[start : start + _STATISTICS_CHUNK].astype(np.float64)
            squares += ((chunk - mean[:, None, None]) ** 2).sum(axis=(0, 2, 3))
        std = np.sqrt(squares / n_values)
        # Constant channels are centred but not scaled, as StandardScaler does.
        std[std < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1)] = 1.0
        self.mean_ = mean
        self.std_ = std

    def transform_batch(self, images: torch.Tensor) -> torch.Tensor:
        return (images - _per_channel(self.mean_, images)) / _per_channel(
            self.std_, images
        )

    transform_batch.__doc__ = transform_batch_doc(
        "Standardize a channels-first batch with ``mean_`` and ``std_``."
    )
