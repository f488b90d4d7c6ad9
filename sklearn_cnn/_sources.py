"""The image source: the one place that asks what kind of input ``X`` is.

:func:`image_source` turns whatever a user passes as ``X`` into an
:class:`ImageSource`; every consumer (the estimators' ``fit``, ``partial_fit``,
``predict*`` and ``score``, the feature extractor, the transformers and
augmenters, the inspection tools and the command) takes that object and never
asks again. A source has a length, is indexed by position (cross-validation
splits), and reads a batch of positions as a ``(n, channels, height, width)``
tensor of its dtype (uint8 for everything decoded) at the size the estimator
uses. The kinds:

* arrays in every layout: ``(n, H, W, C)``, ``(n, C, H, W)``, ``(n, H, W)``
  and flattened ``(n, H * W * C)`` with ``image_shape``
  (:class:`ArrayImages`);
* image files: a list, tuple, 1-D array or pandas Series of ``str`` or
  ``pathlib.Path`` (:class:`FileImages`), decoded batch by batch;
* decoded images: a list of ``PIL.Image.Image``, or the image column of a
  Hugging Face ``datasets.Dataset`` (``ds["image"]``), converted batch by batch
  (:class:`PILImages`);
* :class:`~sklearn_cnn.augmentation.AugmentedImages`: the un-augmented images
  it keeps, of any kind above, with its :class:`~sklearn_cnn._augmented.Recipe`.

A new input kind is a subclass of :class:`ImageSource` and one test in
:func:`_source_kind`. Training and prediction read sources through one
``torch.utils.data.DataLoader`` over a batch sampler (:func:`batch_loader`):
:class:`LabelledImages` cuts a whole batch at once (``__getitems__``), for
arrays, files and Accelerate's sharded loaders alike.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from sklearn.base import BaseEstimator
from sklearn.utils import check_consistent_length, column_or_1d
from sklearn.utils.validation import validate_data

from ._augmented import NO_RECIPE, AugmentedImages, Recipe
from .datasets._folder import (
    FILE_ERRORS,
    check_image_size,
    read_image,
    read_image_header,
    report_unreadable,
    to_rgb,
)
from .utils._runtime import map_in_threads

# Channel counts we recognise when guessing which axis holds the channels.
_CHANNEL_COUNTS = (1, 2, 3, 4)

# The ``image_shape`` parameter, as every estimator of the package declares and
# documents it (numpydoc, indented for a class docstring).
IMAGE_SHAPE_CONSTRAINT = [tuple, list, None]
IMAGE_SHAPE_DOC = """\
    image_shape : tuple of int or None, default=None
        ``(height, width)`` or ``(height, width, channels)`` of the images when
        ``X`` is 2-D (flattened ``(n, height * width * channels)`` arrays, as
        from ``X.reshape(n, -1)``), or to say which axis holds the channels of an
        ambiguous 4-D array. Without it, flattened rows of a square length are
        taken as square grayscale images, other lengths as a single row."""


# -- layouts of arrays ---------------------------------------------------------------
@dataclass(frozen=True)
class ImageLayout:
    """How a batch of images was laid out by the caller.

    Attributes
    ----------
    kind : {"nhwc", "nchw", "nhw", "flat"}
        The layout of the caller's array.
    image_shape : tuple of int
        ``(channels, height, width)`` of one image.
    """

    kind: str
    image_shape: tuple[int, int, int]

    @property
    def hwc(self) -> tuple[int, int, int]:
        channels, height, width = self.image_shape
        return (height, width, channels)

    def to_nchw(self, X):
        """A channels-first view of ``X`` (ndarray or tensor; no copy if possible)."""
        channels, height, width = self.image_shape
        if self.kind == "nchw":
            return X
        if self.kind == "nhwc":
            return _permute(X, (0, 3, 1, 2))
        if self.kind == "nhw":
            return X[:, None, :, :]
        return _permute(X.reshape(len(X), height, width, channels), (0, 3, 1, 2))

    def from_nchw(self, X: np.ndarray) -> np.ndarray:
        """Put channels-first images back into this layout."""
        if self.kind == "nchw":
            return X
        if self.kind == "nhwc":
            return X.transpose(0, 2, 3, 1)
        if self.kind == "nhw":
            return X[:, 0]
        return X.transpose(0, 2, 3, 1).reshape(len(X), -1)

    def describe(self, n_samples: int | None = None) -> str:
        """The shape of a batch in this layout, as the caller would write it."""
        channels, height, width = self.image_shape
        n = "n" if n_samples is None else str(n_samples)
        shapes = {
            "nhwc": f"({n}, {height}, {width}, {channels})",
            "nchw": f"({n}, {channels}, {height}, {width})",
            "nhw": f"({n}, {height}, {width})",
            "flat": f"({n}, {height * width * channels})",
        }
        return shapes[self.kind]


def _permute(X, axes):
    return X.permute(*axes) if isinstance(X, torch.Tensor) else X.transpose(axes)


def _normalize_image_shape(image_shape) -> tuple[int, int, int] | None:
    """``(H, W)`` or ``(H, W, C)`` -> ``(C, H, W)``."""
    if image_shape is None:
        return None
    shape = tuple(int(side) for side in image_shape)
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            "image_shape must be (height, width) or (height, width, channels) "
            f"with positive sides; got {image_shape!r}."
        )
    height, width, channels = shape
    return (channels, height, width)


def _shape_mismatch(
    shape, known, *, fitted: bool, channels_first_too: bool = True
) -> ValueError:
    channels, height, width = known
    readings = f"{(height, width, channels)} channels last"
    if channels_first_too:
        readings += f" or {(channels, height, width)} channels first"
    return ValueError(
        f"X has images of shape {shape}, but "
        + ("this model was fitted on images of" if fitted else "image_shape says")
        + f" shape (height, width, channels) = ({height}, {width}, {channels})"
        f", that is {readings}."
        + (
            " Resize the images (sklearn_cnn.preprocessing.ImageResizer), give "
            "them the channels the model was fitted on, or refit the model."
            if fitted
            else ""
        )
    )


def _infer_layout(
    X: np.ndarray,
    image_shape: tuple[int, int, int] | None,
    fitted_shape: tuple[int, int, int] | None,
    estimator_name: str,
) -> ImageLayout:
    """Work out the layout of a validated array (ndim already checked)."""
    known = image_shape or fitted_shape
    if X.ndim == 2:
        n_features = X.shape[1]
        if known is not None:
            if math.prod(known) != n_features:
                channels, height, width = known
                raise ValueError(
                    f"X has {n_features} features per sample, but images of "
                    f"shape (height, width, channels) = ({height}, {width}, "
                    f"{channels}) have {math.prod(known)}. Pass image_shape that "
                    "matches the flattened images, or pass X as "
                    "(n_samples, height, width, channels)."
                )
            return ImageLayout("flat", known)
        side = math.isqrt(n_features)
        if side * side == n_features:
            return ImageLayout("flat", (1, side, side))
        # Not square: one row of pixels, so tabular data still works.
        return ImageLayout("flat", (1, 1, n_features))
    if X.ndim == 3:
        layout = ImageLayout("nhw", (1, X.shape[1], X.shape[2]))
        if known is not None and layout.image_shape != known:
            # Grayscale images given to a colour model (X[..., 0], X.mean(-1)).
            raise _shape_mismatch(
                X.shape[1:], known, fitted=image_shape is None, channels_first_too=False
            )
        return layout
    # 4-D: find the channel axis.
    _, d1, d2, d3 = X.shape
    as_nhwc, as_nchw = (d3, d1, d2), (d1, d2, d3)
    if known is not None:
        if as_nhwc == known:
            return ImageLayout("nhwc", known)
        if as_nchw == known:
            return ImageLayout("nchw", known)
        raise _shape_mismatch(X.shape[1:], known, fitted=image_shape is None)
    last_is_channel = d3 in _CHANNEL_COUNTS
    first_is_channel = d1 in _CHANNEL_COUNTS
    if last_is_channel and not first_is_channel:
        return ImageLayout("nhwc", as_nhwc)
    if first_is_channel and not last_is_channel:
        return ImageLayout("nchw", as_nchw)
    if last_is_channel and first_is_channel and (d1 == d2) != (d2 == d3):
        # Both axes could hold channels; only one reading gives square images.
        return (
            ImageLayout("nhwc", as_nhwc) if d1 == d2 else ImageLayout("nchw", as_nchw)
        )
    raise ValueError(
        f"Cannot tell which axis of images of shape {X.shape[1:]} holds the "
        f"channels. State it with {estimator_name}(image_shape=(height, width, "
        f"channels)), for example image_shape={(d1, d2, d3)} for channels-last "
        f"images or image_shape={(d2, d3, d1)} for channels-first images."
    )


# -- the kinds of input ----------------------------------------------------------------
def _is_file_paths(X) -> bool:
    """True when ``X`` is a non-empty list, tuple, 1-D array or Series of paths."""
    if isinstance(X, (list, tuple)):
        if not X or not isinstance(X[0], (str, os.PathLike)):
            return False
        X = np.asarray(X, dtype=object)
    elif not isinstance(X, np.ndarray):
        # pandas Series and other 1-D containers of strings.
        if getattr(X, "ndim", None) != 1 or getattr(X, "dtype", None) is None:
            return False
        X = np.asarray(X)
    if X.ndim != 1 or len(X) == 0 or X.dtype.kind not in "OU":
        return False
    return X.dtype.kind == "U" or all(
        isinstance(path, (str, os.PathLike)) for path in X
    )


def _is_pil_images(X) -> bool:
    """A non-empty list, tuple or object array of ``PIL.Image.Image``."""
    if isinstance(X, np.ndarray) and X.dtype == object and X.ndim == 1:
        X = list(X)
    return (
        isinstance(X, (list, tuple))
        and len(X) > 0
        and all(isinstance(image, Image.Image) for image in X)
    )


def _is_dataset_column(X) -> bool:
    """The image column of a Hugging Face ``datasets.Dataset`` (``ds["image"]``)."""
    # Recognised without importing datasets, an optional dependency.
    return type(X).__module__.startswith("datasets.") and hasattr(X, "column_name")


def _source_kind(X) -> str:
    """Which :class:`ImageSource` reads ``X``: the one question, asked here only."""
    if isinstance(X, AugmentedImages):
        return "augmented"
    if _is_dataset_column(X):
        return "pil"
    if _is_file_paths(X):
        return "files"
    if _is_pil_images(X):
        return "pil"
    return "array"


def _first_item(X):
    return next(iter(X.to_numpy() if hasattr(X, "to_numpy") else X))


# -- sources -------------------------------------------------------------------------
class ImageSource:
    """Images of one kind of input, read batch by batch.

    Attributes
    ----------
    image_shape : tuple of int
        ``(height, width, channels)`` every batch has.
    dtype : numpy dtype
        The dtype of the batches: the caller's for arrays, uint8 for the rest.
    recipe : Recipe
        The augmentation the images came with (none but for AugmentedImages).
    """

    image_shape: tuple[int, int, int]
    dtype: np.dtype
    recipe: Recipe = NO_RECIPE
    # Whether reading a batch takes real time (decoding), so that the next
    # batch is best read while the network works on this one.
    slow_to_read: bool = False

    def __len__(self) -> int:
        raise NotImplementedError

    def subset(self, indices) -> ImageSource:
        """The images at ``indices`` (positions), as a source of the same kind."""
        raise NotImplementedError

    def read(self, indices: np.ndarray, *, pin_memory: bool = False) -> torch.Tensor:
        """The images at ``indices`` as a CPU ``(n, C, H, W)`` tensor of ``dtype``.

        ``pin_memory`` puts the batch in page-locked memory, for a copy to the GPU
        that does not block.
        """
        raise NotImplementedError

    def on_device(self, device: torch.device) -> ImageSource:
        """This source, reading from ``device`` when that pays (arrays on a GPU)."""
        return self

    def update_digest(self, digest) -> None:
        """Feed what identifies these images to a hashlib ``digest``."""
        raise NotImplementedError

    def to_nchw_array(self, estimator) -> np.ndarray:
        """All the images at once, for transformers that need pixels."""
        return self.read(np.arange(len(self))).numpy()

    def pixels_in_memory(self):
        """The pixels the network's input is made of, when held (else None).

        Decoded images are uint8; an array's pixels may have been standardized
        already, which a pretrained backbone's normalization must know.
        """
        return None

    @property
    def scale_uint8(self) -> bool:
        """True when the estimator's input is 0-255 pixels, which batches scale.

        That is, uint8 images, or what the recipe's deterministic steps make of
        them when those keep uint8.
        """
        dtype = np.dtype(self.dtype)
        for step in self.recipe.post_steps:
            dtype = np.dtype(step._output_dtype(dtype))
        return dtype == np.uint8

    # What image steps (transformers, augmenters) do with a source: each kind
    # answers for itself, so that the steps never ask which kind they have.
    def fitted_by(self, step) -> None:
        """Record on ``step`` that it was fitted on these images."""
        vars(step).pop("fitted_on_files_", None)

    def transformed_by(self, step, X, transform):
        """``step``'s output for these images, in the caller's layout.

        ``transform`` maps a channels-first array to a channels-first array.
        Images that were not an array come out channels last.
        """
        transformed = transform(self.to_nchw_array(step))
        return step._output(transformed.transpose(0, 2, 3, 1), X)

    def passed_by(self, step, X):
        """What an augmenter's ``transform`` returns: the images, unaugmented."""
        return X

    def augmented_by(self, augmenter, X, augment) -> AugmentedImages:
        """One augmentation to look at, and the recipe that redraws it."""
        recipe = self.recipe.then_augment(augmenter, stacklevel=6)
        preview = augment(self.to_nchw_array(augmenter)).transpose(0, 2, 3, 1)
        return AugmentedImages(preview, source=X, recipe=recipe)


