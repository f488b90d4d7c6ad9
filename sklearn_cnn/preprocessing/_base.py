"""The base class of deterministic image transformers."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from .._sources import step_source
from ..utils._image_steps import ImageStepMixin
from ..utils._sklearn_private import _fit_context
from ..utils._tensors import images_to_tensor, tensor_to_images


def transform_batch_doc(
    summary: str, returns: str = "Tensor of the same shape, dtype and device."
) -> str:
    """The numpydoc of a subclass's ``transform_batch``."""
    return f"""{summary}

        Parameters
        ----------
        images : Tensor of shape (n_samples, channels, height, width)
            Floating-point images on any device.

        Returns
        -------
        {returns}
        """


class BaseImageTransformer(ImageStepMixin):
    """Base class for deterministic transformers of image batches.

    Subclasses implement :meth:`transform_batch` on channels-first float tensors,
    so that :class:`~sklearn_cnn.CNNImageClassifier` can apply them batch by batch
    after a train-time augmentation (see :class:`AugmentedImages`), and
    :meth:`_fit_images` when they learn something in ``fit``.
    """

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the transformer on a batch of images.

        Parameters
        ----------
        X : array-like of images
            ``(n, H, W, C)``, ``(n, C, H, W)``, ``(n, H, W)`` or flattened.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted transformer.
        """
        self._fit_images(step_source(self, X, reset=True).to_nchw_array(self))
        return self

    def _fit_images(self, X_nchw: np.ndarray) -> None:
        """Learn from channels-first training images; nothing by default."""

    def transform_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Transform a channels-first float batch (any device); out of place."""
        raise NotImplementedError

    def _output_dtype(self, input_dtype: np.dtype) -> np.dtype:
        """The dtype ``transform`` returns for ``input_dtype`` (float32 by default)."""
        return np.dtype(np.float32)

    def transform(self, X):
        """Transform a batch of images, keeping the layout they were given in.

        Parameters
        ----------
        X : array-like of images
            ``(n, H, W, C)``, ``(n, C, H, W)``, ``(n, H, W)`` or flattened.

        Returns
        -------
        X_out : ndarray, DataFrame or AugmentedImages
            The transformed images in the input's layout: a DataFrame for
            flattened images under ``set_output(transform="pandas")``, and
            :class:`~sklearn_cnn.augmentation.AugmentedImages` when ``X`` was,
            so that per-epoch augmentation survives this step.
        """
        check_is_fitted(self)

        def transform(X_nchw):
            with torch.inference_mode():
                return tensor_to_images(
                    self.transform_batch(images_to_tensor(X_nchw)),
                    self._output_dtype(X_nchw.dtype),
                )

        return step_source(self, X, reset=False).transformed_by(self, X, transform)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = [
            dtype
            for dtype in ("float64", "float32", "uint8")
            if self._output_dtype(np.dtype(dtype)) == dtype
        ]
        return tags
