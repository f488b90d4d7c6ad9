"""The one place that knows skorch's internals.

``CNNImageClassifier`` hands this module validated channels-first images and
encoded labels; here they become a skorch ``NeuralNetClassifier`` whose data path
avoids per-image Python: images stay in their original dtype (uint8 stays uint8)
until a batch is cut from a tensor by index, and the batch is then moved to the
device, converted to float32, augmented and scaled there, one batch at a time.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import (
    Callback,
    EarlyStopping,
    EpochTimer,
    Freezer,
    LRScheduler,
    PassthroughScoring,
    PrintLog,
    Unfreezer,
)
from skorch.dataset import unpack_data
from skorch.history import History
from torch.nn.parameter import is_lazy

from .datasets._folder import read_image
from .utils._io import write_atomically
from .utils._runtime import in_worker

# Keep a whole training set on the GPU when it takes at most this share of free memory.
_GPU_RESIDENT_FRACTION = 0.25
# Threads decoding image files; more rarely help a training step that wants cores.
_MAX_DECODE_THREADS = 8


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite."""


class _EarlyStop(Exception):
    """Raised by our early stopping, so a real Ctrl-C is never mistaken for it."""


class ImageData:
    """Images and encoded labels as tensors, cut into batches by index.

    Parameters
    ----------
    images : Tensor of shape (n_samples, channels, height, width)
        Raw images, possibly a strided view of channels-last memory, in the
        caller's dtype, on the CPU or already on the training device.
    y : Tensor of shape (n_samples,) or None
        Encoded labels (int64).
    sample_weight : Tensor of shape (n_samples,) or None
        Weights of the images in the loss (float32); None weighs all alike.
    """

    def __init__(
        self,
        images: torch.Tensor,
        y: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ):
        self.images = images
        self.y = y
        self.sample_weight = sample_weight

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: np.ndarray) -> ImageData:
        index = torch.as_tensor(indices, dtype=torch.long)
        return ImageData(*(_take(tensor, index) for tensor in self._tensors()))

    def _tensors(self) -> tuple:
        return (self.images, self.y, self.sample_weight)

    def images_at(self, index) -> torch.Tensor:
        """The images of ``index`` (a slice or indices)."""
        return _take(self.images, index)

    def target(self, index) -> torch.Tensor | WeightedTarget | None:
        """The labels of ``index`` (a slice or indices), with their weights if any."""
        if self.y is None:
            return None
        labels = _take(self.y, index)
        if self.sample_weight is None:
            return labels
        return WeightedTarget(labels, _take(self.sample_weight, index))

    @classmethod
    def from_numpy(
        cls,
        X_nchw: np.ndarray,
        y: np.ndarray | None,
        device: torch.device,
        sample_weight: np.ndarray | None = None,
    ) -> ImageData:
        """Wrap numpy data without copying it (except onto a GPU, where it pays)."""
        images = _as_tensor(X_nchw)
        labels = None if y is None else torch.as_tensor(y, dtype=torch.long)
        weights = None
        if sample_weight is not None:
            weights = torch.as_tensor(sample_weight, dtype=torch.float32)
        if device.type == "cuda" and _fits_on_gpu(images, device):
            return cls(*(_to(tensor, device) for tensor in (images, labels, weights)))
        if device.type == "cuda":
            images = images.pin_memory()
        return cls(images, labels, weights)


def decode_threads() -> int:
    """Threads decoding image files: one per CPU this process may use, at most 8."""
    if hasattr(os, "sched_getaffinity"):
        n_cpus = len(os.sched_getaffinity(0))
    else:
        n_cpus = os.cpu_count() or 1
    return max(1, min(_MAX_DECODE_THREADS, n_cpus))


class DecodedCache:
    """Decoded images kept after their first decoding, for the later epochs.

    The array is allocated at once but the operating system gives it memory only
    as images are written, so an epoch that stops early costs what it decoded.
    """

    def __init__(self, n_images: int, image_shape: tuple[int, int, int]):
        self.images = np.empty((n_images, *image_shape), dtype=np.uint8)
        self.filled = np.zeros(n_images, dtype=bool)


