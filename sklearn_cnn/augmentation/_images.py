"""Augmented images that remember how they were made.

An augmenter's ``fit_transform`` returns one random augmentation of its input, as
any transformer would, but as an :class:`AugmentedImages` array that also carries
the un-augmented images and the augmenters. ``CNNImageClassifier`` recognises it
and draws a fresh augmentation of every batch in every epoch instead of training
on that one draw. Any other estimator just sees an ordinary ndarray.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..utils._validation import ImageLayout


class AugmentationLostWarning(UserWarning):
    """Per-epoch augmentation could not be kept; training uses one fixed draw."""


class AugmentedImages(np.ndarray):
    """An ndarray holding one random augmentation, plus the recipe to redraw it.

    Attributes
    ----------
    source : ndarray
        The un-augmented images, in the caller's layout.
    source_layout : ImageLayout
        Layout of ``source``.
    augmenters : tuple of augmenters
        Applied in order to every training batch.
    post_steps : tuple of transformers
        Deterministic transformers of this package that came after the
        augmenters; applied to every batch after augmentation.
    """

    source: np.ndarray | None
    source_layout: ImageLayout | None
    augmenters: tuple
    post_steps: tuple

    @classmethod
    def wrap(cls, augmented, *, source, source_layout, augmenters, post_steps=()):
        array = np.asarray(augmented).view(cls)
        array.source = source
        array.source_layout = source_layout
        array.augmenters = tuple(augmenters)
        array.post_steps = tuple(post_steps)
        return array

    def __array_finalize__(self, obj):
        # Anything numpy derives from an AugmentedImages (slices, arithmetic,
        # ufuncs) no longer matches its recipe: mark it so the classifier can
        # warn instead of silently training on the wrong images.
        self.source = None
        self.source_layout = None
        self.augmenters = ()
        self.post_steps = ()

    @property
    def has_recipe(self) -> bool:
        """True when the array still knows how to redraw its augmentation."""
        return self.source is not None

    def with_post_step(self, transformed, step) -> np.ndarray:
        """The output of a deterministic ``step`` applied to this array."""
        if not self.has_recipe:
            return np.asarray(transformed)
        return AugmentedImages.wrap(
            transformed,
            source=self.source,
            source_layout=self.source_layout,
            augmenters=self.augmenters,
            post_steps=(*self.post_steps, step),
        )

    def __reduce__(self):
        # Keep the recipe through pickling (Pipeline(memory=...) caches, joblib).
        reconstruct, arguments, state = super().__reduce__()
        recipe = (self.source, self.source_layout, self.augmenters, self.post_steps)
        return reconstruct, arguments, (state, recipe)

    def __setstate__(self, state):
        array_state, recipe = state
        super().__setstate__(array_state)
        self.source, self.source_layout, self.augmenters, self.post_steps = recipe


def warn_augmentation_lost(what: str) -> None:
    warnings.warn(
        f"{what} Per-epoch augmentation is lost: training uses this one fixed "
        "augmentation for every epoch. Place the augmenters directly before "
        "CNNImageClassifier (only sklearn_cnn transformers may sit between), or "
        "pass them as CNNImageClassifier(augment=...).",
        AugmentationLostWarning,
        stacklevel=3,
    )
