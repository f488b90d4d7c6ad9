"""Random train-time augmenters, as batched tensor operations.

torchvision's v2 transforms draw *one* random parameter for a whole batch, so
every augmenter here draws its own parameters per image from the generator it
is given, and applies them to the whole batch at once: flips with
``torch.where``, rotations and resized crops with per-image affine grids,
shifts and erasing with broadcast index masks. Inputs are never modified.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
import torch.nn.functional as nn_functional
from torchvision.transforms.v2 import functional as tv_functional

from .._sources import IMAGE_SHAPE_DOC
from ..utils._image_steps import IMAGE_ATTRIBUTES_DOC
from ..utils._sklearn_private import HasMethods, Interval, _BaseComposition
from ._base import BaseAugmenter

# ---------------------------------------------------------------------------
# Batched helpers: every random draw comes from ``generator`` on the images'
# device, so results are reproducible and the global random state is untouched.


def _uniform(generator, n, low, high, device) -> torch.Tensor:
    """``n`` float32 draws from U(low, high)."""
    draws = torch.rand(n, generator=generator, device=device, dtype=torch.float32)
    return low + (high - low) * draws


def _chosen(generator, n, p, device) -> torch.Tensor:
    """A boolean mask of shape (n, 1, 1, 1): which images get augmented."""
    return (_uniform(generator, n, 0.0, 1.0, device) < p).view(n, 1, 1, 1)


def _working_dtype(images: torch.Tensor) -> torch.dtype:
    """Half precision is warped in float32; float32 and float64 as they are."""
    if images.dtype in (torch.float32, torch.float64):
        return images.dtype
    return torch.float32


def _warp(images: torch.Tensor, theta: torch.Tensor, fill: float) -> torch.Tensor:
    """Apply per-image affine maps ``theta`` (n, 2, 3) from output to input.

    Coordinates are normalised to [-1, 1]; pixels that come from outside the
    image get ``fill``.
    """
    work = images.to(_working_dtype(images))
    theta = theta.to(work.dtype)
    grid = nn_functional.affine_grid(theta, list(work.shape), align_corners=False)
    warped = nn_functional.grid_sample(
        work, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    if fill != 0:
        # How much of each output pixel lies inside the image: blend in the
        # fill value for the rest, so edges stay smooth.
        coverage = nn_functional.grid_sample(
            torch.ones_like(work[:, :1]),
            grid,
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        warped = warped + (1 - coverage) * fill
    return warped.to(images.dtype)


def _shift(
    images: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor, fill: float
) -> torch.Tensor:
    """Shift every image by whole pixels (``rows`` down, ``columns`` right).

    Exact (no interpolation): each output pixel is copied from its source or
    set to ``fill`` where the source lies outside the image.
    """
    n, _, height, width = images.shape
    device = images.device
    source_rows = torch.arange(height, device=device)[None, :] - rows[:, None]
    source_columns = torch.arange(width, device=device)[None, :] - columns[:, None]
    inside = ((source_rows >= 0) & (source_rows < height))[:, :, None] & (
        (source_columns >= 0) & (source_columns < width)
    )[:, None, :]
    batch = torch.arange(n, device=device)[:, None, None]
    # Advanced indices around a slice put their dimensions first: (n, H, W, C).
    gathered = images[
        batch,
        :,
        source_rows.clamp(0, height - 1)[:, :, None],
        source_columns.clamp(0, width - 1)[:, None, :],
    ].permute(0, 3, 1, 2)
    filled = torch.full((), fill, dtype=images.dtype, device=device)
    return torch.where(inside[:, None], gathered, filled)


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luminance of RGB images, the channel mean of any other channel count."""
    if images.shape[1] == 3:
        return tv_functional.rgb_to_grayscale(images)
    return images.mean(dim=1, keepdim=True)


def _store_parameters(augmenter, arguments: dict) -> None:
    """What every ``__init__`` does: store each argument under its own name.

    The estimator contract of scikit-learn, written once: ``__init__`` keeps its
    arguments as given and does nothing else (``_parameter_constraints`` checks
    them in ``fit``).
    """
    for name, value in arguments.items():
        if name != "self":
            setattr(augmenter, name, value)