class ArrayImages(ImageSource):
    """Images held in an array, in the caller's layout, read without copying it whole.

    A batch is gathered from the caller's own memory (``np.take``), so read-only
    arrays (joblib's memmaps) are shared, never copied whole.
    """

    def __init__(self, array: np.ndarray, layout: ImageLayout, recipe=NO_RECIPE):
        self.array = array
        self.layout = layout
        self.image_shape = layout.hwc
        self.dtype = array.dtype
        self.recipe = recipe
        self._device_images: torch.Tensor | None = None
        # A view is read-only safe (torch warns on read-only arrays) and never
        # reaches the network uncopied (float32 would be used as it is).
        self._view_is_safe = (
            array.flags.writeable
            and array.flags.c_contiguous
            and array.dtype != np.float32
        )

    def __len__(self) -> int:
        return len(self.array)

    def subset(self, indices) -> ArrayImages:
        return ArrayImages(self.array[np.asarray(indices)], self.layout, self.recipe)

    def read(self, indices, *, pin_memory: bool = False) -> torch.Tensor:
        if self._device_images is not None:
            index = torch.as_tensor(indices, dtype=torch.long)
            return self._device_images[index.to(self._device_images.device)]
        indices = np.asarray(indices, dtype=np.int64)
        if not pin_memory and self._view_is_safe and _consecutive(indices):
            # Prediction reads runs of images: a view of them, no gather. Only
            # for arrays the first conversion (to float32) copies anyway, so the
            # network never sees the caller's memory.
            start = int(indices[0]) if len(indices) else 0
            batch = torch.from_numpy(self.array[start : start + len(indices)])
            return self.layout.to_nchw(batch)
        if pin_memory:
            batch = torch.empty(
                (len(indices), *self.array.shape[1:]),
                dtype=torch.from_numpy(self.array[:0].copy()).dtype,
                pin_memory=True,
            )
            np.take(self.array, indices, axis=0, out=batch.numpy())
        else:
            batch = torch.from_numpy(np.take(self.array, indices, axis=0))
        return self.layout.to_nchw(batch)

    def on_device(self, device: torch.device) -> ArrayImages:
        if device.type != "cuda" or not _fits_on_gpu(self.array, device):
            return self
        resident = ArrayImages(self.array, self.layout, self.recipe)
        shape = (len(self.array), *self.array.shape[1:])
        dtype = torch.from_numpy(self.array[:0].copy()).dtype
        images = torch.empty(shape, dtype=dtype, device=device)
        for start in range(0, len(self.array), 1024):
            chunk = np.ascontiguousarray(self.array[start : start + 1024])
            images[start : start + len(chunk)] = torch.from_numpy(chunk.copy()).to(
                device
            )
        resident._device_images = self.layout.to_nchw(images)
        return resident

    def update_digest(self, digest) -> None:
        digest.update(repr((self.array.shape, str(self.dtype))).encode())
        for start in range(0, len(self.array), 1024):
            digest.update(np.ascontiguousarray(self.array[start : start + 1024]).data)

    def to_nchw_array(self, estimator) -> np.ndarray:
        return self.layout.to_nchw(self.array)

    def pixels_in_memory(self):
        pixels = self.layout.to_nchw(self.array)
        if not self.recipe.post_steps:
            return pixels
        # What the steps after the augmenters make of the images (a sample).
        sample = torch.from_numpy(np.ascontiguousarray(pixels[:256], np.float32))
        with torch.inference_mode():
            for step in self.recipe.post_steps:
                sample = step.transform_batch(sample)
        return sample.numpy()

    def transformed_by(self, step, X, transform):
        transformed = transform(self.to_nchw_array(step))
        layout = ImageLayout(self.layout.kind, tuple(transformed.shape[1:]))
        result = layout.from_nchw(transformed)
        if isinstance(X, AugmentedImages):
            # Per-epoch augmentation survives this deterministic step.
            return X.with_post_step(result, step, step._output_feature_names(result))
        return step._output(result, X)

    def passed_by(self, step, X):
        if isinstance(X, AugmentedImages):
            return X  # its recipe travels on
        return step._output(self.array, X)

    def augmented_by(self, augmenter, X, augment) -> AugmentedImages:
        recipe = self.recipe.then_augment(augmenter, stacklevel=6)
        preview = self.layout.from_nchw(augment(self.to_nchw_array(augmenter)))
        if isinstance(X, AugmentedImages) and not X.post_steps:
            # Two augmenters in a row: both are redrawn from the same source.
            source = X.source
        else:
            source = self.array
        return AugmentedImages(
            preview,
            source=source,
            recipe=recipe,
            feature_names=augmenter._output_feature_names(preview),
        )


