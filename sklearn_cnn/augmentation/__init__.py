"""Random, train-time image augmenters.

An augmenter's ``fit_transform(X)`` returns one random augmentation of ``X``
(same shape, dtype and number of samples) and its ``transform(X)`` returns
``X`` unchanged, so test images are never augmented. Placed before
:class:`~sklearn_cnn.CNNImageClassifier` in a Pipeline, or given as its
``augment`` parameter, augmenters draw a fresh augmentation of every training
batch in every epoch, on the training device.
"""

from ._base import BaseAugmenter
from ._images import AugmentationLostWarning, AugmentedImages
from ._transforms import (
    ColorJitter,
    GaussianNoise,
    RandomAugment,
    RandomCrop,
    RandomErasing,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRotation,
    RandomTranslation,
    RandomVerticalFlip,
)

__all__ = [
    "AugmentationLostWarning",
    "AugmentedImages",
    "BaseAugmenter",
    "ColorJitter",
    "GaussianNoise",
    "RandomAugment",
    "RandomCrop",
    "RandomErasing",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomTranslation",
    "RandomVerticalFlip",
]