def _check_pair(name: str, value, bounds: Interval) -> None:
    """A ``(min, max)`` pair of numbers within ``bounds`` with ``min <= max``."""
    valid = (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(map(bounds.is_satisfied_by, value))
        and value[0] <= value[1]
    )
    if not valid:
        raise ValueError(
            f"{name} must be a (min, max) pair with min <= max, each {bounds}; "
            f"got {name}={value!r}."
        )


_PROBABILITY = Interval(Real, 0, 1, closed="both")
_FRACTION_OF_RANGE = Interval(Real, 0, 1, closed="both")
_AREA_FRACTION = Interval(Real, 0, 1, closed="right")
_ASPECT_RATIO = Interval(Real, 0, None, closed="neither")
_FACTOR = Interval(Real, 0, None, closed="left")
_DEGREES = Interval(Real, 0, 180, closed="both")

# Shared numpydoc text, indented for a class docstring.
_FIT_TRANSFORM_NOTE = """
    ``fit_transform(X)`` returns one random augmentation of ``X`` with the same
    shape, dtype and number of samples; ``transform(X)`` returns ``X``
    unchanged, since nothing is augmented at test time. Placed before
    :class:`~sklearn_cnn.CNNImageClassifier` in a Pipeline, or given as its
    ``augment``, it augments every training batch afresh in every epoch.
"""
_FILL_DOC = """\
    fill : float, default=0.0
        Value of the pixels that come from outside the image, as a fraction of
        the value range: 0 is black, 1 is white (255 for uint8 images)."""
_AREA_AND_ASPECT_DOC = """\
    scale : tuple of (float, float), default={scale}
        Range of the {what}'s area, as a fraction of the image's area.
    ratio : tuple of (float, float), default={ratio}
        Range of the {what}'s aspect ratio ({aspect}), drawn log-uniformly."""
_RANDOM_STATE_DOC = """\
    random_state : int, RandomState instance or None, default=None
        Seeds the draw of :meth:`fit_transform`. Inside the classifier the
        classifier's own ``random_state`` is used instead."""


def _augmenter_doc(
    summary: str, *, parameters: str, examples: str, details: str = "", see_also=""
) -> str:
    """An augmenter's class docstring: its own text in the sections all share."""
    details = f"{details}\n\n" if details else ""
    see_also = f"\n    See Also\n    --------\n{see_also}\n" if see_also else ""
    return f"""{summary}
    {_FIT_TRANSFORM_NOTE}
{details}    Parameters
    ----------
{parameters}
{_RANDOM_STATE_DOC}
{IMAGE_SHAPE_DOC}

    Attributes
    ----------
{IMAGE_ATTRIBUTES_DOC}
{see_also}
    Examples
    --------
    >>> import numpy as np
{examples}
    """


def _probability_doc(default: float, what: str) -> str:
    return f"""\
    p : float, default={default}
        Probability that an image is {what}, drawn for every image."""


class _PerImageAugmenter(BaseAugmenter):
    """An augmenter that changes each image with probability ``p``.

    Subclasses implement :meth:`_augment`, which changes every image of the
    batch; which of them are kept is drawn here, first, from the same generator.
    """

    _parameter_constraints: dict = {
        **BaseAugmenter._parameter_constraints,
        "p": [_PROBABILITY],
    }

    def augment_batch(self, images, *, generator, value_range):
        chosen = _chosen(generator, len(images), self.p, images.device)
        changed = self._augment(images, generator=generator, value_range=value_range)
        return torch.where(chosen, changed, images)

    augment_batch.__doc__ = BaseAugmenter.augment_batch.__doc__

    def _augment(self, images, *, generator, value_range) -> torch.Tensor:
        """Every image of ``images`` augmented (out of place)."""
        raise NotImplementedError


