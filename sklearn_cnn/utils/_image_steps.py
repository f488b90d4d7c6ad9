"""What every image transformer and augmenter of the package shares.

The ``image_shape`` parameter and image validation, feature names, and
``set_output``. scikit-learn's automatic output wrapping is turned off for these
classes because it would put N-D image batches in a DataFrame, which holds only
tables: :meth:`ImageStepMixin._output` wraps flattened (2-D) images only.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin

from .._sources import IMAGE_SHAPE_CONSTRAINT
from ._sklearn_private import output_container, wrap_in_container

# numpydoc shared by the class docstrings of every image transformer and
# augmenter (indented for a class docstring).
IMAGE_ATTRIBUTES_DOC = """\
    n_features_in_ : int
        Number of values per image (height * width * channels).
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of the features, when ``X`` was a DataFrame with string columns.
    image_shape_ : tuple of int
        ``(height, width, channels)`` of the images seen in ``fit``."""


class ImageStepMixin(
    OneToOneFeatureMixin, TransformerMixin, BaseEstimator, auto_wrap_output_keys=None
):
    """Base of the image transformers and augmenters: validation and output.

    Subclasses declare ``image_shape`` in ``__init__`` and extend
    ``_parameter_constraints``.
    """

    _parameter_constraints: dict = {"image_shape": IMAGE_SHAPE_CONSTRAINT}

    def __init_subclass__(cls, **kwargs):
        # Subclasses too: outputs are wrapped by _output, never automatically.
        super().__init_subclass__(**{**kwargs, "auto_wrap_output_keys": None})

    def set_output(self, *, transform=None):
        """Set the container of what ``transform`` and ``fit_transform`` return.

        Flattened images (2-D arrays) come back in the container asked for,
        with the columns of :meth:`get_feature_names_out`. Image batches of
        more dimensions stay ndarrays whatever the setting, since a table has
        only two. An augmenter's ``fit_transform`` always returns
        :class:`~sklearn_cnn.augmentation.AugmentedImages` (which then carries
        the column names), so that the classifier can still draw a fresh
        augmentation in every epoch.

        Parameters
        ----------
        transform : {"default", "pandas", "polars"}, default=None
            ``"default"``: ndarrays. ``"pandas"`` or ``"polars"``: DataFrames
            for flattened images. None leaves the setting unchanged.

        Returns
        -------
        self : estimator instance
            This estimator.
        """
        if transform is not None:
            # The attribute scikit-learn's own set_output sets and reads, so
            # that clone and Pipeline.set_output treat this step like theirs.
            self._sklearn_output_config = {
                **getattr(self, "_sklearn_output_config", {}),
                "transform": transform,
            }
        return self

    def _in_table(self, images: np.ndarray) -> bool:
        """Whether ``images`` go out as a DataFrame under the current setting."""
        return images.ndim == 2 and output_container(self) != "default"

    def _output(self, images: np.ndarray, X):
        """``images`` in the container that ``set_output`` asks for."""
        if not self._in_table(images):
            return images
        return wrap_in_container(self, images, X)

    def _output_feature_names(self, images: np.ndarray):
        """The column names AugmentedImages carry for ``images``, or None."""
        return self.get_feature_names_out() if self._in_table(images) else None
