"""Deterministic image transformers: scaling, standardizing, resizing.

They accept the image layouts of :class:`~sklearn_cnn.CNNImageClassifier` and
return the layout they were given. Unlike the augmenters of
:mod:`sklearn_cnn.augmentation`, they transform training and test images alike.
"""

from .. import _lazy

__all__ = ["BaseImageTransformer", "ImageResizer", "ImageScaler", "ImageStandardizer"]

__getattr__, __dir__ = _lazy.attach(
    __name__,
    attributes={
        "_base": ["BaseImageTransformer"],
        "_resizing": ["ImageResizer"],
        "_scaling": ["ImageScaler", "ImageStandardizer"],
    },
)