class _FillingAugmenter(_PerImageAugmenter):
    """Geometric augmenters that bring in pixels from outside the image."""

    _parameter_constraints: dict = {
        **_PerImageAugmenter._parameter_constraints,
        "fill": [_FRACTION_OF_RANGE],
    }


class _AreaAndAspectAugmenter(_PerImageAugmenter):
    """Augmenters that draw a rectangle by its area (``scale``) and ``ratio``."""

    _parameter_constraints: dict = {
        **_PerImageAugmenter._parameter_constraints,
        "scale": [tuple, list],
        "ratio": [tuple, list],
    }

    def _check_params(self) -> None:
        _check_pair("scale", self.scale, _AREA_FRACTION)
        _check_pair("ratio", self.ratio, _ASPECT_RATIO)

    def _area_and_aspect(self, generator, n, device):
        """Per image, the area fraction and the aspect ratio (log-uniform)."""
        area = _uniform(generator, n, self.scale[0], self.scale[1], device)
        low, high = math.log(self.ratio[0]), math.log(self.ratio[1])
        return area, torch.exp(_uniform(generator, n, low, high, device))


class _RandomFlip(_PerImageAugmenter):
    """Flips of the axes ``_dims``; the two flips differ in nothing else."""

    _dims: tuple[int, ...]

    def __init__(self, p=0.5, *, random_state=None, image_shape=None):
        _store_parameters(self, locals())

    def _augment(self, images, *, generator, value_range):
        return images.flip(self._dims)


class RandomHorizontalFlip(_RandomFlip):
    __doc__ = _augmenter_doc(
        "Flip images left to right, each with probability ``p``.",
        parameters=_probability_doc(0.5, "flipped"),
        see_also="""\
    RandomVerticalFlip : Flip images upside down.
    RandomAugment : Compose several augmenters.""",
        examples="""\
    >>> from sklearn_cnn.augmentation import RandomHorizontalFlip
    >>> X = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    >>> flip = RandomHorizontalFlip(p=1.0, random_state=0)
    >>> X_flipped = flip.fit_transform(X).to_numpy()
    >>> bool((X_flipped == X[:, :, ::-1]).all())
    True
    >>> bool((flip.transform(X) == X).all())
    True

    Flattened colour images flip their pixels, not their channels, when
    ``image_shape`` says what they are:

    >>> X_rgb = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    >>> flip = RandomHorizontalFlip(p=1.0, image_shape=(4, 4, 3))
    >>> X_flat = flip.fit_transform(X_rgb.reshape(2, -1)).to_numpy()
    >>> bool((X_flat == X_rgb[:, :, ::-1].reshape(2, -1)).all())
    True""",
    )

    _dims = (-1,)


class RandomVerticalFlip(_RandomFlip):
    __doc__ = _augmenter_doc(
        "Flip images upside down, each with probability ``p``.",
        parameters=_probability_doc(0.5, "flipped"),
        see_also="""\
    RandomHorizontalFlip : Flip images left to right.""",
        examples="""\
    >>> from sklearn_cnn.augmentation import RandomVerticalFlip
    >>> X = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    >>> X_flipped = RandomVerticalFlip(p=1.0).fit_transform(X).to_numpy()
    >>> bool((X_flipped == X[:, ::-1, :]).all())
    True""",
    )

    _dims = (-2,)


