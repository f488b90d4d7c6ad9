"""Random, train-time image augmenters.

An augmenter's ``fit_transform(X)`` returns one random augmentation of ``X``
(same shape, dtype and number of samples) and its ``transform(X)`` returns
``X`` unchanged, so test images are never augmented. Placed before
:class:`~sklearn_cnn.CNNImageClassifier` in a Pipeline, or given as its
``augment`` parameter, augmenters draw a fresh augmentation of every training
batch in every epoch, on the training device.
"""

from .. import _lazy

# The public names, by the private module that defines them.
_PUBLIC_NAMES = {
    "_base": ["BaseAugmenter"],
    "_images": ["AugmentationLostWarning", "AugmentedImages"],
    "_transforms": [
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
    ],
}
__all__ = sorted(name for names in _PUBLIC_NAMES.values() for name in names)

__getattr__, __dir__ = _lazy.attach(__name__, attributes=_PUBLIC_NAMES)
