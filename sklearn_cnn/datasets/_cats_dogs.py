"""The embedded cats and dogs data set: real silhouettes shipped with the package."""

from __future__ import annotations

from importlib import resources

import numpy as np
from PIL import Image
from sklearn.utils import Bunch, check_random_state

from ._folder import _RESAMPLING, check_image_size

_DATA_FILE = "cat_dog_silhouettes.npz"
_N_AVAILABLE = 2000
_NATIVE_SIZE = 28

DESCR = """\
.. _cats_dogs_dataset:

Cats and dogs silhouettes
-------------------------

**Data Set Characteristics:**

:Number of Instances: 2000 (1000 per class); 1000 returned by default
:Number of Classes: 2 ("cat", "dog")
:Native image size: 28x28 grayscale, 0 = background, 255 = animal
:Returned image size: image_size x image_size x 3 uint8 (64x64x3 by default)
:Origin: the cat and dog part of Animal-MNIST (Animal-Shape), published on
    PyPI as ``animal-mnist`` 0.4
:License: MIT License, Copyright (c) 2025 SinaSR-6; the notice ships with the
    package as ``sklearn_cnn/datasets/data/LICENSE.cat_dog_silhouettes``

Hand-made silhouettes of cats and dogs in many poses, the cat and dog classes of
the 10-class Animal-MNIST data set. The images are upscaled with an antialiased
bilinear filter and repeated over three channels, so that by default they have
the shape of a small set of colour photos: 1000 images of 64x64x3.
"""


def _load_raw() -> tuple[np.ndarray, np.ndarray]:
    source = resources.files(__package__).joinpath("data", _DATA_FILE)
    with source.open("rb") as file, np.load(file) as archive:
        return archive["images"], archive["labels"].astype(str)


def _resize_gray(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize 2-D uint8 images with Pillow, as :func:`load_image_folder` does."""
    height, width = size
    if images.shape[1:] == (height, width):
        return images
    return np.stack(
        [
            np.asarray(Image.fromarray(image).resize((width, height), _RESAMPLING))
            for image in images
        ]
    )


def load_cats_dogs(
    image_size=64, *, n_samples=1000, random_state=0, shuffle=True, return_X_y=False
):
    """Load the embedded cats and dogs silhouettes (classification).

    Real, hand-made 28x28 silhouettes of cats and dogs, the cat and dog classes
    of the Animal-MNIST data set (MIT License, Copyright (c) 2025 SinaSR-6; the
    notice ships with the package beside the data). They are upscaled to
    ``image_size`` with an antialiased bilinear filter and repeated over three
    channels: 1000 images of 64x64x3 by default, the shape of a small set of
    colour photos.

    =================   ======================================
    Classes             2 ("cat", "dog")
    Samples total       2000 available, 1000 per class
    Samples returned    ``n_samples`` (1000 by default), balanced
    Image shape         (image_size, image_size, 3), uint8
    Pixels              0 = background, 255 = animal
    =================   ======================================

    Nothing is downloaded: the data (about 0.5 MB) is part of the package.

    Parameters
    ----------
    image_size : int or tuple of (int, int) or None, default=64
        Side of the returned square images, or their ``(height, width)``. None
        keeps the native 28x28.
    n_samples : int or None, default=1000
        Number of images to return, half of them cats and half dogs (cats get
        the extra image when ``n_samples`` is odd). The subset is drawn at
        random with ``random_state``. None returns all 2000.
    random_state : int, RandomState instance or None, default=0
        Draws the subset and the order of the images. The default gives the
        same images in the same order on every call.
    shuffle : bool, default=True
        Mix the classes. If False, all cats come first, then all dogs.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        data : ndarray of shape (n_samples, height, width, 3), dtype uint8
            The images, channels last.
        target : ndarray of shape (n_samples,), dtype str
            "cat" or "dog".
        target_names : ndarray of shape (2,), dtype str
            ``["cat", "dog"]``.
        DESCR : str
            The description of the data set.

    (data, target) : tuple if ``return_X_y`` is True
        The images and their labels.

    See Also
    --------
    load_image_folder : Load your own labelled images.

    Examples
    --------
    >>> from sklearn_cnn.datasets import load_cats_dogs
    >>> X, y = load_cats_dogs(return_X_y=True)
    >>> X.shape, X.dtype
    ((1000, 64, 64, 3), dtype('uint8'))
    >>> sorted(set(y.tolist())), int((y == "cat").sum())
    (['cat', 'dog'], 500)
    >>> load_cats_dogs(image_size=16, n_samples=10).data.shape
    (10, 16, 16, 3)
    """
    size = check_image_size(image_size, allow_none=True)
    if size is None:
        size = (_NATIVE_SIZE, _NATIVE_SIZE)
    if n_samples is None:
        n_samples = _N_AVAILABLE
    if (
        not isinstance(n_samples, (int, np.integer))
        or isinstance(n_samples, bool)
        or not 2 <= n_samples <= _N_AVAILABLE
    ):
        raise ValueError(
            f"n_samples must be an int from 2 to {_N_AVAILABLE} (the images "
            f"available) or None; got {n_samples!r}."
        )
    images, labels = _load_raw()
    target_names = np.unique(labels)
    rng = check_random_state(random_state)
    n_cats = (n_samples + 1) // 2
    chosen = []
    for name, n_wanted in zip(target_names, (n_cats, n_samples - n_cats)):
        (indices,) = np.nonzero(labels == name)
        chosen.append(np.sort(rng.choice(indices, size=n_wanted, replace=False)))
    order = np.concatenate(chosen)
    if shuffle:
        order = rng.permutation(order)
    gray = _resize_gray(images[order], size)
    data = np.repeat(gray[..., np.newaxis], 3, axis=-1)
    target = labels[order]
    if return_X_y:
        return data, target
    return Bunch(data=data, target=target, target_names=target_names, DESCR=DESCR)
