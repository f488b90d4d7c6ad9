"""What the sub-commands share: errors, stage printing and warnings."""

from __future__ import annotations

import contextlib
import warnings

PROGRAM = "sklearn-cnn"


class CommandError(Exception):
    """A problem with the user's input: reported as one line, no traceback."""


class CommandInterrupted(BaseException):
    """Ctrl-C. A BaseException, as KeyboardInterrupt is, but no library catches it.

    skorch catches KeyboardInterrupt in ``fit`` to stop training early and keep
    the model; the command stops instead, so it raises this from its own SIGINT
    handler.
    """


def stage(number: int, title: str, *details: str, total: int = 6) -> None:
    """A numbered stage of a sub-command: ``[number/total] title``, then details."""
    print(f"[{number}/{total}] {title}")
    for detail in details:
        print(f"      {detail}")


def indent(text: str, prefix: str = "      ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def class_counts(y) -> str:
    import numpy as np

    labels, counts = np.unique(y, return_counts=True)
    return ", ".join(f"{label} {count}" for label, count in zip(labels, counts))


def shape(array) -> str:
    return f"{tuple(array.shape)} {array.dtype}"


def one_line(error: BaseException) -> str:
    """The error's message on one line; the class name only where it adds meaning."""
    text = " ".join(str(error).split())
    if isinstance(error, KeyError) and len(error.args) == 1:
        text = str(error.args[0])
    if isinstance(error, (CommandError, ValueError, OSError, ImportError)):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextlib.contextmanager
def short_warnings():
    """Warnings as ``sklearn-cnn: warning: ...``, without Python's source lines."""
    original = warnings.formatwarning

    def format_warning(message, category, filename, lineno, line=None):
        return f"{PROGRAM}: warning: {message}\n"

    warnings.formatwarning = format_warning
    try:
        yield
    finally:
        warnings.formatwarning = original
