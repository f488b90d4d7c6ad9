"""The command's argument parser class and the types of its option values."""

from __future__ import annotations

import argparse

AUGMENTATIONS = ("flip", "rotate")


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser that takes only whole option names and reports its own errors.

    ``allow_abbrev=False``: ``--epoch 2`` is an error, not ``--epochs 2``. And a
    flag that a sub-command does not know is reported by the sub-command, with
    its usage; argparse would hand it up to the top-level parser, which prints
    the usage of ``sklearn-cnn`` itself.
    """

    def __init__(self, *args, allow_abbrev: bool = False, **kwargs):
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def image_size(text: str) -> tuple[int, int]:
    """``64`` or ``64x48`` (height x width)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        sides = [int(part) for part in parts]
    except ValueError:
        sides = []
    if len(sides) == 1:
        sides *= 2
    if len(sides) != 2 or min(sides) < 1:
        raise argparse.ArgumentTypeError(
            "expected a positive size such as 64 or 64x48 (height x width), "
            f"got {text!r}"
        )
    return sides[0], sides[1]


def share_or_count(text: str) -> float | int:
    """A share of the data (0.2) or a number of images (200)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if 0 < value < 1:
        return value
    if value >= 1 and value.is_integer():
        return int(value)
    raise argparse.ArgumentTypeError(
        f"expected a share between 0 and 1 (such as 0.2) or a number of test "
        f"images (such as 200), got {text!r}"
    )


def share(text: str) -> float:
    """A share of the data strictly between 0 and 1, such as 0.2."""
    value = _number(text, float, 0, 1, "a share between 0 and 1, such as 0.2")
    if value in (0, 1):
        raise argparse.ArgumentTypeError(
            f"expected a share between 0 and 1, such as 0.2, got {text!r}"
        )
    return value


def _number(text: str, convert, low, high, expected: str):
    """``convert(text)`` if it lies in ``[low, high]``; else a usage error."""
    try:
        value = convert(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high or value != value:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, 1, float("inf"), "a positive integer")


def seed(text: str) -> int:
    """The seeds scikit-learn accepts: 0 to 2**32 - 1."""
    return _number(text, int, 0, 2**32 - 1, "an integer from 0 to 4294967295")


def positive_float(text: str) -> float:
    value = _number(text, float, 0, float("inf"), "a positive number")
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def rate(text: str) -> float | str:
    """A learning rate, or ``auto`` for the range test's."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive number or auto, got {text!r}"
        ) from None


def smoothing(text: str) -> float:
    """A label smoothing in [0, 1)."""
    value = _number(text, float, 0, 1, "a share from 0 up to 1 (not 1), such as 0.1")
    if value == 1:
        raise argparse.ArgumentTypeError(
            f"expected a share from 0 up to 1 (not 1), such as 0.1, got {text!r}"
        )
    return value


def alpha(text: str) -> float:
    """A mixup or cutmix alpha: 0 (off) or more."""
    return _number(text, float, 0, float("inf"), "0 (off) or a positive number")


def decay(text: str) -> float:
    """An EMA decay strictly between 0 and 1."""
    value = _number(text, float, 0, 1, "a decay between 0 and 1, such as 0.999")
    if value in (0, 1):
        raise argparse.ArgumentTypeError(
            f"expected a decay between 0 and 1, such as 0.999, got {text!r}"
        )
    return value


def degrees(text: str) -> float:
    return _number(text, float, 0, 180, "an angle from 0 to 180 degrees")


def filters(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            "expected filters per block separated by commas, such as 32,64, "
            f"got {text!r}"
        )
    return values


def augmentations(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.lower().split(",") if part.strip())
    if names in ((), ("none",)):
        return ()
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown augmentation {unknown[0]!r}: expected 'none' or a "
            f"comma-separated list of {', '.join(AUGMENTATIONS)}"
        )
    return tuple(dict.fromkeys(names))


def add_image_size_option(parser) -> None:
    """``--image-size`` of the commands that apply a fitted model."""
    parser.add_argument(
        "--image-size",
        type=image_size,
        default=None,
        metavar="SIZE",
        help="resize images to SIZE (default: the size the model was trained on)",
    )