class RandomRotation(_FillingAugmenter):
    __doc__ = _augmenter_doc(
        "Rotate images by a random angle in ``[-degrees, degrees]``.",
        details="""\
    Every image gets its own angle. Corners that come from outside the image
    get ``fill``; pixel values are interpolated bilinearly.""",
        parameters=f"""\
    degrees : float, default=15
        Largest rotation, in degrees, either way. 0 disables the rotation
        (useful in a grid search).
{_probability_doc(1.0, "rotated")}
{_FILL_DOC}""",
        see_also="""\
    RandomAugment : Flips and rotations in one step.""",
        examples="""\
    >>> from sklearn_cnn.augmentation import RandomRotation
    >>> X = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    >>> rotate = RandomRotation(degrees=30, fill=1.0, random_state=0)
    >>> X_rotated = rotate.fit_transform(X)
    >>> X_rotated.shape, int(X_rotated.to_numpy().max())  # white corners
    ((4, 8, 8, 3), 255)""",
    )

    _parameter_constraints: dict = {
        **_FillingAugmenter._parameter_constraints,
        "degrees": [_DEGREES],
    }

    def __init__(
        self, degrees=15, *, p=1.0, fill=0.0, random_state=None, image_shape=None
    ):
        _store_parameters(self, locals())

    def _augment(self, images, *, generator, value_range):
        angles = _uniform(generator, len(images), -1.0, 1.0, images.device)
        if self.degrees == 0:
            return images.clone()
        n, _, height, width = images.shape
        angles = angles * math.radians(self.degrees)
        cos, sin = torch.cos(angles), torch.sin(angles)
        # A rotation in pixel space, expressed in normalised coordinates: the
        # aspect ratio enters so that non-square images are not sheared.
        theta = torch.zeros(n, 2, 3, device=images.device)
        theta[:, 0, 0] = cos
        theta[:, 0, 1] = -sin * height / width
        theta[:, 1, 0] = sin * width / height
        theta[:, 1, 1] = cos
        return _warp(images, theta, self.fill * value_range)


class RandomTranslation(_FillingAugmenter):
    __doc__ = _augmenter_doc(
        "Shift images by a random whole number of pixels.",
        details="""\
    Every image gets its own vertical and horizontal shift, each up to
    ``max_shift`` times the image's height or width, rounded to whole pixels so
    that no pixel is blurred. Pixels shifted in from outside get ``fill``.""",
        parameters=f"""\
    max_shift : float, default=0.1
        Largest shift, as a fraction of the height (vertically) and width
        (horizontally), either way.
{_probability_doc(1.0, "shifted")}
{_FILL_DOC}""",
        see_also="""\
    RandomCrop : Shifts given in pixels, as padding followed by a crop.""",
        examples="""\
    >>> from sklearn_cnn.augmentation import RandomTranslation
    >>> X = np.ones((4, 8, 8), dtype=np.float32)
    >>> shift = RandomTranslation(max_shift=0.25, random_state=0)
    >>> np.unique(shift.fit_transform(X).to_numpy())  # zeros come in, no blur
    array([0., 1.], dtype=float32)""",
    )

    _parameter_constraints: dict = {
        **_FillingAugmenter._parameter_constraints,
        "max_shift": [Interval(Real, 0, 1, closed="both")],
    }

    def __init__(
        self, max_shift=0.1, *, p=1.0, fill=0.0, random_state=None, image_shape=None
    ):
        _store_parameters(self, locals())

    def _augment(self, images, *, generator, value_range):
        largest, (n, _, height, width) = self.max_shift, images.shape
        rows = _uniform(generator, n, -largest, largest, images.device)
        columns = _uniform(generator, n, -largest, largest, images.device)
        rows, columns = torch.round(rows * height), torch.round(columns * width)
        return _shift(images, rows.long(), columns.long(), self.fill * value_range)


class RandomCrop(_FillingAugmenter):
    __doc__ = _augmenter_doc(
        "Pad images by ``padding`` pixels, then crop them back at random.",
        details="""\
    The usual CIFAR augmentation: the same as shifting every image by a random
    whole number of pixels in ``[-padding, padding]`` each way, with ``fill``
    in the uncovered border. The output has the input's size.""",
        parameters=f"""\
    padding : int, default=4
        Largest shift in pixels, either way.
{_probability_doc(1.0, "cropped")}
{_FILL_DOC}""",
        see_also="""\
    RandomTranslation : Shifts given as a fraction of the image size.
    RandomResizedCrop : Crops of random size and aspect ratio, resized back.""",
        examples="""\
    >>> from sklearn_cnn.augmentation import RandomCrop
    >>> X = np.ones((4, 8, 8, 3), dtype=np.uint8)
    >>> X_cropped = RandomCrop(padding=2, random_state=0).fit_transform(X)
    >>> bool((X_cropped.to_numpy()[:, 2:6, 2:6] == 1).all())  # the centre stays
    True""",
    )

    _parameter_constraints: dict = {
        **_FillingAugmenter._parameter_constraints,
        "padding": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self, padding=4, *, p=1.0, fill=0.0, random_state=None, image_shape=None
    ):
        _store_parameters(self, locals())

    def _augment(self, images, *, generator, value_range):
        shifts = dict(
            low=-self.padding,
            high=self.padding + 1,
            size=(len(images),),
            generator=generator,
            device=images.device,
        )
        rows, columns = torch.randint(**shifts), torch.randint(**shifts)
        return _shift(images, rows, columns, self.fill * value_range)


