"""The container augmenters return, under its public home.

It is defined in ``sklearn_cnn._augmented``, beside the image source that reads
it, which imports nothing from this package: no import circle.
"""

from .._augmented import AugmentationLostWarning, AugmentedImages

__all__ = ["AugmentationLostWarning", "AugmentedImages"]