def _consecutive(indices: np.ndarray) -> bool:
    """Whether ``indices`` are ``start, start + 1, ...`` (a run of images)."""
    if len(indices) < 2:
        return len(indices) == 1
    return bool(
        indices[-1] - indices[0] == len(indices) - 1 and (np.diff(indices) == 1).all()
    )


# Keep a whole training set on the GPU when it takes at most this share of free memory.
_GPU_RESIDENT_FRACTION = 0.25


def _fits_on_gpu(array: np.ndarray, device: torch.device) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return array.nbytes < _GPU_RESIDENT_FRACTION * free


class _DecodedCache:
    """Decoded images kept after their first decoding, for the later epochs.

    The array is allocated at once but the operating system gives it memory only
    as images are written, so an epoch that stops early costs what it decoded.
    """

    def __init__(self, n_images: int, image_shape: tuple[int, int, int]):
        self.images = np.empty((n_images, *image_shape), dtype=np.uint8)
        self.filled = np.zeros(n_images, dtype=bool)


class _DecodedImages(ImageSource):
    """A source whose images are decoded one by one into uint8 ``(H, W, C)``.

    ``items`` are what the images are decoded from (paths, PIL images, an image
    column), kept whole: image ``i`` of the source is ``items[positions[i]]``,
    so that a subset (a fold, a validation split) is a new ``positions`` and
    nothing is copied. Subclasses say how one item is decoded
    (:meth:`_decode_one`); batches are decoded in threads (Pillow releases the
    GIL), into pinned memory for a GPU, and optionally kept in a cache shared by
    subsets, where image ``i`` has row ``cache_rows[i]``.
    """

    dtype = np.dtype(np.uint8)
    slow_to_read = True

    def __init__(
        self,
        items,
        image_shape,
        *,
        resize,
        recipe=NO_RECIPE,
        cache=None,
        positions=None,
        cache_rows=None,
    ):
        self.items = items
        self.image_shape = tuple(image_shape)
        self.resize = resize
        self.recipe = recipe
        self.cache = cache
        self.positions = (
            np.arange(len(items))
            if positions is None
            else np.asarray(positions, dtype=np.int64)
        )
        self.cache_rows = cache_rows

    def __len__(self) -> int:
        return len(self.positions)

    def subset(self, indices) -> _DecodedImages:
        indices = np.asarray(indices, dtype=np.int64)
        subset = copy.copy(self)
        subset.positions = self.positions[indices]
        if self.cache_rows is not None:
            subset.cache_rows = self.cache_rows[indices]
        return subset

    def with_cache(self) -> _DecodedImages:
        """The same images, kept in memory once decoded (``cache_decoded``)."""
        cached = copy.copy(self)
        cached.cache = _DecodedCache(len(self), self.image_shape)
        cached.cache_rows = np.arange(len(self))
        return cached

    def _decode_one(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def _describe(self, index: int) -> str:
        raise NotImplementedError

    def read(self, indices, *, pin_memory: bool = False) -> torch.Tensor:
        indices = np.asarray(indices, dtype=np.int64)
        shape = (len(indices), *self.image_shape)
        if pin_memory:
            batch = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        else:
            batch = torch.from_numpy(np.empty(shape, dtype=np.uint8))
        out = batch.numpy()
        map_in_threads(
            lambda row: self._decode_into(out, row, indices[row]), range(len(indices))
        )
        return batch.permute(0, 3, 1, 2)

    def _decode_into(self, out: np.ndarray, row: int, index: int) -> None:
        height, width, channels = self.image_shape
        cache = self.cache
        position = None if cache is None else self.cache_rows[index]
        if cache is not None and cache.filled[position]:
            out[row] = cache.images[position]
            return
        image = self._decode_one(index)
        if image.shape[:2] != (height, width):
            raise ValueError(
                f"{self._describe(index)} has size (height, width) = "
                f"{image.shape[:2]}, but the images are {(height, width)}. "
                "Pass image_size=(height, width) to the estimator to resize every "
                "image."
            )
        out[row] = image.reshape(height, width, channels)
        if cache is not None:
            cache.images[position] = out[row]
            cache.filled[position] = True


class FileImages(_DecodedImages):
    """Image files, decoded batch by batch to uint8 at ``image_shape``.

    Parameters
    ----------
    paths : ndarray of shape (n_samples,), dtype object
        The image files, as str.
    image_shape : tuple of int
        ``(height, width, channels)`` every file is decoded to; channels is 1
        (gray levels) or 3 (RGB).
    resize : bool
        True resizes every image to ``image_shape``; False requires the files to
        have that size already.
    """

    @property
    def paths(self) -> np.ndarray:
        """The files of this source's images, in order."""
        return self.items[self.positions]

    def _describe(self, index: int) -> str:
        return f"Image file {self.items[self.positions[index]]!r}"

    def _decode_one(self, index: int) -> np.ndarray:
        height, width, channels = self.image_shape
        path = self.items[self.positions[index]]
        try:
            return read_image(
                path, (height, width) if self.resize else None, grayscale=channels == 1
            )
        except FILE_ERRORS as error:
            # Its header opened when the call began: its pixels are damaged,
            # or it was moved or changed since.
            raise OSError(
                f"Cannot decode image file {path!r}: {type(error).__name__}: "
                f"{error}. Its header could be read when this call began: the "
                "file is damaged (truncated pixels, say) or was moved or changed "
                "since; image files must stay in place, unchanged, until fit or "
                "predict returns."
            ) from error

    def update_digest(self, digest) -> None:
        # Names, sizes and modification times stand for the files' contents,
        # which are not read here.
        digest.update(repr(self.image_shape).encode())
        for path in self.paths:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())

    def to_nchw_array(self, estimator) -> np.ndarray:
        example = str(self.paths[0])
        raise TypeError(
            f"{type(estimator).__name__} needs decoded pixels but got image file "
            f"paths (for example {example!r}). Only CNNImageClassifier, "
            "CNNImageRegressor and CNNFeatureExtractor read image files: drop this "
            "step and give the estimator image_size=(height, width), or load the "
            "images first with sklearn_cnn.datasets.load_image_folder."
        )

    def augmented_by(self, augmenter, X, augment) -> AugmentedImages:
        # Nothing is drawn before the files are decoded: the estimator augments
        # every batch it decodes, in every epoch.
        recipe = self.recipe.then_augment(augmenter, stacklevel=6)
        return AugmentedImages(self.paths, source=self.paths, recipe=recipe)