class ImageFiles:
    """Image files with encoded labels, decoded batch by batch: :class:`ImageData`
    for images that stay on disk.

    Parameters
    ----------
    paths : ndarray of shape (n_samples,), dtype object
        The image files, as str.
    image_shape : tuple of int
        ``(height, width, channels)`` every file is decoded to; channels is 1
        (gray levels) or 3 (RGB).
    resize : bool
        True resizes every image to ``image_shape``; False requires the files to
        have that size already.
    y : Tensor of shape (n_samples,) or None
        Encoded labels (int64).
    sample_weight : Tensor of shape (n_samples,) or None
        Weights of the images in the loss (float32).
    cache : DecodedCache or None
        Where decoded images are kept, indexed by ``positions``.
    positions : ndarray of shape (n_samples,) or None
        The place of each file in ``cache`` (subsets share their parent's cache).
    """

    # What the files decode to, as an array of them would hold.
    dtype = np.dtype(np.uint8)

    def __init__(
        self,
        paths: np.ndarray,
        *,
        image_shape: tuple[int, int, int],
        resize: bool,
        y: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
        cache: DecodedCache | None = None,
        positions: np.ndarray | None = None,
    ):
        self.paths = paths
        self.image_shape = tuple(image_shape)
        self.resize = resize
        self.y = y
        self.sample_weight = sample_weight
        self.cache = cache
        self.positions = np.arange(len(paths)) if positions is None else positions

    def __len__(self) -> int:
        return len(self.paths)

    # Labels and weights of a batch, exactly as for arrays.
    target = ImageData.target

    def subset(self, indices) -> ImageFiles:
        indices = np.asarray(indices, dtype=np.int64)
        index = torch.as_tensor(indices)
        return ImageFiles(
            self.paths[indices],
            image_shape=self.image_shape,
            resize=self.resize,
            y=_take(self.y, index),
            sample_weight=_take(self.sample_weight, index),
            cache=self.cache,
            positions=self.positions[indices],
        )

    __getitem__ = subset

    def labelled(
        self, y: np.ndarray, sample_weight: np.ndarray | None, *, cache: bool
    ) -> ImageFiles:
        """The same files with encoded labels and weights, and a cache if asked."""
        return ImageFiles(
            self.paths,
            image_shape=self.image_shape,
            resize=self.resize,
            y=torch.as_tensor(y, dtype=torch.long),
            sample_weight=(
                None
                if sample_weight is None
                else torch.as_tensor(sample_weight, dtype=torch.float32)
            ),
            cache=DecodedCache(len(self), self.image_shape) if cache else None,
        )

    def images_at(self, index, *, pin_memory: bool = False) -> torch.Tensor:
        """Decode the files of ``index`` into a uint8 (n, C, H, W) batch.

        The batch is a channels-first view of channels-last memory, as arrays
        give; numpy memory (seen by ``tracemalloc``) unless ``pin_memory``.
        """
        indices = np.arange(len(self))[index] if isinstance(index, slice) else index
        indices = np.asarray(indices, dtype=np.int64)
        shape = (len(indices), *self.image_shape)
        if pin_memory:
            batch = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
            self._decode(indices, batch.numpy())
        else:
            pixels = np.empty(shape, dtype=np.uint8)
            self._decode(indices, pixels)
            batch = torch.from_numpy(pixels)
        return batch.permute(0, 3, 1, 2)

    def _decode(self, indices: np.ndarray, out: np.ndarray) -> None:
        height, width, channels = self.image_shape
        cache = self.cache
        for row, index in enumerate(indices):
            position = self.positions[index]
            if cache is not None and cache.filled[position]:
                out[row] = cache.images[position]
                continue
            path = self.paths[index]
            try:
                image = read_image(
                    path,
                    (height, width) if self.resize else None,
                    grayscale=channels == 1,
                )
            except Exception as error:
                # Its header opened when the call began: its pixels are damaged,
                # or it was moved or changed since.
                raise OSError(
                    f"Cannot decode image file {path!r}: {type(error).__name__}: "
                    f"{error}. Its header could be read when this call began: the "
                    "file is damaged (truncated pixels, say) or was moved or changed "
                    "since; image files must stay in place, unchanged, until fit or "
                    "predict returns."
                ) from error
            if image.shape[:2] != (height, width):
                raise ValueError(
                    f"Image file {path!r} has size (height, width) = "
                    f"{image.shape[:2]}, but the images are {(height, width)}. "
                    "Pass image_size=(height, width) to CNNImageClassifier to "
                    "resize every file."
                )
            out[row] = image.reshape(height, width, channels)
            if cache is not None:
                cache.images[position] = out[row]
                cache.filled[position] = True


