"""The net: skorch's ``NeuralNet`` with our data path, loss and callbacks.

The estimators hand this module an image source (``_sources.py``) with encoded
targets; batches come from the package's one ``DataLoader``
(:func:`~sklearn_cnn._sources.batch_loader`), are prepared on the device by a
:class:`BatchPreparer` (float conversion, augmentation, scaling, memory
format), and the loss is the weighted mean of the images' losses. skorch is
used through its documented surface (``get_dataset``, ``get_iterator``,
``initialize_module``, ``infer``, ``get_loss``, ``evaluation_step``,
``fit_loop``, callbacks); the few private names it has no public hook for are
in ``utils/_skorch_private.py``, listed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
from skorch import NeuralNetClassifier, NeuralNetRegressor
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
from torch.nn.parameter import is_lazy

from ._recipe import Mix
from ._sources import LabelledImages, batch_loader
from .utils._runtime import autocast, in_worker
from .utils._skorch_private import DefaultCallbacksHook, SortedColumnsHook


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite."""


class _EarlyStop(Exception):
    """Raised by our early stopping, so a real Ctrl-C is never mistaken for it."""


class WeightedTarget(NamedTuple):
    """A batch's labels with the weights of its images in the loss."""

    labels: torch.Tensor
    weights: torch.Tensor

    def to(self, device, non_blocking=False) -> WeightedTarget:
        return WeightedTarget(
            self.labels.to(device, non_blocking=non_blocking),
            self.weights.to(device, non_blocking=non_blocking),
        )


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
        augmenting = training and bool(self.augmenters)
        # Nothing between the conversion and the network (prediction, plain
        # training): one pass to float32 in the memory format, and the copy it
        # makes (never the caller's memory) scaled in place.
        plain = not (augmenting or self.post_steps)
        memory_format = torch.preserve_format
        if plain and self.channels_last and batch.dim() == 4:
            memory_format = torch.channels_last
        images = batch.to(torch.float32, memory_format=memory_format)
        in_place = plain and images is not batch
        if augmenting:
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
            scale = 1.0 / 255.0
            images = images.mul_(scale) if in_place else images * scale
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images


@dataclass(frozen=True)
class PredictionSettings:
    """How a fitted network turns stored images into its input; fixed at fit.

    A value, read by the inference loop (``_inference.py``): prediction never
    changes the fitted net, so several threads can predict with one model at
    once. Whether pixels are scaled from 0-255 follows the dtype of the images
    predicted on.
    """

    channels_last: bool
    autocast_dtype: torch.dtype | None

    def preparer(self, images: torch.Tensor) -> BatchPreparer:
        uint8 = images.dtype == torch.uint8
        return BatchPreparer(
            source_is_uint8=uint8, scale_uint8=uint8, channels_last=self.channels_last
        )

    def autocast(self, device: torch.device):
        return autocast(device, self.autocast_dtype)

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


class _EpochMetric(Callback):
    """A score per epoch, train and validation, from sums kept on the device.

    Subclasses turn a batch into a tensor of sums (:meth:`batch_sums`) and the
    epoch's sums into the score (:meth:`score`, None: none to record); the net
    records ``train_<name>`` and ``valid_<name>``. The sums stay on the device
    until the epoch ends: no sync per batch.
    """

    name: str

    def batch_sums(self, y_pred, targets, weights) -> torch.Tensor:
        raise NotImplementedError

    def score(self, sums: torch.Tensor) -> float | None:
        raise NotImplementedError

    def on_epoch_begin(self, net, **kwargs):
        self.sums_ = {True: None, False: None}

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        _, targets = unpack_data(batch)
        if targets is None or y_pred is None:
            return
        weights = None
        if isinstance(targets, WeightedTarget):
            targets, weights = targets
        sums = self.batch_sums(y_pred.detach(), targets, weights)
        previous = self.sums_[training]
        self.sums_[training] = sums if previous is None else previous + sums

    def on_epoch_end(self, net, **kwargs):
        for training, prefix in ((True, "train"), (False, "valid")):
            sums = self.sums_[training]
            score = None if sums is None else self.score(sums)
            if score is not None:
                net.history.record(f"{prefix}_{self.name}", score)
        # Sums left on the device would go into the pickle as CUDA tensors,
        # which a machine without CUDA cannot unpickle.
        del self.sums_


