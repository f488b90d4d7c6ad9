"""Writing files atomically: models, training checkpoints and command outputs."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path, content: bytes | Callable[[BinaryIO], object]) -> Path:
    """Write a file so that a failure mid-write leaves any previous file whole.

    The data goes to a temporary file next to ``path``, is flushed to disk, and
    the temporary file then replaces ``path`` in one step (``os.replace``): a
    reader sees the old file or the new one, never half of one. Missing parent
    folders are created. The file gets the mode that ``open(path, "w")`` would
    give a new file (0o666 less the umask), not the temporary file's 0o600.

    Parameters
    ----------
    path : str or path-like
        The file to write.
    content : bytes or callable
        The bytes to write, or a function that writes them into the binary
        stream it is given, such as ``lambda stream: torch.save(state, stream)``.

    Returns
    -------
    path : pathlib.Path
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            if isinstance(content, bytes):
                stream.write(content)
            else:
                content(stream)
            stream.flush()
            if hasattr(os, "fchmod"):  # not on Windows, whose files have no modes
                os.fchmod(stream.fileno(), 0o666 & ~_umask())
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return path


def _umask() -> int:
    """The process's umask, read without changing it where the system allows.

    ``os.umask`` can only be read by setting it, which another thread creating
    a file at that moment would see; Linux reports it in ``/proc/self/status``.
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
