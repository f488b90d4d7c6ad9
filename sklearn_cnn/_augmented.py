"""The augmentation recipe, and augmented images that remember how they were made.

A :class:`Recipe` is what training applies to every batch: the augmenters, then
the deterministic steps that followed them. ``CNNImageClassifier(augment=...)``
and augmenters placed in a Pipeline both lower to one.

An augmenter's ``fit_transform`` returns one random augmentation of its input, as
any transformer would, but inside an :class:`AugmentedImages` container that also
carries the un-augmented images and the recipe. The image source
(``_sources.py``) reads the container as its un-augmented images plus the recipe,
so the estimator draws a fresh augmentation of every batch in every epoch
instead of training on that one draw.

The container is deliberately *not* an ndarray subclass: ``np.asarray`` (and so
scikit-learn's ``check_array``) turns a subclass into a plain array without
asking it, which would lose the recipe silently. Every way numpy turns the
container into a plain array (``__array__``, ufuncs and operators, numpy
functions, ndarray methods) goes through it instead, and warns with
:class:`AugmentationLostWarning`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Integral

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

# numpy functions and ndarray attributes that read only metadata: no pixels
# are lost. (scikit-learn probes ``device`` on everything it validates.)
_METADATA_FUNCTIONS = frozenset({np.shape, np.ndim, np.size})
_METADATA_ATTRIBUTES = frozenset({"device", "itemsize", "nbytes"})


@dataclass(frozen=True)
class Recipe:
    """What training does to every batch before the network: one value.

    Attributes
    ----------
    augmenters : tuple of augmenters
        Applied in order to every training batch, drawn afresh each time.
    post_steps : tuple of transformers
        Deterministic transformers of this package that came after the
        augmenters in a Pipeline; applied to every batch (validation too).
    """

    augmenters: tuple = ()
    post_steps: tuple = ()

    def then_augment(self, augmenter, *, stacklevel: int = 4) -> Recipe:
        """This recipe followed by ``augmenter``.

        Augmenters that follow one another are all redrawn; an augmenter after
        deterministic steps cannot be (the steps' output is what it saw), so the
        earlier augmenters keep one fixed draw, which the user is told.
        """
        if self.post_steps:
            steps = ", ".join(type(step).__name__ for step in self.post_steps)
            warn_augmentation_lost(
                f"{type(augmenter).__name__} comes after other augmenters with "
                f"{steps} in between: the classifier redraws only augmenters that "
                "follow one another, so the earlier ones keep one fixed draw.",
                stacklevel=stacklevel,
            )
            return Recipe((augmenter,))
        return Recipe((*self.augmenters, augmenter))

    def then_step(self, step) -> Recipe:
        """This recipe followed by a deterministic ``step``."""
        return Recipe(self.augmenters, (*self.post_steps, step))

    def with_augment(self, augment) -> Recipe:
        """This recipe and an estimator's ``augment=`` parameter, in one."""
        if augment is None:
            return self
        if self.post_steps:
            raise ValueError(
                "augment=... cannot be combined with Pipeline steps between an "
                "augmenter and the classifier; put all augmenters in one place."
            )
        # Check the augmenter's own parameters now, not at the first batch.
        augment._validate_params()
        augment._check_params()
        return Recipe((*self.augmenters, augment))


NO_RECIPE = Recipe()


class AugmentationLostWarning(UserWarning):
    """Per-epoch augmentation could not be kept; training uses one fixed draw."""


def warn_augmentation_lost(what: str, stacklevel: int = 3) -> None:
    warnings.warn(
        f"{what} Per-epoch augmentation is lost: training uses this one fixed "
        "augmentation for every epoch. Place the augmenters directly before "
        "CNNImageClassifier (only sklearn_cnn transformers may sit between), or "
        "pass them as CNNImageClassifier(augment=...). To look at the augmented "
        "images without this warning, use AugmentedImages.to_numpy().",
        AugmentationLostWarning,
        stacklevel=stacklevel,
    )


def _selects_rows(key) -> bool:
    """Whether ``key`` picks whole images (samples), as cross-validation does."""
    if isinstance(key, tuple) and len(key) == 2 and key[1] is Ellipsis:
        key = key[0]  # scikit-learn's _safe_indexing writes X[rows, ...]
    if isinstance(key, slice):
        return True
    if isinstance(key, list):
        key = np.asarray(key)
    return (
        isinstance(key, np.ndarray)
        and key.ndim == 1
        and (key.dtype == np.bool_ or np.issubdtype(key.dtype, np.integer))
    )


def _of_the_augmented_images(name: str) -> property:
    """A read-only attribute of the augmented images, read without a warning."""
    return property(
        lambda images: getattr(images._augmented, name),
        doc=f"``{name}`` of the augmented images.",
    )


class AugmentedImages(NDArrayOperatorsMixin):
    """One random augmentation of a batch of images, plus the recipe to redraw it.

    Returned by the ``fit_transform`` of every augmenter. It has the ``shape``,
    ``dtype``, ``ndim``, ``size`` and length of the augmented images, and
    selecting images (``X[rows]``, as cross-validation does) keeps the recipe.
    Anything that turns it into a plain array (``np.asarray``, arithmetic, numpy
    functions, ndarray methods, scikit-learn's ``check_array``) gets the one
    augmentation it holds and warns with :class:`AugmentationLostWarning`, since
    a model trained on that array sees the same augmentation in every epoch.
    :meth:`to_numpy` gives the same array without the warning.

    Parameters
    ----------
    augmented : ndarray
        The augmented images, in the caller's layout (for image files, the
        paths: nothing is decoded before training).
    source : ndarray
        The un-augmented images, in the caller's layout, or the image files.
    recipe : Recipe
        The augmenters, and the deterministic steps that followed them.
    feature_names : ndarray of str or None, default=None
        Column names of flattened images, when the step that made them was set
        to output DataFrames (``set_output(transform="pandas")``).

    ``source``, ``recipe`` and ``feature_names`` are kept as attributes, and
    ``augmenters`` and ``post_steps`` are the recipe's.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cnn.augmentation import AugmentedImages, RandomHorizontalFlip
    >>> X = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    >>> X_flipped = RandomHorizontalFlip(p=1.0).fit_transform(X)
    >>> isinstance(X_flipped, AugmentedImages), X_flipped.shape
    (True, (2, 4, 4))
    >>> bool((X_flipped.to_numpy() == X[:, :, ::-1]).all())
    True
    """

    def __init__(self, augmented, *, source, recipe, feature_names=None):
        self._augmented = np.asarray(augmented)
        self.source = source
        self.recipe: Recipe = recipe
        self.feature_names = feature_names

    # What reads the container without losing its recipe -----------------------

    @property
    def has_recipe(self) -> bool:
        """True: the container always knows how to redraw its augmentation."""
        return True

    @property
    def augmenters(self) -> tuple:
        """The augmenters of the recipe, applied in order to every batch."""
        return self.recipe.augmenters

    @property
    def post_steps(self) -> tuple:
        """The deterministic steps of the recipe that follow the augmenters."""
        return self.recipe.post_steps

    shape = _of_the_augmented_images("shape")
    dtype = _of_the_augmented_images("dtype")
    ndim = _of_the_augmented_images("ndim")
    size = _of_the_augmented_images("size")

    def __len__(self) -> int:
        return len(self._augmented)

    def __repr__(self) -> str:
        steps = ", ".join(type(step).__name__ for step in self.recipe.augmenters)
        return (
            f"AugmentedImages(shape={self.shape}, dtype={self.dtype}, "
            f"augmenters=({steps}))"
        )

    def to_numpy(self) -> np.ndarray:
        """The one augmentation held, as a plain ndarray, without a warning.

        For looking at the images. A model trained on this array sees this same
        augmentation in every epoch.

        Returns
        -------
        ndarray
            The augmented images, in the caller's layout.
        """
        return self._augmented

    def __getitem__(self, key):
        if _selects_rows(key):
            # A subset of the images (a fold) keeps the subset of its sources.
            rows = key[0] if isinstance(key, tuple) else key
            return AugmentedImages(
                self._augmented[rows],
                source=self.source[rows],
                recipe=self.recipe,
                feature_names=self.feature_names,
            )
        if not isinstance(key, Integral):
            # Pixels or channels of every image: no longer the batch the recipe
            # redraws. (One image, X[i], is not a training set.)
            warn_augmentation_lost(
                "Indexing AugmentedImages other than by images gave a plain array."
            )
        return self._augmented[key]

    def with_post_step(self, transformed, step, feature_names=None) -> AugmentedImages:
        """The output of a deterministic ``step`` applied to these images."""
        return AugmentedImages(
            transformed,
            source=self.source,
            recipe=self.recipe.then_step(step),
            feature_names=feature_names,
        )

    # Everything that turns it into a plain array: warn, then act as the array --

    def __array__(self, dtype=None, copy=None):
        warn_augmentation_lost(
            "AugmentedImages was converted to a plain array (np.asarray or "
            "check_array, as in a transformer outside sklearn_cnn)."
        )
        if dtype is not None and dtype != self.dtype:
            return self._augmented.astype(dtype)
        return self._augmented.copy() if copy else self._augmented

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        warn_augmentation_lost(
            f"numpy's {ufunc.__name__} made a plain array of AugmentedImages.",
            stacklevel=4,
        )
        inputs = _plain(inputs)
        if "out" in kwargs:
            kwargs["out"] = _plain(kwargs["out"])
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        if func not in _METADATA_FUNCTIONS:
            warn_augmentation_lost(
                f"numpy's {func.__name__} made a plain array of AugmentedImages."
            )
        return func(*_plain(args), **_plain(kwargs))

    def __getattr__(self, name):
        # Only reached for names the container lacks: ndarray methods and
        # attributes (reshape, astype, mean, T, ...) act on the augmented images.
        if name.startswith("_") or not hasattr(np.ndarray, name):
            raise AttributeError(f"'AugmentedImages' object has no attribute {name!r}")
        if name in _METADATA_ATTRIBUTES:
            return getattr(self._augmented, name)
        warn_augmentation_lost(
            f"AugmentedImages.{name} acts on a plain array of the augmented images."
        )
        return getattr(self._augmented, name)


def _plain(value):
    """``value`` with every AugmentedImages in it (lists, tuples, dicts) unwrapped."""
    if isinstance(value, AugmentedImages):
        return value.to_numpy()
    if isinstance(value, tuple | list):
        return type(value)(_plain(item) for item in value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value