class RandomResizedCrop(_AreaAndAspectAugmenter):
    __doc__ = _augmenter_doc(
        "Crop a random part of each image and resize it to the full size.",
        details="""\
    Each image gets a crop covering a random fraction ``scale`` of its area,
    with a random aspect ratio in ``ratio`` at a random place; sides that would
    exceed the image are clipped to it. The crop is stretched back to the
    input's size with bilinear interpolation, so the output has the input's
    shape, unlike torchvision's ``size`` argument.""",
        parameters=f"""\
{
            _AREA_AND_ASPECT_DOC.format(
                scale="(0.8, 1.0)",
                ratio="(3/4, 4/3)",
                what="crop",
                aspect="width / height",
            )
        }
{_probability_doc(1.0, "cropped")}""",
        see_also="""\
    RandomCrop : Crops of fixed size after padding.""",
        examples="""\
    >>> from sklearn_cnn.augmentation import RandomResizedCrop
    >>> X = np.ones((4, 8, 8, 3), dtype=np.float32)
    >>> RandomResizedCrop(scale=(0.5, 1.0), random_state=0).fit_transform(X).shape
    (4, 8, 8, 3)""",
    )

    def __init__(
        self,
        scale=(0.8, 1.0),
        ratio=(3 / 4, 4 / 3),
        *,
        p=1.0,
        random_state=None,
        image_shape=None,
    ):
        _store_parameters(self, locals())

    def _augment(self, images, *, generator, value_range):
        n, device = len(images), images.device
        area, aspect = self._area_and_aspect(generator, n, device)
        # Sides as fractions of the image's width and height.
        crop_width = torch.sqrt(area * aspect).clamp(max=1.0)
        crop_height = torch.sqrt(area / aspect).clamp(max=1.0)
        # Centres in normalised coordinates, so that the crop stays inside.
        centre_x = _uniform(generator, n, -1.0, 1.0, device) * (1 - crop_width)
        centre_y = _uniform(generator, n, -1.0, 1.0, device) * (1 - crop_height)
        theta = torch.zeros(n, 2, 3, device=device)
        theta[:, 0, 0] = crop_width
        theta[:, 0, 2] = centre_x
        theta[:, 1, 1] = crop_height
        theta[:, 1, 2] = centre_y
        return _warp(images, theta, 0.0)