class WeightedTarget(NamedTuple):
    """A batch's labels with the weights of its images in the loss."""

    labels: torch.Tensor
    weights: torch.Tensor

    def to(self, device, non_blocking=False) -> WeightedTarget:
        return WeightedTarget(
            self.labels.to(device, non_blocking=non_blocking),
            self.weights.to(device, non_blocking=non_blocking),
        )


def _take(tensor: torch.Tensor | None, index) -> torch.Tensor | None:
    if tensor is None:
        return None
    if isinstance(index, torch.Tensor):
        index = index.to(tensor.device)
    return tensor[index]


def _to(tensor: torch.Tensor | None, device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)


def _as_tensor(X: np.ndarray) -> torch.Tensor:
    """A tensor sharing memory with ``X`` wherever torch allows it."""
    if any(stride < 0 for stride in X.strides) or not X.dtype.isnative:
        X = np.ascontiguousarray(X)
    if not X.flags.writeable:
        # Read-only data (joblib memmaps) is only ever read here: share it rather
        # than copying the whole set; torch warns about writes we never make.
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(X)
    return torch.from_numpy(X)


def _fits_on_gpu(images: torch.Tensor, device: torch.device) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return images.numel() * images.element_size() < _GPU_RESIDENT_FRACTION * free


class BatchIterator:
    """Batches of ``(images, labels)`` cut by index; reshuffled on every pass.

    In training, a last batch of a single image is merged into the one before it,
    because batch normalization cannot learn from one 1x1 image.
    """

    def __init__(
        self,
        data: ImageData,
        *,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None,
        device: torch.device,
        merge_singleton: bool,
    ):
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.device = device
        self.merge_singleton = merge_singleton

    def _bounds(self) -> list[tuple[int, int]]:
        n = len(self.data)
        starts = list(range(0, n, self.batch_size))
        bounds = [(start, min(start + self.batch_size, n)) for start in starts]
        if (
            self.merge_singleton
            and len(bounds) > 1
            and bounds[-1][1] - bounds[-1][0] == 1
        ):
            bounds[-2] = (bounds[-2][0], n)
            bounds.pop()
        return bounds

    def __len__(self) -> int:
        return len(self._bounds())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        order = None
        if self.shuffle:
            order = torch.randperm(len(self.data), generator=self.generator)
            order = order.to(self.data.images.device)
        non_blocking = self.device.type == "cuda"
        images = self.data.images
        pinned = non_blocking and images.device.type == "cpu" and images.is_pinned()
        for start, stop in self._bounds():
            index = slice(start, stop) if order is None else order[start:stop]
            if pinned and order is not None:
                # Gather into pinned memory, or the copy to the GPU would block.
                batch = torch.empty(
                    (len(index), *images.shape[1:]), dtype=images.dtype, pin_memory=True
                )
                torch.index_select(images, 0, index, out=batch)
            else:
                batch = _take(images, index)
            target = self.data.target(index)
            batch = batch.to(self.device, non_blocking=non_blocking)
            if target is not None:
                target = target.to(self.device, non_blocking=non_blocking)
            yield batch, target