class _PathList(FileImages):
    """Image files an image step passes on unread: the estimator decodes them."""

    def __init__(self, paths, recipe=NO_RECIPE):
        super().__init__(paths, (0, 0, 0), resize=False, recipe=recipe)

    def fitted_by(self, step) -> None:
        # Their pixels are first seen by the estimator: no shape to record.
        for name in ("n_features_in_", "image_shape_", "feature_names_in_"):
            vars(step).pop(name, None)
        step.fitted_on_files_ = True

    def transformed_by(self, step, X, transform):
        return self.to_nchw_array(step)  # raises: a transformer needs pixels


def _pil_to_array(image: Image.Image, size, grayscale: bool) -> np.ndarray:
    """One decoded image as uint8 ``(height, width)`` or ``(height, width, 3)``."""
    image = to_rgb(image)
    if grayscale:
        image = image.convert("L")
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


_GRAYSCALE_PIL_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16"})


class PILImages(_DecodedImages):
    """Decoded images: a list of ``PIL.Image.Image``, or a Hugging Face image column.

    A ``datasets`` column (``ds["image"]``) is read batch by batch: only the
    images of a batch are decoded, with the column's own decoder.
    """

    @property
    def images(self):
        """The PIL images or the image column, whole (see ``positions``)."""
        return self.items

    def _describe(self, index: int) -> str:
        return f"Image {self.positions[index]}"

    def read(self, indices, *, pin_memory: bool = False) -> torch.Tensor:
        indices = np.asarray(indices, dtype=np.int64)
        if _is_dataset_column(self.images):
            # One call for the batch: the column decodes just these rows.
            wanted = [int(self.positions[i]) for i in indices]
            fetched = dict(zip(wanted, self.images[wanted]))
            self._fetched = fetched
        try:
            return super().read(indices, pin_memory=pin_memory)
        finally:
            self._fetched = None

    _fetched: dict | None = None

    def _image(self, index: int) -> Image.Image:
        position = int(self.positions[index])
        if self._fetched is not None:
            return self._fetched[position]
        return self.images[position]

    def _decode_one(self, index: int) -> np.ndarray:
        height, width, channels = self.image_shape
        return _pil_to_array(
            self._image(index), (height, width) if self.resize else None, channels == 1
        )

    def update_digest(self, digest) -> None:
        digest.update(repr(self.image_shape).encode())
        for start in range(0, len(self), 256):
            batch = self.read(np.arange(start, min(start + 256, len(self))))
            digest.update(batch.contiguous().numpy().data)