class Accuracy(_EpochMetric):
    """Records train and validation accuracy per epoch from the batches' outputs.

    The classifier's metric (``metric=`` of :class:`ImageNeuralNet`).
    Zero-weight images count for nothing, here as in the loss.
    """

    name = "accuracy"

    def batch_sums(self, y_pred, labels, weights):
        hits = y_pred.argmax(dim=1) == labels
        if weights is None:
            return torch.stack(
                [hits.sum(), hits.new_full((), len(hits), dtype=torch.long)]
            )
        return torch.stack([(hits * weights).sum(), weights.sum()])

    def score(self, sums):
        correct, total = sums.double().cpu().tolist()
        return correct / total if total > 0 else None


class R2(_EpochMetric):
    """Records train and validation R² per epoch from the batches' outputs.

    The regressor's metric (``metric=`` of :class:`ImageNeuralNetRegressor`),
    computed on the standardized targets the network learns (R² does not change
    when targets and predictions are standardized alike), weighted by the sample
    weights when there are, and averaged uniformly over the outputs, as
    :func:`sklearn.metrics.r2_score` does. The sums stay on the device until the
    epoch ends: no sync per batch.
    """

    name = "r2"

    def batch_sums(self, y_pred, targets, weights):
        # float64 where the device has it: the sums add a whole epoch's images.
        dtype = torch.float32 if targets.device.type == "mps" else torch.float64
        targets = targets.to(dtype).reshape(len(targets), -1)
        predictions = y_pred.to(dtype).reshape(len(targets), -1)
        if weights is None:
            weights = torch.ones(len(targets), dtype=dtype, device=targets.device)
        weights = weights.to(dtype)[:, None]
        # Per output: sum of weights, of weighted targets, of weighted squared
        # targets and of weighted squared errors.
        return torch.stack(
            [
                weights.expand_as(targets).sum(dim=0),
                (weights * targets).sum(dim=0),
                (weights * targets**2).sum(dim=0),
                (weights * (targets - predictions) ** 2).sum(dim=0),
            ]
        )

    def score(self, sums):
        total, linear, square, residual = sums.double().cpu().numpy()
        if not (total > 0).all():
            return None
        variance = square - linear**2 / total
        # Constant targets: 1 for a perfect fit, else 0, as r2_score.
        scores = [
            (1.0 if res == 0 else 0.0) if var <= 0 else 1.0 - res / var
            for res, var in zip(residual, variance)
        ]
        return float(sum(scores) / len(scores))


class SampleF1(_EpochMetric):
    """Records train and validation sample-averaged F1 per epoch (multi-label).

    The multi-label classifier's metric: each image's F1 between its predicted
    labels (logit above 0, probability above 0.5) and its true labels, averaged
    over the images (weighted by the sample weights when there are), as
    ``f1_score(y, y_pred, average="samples", zero_division=1.0)`` computes it:
    an image with no true and no predicted label is predicted perfectly, and
    counts 1. Soft targets (mixed by
    mixup or cutmix) count as labels from 0.5 up. The sums stay on the device
    until the epoch ends: no sync per batch.
    """

    name = "f1_samples"

    def batch_sums(self, y_pred, targets, weights):
        true = targets >= 0.5
        predicted = y_pred > 0
        both = (true & predicted).sum(dim=1)
        either = true.sum(dim=1) + predicted.sum(dim=1)
        scores = torch.where(either > 0, 2.0 * both / either.clamp_min(1), 1.0)
        if weights is None:
            weights = torch.ones_like(scores)
        return torch.stack([(scores * weights).sum(), weights.sum()])

    def score(self, sums):
        total, weight = sums.double().cpu().tolist()
        return total / weight if weight > 0 else None


