"""Load a folder of labelled images: one sub-folder per class."""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from sklearn.utils import Bunch

# What load_image_folder reads, by file extension (compared in lower case).
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")

# Below this many files a progress bar is noise.
_PROGRESS_THRESHOLD = 500
# How many unreadable files one warning names before summarising the rest.
_MAX_LISTED = 10

_RESAMPLING = Image.Resampling.BILINEAR

# What a damaged or foreign file makes Pillow's plugins raise. Anything else (a
# MemoryError, a KeyboardInterrupt, a bug) is never the file's fault.
FILE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


def check_image_size(image_size, *, allow_none: bool = False) -> tuple[int, int] | None:
    """``64`` or ``(64, 48)`` -> ``(height, width)``; a clear error otherwise."""
    if image_size is None and allow_none:
        return None
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    elif (
        isinstance(image_size, Sequence)
        and not isinstance(image_size, str)
        and len(image_size) == 2
        and all(
            isinstance(side, (int, np.integer)) and not isinstance(side, bool)
            for side in image_size
        )
    ):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        expected = "an int, a (height, width) pair of ints"
        expected += " or None" if allow_none else ""
        raise ValueError(f"image_size must be {expected}; got {image_size!r}.")
    if min(size) < 1:
        raise ValueError(
            f"image_size must be positive; got {image_size!r}. Use for example "
            "image_size=64 or image_size=(64, 64)."
        )
    return size


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image -> 8-bit RGB. Transparent pixels become black."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        # 16- and 32-bit grayscale (16-bit PNG, TIFF): scale to 8 bits by hand,
        # Pillow's own conversion clips everything above 255 to white.
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if pixels.max(initial=0) > 255 else 255.0
        pixels = np.clip(np.rint(pixels * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(pixels).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        # Composite over black so that hidden colours of transparent pixels
        # (arbitrary in most files) do not leak into the image.
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def read_image(
    path: str, image_size: tuple[int, int] | None, *, grayscale: bool = False
) -> np.ndarray:
    """Decode one file to a ``(height, width, 3)`` uint8 array, resized.

    ``grayscale=True`` gives a ``(height, width)`` array instead: the file's own
    gray levels for grayscale files, the luma of colour ones.
    """
    with Image.open(path) as image:
        if image_size is not None and image.format == "JPEG":
            # JPEG decodes at 1/2, 1/4 or 1/8 scale for free: big photos load fast.
            # Square request: the EXIF rotation below may swap height and width.
            side = max(image_size)
            image.draft("RGB", (side, side))
        image = ImageOps.exif_transpose(image)
        image = to_rgb(image)
        if grayscale:
            # Exact for gray sources: equal R, G and B give back the same level.
            image = image.convert("L")
        if image_size is not None and image.size != (image_size[1], image_size[0]):
            # Pillow's bilinear filter widens with the scale factor when
            # shrinking, so downscaling is antialiased.
            image = image.resize((image_size[1], image_size[0]), _RESAMPLING)
        return np.asarray(image, dtype=np.uint8)


# Pillow modes that hold one gray level per pixel (alpha aside).
_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})
# EXIF orientations that swap height and width (rotations by 90 or 270 degrees).
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112


def read_image_header(path: str) -> tuple[int, int, bool]:
    """``(height, width, grayscale)`` of an image file, read without decoding it.

    The size is the one :func:`read_image` gives without resizing: the EXIF
    orientation of photos is applied.
    """
    with Image.open(path) as image:
        width, height = image.size
        # PNG can keep its EXIF after the pixels: only formats whose header holds
        # it are asked, so that no file is decoded here.
        if image.format in ("JPEG", "MPO", "WEBP", "TIFF"):
            orientation = image.getexif().get(_EXIF_ORIENTATION)
            if orientation in _TRANSPOSING_ORIENTATIONS:
                height, width = width, height
        grayscale = image.mode in _GRAYSCALE_MODES or image.mode.startswith("I;16")
        return height, width, grayscale


