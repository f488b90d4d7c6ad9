"""The base class of train-time augmenters."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ..utils._image_steps import ImageStepMixin
from ..utils._runtime import resolve_seed
from ..utils._sklearn_private import _fit_context
from ..utils._tensors import images_to_tensor, tensor_to_images
from ..utils._validation import is_file_paths
from ._images import AugmentedImages, warn_augmentation_lost


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
        if is_file_paths(X):
            self._fit_files()
        else:
            vars(self).pop("fitted_on_files_", None)
            self._validate_images(X, reset=True)
        return self

    def _fit_files(self) -> None:
        """Fitted on image files: their pixels are first seen by the classifier."""
        for name in ("n_features_in_", "image_shape_", "feature_names_in_"):
            vars(self).pop(name, None)
        self.fitted_on_files_ = True

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
            when it is :class:`AugmentedImages`, whose recipe this step keeps.
        """
        if is_file_paths(X):
            # Image files pass through to CNNImageClassifier, which decodes them.
            return X
        check_is_fitted(self)
        if getattr(self, "fitted_on_files_", False):
            # No image shape was recorded at fit; the classifier checks images.
            return X
        X_nchw, layout = self._validate_images(X, reset=False)
        if isinstance(X, AugmentedImages):
            return X
        return self._output(layout.from_nchw(X_nchw), X)

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
        if is_file_paths(X):
            self._fit_files()
            return self._pass_files_on(X)
        vars(self).pop("fitted_on_files_", None)
        X_nchw, layout = self._validate_images(X, reset=True)
        value_range = 255.0 if X_nchw.dtype == np.uint8 else 1.0
        generator = torch.Generator().manual_seed(resolve_seed(self.random_state))
        augmented = self.augment_batch(
            images_to_tensor(X_nchw), generator=generator, value_range=value_range
        )
        result = layout.from_nchw(tensor_to_images(augmented, X_nchw.dtype))
        feature_names = self._output_feature_names(result)
        if isinstance(X, AugmentedImages) and not X.post_steps:
            # Two augmenters in a row: both run in every epoch.
            return AugmentedImages(
                result,
                source=X.source,
                source_layout=X.source_layout,
                augmenters=(*X.augmenters, self),
                feature_names=feature_names,
            )
        if isinstance(X, AugmentedImages):
            steps = ", ".join(type(step).__name__ for step in X.post_steps)
            warn_augmentation_lost(
                f"{type(self).__name__} comes after other augmenters with {steps} "
                "in between: the classifier redraws only augmenters that follow "
                "one another, so the earlier ones keep one fixed draw.",
                stacklevel=4,  # past the _fit_context wrapper, to the caller
            )
        return AugmentedImages(
            result,
            source=layout.from_nchw(X_nchw),
            source_layout=layout,
            augmenters=(self,),
            feature_names=feature_names,
        )

    def _pass_files_on(self, X) -> AugmentedImages:
        """Image files, with this augmenter for the classifier to apply.

        Nothing is drawn before the files are decoded: the classifier augments
        every batch it decodes, in every epoch.
        """
        earlier = ()
        if isinstance(X, AugmentedImages) and not X.post_steps:
            earlier = X.augmenters
            X = X.to_numpy()
        paths = np.asarray(X, dtype=object)
        return AugmentedImages(
            paths, source=paths, source_layout=None, augmenters=(*earlier, self)
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32", "uint8"]
        return tags