class ColorJitter(_PerImageAugmenter):
    __doc__ = _augmenter_doc(
        "Change brightness, contrast and saturation by random factors.",
        details="""\
    Every image gets its own factors, drawn uniformly from
    ``[max(0, 1 - brightness), 1 + brightness]`` and likewise for contrast and
    saturation, applied in that order. Results are clipped to the value range,
    [0, 255] for uint8 images and [0, 1] otherwise, so place this augmenter
    before :class:`~sklearn_cnn.preprocessing.ImageStandardizer`.""",
        parameters=f"""\
    brightness : float, default=0.2
        How much to scale the pixel values; 0 leaves brightness alone.
    contrast : float, default=0.2
        How much to move pixels towards or away from the image's mean
        luminance; 0 leaves contrast alone.
    saturation : float, default=0.2
        How much to move colours towards or away from grey; 0 leaves
        saturation alone. Only 3-channel (RGB) images have a saturation.
{_probability_doc(1.0, "jittered")}""",
        examples="""\
    >>> from sklearn_cnn.augmentation import ColorJitter
    >>> X = np.full((4, 8, 8, 3), 128, dtype=np.uint8)
    >>> X_jittered = ColorJitter(brightness=0.5, random_state=0).fit_transform(X)
    >>> X_jittered.dtype, X_jittered.shape
    (dtype('uint8'), (4, 8, 8, 3))""",
    )

    _parameter_constraints: dict = {
        **_PerImageAugmenter._parameter_constraints,
        **dict.fromkeys(("brightness", "contrast", "saturation"), [_FACTOR]),
    }

    def __init__(
        self,
        brightness=0.2,
        contrast=0.2,
        saturation=0.2,
        *,
        p=1.0,
        random_state=None,
        image_shape=None,
    ):
        _store_parameters(self, locals())

    def _augment(self, images, *, generator, value_range):
        n = len(images)
        work = images.to(_working_dtype(images))

        def factors(amount):
            low, high = max(0.0, 1.0 - amount), 1.0 + amount
            return _uniform(generator, n, low, high, images.device).to(work.dtype)

        def blend(image, other, factor):
            factor = factor.view(n, 1, 1, 1)
            return (factor * image + (1 - factor) * other).clamp(0, value_range)

        jittered = work
        if self.brightness > 0:
            jittered = blend(jittered, 0.0, factors(self.brightness))
        if self.contrast > 0:
            mean = _grayscale(jittered).mean(dim=(1, 2, 3), keepdim=True)
            jittered = blend(jittered, mean, factors(self.contrast))
        if self.saturation > 0 and images.shape[1] == 3:
            jittered = blend(jittered, _grayscale(jittered), factors(self.saturation))
        return jittered.to(images.dtype)


class GaussianNoise(_PerImageAugmenter):
    __doc__ = _augmenter_doc(
        "Add Gaussian noise to every pixel.",
        parameters=f"""\
    std : float, default=0.05
        Standard deviation of the noise, as a fraction of the value range
        (255 for uint8 images, 1 otherwise).
{_probability_doc(1.0, "given noise")}
    clip : bool, default=True
        Whether to clip the result to the value range, [0, 255] for uint8
        images and [0, 1] otherwise. Set it to False after standardization.""",
        examples="""\
    >>> from sklearn_cnn.augmentation import GaussianNoise
    >>> X = np.full((4, 8, 8), 0.5, dtype=np.float32)
    >>> X_noisy = GaussianNoise(std=0.1, random_state=0).fit_transform(X).to_numpy()
    >>> bool(X_noisy.min() >= 0 and X_noisy.max() <= 1 and (X_noisy != X).any())
    True""",
    )

    _parameter_constraints: dict = {
        **_PerImageAugmenter._parameter_constraints,
        "std": [_FACTOR],
        "clip": ["boolean"],
    }

    def __init__(
        self, std=0.05, *, p=1.0, clip=True, random_state=None, image_shape=None
    ):
        _store_parameters(self, locals())

    def _augment(self, images, *, generator, value_range):
        noise = torch.randn(
            images.shape, generator=generator, device=images.device, dtype=torch.float32
        )
        noisy = images + (noise * (self.std * value_range)).to(images.dtype)
        return noisy.clamp(0, value_range) if self.clip else noisy