def _pil_header(image: Image.Image) -> tuple[int, int, bool]:
    width, height = image.size
    return height, width, image.mode in _GRAYSCALE_PIL_MODES


# -- validation: from X to a source ----------------------------------------------------
def _validate_array(estimator, X, y, *, reset: bool, image_shape):
    """The checks scikit-learn's estimators make, and the layout of the images."""
    check_params = dict(
        accept_sparse=False,
        dtype="numeric",
        ensure_2d=False,
        allow_nd=True,
        ensure_all_finite=True,
        ensure_min_samples=1,
    )
    validate_y = not (isinstance(y, str) and y == "no_validation")
    if validate_y:
        # 2-D y where the estimator says it learns several outputs or labels
        # (its tags).
        tags = estimator.__sklearn_tags__()
        multi_output = tags.target_tags.multi_output or bool(
            tags.classifier_tags and tags.classifier_tags.multi_label
        )
        X, y = validate_data(
            estimator, X, y, reset=reset, multi_output=multi_output, **check_params
        )
    else:
        X = validate_data(estimator, X, reset=reset, **check_params)
    if X.ndim == 1:
        raise ValueError(
            "Expected images, got a 1D array of shape "
            f"{X.shape} instead. Reshape your data either using X.reshape(-1, 1) "
            "if your data has a single feature or X.reshape(1, -1) if it contains "
            "a single sample; images go as (n_samples, height, width, channels)."
        )
    if X.ndim > 4:
        raise ValueError(
            "Expected images as (n_samples, height, width, channels), "
            "(n_samples, channels, height, width), (n_samples, height, width) or "
            f"flattened (n_samples, height * width * channels); got a {X.ndim}D "
            f"array of shape {X.shape}."
        )
    if 0 in X.shape[1:]:
        raise ValueError(
            f"Found an image dimension of size 0 in X of shape {X.shape}; "
            "images need at least one pixel and one channel."
        )
    if np.iscomplexobj(X):
        raise ValueError("Complex data not supported; pass real-valued pixels.")
    if X.dtype == np.bool_:
        X = X.astype(np.float32)
    fitted_shape = None if reset else _normalize_image_shape(estimator.image_shape_)
    if not reset and X.ndim == 2 and fitted_shape is not None:
        n_expected = math.prod(fitted_shape)
        if X.shape[1] != n_expected:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(estimator).__name__} is "
                f"expecting {n_expected} features as input."
            )
    layout = _infer_layout(
        X,
        None if not reset else _normalize_image_shape(image_shape),
        fitted_shape,
        type(estimator).__name__,
    )
    if reset:
        estimator.n_features_in_ = math.prod(layout.image_shape)
        estimator.image_shape_ = layout.hwc
        estimator.input_layout_ = layout.kind
    return X, layout, y


