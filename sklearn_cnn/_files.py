"""Image files as ``X``: listed at ``fit``, decoded batch by batch while the net trains.

``CNNImageClassifier`` accepts a 1-D array or list of paths wherever it accepts
pixels. :func:`validate_image_files` reads only the files' headers (size, gray or
colour; unreadable files are skipped with one warning or refused) and returns an
``ImageFiles`` of ``_training``, which plays the part ``ImageData`` plays for
arrays. ``FileBatchIterator`` cuts it into the same batches, in the same
shuffled order, as ``BatchIterator`` cuts an array, and decodes them in a few
threads ahead of the training step. The batches are uint8 ``(n, channels,
height, width)`` tensors, exactly what an array would give, so the
``BatchPreparer`` (float conversion, augmentation, scaling on the device) is the
same for both routes.

Choices, measured with ``benchmarks/streaming.py --only decoders`` (a loaded 2-core
machine; rerun it on yours):

* Decoder: Pillow through :func:`~sklearn_cnn.datasets._folder.read_image`, the
  decoder of :func:`~sklearn_cnn.datasets.load_image_folder`, so that both routes
  give the same pixels. ``torchvision.io.decode_image`` decoded small files at
  their own size about twice as fast (60 against 117 microseconds for a 64 px
  JPEG), but photos shrunk to the training size, the common case, were faster with
  Pillow, whose JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale (444 against 655
  microseconds for 500 px to 64 px), torchvision's resize differs slightly
  from Pillow's, and torchvision 0.29 deprecates its image decoders (in favour
  of TorchCodec, a further dependency).
* Parallelism: a thread pool over batches. Pillow releases the GIL while it
  decodes and resizes; threads start in microseconds, share the data without
  pickling and work inside joblib and Dask workers. A ``DataLoader`` with two
  worker processes over batches of indices (``BatchSampler``) was slower on 512
  images (0.22 s against 0.16 s), its start-up paid in every fit of a search.

Memory: at most ``2 * n_threads`` decoded batches wait at any time, so a pass
over the data holds a bounded number of images whatever the number of files;
only the opt-in ``DecodedCache`` grows with the data.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.utils import check_consistent_length, column_or_1d

from ._training import ImageFiles, decode_threads
from .datasets._folder import check_image_size, read_image_header, report_unreadable

# Below this many files, listing in threads costs more than it saves.
_PARALLEL_THRESHOLD = 64
_LISTING_CHUNK = 256


def _list_headers(paths: list[str]) -> list:
    """Each file's ``(height, width, grayscale)``, or why it cannot be read."""

    def header_or_reason(path):
        try:
            return read_image_header(path)
        except Exception as error:
            return f"{type(error).__name__}: {error}"

    def headers_of(chunk):
        return [header_or_reason(path) for path in chunk]

    if len(paths) < _PARALLEL_THRESHOLD:
        return headers_of(paths)
    # One task per chunk of files: a future per file would cost more memory
    # than the headers themselves (ThreadPoolExecutor.map ignores chunksize).
    chunks = [
        paths[start : start + _LISTING_CHUNK]
        for start in range(0, len(paths), _LISTING_CHUNK)
    ]
    with ThreadPoolExecutor(max_workers=decode_threads()) as executor:
        listed = executor.map(headers_of, chunks)
        return [header for chunk in listed for header in chunk]


def validate_image_files(
    estimator,
    X,
    y="no_validation",
    *,
    reset: bool,
    image_size=None,
    skip_unreadable: bool = True,
    color_mode: str = "auto",
    stacklevel: int = 3,
):
    """Validate image files (and labels) for ``estimator``, reading only headers.

    Parameters
    ----------
    estimator : estimator instance
        Receives ``n_features_in_`` and ``image_shape_`` (height, width,
        channels) when ``reset=True``: the size is ``image_size``, or the files'
        own, which must then agree; channels is 1 when every file is grayscale,
        else 3. With ``reset=False`` the fitted ``image_shape_`` is used.
    X : list or 1-D array of str or path-like
        The image files.
    y : array-like, None or "no_validation"
        Labels, one per file; those of skipped files are dropped.
    reset : bool
        True in ``fit``: decide the image shape. False afterwards: use it.
    image_size : int, (height, width) or None
        The estimator's ``image_size`` parameter.
    skip_unreadable : bool
        True skips files that cannot be opened, with one warning naming them;
        False raises a ``ValueError`` naming the first one.
    color_mode : {"auto", "rgb", "grayscale"}
        The channels decided at ``reset=True``: "auto" reads one gray channel
        when every file is grayscale and RGB otherwise; "rgb" and "grayscale"
        convert every file to that.
    stacklevel : int
        Where the warning about skipped files points, counted from here.

    Returns
    -------
    files : ImageFiles
        The readable files, without labels.
    y : ndarray or None
        The labels of the readable files, when ``y`` was given.
    """
    validate_y = not (isinstance(y, str) and y == "no_validation")
    if validate_y and y is None:
        raise ValueError(
            f"{type(estimator).__name__} requires y to be passed, but the target y "
            "is None."
        )
    paths = [str(os.fspath(path)) for path in X]
    if validate_y:
        y = column_or_1d(np.asarray(y), warn=True)
        check_consistent_length(paths, y)
    size = check_image_size(image_size, allow_none=True)
    if not reset and size is not None and size != tuple(estimator.image_shape_[:2]):
        raise ValueError(
            f"image_size={image_size!r}, but this model was fitted on images of "
            f"size (height, width) = {tuple(estimator.image_shape_[:2])}: files are "
            "resized to the fitted size. Pass that image_size, or refit the model."
        )
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
    if reset:
        all_gray = all(grayscale for _, _, grayscale in headers)
        channels = {"rgb": 3, "grayscale": 1}.get(color_mode, 1 if all_gray else 3)
        height, width = size if size is not None else headers[0][:2]
    else:
        height, width, channels = estimator.image_shape_
    if size is None:
        _check_same_size(paths, kept, headers, (height, width), fitted=not reset)
    if reset:
        estimator.n_features_in_ = height * width * channels
        estimator.image_shape_ = (height, width, channels)
        if hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
    files = ImageFiles(
        # Objects, not fixed-width strings: long paths would pad every entry.
        np.asarray([paths[i] for i in kept], dtype=object),
        image_shape=(height, width, channels),
        resize=size is not None,
    )
    if not validate_y:
        return files
    return files, y[kept]


def _check_same_size(paths, kept, headers, expected, *, fitted: bool) -> None:
    """Without image_size, every file must have the size the images are used at."""
    for index, (height, width, _) in zip(kept, headers):
        if (height, width) != tuple(expected):
            first = "this model was fitted on" if fitted else f"{paths[kept[0]]!r} is"
            raise ValueError(
                f"Image file {paths[index]!r} has size (height, width) = "
                f"{(height, width)}, but {first} {tuple(expected)}. With "
                "image_size=None every file must have the same size: pass "
                "image_size=(height, width) to CNNImageClassifier to resize them."
            )