class RandomErasing(_AreaAndAspectAugmenter):
    __doc__ = _augmenter_doc(
        "Erase a random rectangle of each image (Zhong et al., 2020).",
        details="""\
    With probability ``p`` an image gets one rectangle covering a random
    fraction ``scale`` of its area, with a random aspect ratio in ``ratio``,
    set to ``value`` in every channel. Sides are rounded to whole pixels, at
    least one, and clipped to the image.""",
        parameters=f"""\
{_probability_doc(0.5, "given an erased rectangle")}
{
            _AREA_AND_ASPECT_DOC.format(
                scale="(0.02, 0.33)",
                ratio="(0.3, 3.3)",
                what="rectangle",
                aspect="height / width",
            )
        }
    value : float, default=0.0
        Value of the erased pixels, as a fraction of the value range.""",
        examples="""\
    >>> from sklearn_cnn.augmentation import RandomErasing
    >>> X = np.ones((4, 8, 8, 3), dtype=np.float32)
    >>> X_erased = RandomErasing(p=1.0, random_state=0).fit_transform(X).to_numpy()
    >>> bool((X_erased == 0).any(axis=(1, 2, 3)).all())
    True""",
    )

    _parameter_constraints: dict = {
        **_AreaAndAspectAugmenter._parameter_constraints,
        "value": [_FRACTION_OF_RANGE],
    }

    def __init__(
        self,
        p=0.5,
        *,
        scale=(0.02, 0.33),
        ratio=(0.3, 3.3),
        value=0.0,
        random_state=None,
        image_shape=None,
    ):
        _store_parameters(self, locals())

    def _augment(self, images, *, generator, value_range):
        n, _, height, width = images.shape
        device = images.device
        area, aspect = self._area_and_aspect(generator, n, device)
        area = area * (height * width)
        box_height = torch.round(torch.sqrt(area * aspect)).clamp(1, height).long()
        box_width = torch.round(torch.sqrt(area / aspect)).clamp(1, width).long()
        top, left = (
            torch.floor(
                _uniform(generator, n, 0.0, 1.0, device) * (side - box + 1)
            ).long()
            for side, box in ((height, box_height), (width, box_width))
        )
        rows = torch.arange(height, device=device)[None, :]
        columns = torch.arange(width, device=device)[None, :]
        in_rows = (rows >= top[:, None]) & (rows < (top + box_height)[:, None])
        in_columns = (columns >= left[:, None]) & (
            columns < (left + box_width)[:, None]
        )
        erased = (in_rows[:, :, None] & in_columns[:, None, :])[:, None]
        fill = torch.full(
            (), self.value * value_range, dtype=images.dtype, device=device
        )
        return torch.where(erased, fill, images)