def _validate_labels(estimator, n_images: int, y):
    """Targets given beside decoded images: one per image, 1-D or 2-D."""
    if y is None:
        raise ValueError(
            f"{type(estimator).__name__} requires y to be passed, but the target y "
            "is None."
        )
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[1] == 1:
        y = column_or_1d(y, warn=True)
    check_consistent_length(np.empty(n_images), y)
    return y


def _decoded_image_shape(estimator, headers, size, color_mode, reset):
    """``(height, width, channels)`` decoded images get, from their headers."""
    if not reset:
        return tuple(estimator.image_shape_)
    all_gray = all(grayscale for _, _, grayscale in headers)
    channels = {"rgb": 3, "grayscale": 1}.get(color_mode, 1 if all_gray else 3)
    height, width = size if size is not None else headers[0][:2]
    return (height, width, channels)


def _check_same_size(names, headers, expected, *, fitted: bool) -> None:
    """Without image_size, every image must have the size the images are used at."""
    for name, (height, width, _) in zip(names, headers):
        if (height, width) != tuple(expected):
            first = "this model was fitted on" if fitted else f"{names[0]} is"
            raise ValueError(
                f"{name} has size (height, width) = {(height, width)}, but {first} "
                f"{tuple(expected)}. With image_size=None every image must have the "
                "same size: pass image_size=(height, width) to the estimator to "
                "resize them."
            )


def _record_decoded_shape(estimator, image_shape) -> None:
    height, width, channels = image_shape
    estimator.n_features_in_ = height * width * channels
    estimator.image_shape_ = tuple(image_shape)
    # Decoded images are channels last, as a runtime decoding them would hold them.
    estimator.input_layout_ = "nhwc"
    vars(estimator).pop("feature_names_in_", None)


def _checked_size(estimator, image_size, reset):
    size = check_image_size(image_size, allow_none=True)
    if not reset and size is not None and size != tuple(estimator.image_shape_[:2]):
        raise ValueError(
            f"image_size={image_size!r}, but this model was fitted on images of "
            f"size (height, width) = {tuple(estimator.image_shape_[:2])}: images "
            "are resized to the fitted size. Pass that image_size, or refit the "
            "model."
        )
    return size


def _list_headers(paths: list[str]) -> list:
    """Each file's ``(height, width, grayscale)``, or why it cannot be read."""

    def header_or_reason(path):
        try:
            return read_image_header(path)
        except FILE_ERRORS as error:
            return f"{type(error).__name__}: {error}"

    return map_in_threads(header_or_reason, paths)


def _file_source(
    estimator,
    X,
    y,
    *,
    reset,
    image_size,
    color_mode,
    skip_unreadable,
    recipe,
    stacklevel,
):
    validate_y = not (isinstance(y, str) and y == "no_validation")
    paths = [
        str(os.fspath(path)) for path in (X.to_numpy() if hasattr(X, "to_numpy") else X)
    ]
    if validate_y:
        y = _validate_labels(estimator, len(paths), y)
    size = _checked_size(estimator, image_size, reset)
    headers = _list_headers(paths)
    report_unreadable(
        paths,
        headers,
        not skip_unreadable,
        where="X",
        stacklevel=stacklevel,
        hint=(
            "pass unreadable_files='skip' to train without it"
            if validate_y
            else "leave it out of X: every file of X gets a prediction"
        ),
    )
    kept = np.flatnonzero([not isinstance(header, str) for header in headers])
    if len(kept) == 0:
        raise ValueError(
            f"None of the {len(paths)} image file(s) in X could be read; the first "
            f"one, {paths[0]!r}, failed with {headers[0]}."
        )
    headers = [headers[i] for i in kept]
    kept_paths = [paths[i] for i in kept]
    image_shape = _decoded_image_shape(estimator, headers, size, color_mode, reset)
    if size is None:
        _check_same_size(
            [f"Image file {path!r}" for path in kept_paths],
            headers,
            image_shape[:2],
            fitted=not reset,
        )
    if reset:
        _record_decoded_shape(estimator, image_shape)
    source = FileImages(
        # Objects, not fixed-width strings: long paths would pad every entry.
        np.asarray(kept_paths, dtype=object),
        image_shape,
        resize=size is not None,
        recipe=recipe,
    )
    return source, (y[kept] if validate_y else None)


