"""Deterministic image transformers: scaling, standardizing, resizing.

They accept the image layouts of :class:`~sklearn_cnn.CNNImageClassifier` and
return the layout they were given. Unlike the augmenters of
:mod:`sklearn_cnn.augmentation`, they transform training and test images alike.
"""

from ._base import BaseImageTransformer
from ._resizing import ImageResizer
from ._scaling import ImageScaler, ImageStandardizer

__all__ = ["BaseImageTransformer", "ImageResizer", "ImageScaler", "ImageStandardizer"]
