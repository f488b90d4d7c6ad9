"""Devices, numeric precision and seeds: runtime choices made in one place."""

from __future__ import annotations

import contextlib
import functools
import secrets
from collections.abc import Iterator

import numpy as np
import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> the current CUDA device when there is one, else the CPU.

    'cuda' without an index means the current device, so a Dask or joblib
    worker restricted with ``CUDA_VISIBLE_DEVICES`` uses only the GPU it was given.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this "
            "machine. Use device='auto' or device='cpu'."
        )
    return resolved


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU executes bfloat16 matrix work natively (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None for plain float32."""
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    # 'auto': bfloat16 where the hardware runs it natively, float32 elsewhere.
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return None


def resolve_seed(random_state) -> int:
    """An integer seed from ``random_state`` without touching global random state.

    ``None`` draws fresh entropy from the operating system rather than from
    NumPy's global generator, so that fitting never changes the caller's
    ``np.random`` state.
    """
    if random_state is None:
        return secrets.randbits(63)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    return int(random_state)


def derive_seeds(seed: int, n_seeds: int) -> list[int]:
    """Independent child seeds for the separate random streams of one fit."""
    children = np.random.SeedSequence(seed).spawn(n_seeds)
    return [int(child.generate_state(1, dtype=np.uint64)[0] >> 1) for child in children]


@contextlib.contextmanager
def isolated_torch_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch inside the block and restore the caller's random state after it."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
