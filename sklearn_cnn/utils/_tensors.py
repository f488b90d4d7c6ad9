"""Conversions between numpy image batches and torch tensors, for transform."""

from __future__ import annotations

import numpy as np
import torch


def images_to_tensor(X_nchw: np.ndarray) -> torch.Tensor:
    """A float32 copy of a channels-first batch, so the caller's data is kept."""
    return torch.from_numpy(np.array(X_nchw, dtype=np.float32, order="C", copy=True))


def tensor_to_images(images: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """Back to numpy in ``dtype``; integer types are rounded and clipped to range."""
    array = images.detach().cpu().numpy()
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = np.clip(np.rint(array), info.min, info.max)
    return array.astype(dtype, copy=False)