class FileBatchIterator(BatchIterator):
    """:class:`BatchIterator` over :class:`ImageFiles`: same batches, decoded ahead.

    The same batches in the same order as over an array of the same images, but
    decoded from the files by a pool of threads: ``2 * n_threads`` batches are
    decoded ahead while the net trains on the current one, and no more, so memory
    does not grow with the number of files. Batches come out in order whichever
    thread finishes first. On CUDA they are decoded into pinned memory and copied
    without blocking.
    """

    def __init__(self, data: ImageFiles, *, n_threads: int | None = None, **kwargs):
        super().__init__(data, **kwargs)
        self.n_threads = decode_threads() if n_threads is None else n_threads

    def _order(self) -> torch.Tensor:
        if self.shuffle:
            return torch.randperm(len(self.data), generator=self.generator)
        return torch.arange(len(self.data))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        order = self._order().numpy()
        batches = [order[start:stop] for start, stop in self._bounds()]
        non_blocking = self.device.type == "cuda"
        executor = ThreadPoolExecutor(
            max_workers=self.n_threads, thread_name_prefix="sklearn_cnn-decode"
        )
        pending: deque = deque()

        def decode(indices):
            return self.data.images_at(indices, pin_memory=non_blocking)

        try:
            upcoming = iter(batches)
            for indices in itertools.islice(upcoming, 2 * self.n_threads):
                pending.append((indices, executor.submit(decode, indices)))
            while pending:
                indices, decoding = pending.popleft()
                images = decoding.result()
                following = next(upcoming, None)
                if following is not None:
                    pending.append((following, executor.submit(decode, following)))
                target = self.data.target(torch.as_tensor(indices))
                if target is not None:
                    target = target.to(self.device, non_blocking=non_blocking)
                yield images.to(self.device, non_blocking=non_blocking), target
        finally:
            # Stopped early (an error, early stopping): drop the queued batches.
            for _, decoding in pending:
                decoding.cancel()
            executor.shutdown(wait=True, cancel_futures=True)


class BatchPreparer:
    """Turns a raw batch into the network's input, on the training device.

    Order: float32; then, in training only, each augmenter; then each
    deterministic step that followed the augmenters in the Pipeline; then the
    0-255 -> 0-1 scaling when the images the classifier received were uint8; then
    the memory format.
    """

    def __init__(
        self,
        *,
        source_is_uint8: bool,
        scale_uint8: bool,
        augmenters: Sequence = (),
        post_steps: Sequence = (),
        channels_last: bool = False,
    ):
        self.source_is_uint8 = source_is_uint8
        self.scale_uint8 = scale_uint8
        self.augmenters = tuple(augmenters)
        self.post_steps = tuple(post_steps)
        self.channels_last = channels_last
        self.generator: torch.Generator | None = None

    def __call__(self, batch: torch.Tensor, *, training: bool) -> torch.Tensor:
        images = batch.to(torch.float32)
        if training and self.augmenters:
            value_range = 255.0 if self.source_is_uint8 else 1.0
            for augmenter in self.augmenters:
                images = augmenter.augment_batch(
                    images, generator=self.generator, value_range=value_range
                )
        # Deterministic steps that followed the augmenters apply to validation
        # batches too: those come from the same un-augmented source.
        for step in self.post_steps:
            images = step.transform_batch(images)
        if self.scale_uint8:
            images = images * (1.0 / 255.0)
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images


@dataclass(frozen=True)
class PredictionSettings:
    """How a fitted network turns stored images into its input; fixed at fit.

    A value, passed to :func:`predict_logits`: prediction never changes the
    fitted net, so several threads can predict with one model at once. Whether
    pixels are scaled from 0-255 follows the dtype of the images predicted on.
    """

    channels_last: bool
    autocast_dtype: torch.dtype | None

    def preparer(self, images: torch.Tensor) -> BatchPreparer:
        uint8 = images.dtype == torch.uint8
        return BatchPreparer(
            source_is_uint8=uint8, scale_uint8=uint8, channels_last=self.channels_last
        )

    def autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    def to_json(self) -> dict:
        dtype = self.autocast_dtype
        return {
            "channels_last": self.channels_last,
            "autocast_dtype": None if dtype is None else str(dtype).split(".")[-1],
        }

    @classmethod
    def from_json(cls, settings: dict) -> PredictionSettings:
        dtypes = {None: None, "bfloat16": torch.bfloat16, "float16": torch.float16}
        channels_last = settings.get("channels_last")
        autocast = settings.get("autocast_dtype")
        if not isinstance(channels_last, bool) or autocast not in dtypes:
            raise ValueError(
                "The prediction settings must hold a boolean channels_last and an "
                f"autocast_dtype in {sorted(dtypes, key=str)}; got {settings!r}."
            )
        return cls(channels_last, dtypes[autocast])