def _pil_source(estimator, X, y, *, reset, image_size, color_mode, recipe):
    validate_y = not (isinstance(y, str) and y == "no_validation")
    images = X if _is_dataset_column(X) else list(X)
    if validate_y:
        y = _validate_labels(estimator, len(images), y)
    size = _checked_size(estimator, image_size, reset)
    if _is_dataset_column(images):
        # Sizes and modes need decoding here: the first image stands for all, and
        # a batch of another size is refused when it is read.
        headers = [_pil_header(images[0])]
    else:
        headers = [_pil_header(image) for image in images]
    image_shape = _decoded_image_shape(estimator, headers, size, color_mode, reset)
    if size is None:
        _check_same_size(
            [f"Image {i}" for i in range(len(headers))],
            headers,
            image_shape[:2],
            fitted=not reset,
        )
    if reset:
        _record_decoded_shape(estimator, image_shape)
    source = PILImages(images, image_shape, resize=size is not None, recipe=recipe)
    return source, y


def image_source(
    estimator,
    X,
    y="no_validation",
    *,
    reset: bool,
    image_shape=None,
    image_size=None,
    color_mode: str = "auto",
    skip_unreadable: bool = False,
    augment=None,
    stacklevel: int = 4,
):
    """Validate ``X`` (and ``y``) for ``estimator`` and make its image source.

    Parameters
    ----------
    estimator : estimator instance
        Receives ``n_features_in_``, ``image_shape_`` (height, width, channels)
        and ``feature_names_in_`` (arrays only) when ``reset=True``; its
        ``image_shape_`` is checked (arrays) or decoded to (the rest) when
        ``reset=False``.
    X : array-like, image files, PIL images, a datasets image column or AugmentedImages
        The images.
    y : array-like, None or "no_validation"
        Targets, validated together with ``X``; those of skipped files are dropped.
    reset : bool
        True in ``fit``: record the input's shape. False afterwards: check it.
    image_shape : tuple or None
        The estimator's ``image_shape`` parameter, ``(H, W)`` or ``(H, W, C)``,
        for arrays.
    image_size : int, (height, width) or None
        The size decoded images (files, PIL images) are resized to.
    color_mode : {"auto", "rgb", "grayscale"}
        The channels of decoded images, decided at ``reset=True``.
    skip_unreadable : bool
        True skips image files that cannot be opened, with one warning naming
        them; False refuses them.
    augment : augmenter or None
        The estimator's ``augment=`` parameter, lowered into the source's recipe.
    stacklevel : int
        Where the warning about skipped files points, counted from here.

    Returns
    -------
    source : ImageSource
    y : ndarray or None
        The validated targets, when ``y`` was given.
    """
    recipe, augmented = NO_RECIPE, None
    if isinstance(X, AugmentedImages):
        augmented, recipe, X = X, X.recipe, X.source
    recipe = recipe.with_augment(augment)
    validate_y = not (isinstance(y, str) and y == "no_validation")
    kind = _source_kind(X)
    if kind == "files":
        if image_shape is not None:
            raise ValueError(
                "image_shape describes the layout of arrays; X holds image files, "
                "whose size image_size sets. Pass image_shape=None."
            )
        source, y = _file_source(
            estimator,
            X,
            y,
            reset=reset,
            image_size=image_size,
            color_mode=color_mode,
            skip_unreadable=skip_unreadable,
            recipe=recipe,
            stacklevel=stacklevel + 1,
        )
    elif kind == "pil":
        source, y = _pil_source(
            estimator,
            X,
            y,
            reset=reset,
            image_size=image_size,
            color_mode=color_mode,
            recipe=recipe,
        )
    elif augmented is not None:
        # The estimator receives the augmentation's preview, after the steps
        # that followed the augmenters: its shape and names are the fitted
        # ones. Training batches are drawn afresh from the un-augmented images.
        _, layout, y = _validate_array(
            estimator, _shown(augmented), y, reset=reset, image_shape=image_shape
        )
        first = recipe.augmenters[0] if recipe.augmenters else None
        X, source_layout, _ = _validate_array(
            _Scratch(),
            X,
            "no_validation",
            reset=True,
            image_shape=getattr(first, "image_shape", image_shape),
        )
        if len(X) != len(augmented):
            raise ValueError(
                f"The augmented images hold {len(X)} source images but X has "
                f"{len(augmented)}."
            )
        source = ArrayImages(X, source_layout, recipe)
    else:
        X, layout, y = _validate_array(
            estimator, X, y, reset=reset, image_shape=image_shape
        )
        source = ArrayImages(X, layout, recipe)
        if image_size is not None:
            size = check_image_size(image_size)
            if size != tuple(layout.hwc[:2]):
                raise ValueError(
                    f"image_size={image_size!r} resizes image files (and PIL "
                    "images), but X is an array of images of size (height, width) = "
                    f"{layout.hwc[:2]}. Resize arrays with "
                    "sklearn_cnn.preprocessing.ImageResizer, or pass image_size=None."
                )
    return (source, y) if validate_y else source


def _shown(augmented: AugmentedImages):
    """The augmentation an AugmentedImages holds, with its column names if any."""
    shown = augmented.to_numpy()
    if augmented.feature_names is None:
        return shown
    import pandas as pd  # only set_output(transform="pandas") gives names

    # Feature names travel as a DataFrame's columns, for validate_data.
    return pd.DataFrame(shown, columns=augmented.feature_names, copy=False)


class _Scratch(BaseEstimator):
    """Receives what validation records about images no estimator is fitted on."""


def step_source(step, X, *, reset: bool) -> ImageSource:
    """The source of an image step (transformer, augmenter) of the package.

    Image files are passed on unread (the estimator at the end of the Pipeline
    decodes them with its own size and colour settings). AugmentedImages are
    read as the augmentation they hold, keeping their recipe.
    """
    recipe = X.recipe if isinstance(X, AugmentedImages) else NO_RECIPE
    inner = X.source if isinstance(X, AugmentedImages) else X
    if _source_kind(inner) == "files":
        paths = np.asarray(
            inner.to_numpy() if hasattr(inner, "to_numpy") else inner, dtype=object
        )
        return _PathList(paths, recipe)
    if isinstance(X, AugmentedImages):
        source = image_source(
            step, _shown(X), reset=reset, image_shape=step.image_shape
        )
        source.recipe = recipe
        return source
    return image_source(step, X, reset=reset, image_shape=step.image_shape)


