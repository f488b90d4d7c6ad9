"""The one inference loop: prediction, feature extraction and the layer trace.

One loop over the package's one ``DataLoader``, one autocast helper
(``utils/_runtime.autocast``) and one out-of-memory rule: a CUDA
out-of-memory error halves the number of images per forward pass for the rest
of the call (down to one image) and carries on. The loop reads the fitted
network and changes nothing in it, so any number of threads may run it on one
model at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ._sources import ImageSource, LabelledImages, batch_loader

# Stored pixels read at once by the inference loop (at most, unless one forward
# pass's images take more): 4 MiB is about 1,300 images of 32x32x3 uint8.
_READ_BYTES = 4 * 2**20


def network_outputs(
    module: torch.nn.Module,
    source: ImageSource,
    settings,
    *,
    device: torch.device,
    batch_size: int,
    forward: Callable | None = None,
    views: Callable | None = None,
) -> np.ndarray:
    """``forward(module, images)`` for every image of ``source``, as float32 numpy.

    Parameters
    ----------
    module : torch.nn.Module
        The fitted network, in evaluation mode.
    source : ImageSource
        The images, read batch by batch.
    settings : PredictionSettings
        The memory format and autocast dtype fixed at fit.
    device : torch.device
        Where ``module`` lives.
    batch_size : int
        Images per forward pass (the training batch size: larger inference
        batches measured slower on CPUs, whose caches they overflow).
    forward : callable, default=None
        ``forward(module, images) -> Tensor``; None calls ``module(images)``.
    views : callable, default=None
        Test-time augmentation (``_tta.TestTimeViews``): ``views(images,
        value_range)`` stacks the views of a float batch along the batch
        dimension, and all of them go through the network in one forward pass.
        None: the images alone.

    Returns
    -------
    outputs : ndarray of shape (n_images, ...), or (n_images, n_views, ...)
        with ``views``.
    """
    forward = forward or _call
    device = torch.device(device)
    loader = batch_loader(
        LabelledImages(source, device=device),
        batch_size=images_per_read(source, batch_size),
        shuffle=False,
    )
    # The out-of-memory rule: halve the images per forward pass and keep that
    # size for the rest of the call, down to one image.
    limit = batch_size
    outputs = []
    for batch, _ in loader:
        start = 0
        while start < len(batch):
            chunk = batch[start : start + limit]
            try:
                outputs.append(
                    _outputs(module, chunk, settings, device, forward, views)
                )
            except torch.cuda.OutOfMemoryError:
                if limit == 1:
                    raise
                limit = max(1, limit // 2)
                torch.cuda.empty_cache()
                continue
            start += len(chunk)
    return np.concatenate(outputs)


def images_per_read(source: ImageSource, batch_size: int) -> int:
    """How many images the loop reads at once: whole forward passes' worth.

    Each read costs the loader's bookkeeping, which at small images and batches
    weighs as much as the forward pass; reading about ``_READ_BYTES`` of stored
    pixels at a time pays it once for several passes. Always a multiple of
    ``batch_size``, so that the forward passes (and so the outputs) are the
    same as one read per pass.
    """
    height, width, channels = source.image_shape
    image_bytes = height * width * channels * np.dtype(source.dtype).itemsize
    return batch_size * max(1, _READ_BYTES // (batch_size * image_bytes))


def _call(module, images):
    return module(images)


def _outputs(module, batch, settings, device, forward, views) -> np.ndarray:
    with torch.inference_mode():
        # The preparer follows the stored images' dtype (uint8 is scaled).
        preparer = settings.preparer(batch)
        if views is not None:
            value_range = 255.0 if batch.dtype == torch.uint8 else 1.0
            batch = views(batch.to(torch.float32), value_range)
        images = preparer(batch, training=False)
        with settings.autocast(device):
            outputs = forward(module, images)
    outputs = outputs.float().cpu().numpy()
    if views is None:
        return outputs
    # View v of image i is row v * n + i: (n_views, n, ...) -> (n, n_views, ...).
    per_view = outputs.reshape(views.n_views, -1, *outputs.shape[1:])
    return np.swapaxes(per_view, 0, 1)