class LabelWeightedBCEWithLogitsLoss(torch.nn.Module):
    """Binary cross-entropy per label, each label's positives and negatives weighted.

    The multi-label classifier's loss: one sigmoid output per label. Returns the
    ``(n_images, n_labels)`` losses (``reduction="none"`` only); the net
    averages them per image, then weighs the images. ``positive_weight`` and
    ``negative_weight`` (one per label) are buffers, so that a model file holds
    the weights ``class_weight`` gave. Targets may be soft (probabilities);
    ``label_smoothing`` moves each 0/1 target towards 1/2, to
    ``target * (1 - label_smoothing) + label_smoothing / 2``.
    """

    def __init__(
        self,
        n_labels: int,
        positive_weight=None,
        negative_weight=None,
        reduction: str = "none",
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.label_smoothing = float(label_smoothing)
        if reduction != "none":
            raise ValueError(f"only reduction='none' is supported; got {reduction!r}.")
        ones = torch.ones(n_labels)
        self.register_buffer(
            "positive_weight",
            ones
            if positive_weight is None
            else torch.as_tensor(positive_weight, dtype=torch.float32),
        )
        self.register_buffer(
            "negative_weight",
            ones.clone()
            if negative_weight is None
            else torch.as_tensor(negative_weight, dtype=torch.float32),
        )

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.to(logits.dtype)
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + self.label_smoothing / 2
        positive = torch.nn.functional.logsigmoid(logits)
        negative = torch.nn.functional.logsigmoid(-logits)
        return -(
            self.positive_weight * targets * positive
            + self.negative_weight * (1 - targets) * negative
        )


class _EpochTable(SortedColumnsHook, PrintLog):
    """skorch's epoch table: columns in reading order, colours on terminals only."""

    @staticmethod
    def column_order(keys: list[str]) -> list[str]:
        """epoch, train loss and metric, validation loss and metric, the rest."""

        def rank(key):
            for position, prefix in enumerate(("epoch", "train_loss", "train_")):
                if key.startswith(prefix):
                    return position
            if key.startswith("valid_loss"):
                return 3
            return 4 if key.startswith("valid_") else 5

        return sorted(keys, key=rank)

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


class _Interrupted(BaseException):
    """A Ctrl-C inside skorch's loop, carried past skorch's own handler."""


class ImageNetMixin(DefaultCallbacksHook):
    """What our nets add to skorch's: a batched data path and fail-fast training.

    Mixed into skorch's ``NeuralNetClassifier`` (:class:`ImageNeuralNet`) and
    ``NeuralNetRegressor`` (:class:`ImageNeuralNetRegressor`). Differences from
    skorch's nets:

    * batches come from :func:`~sklearn_cnn._sources.batch_loader` over a
      :class:`~sklearn_cnn._sources.LabelledImages` and are prepared on the
      device by a :class:`BatchPreparer` (no collate, no per-image Python);
    * the loss is the weighted mean of the images' losses (sample and class
      weights), checked before it is used: a NaN or infinite loss raises
      :class:`TrainingDivergedError` naming the epoch and batch;
    * training batches are mixed (mixup, cutmix) when a ``batch_mixer`` is
      set: the mixing is drawn per batch in ``train_step``, applied to the
      prepared images in ``infer`` and to the targets in ``get_loss``;
    * lazy layers are given their shapes by one forward pass at initialization;
    * ``KeyboardInterrupt`` propagates after the callbacks' end-of-training hooks.
    """

    def __init__(
        self,
        module,
        *args,
        input_shape=None,
        batch_preparer=None,
        autocast_dtype=None,
        shuffle_generator=None,
        randomness=None,
        batch_mixer=None,
        metric=None,
        **kwargs,
    ):
        super().__init__(module, *args, **kwargs)
        self.input_shape = input_shape
        self.batch_preparer = batch_preparer
        self.autocast_dtype = autocast_dtype
        self.shuffle_generator = shuffle_generator
        self.randomness = randomness
        self.batch_mixer = batch_mixer
        self.metric = metric

    def initialize_module(self):
        super().initialize_module()
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
        batch = torch.zeros((2, *self.input_shape), device=self.device or "cpu")
        training = module.training
        module.eval()
        with torch.no_grad():
            module(batch)
        module.train(training)

    def default_callbacks(self):
        """The callbacks every net has (see ``DefaultCallbacksHook``)."""
        callbacks = [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
        ]
        if self.metric is not None:
            callbacks.append((self.metric.name, self.metric))
        return [*callbacks, ("print_log", _EpochTable())]

    # -- data ------------------------------------------------------------------
    def get_dataset(self, X, y=None):
        if isinstance(X, LabelledImages):
            return X
        return super().get_dataset(X, y)

    def get_iterator(self, dataset, training=False):
        if not isinstance(dataset, LabelledImages):
            return super().get_iterator(dataset, training=training)
        return batch_loader(
            dataset,
            batch_size=self.batch_size,
            shuffle=training,
            generator=self.shuffle_generator,
            merge_singleton=training,
        )

    # -- steps -----------------------------------------------------------------
    # Whether the step under way mixes its batch, and the mixing drawn for it.
    _mixing_step: bool = False
    _batch_mix: Mix | None = None

    def infer(self, x, **fit_params):
        if self.batch_preparer is not None and isinstance(x, torch.Tensor):
            x = self.batch_preparer(x, training=self.module_.training)
        if self._mixing_step:
            # Drawn for the prepared batch (its final size), then applied.
            self._batch_mix = self.batch_mixer.draw(x)
            x = self._batch_mix.images(x)
        with autocast(x.device, self.autocast_dtype):
            return self.module_(x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """The weighted mean of the images' losses; non-finite stops training.

        The criterion returns one loss per image (class weights applied); each
        is weighted by its image's sample weight, and the sum is divided by the
        sum of the weights, as scikit-learn weighs samples. In a mixed training
        batch the targets are class probabilities, and an image's sample weight
        and class weight are the mixes of its two images' weights. A batch whose
        weights are all zero has loss 0 and changes nothing. Losses of several
        outputs per image (multi-label, several regression targets) are
        averaged per image first.
        """
        weights = None
        if isinstance(y_true, WeightedTarget):
            y_true, weights = y_true
        mix = self._batch_mix if training else None
        if mix is not None:
            if y_true.dim() == 1:
                # Class indices become the class probabilities they stand for;
                # multi-label indicator rows are mixed as they are.
                y_true = torch.nn.functional.one_hot(y_true, y_pred.shape[1])
            y_true = mix.targets(y_true.float())
            if weights is not None:
                weights = mix.targets(weights)
        # Under autocast the outputs may be bf16: compute the loss in float32.
        losses = self.criterion_(y_pred.float(), y_true)
        if losses.dim() > 1:
            losses = losses.flatten(1).mean(dim=1)
        class_weight = getattr(self.criterion_, "weight", None)
        if weights is None and class_weight is None:
            loss = losses.mean()
        else:
            norm = torch.ones_like(losses) if weights is None else weights
            if weights is not None:
                losses = losses * weights
            if class_weight is not None:
                # Class probabilities (mixed targets): their mix of class weights.
                norm = norm * (
                    class_weight[y_true] if y_true.dim() == 1 else y_true @ class_weight
                )
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

    def train_step(self, batch, **fit_params):
        # Only training batches come here: validation's are never mixed.
        self._mixing_step = self.batch_mixer is not None
        try:
            # Random operations of the forward pass (dropout...) draw from this
            # fit's generators (utils/_runtime.TrainingRandomness).
            if self.randomness is None:
                return super().train_step(batch, **fit_params)
            with self.randomness.step():
                return super().train_step(batch, **fit_params)
        finally:
            self._mixing_step = False
            self._batch_mix = None

    def evaluation_step(self, batch, training=False):
        self.check_is_fitted()
        Xi, _ = unpack_data(batch)
        self.module_.train(training)
        with torch.inference_mode(not training):
            return self.infer(Xi)

    # -- the loop ----------------------------------------------------------------
    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        try:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
        except _EarlyStop:
            return self
        except KeyboardInterrupt as interrupt:
            # skorch's partial_fit swallows Ctrl-C; a search must stop rather
            # than score a half-trained model: carry it past, re-raised below.
            raise _Interrupted from interrupt

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        try:
            super().partial_fit(X, y, classes=classes, **fit_params)
        except _Interrupted:
            # The end-of-training hooks run, then Ctrl-C goes on.
            self.notify("on_train_end", X=X, y=y)
            raise KeyboardInterrupt from None
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


class ImageNeuralNet(ImageNetMixin, NeuralNetClassifier):
    """The classifier's net: skorch's ``NeuralNetClassifier`` with our data path."""


class ImageNeuralNetRegressor(ImageNetMixin, NeuralNetRegressor):
    """The regressor's net: skorch's ``NeuralNetRegressor`` with our data path."""
