"""The base class of train-time augmenters."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from .._sources import step_source
from ..utils._image_steps import ImageStepMixin
from ..utils._runtime import resolve_seed
from ..utils._sklearn_private import _fit_context
from ..utils._tensors import images_to_tensor, tensor_to_images


class BaseAugmenter(ImageStepMixin):
    """Base class for random, train-time image augmenters.

    Subclasses implement :meth:`augment_batch`, a batched tensor operation that
    draws independent random parameters for every image.

    ``fit_transform(X)`` returns one random augmentation of ``X`` (same shape,
    dtype and number of samples); ``transform(X)`` returns ``X`` unchanged, since
    nothing is augmented at test time. This makes ``fit_transform(X)`` differ from
    ``fit(X).transform(X)`` on purpose, as for scikit-learn's ``TargetEncoder``.
    Inside a Pipeline ending in :class:`~sklearn_cnn.CNNImageClassifier`, the
    classifier draws a fresh augmentation of every batch in every epoch.
    """

    _parameter_constraints: dict = {
        **ImageStepMixin._parameter_constraints,
        "random_state": ["random_state"],
    }

    # Augmenters whose output depends on the value range (clamping, noise level)
    # read it from ``value_range``: 255.0 for uint8 pixels, 1.0 for floats.

    def augment_batch(
        self,
        images: torch.Tensor,
        *,
        generator: torch.Generator,
        value_range: float,
    ) -> torch.Tensor:
        """Augment a batch of images.

        Parameters
        ----------
        images : Tensor of shape (n_samples, channels, height, width)
            Floating-point images on any device; not modified.
        generator : torch.Generator
            Source of randomness, on the same device as ``images``.
        value_range : float
            Largest pixel value: 255.0 for images that were uint8, else 1.0.

        Returns
        -------
        Tensor of the same shape, dtype and device.
        """
        raise NotImplementedError

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Record the input's image shape. Augmenters learn nothing else.

        Parameters
        ----------
        X : array-like of images
            See :class:`~sklearn_cnn.CNNImageClassifier` for the layouts.
        y : None
            Ignored.

        Returns
        -------
        self : object
        """
        self._check_params()
        step_source(self, X, reset=True).fitted_by(self)
        return self

    def _check_params(self) -> None:
        """Check what ``_parameter_constraints`` cannot express (ranges, pairs)."""

    def transform(self, X):
        """Return ``X`` unchanged: augmentation only happens during training.

        Parameters
        ----------
        X : array-like of images

        Returns
        -------
        X : ndarray, DataFrame or AugmentedImages
            The validated images, not augmented: a DataFrame for flattened
            images under ``set_output(transform="pandas")``, and ``X`` itself
            when it is :class:`AugmentedImages`, whose recipe this step keeps,
            or image files, which the estimator decodes.
        """
        check_is_fitted(self)
        if getattr(self, "fitted_on_files_", False):
            # No image shape was recorded at fit; the estimator checks images.
            return X
        return step_source(self, X, reset=False).passed_by(self, X)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None, **fit_params):
        """Fit, then return one random augmentation of ``X``.

        The result holds an array of the same shape and dtype as ``X``, and also
        remembers the un-augmented images, so that
        :class:`~sklearn_cnn.CNNImageClassifier` placed after this augmenter in a
        Pipeline draws a fresh augmentation in every epoch.

        Parameters
        ----------
        X : array-like of images
        y : None
            Ignored.

        Returns
        -------
        X_augmented : AugmentedImages of the same shape and dtype as ``X``
            Whatever ``set_output`` says: flattened images carry the column
            names it asks for.
        """
        self._check_params()
        source = step_source(self, X, reset=True)
        source.fitted_by(self)
        generator = torch.Generator().manual_seed(resolve_seed(self.random_state))

        def augment(X_nchw):
            value_range = 255.0 if X_nchw.dtype == np.uint8 else 1.0
            augmented = self.augment_batch(
                images_to_tensor(X_nchw), generator=generator, value_range=value_range
            )
            return tensor_to_images(augmented, X_nchw.dtype)

        return source.augmented_by(self, X, augment)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32", "uint8"]
        return tags