class _Accuracy(Callback):
    """Records train and validation accuracy per epoch from the batches' outputs.

    Counts stay on the device until the epoch ends: no sync per batch.
    """

    def on_epoch_begin(self, net, **kwargs):
        self.counts_ = {True: [0, 0], False: [0, 0]}

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        _, labels = unpack_data(batch)
        if labels is None or y_pred is None:
            return
        weights = None
        if isinstance(labels, WeightedTarget):
            labels, weights = labels
        hits = y_pred.argmax(dim=1) == labels
        correct, total = self.counts_[training]
        if weights is None:
            self.counts_[training] = [correct + hits.sum(), total + len(labels)]
        else:
            # Zero-weight images count for nothing, here as in the loss.
            self.counts_[training] = [
                correct + (hits * weights).sum(),
                total + weights.sum(),
            ]

    def on_epoch_end(self, net, **kwargs):
        for training, prefix in ((True, "train"), (False, "valid")):
            correct, total = self.counts_[training]
            if float(total) > 0:
                net.history.record(f"{prefix}_accuracy", float(correct) / float(total))
        # Counts left on the device would go into the pickle as CUDA tensors,
        # which a machine without CUDA cannot unpickle.
        del self.counts_


class _EpochTable(PrintLog):
    """skorch's epoch table: columns in reading order, colours on terminals only."""

    _ORDER = (
        "epoch",
        "train_loss",
        "train_accuracy",
        "valid_loss",
        "valid_accuracy",
    )

    def _sorted_keys(self, keys):
        keys = super()._sorted_keys(keys)
        first = [key for key in self._ORDER if key in keys]
        return first + [key for key in keys if key not in first]

    def format_row(self, row, key, color):
        if not sys.stdout.isatty():
            # Escape codes only clutter logs and captured output.
            row = {name: value for name, value in row.items() if name != f"{key}_best"}
        return super().format_row(row, key, color)


class _EpochProgressBar(Callback):
    """A tqdm bar over each epoch's batches, only in an interactive main process."""

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        from tqdm.auto import tqdm

        # Parallel fits (joblib, Dask, threads) would print a storm of bars.
        n_batches = len(net.get_iterator(dataset_train, training=True))
        self.bar_ = tqdm(
            total=n_batches,
            desc=f"epoch {len(net.history)}",
            leave=False,
            unit="batch",
            # None: tqdm shows the bar only on a terminal, never in log files.
            disable=True if in_worker() else None,
        )

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self.bar_.update()

    def on_epoch_end(self, net, **kwargs):
        self.bar_.close()


class TrainingCheckpoint(Callback):
    """Saves the training state after every epoch, atomically, to one file.

    The file holds the network's and the optimizer's state and the history, as
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
        state = {
            "module": net.module_.state_dict(),
            "optimizer": net.optimizer_.state_dict(),
            "history": _plain_history(net.history),
        }
        write_atomically(self.path, lambda stream: torch.save(state, stream))

    @staticmethod
    def load(path: Path) -> dict:
        return torch.load(path, map_location="cpu", weights_only=True)

    @staticmethod
    def restore(net: ImageNeuralNet, state: dict) -> None:
        """Put a loaded training state back into an initialized net."""
        net.module_.load_state_dict(state["module"])
        net.optimizer_.load_state_dict(state["optimizer"])
        net.history = History(state["history"])


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


def cosine_schedule(epochs: int) -> LRScheduler:
    """Cosine annealing of the learning rate over ``epochs``, stepped per epoch."""
    return LRScheduler(policy="CosineAnnealingLR", T_max=epochs)


def body_freezing(pattern: str, epochs: int) -> list[tuple[str, Callback]]:
    """skorch's Freezer for the first ``epochs`` epochs, then its Unfreezer.

    Frozen again at the start of each of those epochs, so that training resumed
    from a checkpoint inside them stays frozen. (A frozen body's batch norm is
    kept in evaluation mode by the network, ``BackboneNetwork.train``.)
    """
    return [
        ("freeze_body", Freezer(pattern, at=partial(_epoch_at_most, epochs=epochs))),
        ("unfreeze_body", Unfreezer(pattern, at=epochs + 1)),
    ]


def _epoch_at_most(net, *, epochs: int) -> bool:
    return len(net.history) <= epochs


class _StoppingEarly(EarlyStopping):
    """skorch's EarlyStopping raising our own exception, not KeyboardInterrupt."""

    def on_epoch_end(self, net, **kwargs):
        try:
            super().on_epoch_end(net, **kwargs)
        except KeyboardInterrupt:
            if self.misses_ >= self.patience:
                raise _EarlyStop from None
            raise

    def on_train_end(self, net, **kwargs):
        super().on_train_end(net, **kwargs)
        # The best weights are in the module now. Their copy, kept, would hold
        # GPU memory and go into the pickle as CUDA tensors, which a machine
        # without CUDA cannot unpickle.
        self.best_model_weights_ = None


