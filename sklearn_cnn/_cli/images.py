"""Image files for the sub-commands: which models read them, and which can be read.

A folder is handed to the classifier as file paths, which it decodes batch by
batch (see :ref:`large_data`), so that the command never holds the decoded
images of a whole folder. Only the few images a trace or a plot shows are
decoded here.
"""

from __future__ import annotations


def _final_classifier(model):
    return model.steps[-1][1] if hasattr(model, "steps") else model


def reads_files(model) -> bool:
    """True when ``model`` takes image files: a CNNImageClassifier or
    CNNImageRegressor, bare or after
    augmenters only (which pass files on). A step that needs pixels, such as the
    ImageScaler of a model trained on the embedded data, makes it False.
    """
    from sklearn_cnn._estimator import CNNImageEstimator
    from sklearn_cnn.augmentation import BaseAugmenter

    steps = [step for _, step in model.steps[:-1]] if hasattr(model, "steps") else []
    return isinstance(_final_classifier(model), CNNImageEstimator) and all(
        isinstance(step, BaseAugmenter) for step in steps
    )


def decode_at_fitted_size(model, requested) -> None:
    """Have the model's classifier decode files at ``requested`` or its fitted size.

    A classifier fitted with ``image_size=None`` reads files at their own size,
    which then must be the fitted one; with an explicit size, any file is resized.
    """
    classifier = _final_classifier(model)
    if requested is not None:
        classifier.set_params(image_size=tuple(requested))
    elif classifier.image_size is None:
        classifier.set_params(image_size=tuple(classifier.image_shape_[:2]))


def _open_error(path: str) -> str | None:
    """Why ``path`` cannot be opened as an image, or None. Reads the header only."""
    from PIL import Image

    from ..datasets._folder import FILE_ERRORS

    try:
        with Image.open(path):
            return None
    except FILE_ERRORS as error:
        return f"{type(error).__name__}: {error}"


def _open_errors(paths: list[str]) -> list[str | None]:
    """:func:`_open_error` of each path, in threads."""
    from ..utils._runtime import map_in_threads

    return map_in_threads(_open_error, paths)


def readable(paths, *labels, where: str):
    """The files of ``paths`` (and their ``labels``) that open as images.

    The others are skipped with one warning that names them, as
    :func:`~sklearn_cnn.datasets.load_image_folder` skips files it cannot
    decode. Only the headers are read.
    """
    import numpy as np

    # Python strings, not NumPy's: messages that name a file show it plainly.
    paths = np.asarray([str(path) for path in paths], dtype=object)
    errors = _open_errors(list(paths))
    skipped = [(path, error) for path, error in zip(paths, errors) if error]
    if len(skipped) == len(paths):
        from .common import CommandError

        path, error = skipped[0]
        raise CommandError(
            f"none of the {len(paths)} image file(s) in {where} could be read; the "
            f"first one, {path!r}, failed with {error}"
        )
    from sklearn_cnn.datasets._folder import report_unreadable

    report_unreadable(paths, errors, strict=False, where=where, stacklevel=3)
    kept = np.asarray([error is None for error in errors])
    if not labels:
        return paths[kept]
    return (paths[kept], *(np.asarray(label)[kept] for label in labels))


def shown_images(model, X, y, *, files: bool):
    """``(estimator, images, labels)`` for the layer trace and the prediction grid.

    With ``files``, ``X`` holds a few paths: they are decoded here, at the fitted
    size and channels, exactly as the classifier reads them, and the classifier
    alone predicts them (the augmenters before it leave images unchanged at
    prediction, and have seen no pixels to check arrays against).
    """
    if not files:
        return model, X, y
    from sklearn_cnn.datasets import load_images

    from .models import input_size, to_channels

    classifier = _final_classifier(model)
    size, channels = input_size(model, classifier.image_size)
    images = load_images(list(X), image_size=size, strict=True, verbose=False)
    return classifier, to_channels(images.data, channels), y
