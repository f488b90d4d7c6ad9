"""Checkpoints: the training state after every epoch, and the key that finds it again.

A checkpoint's file name is a digest of the estimator's parameters and the
training data, built from *values*: numbers and strings as they are, objects by
their class and their own parameters (``get_params``), random states by their
state, networks by their weights. Never from ``repr()``, which for most objects
holds a memory address, so that a second process would never find the file.
"""

from __future__ import annotations

import hashlib
import inspect
import pickle
from numbers import Number
from pathlib import Path

import numpy as np
import torch
from skorch.callbacks import Callback
from skorch.history import History

from .utils._io import write_atomically

# Parameters that do not change what is trained.
_IGNORED = frozenset(
    {"epochs", "verbose", "checkpoint", "warm_start", "device", "accelerator"}
)


def checkpoint_path(estimator, source, targets, sample_weight) -> Path | None:
    """One file per combination of parameters and data (None: no checkpoints)."""
    if estimator.checkpoint is None:
        return None
    digest = hashlib.sha256()
    params = estimator.get_params(deep=False)
    for name in sorted(params):
        if name not in _IGNORED:
            digest.update(name.encode() + b"=")
            _update(digest, params[name])
    source.update_digest(digest)
    digest.update(np.ascontiguousarray(targets).data)
    if sample_weight is not None:
        digest.update(np.ascontiguousarray(sample_weight).data)
    return Path(estimator.checkpoint) / f"cnn-{digest.hexdigest()[:20]}.pt"


def _update(digest, value) -> None:
    """Feed ``value`` to ``digest`` by what it is, never by where it lives."""
    if value is None or isinstance(value, (bool, Number, str, bytes)):
        digest.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}[{len(value)}](".encode())
        for item in value:
            _update(digest, item)
        digest.update(b")")
    elif isinstance(value, dict):
        digest.update(b"{")
        for key in sorted(value, key=str):
            _update(digest, key)
            _update(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, np.ndarray):
        digest.update(repr((value.shape, str(value.dtype))).encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, np.random.RandomState):
        _, keys, position, has_gauss, gauss = value.get_state()
        digest.update(b"RandomState")
        digest.update(keys.tobytes() + repr((position, has_gauss, gauss)).encode())
    elif isinstance(value, (torch.device, torch.dtype)):
        digest.update(str(value).encode())
    elif isinstance(value, torch.nn.Module):
        digest.update(_qualified_name(type(value)).encode())
        for name, tensor in value.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    elif inspect.isclass(value) or inspect.isroutine(value):
        digest.update(_qualified_name(value).encode())
    elif hasattr(value, "get_params"):
        digest.update(_qualified_name(type(value)).encode())
        _update(
            digest,
            value.get_params(deep=False) if _takes_deep(value) else value.get_params(),
        )
    else:
        try:
            digest.update(_qualified_name(type(value)).encode() + pickle.dumps(value))
        except Exception:
            # Not a value we can read: its class alone (a checkpoint of the same
            # class of object is taken as the same).
            digest.update(_qualified_name(type(value)).encode())


def _takes_deep(value) -> bool:
    try:
        return "deep" in inspect.signature(value.get_params).parameters
    except (TypeError, ValueError):
        return False


def _qualified_name(value) -> str:
    return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}"


class TrainingCheckpoint(Callback):
    """Saves the training state after every epoch, atomically, to one file.

    The file holds the network's and the optimizer's state and the history
    (and, with ``weight_averaging``, the weights' average beside the weights
    training goes on from), as
    tensors and plain containers: it loads with ``torch.load(weights_only=True)``,
    which runs no code from the file.

    skorch's ``Checkpoint`` and ``LoadInitState`` do not fit: ``Checkpoint``
    writes the parameters, the optimizer state and the history to separate
    files, each in place, so an interruption can leave a half-written file or
    the weights of one epoch beside the optimizer of another; and
    ``LoadInitState`` restores in ``on_train_begin``, after the estimator has
    chosen how many epochs to run and which random streams to draw from, which
    both depend on how many epochs the checkpoint already holds.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_epoch_end(self, net, **kwargs):
        accelerator = getattr(net, "accelerator", None)
        if accelerator is not None and not accelerator.is_main_process:
            # Every process holds the same state: one of them writes it.
            return
        state = {
            "module": net.module_.state_dict(),
            "optimizer": net.optimizer_.state_dict(),
            "history": _plain_history(net.history),
        }
        averaging = dict(getattr(net, "callbacks_", ())).get("weight_averaging")
        if averaging is not None:
            # The weights training goes on from, and their average apart.
            state.update(averaging.checkpoint_state(net))
        write_atomically(self.path, lambda stream: torch.save(state, stream))

    @staticmethod
    def load(path: Path) -> dict:
        return torch.load(path, map_location="cpu", weights_only=True)

    @staticmethod
    def restore(net, state: dict, averaging=None) -> None:
        """Put a loaded training state back into an initialized net.

        ``averaging``, the net's weight-averaging callback, gets the average
        back; a checkpoint written without averaging starts it from the
        checkpoint's weights.
        """
        net.module_.load_state_dict(state["module"])
        net.optimizer_.load_state_dict(state["optimizer"])
        net.history = History(state["history"])
        if averaging is not None and "average" in state:
            averaging.restore(net, state)


def _plain_history(history) -> list[dict]:
    """The history as builtin types only (what ``weights_only`` loading allows)."""
    plain = []
    for row in history:
        plain.append(
            {
                key: (
                    [{k: _plain(v) for k, v in batch.items()} for batch in value]
                    if key == "batches"
                    else _plain(value)
                )
                for key, value in row.items()
            }
        )
    return plain


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