def _try_read(path: str, image_size) -> np.ndarray | str:
    """The decoded image, or why it could not be read."""
    try:
        return read_image(path, image_size)
    except FILE_ERRORS as error:
        # What malformed files make Pillow's plugins raise (OSError, SyntaxError,
        # struct.error, DecompressionBombError...) means "unreadable"; a
        # MemoryError or a bug is never the file's fault.
        return f"{type(error).__name__}: {error}"


def _is_image_file(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def find_image_files(path: str | os.PathLike) -> tuple[list[str], dict[str, list[str]]]:
    """Class names (sorted) and the image files of each class (sorted).

    Raises a clear error for a missing folder, a folder without class
    sub-folders, class folders without images, or a single class.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(
            f"Image folder {str(root)!r} does not exist. Expected a folder with one "
            "sub-folder of images per class, such as data/cat/*.png and data/dog/*.png."
        )
    if not root.is_dir():
        raise NotADirectoryError(
            f"{str(root)!r} is a file, not a folder. Expected a folder with one "
            "sub-folder of images per class, such as data/cat/*.png and data/dog/*.png."
        )
    class_dirs = sorted(
        (entry.name, entry.path)
        for entry in os.scandir(root)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    if not class_dirs:
        loose = [name for name in os.listdir(root) if _is_image_file(name)]
        found = (
            f"found {len(loose)} image file(s) directly in it"
            if loose
            else "found no sub-folders"
        )
        raise ValueError(
            f"Image folder {str(root)!r} has no class sub-folders: {found}. Expected "
            "one sub-folder of images per class, such as "
            f"{str(root / 'cat' / '001.png')!r} and {str(root / 'dog' / '001.png')!r}."
        )
    files_by_class: dict[str, list[str]] = {}
    for name, class_path in class_dirs:
        files = []
        for folder, sub_folders, file_names in os.walk(class_path, followlinks=True):
            sub_folders[:] = [sub for sub in sub_folders if not sub.startswith(".")]
            files += [
                os.path.join(folder, file_name)
                for file_name in file_names
                if _is_image_file(file_name)
            ]
        files_by_class[name] = sorted(files)
    empty = [name for name, files in files_by_class.items() if not files]
    extensions = ", ".join(IMAGE_EXTENSIONS)
    if len(empty) == len(files_by_class):
        raise ValueError(
            f"Found no images in the {len(empty)} sub-folder(s) of {str(root)!r} "
            f"({', '.join(map(repr, empty))}). Expected image files ending in "
            f"{extensions}."
        )
    if empty:
        raise ValueError(
            f"Class folder(s) {', '.join(map(repr, empty))} of {str(root)!r} contain "
            f"no images (files ending in {extensions}). Add images or remove the "
            "folder(s)."
        )
    _check_several_classes(files_by_class, root)
    return [name for name, _ in class_dirs], files_by_class


def _check_several_classes(files_by_class: dict[str, list], root: Path) -> None:
    if len(files_by_class) < 2:
        ((name, files),) = files_by_class.items()
        raise ValueError(
            f"Found a single class in {str(root)!r}: {name!r} with {len(files)} "
            "readable image(s). A classifier needs at least two classes: add one "
            "sub-folder of images per class."
        )


def _check_loading_options(n_jobs, verbose) -> None:
    if n_jobs is not None and (
        not isinstance(n_jobs, (int, np.integer))
        or isinstance(n_jobs, bool)
        or n_jobs == 0
    ):
        raise ValueError(f"n_jobs must be None or a non-zero int; got {n_jobs!r}.")
    if not (verbose == "auto" or isinstance(verbose, (bool, int, np.integer))):
        raise ValueError(f"verbose must be a bool or 'auto'; got {verbose!r}.")


def report_unreadable(
    files,
    decoded,
    strict: bool,
    *,
    where: str,
    stacklevel: int = 3,
    hint: str = "pass strict=False to skip unreadable files with a warning",
) -> list[str]:
    """Raise (strict) or warn once about the files that could not be decoded.

    ``decoded`` holds, for each file, its contents or a string saying why it
    could not be read; ``hint`` ends the error after "Remove or replace it, or".
    """
    skipped = [
        (file, result)
        for file, result in zip(files, decoded)
        if isinstance(result, str)
    ]
    if skipped and strict:
        file, reason = skipped[0]
        more = (
            f" ({len(skipped) - 1} more unreadable file(s))" if len(skipped) > 1 else ""
        )
        raise ValueError(
            f"Cannot read image {file!r}: {reason}{more}. Remove or replace it, or "
            f"{hint}."
        )
    if skipped:
        listed = "\n".join(
            f"  {file}: {reason}" for file, reason in skipped[:_MAX_LISTED]
        )
        rest = len(skipped) - _MAX_LISTED
        if rest > 0:
            listed += f"\n  ... and {rest} more"
        warnings.warn(
            f"Skipped {len(skipped)} unreadable image file(s) of {len(files)} in "
            f"{where}:\n{listed}",
            UserWarning,
            # Point at the caller of load_image_folder / load_images.
            stacklevel=stacklevel,
        )
    return [file for file, _ in skipped]


def _check_same_size(images: list[np.ndarray], where: str) -> None:
    """With image_size=None, images can only be stacked if they agree in size."""
    shapes = sorted({image.shape[:2] for image in images})
    if len(shapes) > 1:
        raise ValueError(
            f"The images in {where} have {len(shapes)} different sizes (height, "
            f"width), for example {shapes[0]} and {shapes[-1]}; with image_size=None "
            "they must all have the same size. Pass image_size=(height, width) to "
            "resize them."
        )


def _decode_all(files: list[str], image_size, n_jobs, verbose) -> list:
    """Decode ``files`` in order, in threads, with a bar for large folders."""
    from ..utils._runtime import map_in_threads, thread_count

    n_files = len(files)
    show_bar = n_files >= _PROGRESS_THRESHOLD if verbose == "auto" else bool(verbose)
    bar = None
    if show_bar:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=n_files,
            desc="Loading images",
            unit="img",
            # "auto": only on a terminal, never into log files.
            disable=None if verbose == "auto" else False,
        )

    def decode(path):
        result = _try_read(path, image_size)
        if bar is not None:
            bar.update()
        return result

    try:
        return map_in_threads(decode, files, n_threads=thread_count(n_jobs))
    finally:
        if bar is not None:
            bar.close()


def load_image_folder(
    path,
    image_size=(64, 64),
    *,
    return_X_y=False,
    paths_only=False,
    strict=False,
    n_jobs=None,
    verbose="auto",
):
    """Load labelled images from a folder with one sub-folder per class.

    The layout is the one of torchvision's ``ImageFolder`` and Keras's
    ``image_dataset_from_directory``::

        path/
            cat/001.jpg
            cat/002.png
            dog/001.jpg
            ...

    Every sub-folder is a class, named after the folder; images inside nested
    folders of a class count for that class. Files and folders whose names start
    with a dot are ignored, and so are files that are not images (by extension).
    JPEG, PNG, BMP, GIF (first frame) and WebP files are read; grayscale,
    palette, 16-bit and CMYK images are converted to RGB, transparent pixels
    become black, and the EXIF orientation of photos is applied. Every image is
    resized to ``image_size`` with Pillow's antialiased bilinear filter; the
    aspect ratio is not kept.

    Parameters
    ----------
    path : str or path-like
        The folder holding one sub-folder per class.
    image_size : int or tuple of (int, int) or None, default=(64, 64)
        ``(height, width)`` of the returned images; an int gives square images.
        None keeps every image's own size, which must then be the same for all.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.
    paths_only : bool, default=False
        If True, list the image files and their classes without decoding any:
        ``data`` holds the paths, which
        :class:`~sklearn_cnn.CNNImageClassifier` reads batch by batch, so that
        folders larger than memory can be used (see :ref:`large_data`).
        ``image_size``, ``n_jobs`` and ``verbose`` are then not used, and
        unreadable files are found (and skipped or refused) by the classifier.
    strict : bool, default=False
        What to do with a file that cannot be decoded (corrupt, truncated, not
        really an image). False skips it, with one warning listing all such
        files; True raises a ``ValueError`` naming the first one.
    n_jobs : int or None, default=None
        Number of threads decoding images; decoding runs in Pillow's C code,
        which releases the GIL. None uses up to 8 threads (at most one per CPU),
        -1 one per CPU. Folders of fewer than 64 images are decoded in the
        calling thread.
    verbose : bool or "auto", default="auto"
        Show a progress bar while decoding. "auto" shows it on a terminal for
        folders of 500 images or more.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        data : ndarray of shape (n_samples, height, width, 3), dtype uint8
            The images, RGB, channels last, ordered by class then by path;
            with ``paths_only=True``, the same as ``filenames``.
        target : ndarray of shape (n_samples,), dtype str
            The class name of each image.
        target_names : ndarray of shape (n_classes,), dtype str
            The class names, sorted.
        filenames : ndarray of shape (n_samples,), dtype str
            The path of each image, ``path`` joined with the file's place in it.
        skipped : list of str
            The files that could not be decoded (empty with ``strict=True``
            or ``paths_only=True``).

    (data, target) : tuple if ``return_X_y`` is True
        The images and their class names.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    NotADirectoryError
        If ``path`` is a file.
    ValueError
        If ``path`` has no class sub-folders, a class folder has no images,
        fewer than two classes have readable images, the images differ in size
        with ``image_size=None``, or (``strict=True``) a file cannot be decoded.

    See Also
    --------
    load_cats_dogs : The embedded cats and dogs data set.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from PIL import Image
    >>> from sklearn_cnn.datasets import load_image_folder
    >>> root = Path(tempfile.mkdtemp())
    >>> for label, value in [("dark", 30), ("light", 220)]:
    ...     (root / label).mkdir()
    ...     for i in range(3):
    ...         pixels = np.full((20, 30), value + i, dtype=np.uint8)
    ...         Image.fromarray(pixels).save(root / label / f"{i}.png")
    >>> images = load_image_folder(root, image_size=(16, 16))
    >>> images.data.shape, images.data.dtype
    ((6, 16, 16, 3), dtype('uint8'))
    >>> images.target_names
    array(['dark', 'light'], dtype='<U5')
    >>> X, y = load_image_folder(root, image_size=16, return_X_y=True)
    >>> y
    array(['dark', 'dark', 'dark', 'light', 'light', 'light'], dtype='<U5')
    >>> paths, y = load_image_folder(root, paths_only=True, return_X_y=True)
    >>> [str(Path(file).relative_to(root)) for file in paths[:2]]
    ['dark/0.png', 'dark/1.png']
    """
    size = check_image_size(image_size, allow_none=True)
    _check_loading_options(n_jobs, verbose)
    root = Path(path)
    class_names, files_by_class = find_image_files(root)
    files = [file for name in class_names for file in files_by_class[name]]
    labels = [name for name in class_names for _ in files_by_class[name]]
    if paths_only:
        filenames = np.asarray(files, dtype=str)
        target = np.asarray(labels, dtype=str)
        if return_X_y:
            return filenames, target
        return Bunch(
            data=filenames,
            target=target,
            target_names=np.asarray(class_names, dtype=str),
            filenames=filenames,
            skipped=[],
        )
    decoded = _decode_all(files, size, n_jobs, verbose)
    skipped = report_unreadable(files, decoded, strict, where=repr(str(root)))
    kept = [i for i, result in enumerate(decoded) if not isinstance(result, str)]
    kept_by_class: dict[str, list[str]] = {}
    for i in kept:
        kept_by_class.setdefault(labels[i], []).append(files[i])
    if not kept_by_class:
        raise ValueError(
            f"None of the {len(files)} image files in {str(root)!r} could be read; "
            f"the first one, {files[0]!r}, failed with {decoded[0]}."
        )
    _check_several_classes(kept_by_class, root)
    images = [decoded[i] for i in kept]
    _check_same_size(images, repr(str(root)))
    data = np.stack(images)
    target = np.asarray([labels[i] for i in kept], dtype=str)
    if return_X_y:
        return data, target
    return Bunch(
        data=data,
        target=target,
        target_names=np.asarray(sorted(kept_by_class), dtype=str),
        filenames=np.asarray([files[i] for i in kept], dtype=str),
        skipped=skipped,
    )


def _files_in(path: str) -> list[str]:
    """``path`` itself if it is a file, else the image files under it, sorted."""
    if not os.path.isdir(path):
        return [path]
    found = []
    for folder, sub_folders, file_names in os.walk(path, followlinks=True):
        sub_folders[:] = sorted(sub for sub in sub_folders if not sub.startswith("."))
        found += [
            os.path.join(folder, name) for name in file_names if _is_image_file(name)
        ]
    return sorted(found)


def load_images(
    paths,
    image_size=(64, 64),
    *,
    paths_only=False,
    strict=False,
    n_jobs=None,
    verbose="auto",
):
    """Load unlabelled images from files and folders, to predict their classes.

    Images are read, converted to RGB and resized exactly as by
    :func:`load_image_folder`, so that a model trained on a folder sees new
    images the same way.

    Parameters
    ----------
    paths : str, path-like or sequence of them
        Image files, and folders searched (recursively) for image files ending
        in .bmp, .gif, .jpeg, .jpg, .png or .webp. A file named directly is read
        whatever its extension.
    image_size : int or tuple of (int, int) or None, default=(64, 64)
        ``(height, width)`` of the returned images; an int gives square images.
        None keeps every image's own size, which must then be the same for all.
    paths_only : bool, default=False
        If True, list the image files without decoding any: ``data`` holds
        their paths, for :class:`~sklearn_cnn.CNNImageClassifier` to read batch
        by batch (see :ref:`large_data`); ``image_size``, ``strict``, ``n_jobs``
        and ``verbose`` are then not used.
    strict : bool, default=False
        False skips files that cannot be decoded, with one warning listing them;
        True raises a ``ValueError`` naming the first one.
    n_jobs : int or None, default=None
        Number of decoding threads, as in :func:`load_image_folder`.
    verbose : bool or "auto", default="auto"
        Show a progress bar; "auto" shows it on a terminal for 500 images or more.

    Returns
    -------
    images : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        data : ndarray of shape (n_images, height, width, 3), dtype uint8
            The images, in the order of ``paths`` (files of a folder sorted);
            with ``paths_only=True``, the same as ``filenames``.
        filenames : ndarray of shape (n_images,), dtype str
            The path of each image.
        skipped : list of str
            The files that could not be decoded.

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    ValueError
        If no image could be read, the images differ in size with
        ``image_size=None``, or (``strict=True``) a file cannot be decoded.

    See Also
    --------
    load_image_folder : Load labelled images, one sub-folder per class.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from sklearn_cnn.datasets import load_images
    >>> folder = Path(tempfile.mkdtemp())
    >>> for i in range(3):
    ...     Image.new("L", (10, 10)).save(folder / f"{i}.png")
    >>> images = load_images(folder, image_size=8)
    >>> images.data.shape
    (3, 8, 8, 3)
    >>> [Path(name).name for name in images.filenames]
    ['0.png', '1.png', '2.png']
    >>> load_images(folder, paths_only=True).data.shape
    (3,)
    """
    size = check_image_size(image_size, allow_none=True)
    _check_loading_options(n_jobs, verbose)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = []
    for path in paths:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"No image file or folder at {path!r}.")
        files += _files_in(path)
    if not files:
        raise ValueError(
            f"Found no images in {', '.join(map(repr, map(os.fspath, paths)))}; "
            f"expected files ending in {', '.join(IMAGE_EXTENSIONS)}."
        )
    if paths_only:
        filenames = np.asarray(files, dtype=str)
        return Bunch(data=filenames, filenames=filenames, skipped=[])
    decoded = _decode_all(files, size, n_jobs, verbose)
    skipped = report_unreadable(files, decoded, strict, where="the given paths")
    kept = [i for i, result in enumerate(decoded) if not isinstance(result, str)]
    if not kept:
        raise ValueError(
            f"None of the {len(files)} image file(s) could be read; the first one, "
            f"{files[0]!r}, failed with {decoded[0]}."
        )
    images = [decoded[i] for i in kept]
    _check_same_size(images, "the given images")
    return Bunch(
        data=np.stack(images),
        filenames=np.asarray([files[i] for i in kept], dtype=str),
        skipped=skipped,
    )