class RandomAugment(BaseAugmenter, _BaseComposition):
    __doc__ = _augmenter_doc(
        "Apply several augmenters in turn, each with its own random draws.",
        details="""\
    There are two ways to say what to apply:

    * ``steps=None`` (default): the common recipe set by the shortcut
      parameters ``horizontal_flip``, ``vertical_flip`` and ``degrees``, a
      random horizontal flip and a rotation of up to 15 degrees by default.
      They are searchable directly, as in
      ``{"augment__degrees": [0, 15]}`` for a Pipeline step named
      ``"augment"``.
    * ``steps``: a list of ``(name, augmenter)`` pairs applied in order, like
      the steps of a :class:`~sklearn.pipeline.Pipeline`. Their parameters are
      searchable as ``<name>__<parameter>`` (for example
      ``augment__rotate__degrees``), and a whole step can be swapped, or
      turned off with ``"passthrough"``, through ``<name>``. The shortcut
      parameters then must stay at their defaults, since they would have no
      effect.

    All steps draw from this augmenter's random stream; their own
    ``random_state`` is not used.""",
        parameters="""\
    steps : list of (str, augmenter) tuples or None, default=None
        Augmenters to apply in order; an augmenter may be ``"passthrough"`` or
        None to skip its step. None uses the shortcut parameters below.
    horizontal_flip : float, default=0.5
        Probability of a horizontal flip; 0 for none. Only with ``steps=None``.
    vertical_flip : float, default=0.0
        Probability of a vertical flip; 0 for none. Only with ``steps=None``.
    degrees : float, default=15
        Largest rotation, in degrees, either way; 0 for none. Only with
        ``steps=None``.""",
        see_also="""\
    sklearn.pipeline.Pipeline : The composition of named steps this follows.""",
        examples="""\
    >>> from sklearn_cnn.augmentation import (
    ...     ColorJitter, RandomAugment, RandomHorizontalFlip, RandomRotation
    ... )
    >>> X = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    >>> RandomAugment(degrees=10, random_state=0).fit_transform(X).shape
    (4, 8, 8, 3)
    >>> augment = RandomAugment(
    ...     steps=[("flip", RandomHorizontalFlip()), ("color", ColorJitter())]
    ... )
    >>> augment.set_params(flip__p=0.25, color="passthrough").get_params()["flip__p"]
    0.25""",
    )

    _parameter_constraints: dict = {
        **BaseAugmenter._parameter_constraints,
        "steps": [list, None],
        "horizontal_flip": [_PROBABILITY],
        "vertical_flip": [_PROBABILITY],
        "degrees": [_DEGREES],
    }

    _SHORTCUT_DEFAULTS = {"horizontal_flip": 0.5, "vertical_flip": 0.0, "degrees": 15}

    def __init__(
        self,
        steps=None,
        *,
        horizontal_flip=0.5,  # the shortcuts of the default recipe
        vertical_flip=0.0,
        degrees=15,
        random_state=None,
        image_shape=None,
    ):
        _store_parameters(self, locals())

    def get_params(self, deep=True):
        """Get the parameters, including those of the steps as ``<name>__<param>``.

        Parameters
        ----------
        deep : bool, default=True
            If True, also return the steps and their parameters.

        Returns
        -------
        params : dict
            Parameter names mapped to their values.
        """
        return self._get_params("steps", deep=deep)

    def set_params(self, **params):
        """Set parameters, including the steps' as ``<name>__<param>``.

        A whole step is replaced with ``<name>=augmenter`` (or
        ``"passthrough"``).

        Parameters
        ----------
        **params : dict
            Parameter names mapped to their new values.

        Returns
        -------
        self : RandomAugment
            This augmenter.
        """
        self._set_params("steps", **params)
        return self

    def _active_steps(self) -> list:
        """The augmenters to apply, in order."""
        if self.steps is None:
            steps = []
            if self.horizontal_flip > 0:
                steps.append(RandomHorizontalFlip(p=self.horizontal_flip))
            if self.vertical_flip > 0:
                steps.append(RandomVerticalFlip(p=self.vertical_flip))
            if self.degrees > 0:
                steps.append(RandomRotation(degrees=self.degrees))
            return steps
        return [
            step for _, step in self.steps if step is not None and step != "passthrough"
        ]

    def _check_params(self) -> None:
        if self.steps is None:
            return
        changed = [
            name
            for name, default in self._SHORTCUT_DEFAULTS.items()
            if getattr(self, name) != default
        ]
        if changed:
            raise ValueError(
                f"{', '.join(changed)} only apply when steps is None; with steps, "
                "set the parameters of the steps themselves, for example "
                "rotate__degrees for a step named 'rotate'."
            )
        if not all(isinstance(step, tuple) and len(step) == 2 for step in self.steps):
            raise ValueError(
                "steps must be a list of (name, augmenter) tuples; "
                f"got steps={self.steps!r}."
            )
        names = [name for name, _ in self.steps]
        if not all(isinstance(name, str) for name in names):
            raise ValueError(f"Step names must be strings; got {names!r}.")
        self._validate_names(names)
        augmenter_check = HasMethods(["augment_batch"])
        for name, step in self.steps:
            if step is None or step == "passthrough":
                continue
            if not augmenter_check.is_satisfied_by(step):
                raise TypeError(
                    f"Step {name!r} of RandomAugment must be an augmenter (with an "
                    f"augment_batch method), 'passthrough' or None; got {step!r}. "
                    "Deterministic transformers such as ImageScaler belong in the "
                    "Pipeline, not in RandomAugment."
                )
            if hasattr(step, "_validate_params"):
                step._validate_params()
            if hasattr(step, "_check_params"):
                step._check_params()

    def augment_batch(self, images, *, generator, value_range):
        augmented = images
        for step in self._active_steps():
            augmented = step.augment_batch(
                augmented, generator=generator, value_range=value_range
            )
        if augmented is images:
            # Never hand the caller's tensor back as if it were new.
            augmented = images.clone()
        return augmented
