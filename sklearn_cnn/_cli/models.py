"""Model files: written whole or not at all, and read with a plain error if not."""

from __future__ import annotations

from pathlib import Path

from .common import PROGRAM, CommandError, one_line

FORMATS = ("safetensors", "pickle")
SUFFIXES = {"safetensors": ".safetensors", "pickle": ".pkl"}
# How the files joblib.load reads begin: a pickle (protocol 2 or later), or a
# pickle compressed by joblib with zlib, gzip, bz2 or xz.
_PICKLE_STARTS = (b"\x80", b"\x78", b"\x1f\x8b", b"BZh", b"\xfd7zXZ")


def check_output_path(path: Path) -> None:
    """A path a model file can be written to, checked before any work."""
    if path.is_dir():
        raise CommandError(
            f"--output {str(path)!r} is a folder, but a model is saved as one "
            "file; give a file path such as model.safetensors"
        )
    parent = next((folder for folder in path.parents if folder.exists()), None)
    if parent is not None and not parent.is_dir():
        raise CommandError(
            f"--output {str(path)!r} cannot be written: {str(parent)!r} is a file, "
            "not a folder"
        )


def save_model(model, path: Path, model_format: str) -> None:
    """Write ``model`` to exactly ``path``, replacing it only once complete."""
    check_output_path(path)
    if model_format == "safetensors":
        from sklearn_cnn import save_model

        save_model(model, path)
        return
    import joblib

    from sklearn_cnn.utils._io import write_atomically

    write_atomically(path, lambda stream: joblib.dump(model, stream))


def _file_format(path: Path) -> str | None:
    """'safetensors', 'pickle', or None for a file that is neither."""
    with open(path, "rb") as file:
        start = file.read(9)
    # safetensors: 8 bytes of header length, then the JSON header.
    if len(start) == 9 and start[8:9] == b"{":
        return "safetensors"
    if start.startswith(_PICKLE_STARTS):
        return "pickle"
    return None


def load_model(path: str):
    """A fitted model saved by ``train``, or a one-line error saying why not."""
    model_path = Path(path)
    if not model_path.exists():
        raise CommandError(f"model {path!r} does not exist")
    if model_path.is_dir():
        raise CommandError(
            f"model {path!r} is a folder; expected a model file saved by "
            f"'{PROGRAM} train'"
        )
    model_format = _file_format(model_path)
    if model_format is None:
        raise CommandError(
            f"{path!r} is not a model file {PROGRAM} can read; expected a "
            f"safetensors or pickle file saved by '{PROGRAM} train'"
        )
    try:
        if model_format == "safetensors":
            from sklearn_cnn import load_model

            model = load_model(model_path)
        else:
            import joblib

            model = joblib.load(model_path)
    except Exception as error:
        raise CommandError(
            f"cannot read model {path!r}, a {model_format} file: {one_line(error)}"
        ) from error
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    fitted = hasattr(final, "classes_") or hasattr(final, "n_outputs_")
    if not (hasattr(model, "predict") and fitted):
        raise CommandError(
            f"model {path!r} holds a {type(model).__name__}, not a fitted classifier "
            f"or regressor saved by '{PROGRAM} train'"
        )
    return model


def model_image_shape(model) -> tuple[int, int, int] | None:
    """``(height, width, channels)`` of the images the model takes, if it says."""
    steps = [step for _, step in model.steps] if hasattr(model, "steps") else [model]
    for step in steps:
        shape = getattr(step, "image_shape_", None)
        if shape is not None:
            return tuple(shape)
    return None


def input_size(model, requested) -> tuple[tuple[int, int] | None, int]:
    """The size to load images at, and the model's number of channels."""
    shape = model_image_shape(model)
    if shape is None:
        return requested, 3
    height, width, channels = shape
    return requested or (height, width), channels


def to_channels(X, channels: int):
    """RGB images as the model's channels: grayscale models get luminance."""
    import numpy as np

    if channels == 1:
        gray = X @ np.array([0.299, 0.587, 0.114])
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8)[..., np.newaxis]
    return X
