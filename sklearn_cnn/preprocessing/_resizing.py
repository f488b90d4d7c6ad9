"""Batched, antialiased resizing of images."""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tv_functional

from .._sources import IMAGE_SHAPE_DOC
from ..utils._image_steps import IMAGE_ATTRIBUTES_DOC
from ..utils._sklearn_private import Interval, StrOptions
from ._base import BaseImageTransformer, transform_batch_doc

_SIDE = Interval(Integral, 1, None, closed="left")


class ImageResizer(ClassNamePrefixFeaturesOutMixin, BaseImageTransformer):
    __doc__ = f"""Resize a batch of images to a fixed height and width, antialiased.

    For data whose image size differs from what a network expects. The whole
    batch is resized at once with :func:`torchvision.transforms.v2.functional.resize`.
    The dtype and layout of the input are kept: uint8 images come back as uint8
    (rounded), float32 as float32. Shrinking is antialiased, so fine patterns
    do not turn into moiré. Flattened colour images need ``image_shape`` to
    be resized as colour images; their channels are kept.

    Parameters
    ----------
    size : int or tuple of (int, int), default=(224, 224)
        ``(height, width)`` of the output images; an int gives square images.
    interpolation : {"bilinear", "bicubic", "nearest"}, default="bilinear"
        How new pixel values are computed. "nearest" is never antialiased.
    antialias : bool, default=True
        Whether to low-pass filter when shrinking (bilinear and bicubic only).
{IMAGE_SHAPE_DOC}

    Attributes
    ----------
{IMAGE_ATTRIBUTES_DOC}

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cnn.preprocessing import ImageResizer
    >>> X = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    >>> X_small = ImageResizer(size=16).fit_transform(X)
    >>> X_small.shape, X_small.dtype
    ((2, 16, 16, 3), dtype('uint8'))

    Flattened RGB images keep their three channels:

    >>> X_flat = np.zeros((2, 32 * 32 * 3), dtype=np.uint8)
    >>> resizer = ImageResizer(size=16, image_shape=(32, 32, 3))
    >>> resizer.fit_transform(X_flat).shape
    (2, 768)
    """

    _parameter_constraints: dict = {
        **BaseImageTransformer._parameter_constraints,
        "size": [_SIDE, tuple],
        "interpolation": [StrOptions({"bilinear", "bicubic", "nearest"})],
        "antialias": ["boolean"],
    }

    def __init__(
        self,
        size=(224, 224),
        *,
        interpolation="bilinear",
        antialias=True,
        image_shape=None,
    ):
        self.size = size
        self.interpolation = interpolation
        self.antialias = antialias
        self.image_shape = image_shape

    def _output_size(self) -> list[int]:
        if isinstance(self.size, Integral):
            return [int(self.size), int(self.size)]
        if len(self.size) != 2 or not all(map(_SIDE.is_satisfied_by, self.size)):
            raise ValueError(
                "size must be an int or a (height, width) pair of positive ints; "
                f"got size={self.size!r}."
            )
        return [int(side) for side in self.size]

    def _fit_images(self, X_nchw: np.ndarray) -> None:
        self._output_size()

    def _output_dtype(self, input_dtype: np.dtype) -> np.dtype:
        return np.dtype(input_dtype)

    @property
    def _n_features_out(self) -> int:
        """Values per output image, for :meth:`get_feature_names_out`."""
        return math.prod(self._output_size()) * self.image_shape_[2]

    def transform_batch(self, images: torch.Tensor) -> torch.Tensor:
        return tv_functional.resize(
            images,
            self._output_size(),
            interpolation=InterpolationMode(self.interpolation),
            antialias=self.antialias,
        )

    transform_batch.__doc__ = transform_batch_doc(
        "Resize a channels-first float batch (out of place).",
        returns="Tensor of shape (n_samples, channels, height, width), where "
        "(height, width) is the output size; same dtype and device.",
    )