def select_image(estimator, X, index: int):
    """``X[index : index + 1]`` in ``X``'s own kind; an array may be one image.

    For the inspection tools, which pass the selection through a Pipeline's
    steps before the estimator reads it.
    """
    if _source_kind(X) == "array":
        X = np.asarray(X)
        n_features = getattr(estimator, "n_features_in_", None)
        single = (
            n_features is not None
            and X.size == n_features
            and X.ndim in (2, 3)
            and not (X.ndim == 2 and X.shape[0] == 1)
        )
        if single:
            X = X[np.newaxis]
    if not -len(X) <= index < len(X):
        raise IndexError(
            f"index={index} is out of range for a batch of {len(X)} image(s)."
        )
    index = index % len(X)
    if hasattr(X, "iloc"):
        return X.iloc[index : index + 1]
    return X[index : index + 1]


def validate_images(estimator, X, *, reset: bool, image_shape=None):
    """Channels-first view and layout of images that must be held as pixels.

    For estimators that need every pixel at once; image files are refused with
    a message saying which estimators read them.
    """
    source = image_source(estimator, X, reset=reset, image_shape=image_shape)
    return source.to_nchw_array(estimator), getattr(source, "layout", None)


# -- batches -------------------------------------------------------------------------
class LabelledImages(torch.utils.data.Dataset):
    """A source with its targets and weights, cut a whole batch at a time.

    ``__getitems__`` is what a ``DataLoader`` over a batch sampler calls: one
    call per batch, no per-image Python, for arrays and files alike. Batches
    land on ``device`` (from pinned memory on a GPU).
    """

    def __init__(
        self, source: ImageSource, targets=None, sample_weight=None, *, device
    ):
        self.source = source
        self.targets = targets
        self.sample_weight = sample_weight
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.source)

    def subset(self, indices) -> LabelledImages:
        index = np.asarray(indices, dtype=np.int64)
        return LabelledImages(
            self.source.subset(index),
            None if self.targets is None else self.targets[torch.as_tensor(index)],
            None
            if self.sample_weight is None
            else self.sample_weight[torch.as_tensor(index)],
            device=self.device,
        )

    def __getitems__(self, indices):
        from ._net import WeightedTarget

        cuda = self.device.type == "cuda"
        images = self.source.read(np.asarray(indices), pin_memory=cuda)
        images = images.to(self.device, non_blocking=cuda)
        if self.targets is None:
            return images, None
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        target = self.targets[index].to(self.device, non_blocking=cuda)
        if self.sample_weight is not None:
            weights = self.sample_weight[index].to(self.device, non_blocking=cuda)
            target = WeightedTarget(target, weights)
        return images, target

    def __getitem__(self, index):
        return self.__getitems__([index])


class _BatchSampler(torch.utils.data.BatchSampler):
    """torch's BatchSampler; in training a last batch of one image joins the previous.

    Batch normalization cannot learn from a batch of one 1x1 image.
    """

    def __init__(self, sampler, batch_size: int, *, merge_singleton: bool):
        super().__init__(sampler, batch_size, drop_last=False)
        self.merge_singleton = merge_singleton

    def __iter__(self):
        batches = super().__iter__()
        if not self.merge_singleton:
            yield from batches
            return
        previous = next(batches, None)
        for batch in batches:
            if len(batch) == 1:
                previous = previous + batch
                continue
            yield previous
            previous = batch
        if previous is not None:
            yield previous

    def __len__(self) -> int:
        n_batches = super().__len__()
        n = len(self.sampler)
        if self.merge_singleton and n_batches > 1 and n % self.batch_size == 1:
            return n_batches - 1
        return n_batches


def _whole_batch(batch):
    # __getitems__ returns the batch itself: nothing to collate.
    return batch


class _ReadAheadLoader(torch.utils.data.DataLoader):
    """A DataLoader that reads the next batch in a thread while this one is used.

    For sources that decode (files, PIL images, image columns): the decoding
    of batch ``i + 1`` (Pillow releases the GIL) overlaps the network's work on
    batch ``i``, as a worker process would, without copying the source into
    workers. One batch ahead at most: memory holds two batches. Errors of a
    read are raised where that batch is taken, in order.
    """

    def __iter__(self):
        from concurrent.futures import ThreadPoolExecutor

        batches = iter(self.batch_sampler)
        first = next(batches, None)
        if first is None:
            return
        with ThreadPoolExecutor(1, thread_name_prefix="sklearn-cnn-read") as pool:
            pending = pool.submit(self.dataset.__getitems__, first)
            try:
                for indices in batches:
                    upcoming = pool.submit(self.dataset.__getitems__, indices)
                    yield pending.result()
                    pending = upcoming
                yield pending.result()
            finally:
                # A loop left early (an error, early stopping, Ctrl-C) drops
                # the batch read ahead.
                pending.cancel()


def batch_loader(
    dataset: LabelledImages,
    *,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
    merge_singleton: bool = False,
) -> torch.utils.data.DataLoader:
    """The one DataLoader of the package: batches of positions, read whole."""
    if shuffle:
        sampler = torch.utils.data.RandomSampler(dataset, generator=generator)
    else:
        sampler = torch.utils.data.SequentialSampler(dataset)
    reads_ahead = getattr(dataset.source, "slow_to_read", False)
    loader = _ReadAheadLoader if reads_ahead else torch.utils.data.DataLoader
    return loader(
        dataset,
        batch_sampler=_BatchSampler(
            sampler, batch_size, merge_singleton=merge_singleton
        ),
        collate_fn=_whole_batch,
        # A DataLoader draws a base seed for its workers at every pass, from the
        # process-wide generator unless given one: never touch that one.
        generator=torch.Generator(),
    )