class ImageNeuralNet(NeuralNetClassifier):
    """skorch's classifier with a tensor data path and fail-fast training.

    Differences from ``NeuralNetClassifier``:

    * batches come from :class:`BatchIterator` and are prepared on the device by
      a :class:`BatchPreparer` (no Dataset, no collate, no per-image Python);
    * the loss is the weighted mean of the images' losses (sample and class
      weights), checked before it is used: a NaN or infinite loss raises
      :class:`TrainingDivergedError` naming the epoch and batch;
    * lazy layers are given their shapes by one forward pass at initialization;
    * ``KeyboardInterrupt`` propagates after the callbacks' end-of-training hooks;
    * prediction (:func:`predict_logits`) runs under ``torch.inference_mode``
      with the :class:`PredictionSettings` fixed at fit.
    """

    def __init__(
        self,
        module,
        *args,
        input_shape=None,
        batch_preparer=None,
        autocast_dtype=None,
        shuffle_generator=None,
        **kwargs,
    ):
        super().__init__(module, *args, **kwargs)
        self.input_shape = input_shape
        self.batch_preparer = batch_preparer
        self.autocast_dtype = autocast_dtype
        self.shuffle_generator = shuffle_generator

    def _initialize_module(self, reason=None):
        super()._initialize_module(reason=reason)
        self._materialize_lazy_layers()
        return self

    def _materialize_lazy_layers(self):
        """Give lazy layers (``nn.LazyLinear``, ``nn.LazyConv2d``) their shapes.

        One forward pass of a zero batch of the real image shape, before the
        optimizer is built (it must see the real parameters) and before the
        memory-format conversion (which cannot touch uninitialized ones). Eval
        mode, so batch-norm statistics are left alone.
        """
        module = self.module_
        tensors = [*module.parameters(), *module.buffers()]
        if self.input_shape is None or not any(map(is_lazy, tensors)):
            return
        batch = torch.zeros((2, *self.input_shape), device=self.device)
        training = module.training
        module.eval()
        with torch.no_grad():
            module(batch)
        module.train(training)

    @property
    def _default_callbacks(self):
        return [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            ("accuracy", _Accuracy()),
            ("print_log", _EpochTable()),
        ]

    # -- data ------------------------------------------------------------------
    def get_dataset(self, X, y=None):
        if isinstance(X, (ImageData, ImageFiles)):
            return X
        return super().get_dataset(X, y)

    def get_iterator(self, dataset, training=False):
        if isinstance(dataset, ImageFiles):
            iterator = FileBatchIterator
        elif isinstance(dataset, ImageData):
            iterator = BatchIterator
        else:
            return super().get_iterator(dataset, training=training)
        return iterator(
            dataset,
            batch_size=self.batch_size,
            shuffle=training,
            generator=self.shuffle_generator,
            device=torch.device(self.device),
            merge_singleton=training,
        )

    # -- steps -----------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(
            device_type=torch.device(self.device).type, dtype=self.autocast_dtype
        )

    def infer(self, x, **fit_params):
        if self.batch_preparer is not None and isinstance(x, torch.Tensor):
            x = self.batch_preparer(x, training=self.module_.training)
        else:
            x = x.to(self.device) if isinstance(x, torch.Tensor) else x
        with self._autocast():
            return self.module_(x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """The weighted mean of the images' losses; non-finite stops training.

        The criterion returns one loss per image (class weights applied); each
        is weighted by its image's sample weight, and the sum is divided by the
        sum of the weights, as scikit-learn weighs samples. A batch whose
        weights are all zero has loss 0 and changes nothing.
        """
        weights = None
        if isinstance(y_true, WeightedTarget):
            y_true, weights = y_true
        # Under autocast the logits may be bf16: compute the loss in float32.
        losses = self.criterion_(y_pred.float(), y_true)
        class_weight = getattr(self.criterion_, "weight", None)
        if weights is None and class_weight is None:
            loss = losses.mean()
        else:
            norm = torch.ones_like(losses) if weights is None else weights
            if weights is not None:
                losses = losses * weights
            if class_weight is not None:
                norm = norm * class_weight[y_true]
            loss = losses.sum() / norm.sum().clamp_min(torch.finfo(norm.dtype).tiny)
        if training and not torch.isfinite(loss):
            epoch = len(self.history)
            # skorch opens the batch's history row before the step.
            batch_number = len(self.history[-1, "batches"]) if epoch else 1
            raise TrainingDivergedError(
                f"The training loss became {loss.item()} in epoch {epoch}, batch "
                f"{batch_number}; training stopped before the optimizer applied it. "
                "Lower lr, scale the input (pixels 0-1), or use precision='float32'."
            )
        return loss

    def evaluation_step(self, batch, training=False):
        self.check_is_fitted()
        Xi, _ = unpack_data(batch)
        self._set_training(training)
        with torch.inference_mode(not training):
            return self.infer(Xi)

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        if not self.initialized_:
            self.initialize()
        self.notify("on_train_begin", X=X, y=y)
        try:
            try:
                self.fit_loop(X, y, **fit_params)
            except _EarlyStop:
                pass
            except KeyboardInterrupt:
                # Unlike skorch, let Ctrl-C through (after the end-of-training
                # hooks): a search must stop rather than score a half-trained one.
                self.notify("on_train_end", X=X, y=y)
                raise
            self.notify("on_train_end", X=X, y=y)
        finally:
            self._drop_schedulers()
        return self

    def _drop_schedulers(self):
        """Forget the learning-rate schedulers once training ends.

        skorch's ``LRScheduler`` makes a new one at the start of every
        training; the old one would only hold on to the optimizer, whose tensors
        a pickle would then carry outside the device mapping skorch does.
        """
        for _, callback in self.callbacks_:
            if isinstance(callback, LRScheduler):
                callback.lr_scheduler_ = None


def predict_logits(
    net: ImageNeuralNet, data: ImageData | ImageFiles, settings: PredictionSettings
) -> np.ndarray:
    """Logits for every image, computed batch by batch, collected on the CPU.

    Reads the fitted net and changes nothing in it (the network is in eval
    mode already after training). A CUDA out-of-memory error halves the batch
    and carries on.
    """
    if isinstance(data, ImageFiles):
        return _predict_file_logits(net, data, settings)
    # The training batch size: larger inference batches measured slower on CPUs,
    # whose caches they overflow.
    batch_size = net.batch_size
    outputs: list[np.ndarray] = []
    start = 0
    n = len(data)
    device = torch.device(net.device)
    prepare = settings.preparer(data.images)
    module = net.module_
    if module.training:
        module.eval()
    while start < n:
        stop = min(start + batch_size, n)
        batch = data.images[start:stop].to(device, non_blocking=device.type == "cuda")
        try:
            with torch.inference_mode(), settings.autocast(device):
                logits = module(prepare(batch, training=False))
        except torch.cuda.OutOfMemoryError:
            if batch_size == 1:
                raise
            batch_size = max(1, batch_size // 2)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        outputs.append(logits.float().cpu().numpy())
        start = stop
    return np.concatenate(outputs)


def _predict_file_logits(
    net: ImageNeuralNet, data: ImageFiles, settings: PredictionSettings
) -> np.ndarray:
    """:func:`predict_logits` for image files, decoded ahead in threads."""
    device = torch.device(net.device)
    batches = FileBatchIterator(
        data,
        batch_size=net.batch_size,
        shuffle=False,
        generator=None,
        device=device,
        merge_singleton=False,
    )
    module = net.module_
    if module.training:
        module.eval()
    outputs = [
        _logits_in_halves(module, batch, settings, device) for batch, _ in batches
    ]
    return np.concatenate(outputs)


def _logits_in_halves(module, batch, settings, device) -> np.ndarray:
    """The logits of ``batch``, in halves (recursively) when CUDA runs out of memory."""
    try:
        with torch.inference_mode(), settings.autocast(device):
            logits = module(settings.preparer(batch)(batch, training=False))
        return logits.float().cpu().numpy()
    except torch.cuda.OutOfMemoryError:
        if len(batch) == 1:
            raise
        torch.cuda.empty_cache()
    half = len(batch) // 2
    return np.concatenate(
        [
            _logits_in_halves(module, batch[:half], settings, device),
            _logits_in_halves(module, batch[half:], settings, device),
        ]
    )
