"""Data-parallel training of one classifier on several GPUs with HF Accelerate.

:class:`AcceleratedCNNImageClassifier` is a :class:`~sklearn_cnn.CNNImageClassifier`
whose skorch net mixes in skorch's :class:`skorch.hf.AccelerateMixin`. Run the same
script in every process (``accelerate launch script.py`` or ``torchrun``); each
process trains on its own shard of every epoch and the gradients are averaged
across processes, so all processes end with the same weights.

How our net composes with ``AccelerateMixin`` (which overrides ``train_step``,
``train_step_single``, ``get_iterator``, ``evaluation_step``, ``_step_optimizer``
and ``on_train_end``):

* ``get_iterator``: the mixin hands the iterator to ``accelerator.prepare``, which
  only shards a ``torch.utils.data.DataLoader`` and returns our
  :class:`~sklearn_cnn._training.BatchIterator` untouched: every process would
  train on all the data. We shard training batches ourselves
  (:class:`_ShardedBatchIterator`, the semantics of ``DistributedSampler``);
  image files given as ``X`` are sharded alike, and each process decodes only
  the files of its shard (:class:`_ShardedFileBatchIterator`).
* ``evaluation_step``: the mixin gathers predictions from all processes, which
  is right only for sharded evaluation. Validation and prediction run whole on
  every process here (they are cheap next to training, and identical results on
  every process keep early stopping in step), so nothing is gathered.
* ``train_step_single``: the mixin's replaces ours and would drop the check that
  stops training on a NaN loss; ours is restored. It calls ``loss.backward()``,
  which is what ``accelerator.backward`` does for DDP in float32 or bfloat16
  without gradient accumulation; other accelerators (fp16 loss scaling,
  DeepSpeed, gradient accumulation) are refused until ``ImageNeuralNet`` has a
  backward hook to override.
* ``on_train_end``: the mixin unwraps the modules *before* the callbacks' own
  ``on_train_end``, so early stopping would load the best weights (saved from the
  wrapped module, keys prefixed ``module.``) into the unwrapped one. We unwrap
  after the whole end of training instead, and wrap again when training resumes
  (``warm_start``, ``partial_fit``).
* ``_initialize_accelerator``: the mixin prepares the criterion too, which on
  several processes wraps it in ``DistributedDataParallel``; DDP refuses a
  module without trainable parameters (``CrossEntropyLoss``), so only criteria
  with trainable parameters are prepared.
* ``device``: the mixin wants ``device=None``; our data path needs a real device,
  so the net gets ``accelerator.device``.
"""

from __future__ import annotations

import math
from numbers import Integral

import torch
from skorch.callbacks import LRScheduler
from skorch.hf import AccelerateMixin

from ._classifier import CNNImageClassifier
from ._files import ImageFiles
from ._training import BatchIterator, FileBatchIterator, ImageData, ImageNeuralNet
from .utils._sklearn_private import HasMethods

# Distributed types whose backward pass is not plain ``loss.backward()``.
_NEEDS_OWN_BACKWARD = {"DEEPSPEED", "MEGATRON_LM"}


class AcceleratedImageNet(AccelerateMixin, ImageNeuralNet):
    """:class:`ImageNeuralNet` trained through an ``accelerate.Accelerator``."""

    def _validate_params(self):
        # Skip the mixin's rule that device must be None: our batches are cut and
        # prepared on the net's device, which must be the accelerator's.
        ImageNeuralNet._validate_params(self)
        accelerator = self.accelerator
        if not _same_device(torch.device(self.device), accelerator.device):
            raise ValueError(
                f"The net's device is {self.device!r} but the accelerator's is "
                f"{str(accelerator.device)!r}; they must be the same."
            )
        unsupported = []
        if accelerator.mixed_precision == "fp16":
            unsupported.append("mixed_precision='fp16' (use precision='bfloat16')")
        if accelerator.gradient_accumulation_steps != 1:
            unsupported.append("gradient_accumulation_steps > 1")
        if accelerator.distributed_type in _NEEDS_OWN_BACKWARD:
            unsupported.append(accelerator.distributed_type.value)
        if unsupported:
            raise ValueError(
                "AcceleratedCNNImageClassifier supports data-parallel training "
                "(DDP) with float32 or bfloat16; this accelerator uses "
                + ", ".join(unsupported)
                + ", which need accelerator.backward()."
            )

    def _initialize_accelerator(self):
        """The mixin's, leaving alone criteria without trainable parameters.

        On several processes, Accelerate wraps every module it prepares in
        ``DistributedDataParallel``, which refuses modules without trainable
        parameters, such as ``CrossEntropyLoss``.
        """
        if self._wrapped_with_accelerator:
            return self
        prepare = self.accelerator.prepare
        with self._current_init_context("criterion"):
            for name in self._criteria:
                criterion = getattr(self, name + "_")
                if _has_trainable_parameters(criterion):
                    setattr(self, name + "_", prepare(criterion))
        with self._current_init_context("module"):
            for name in self._modules:
                module = getattr(self, name + "_")
                if isinstance(module, torch.nn.Module):
                    setattr(self, name + "_", prepare(module))
        with self._current_init_context("optimizer"):
            for name in self._optimizers:
                optimizer = getattr(self, name + "_")
                if isinstance(optimizer, torch.optim.Optimizer):
                    setattr(self, name + "_", prepare(optimizer))
        for _, callback in self.callbacks_:
            if isinstance(callback, LRScheduler):
                callback.policy_ = prepare(callback.policy_)
        self._wrapped_with_accelerator = True
        return self

    def _initialize_callbacks(self):
        # The mixin's default sink, accelerator.print, prints whatever verbose
        # says (skorch's PrintLog honours verbose only for the print function).
        if self.callbacks__print_log__sink == "auto" and not self.verbose:
            self.callbacks__print_log__sink = _silent
        return super()._initialize_callbacks()

    # -- data ------------------------------------------------------------------
    def get_iterator(self, dataset, training=False):
        if not isinstance(dataset, (ImageData, ImageFiles)):
            if training:
                return super().get_iterator(dataset, training=True)
            # Unsharded, like our own evaluation (see evaluation_step).
            return ImageNeuralNet.get_iterator(self, dataset, training=False)
        iterator = ImageNeuralNet.get_iterator(self, dataset, training=training)
        if not training or self.accelerator.num_processes == 1:
            return iterator
        sharded = _ShardedBatchIterator
        if isinstance(dataset, ImageFiles):
            sharded = _ShardedFileBatchIterator
        return sharded(
            dataset,
            batch_size=iterator.batch_size,
            shuffle=iterator.shuffle,
            generator=iterator.generator,
            device=iterator.device,
            merge_singleton=iterator.merge_singleton,
            accelerator=self.accelerator,
        )

    # -- steps -----------------------------------------------------------------
    def train_step_single(self, batch, **fit_params):
        # Ours, not the mixin's: it checks the loss before using it. Its plain
        # loss.backward() is what accelerator.backward() does for the
        # accelerators _validate_params lets through.
        with self.accelerator.autocast():
            return ImageNeuralNet.train_step_single(self, batch, **fit_params)

    def evaluation_step(self, batch, training=False):
        # Evaluation batches are not sharded: nothing to gather.
        return ImageNeuralNet.evaluation_step(self, batch, training=training)

    # -- training --------------------------------------------------------------
    def partial_fit(self, X, y=None, classes=None, **fit_params):
        if not self.initialized_:
            self.initialize()
        # Wrap again what the end of the previous fit unwrapped (no-op otherwise).
        self._initialize_accelerator()
        try:
            return super().partial_fit(X, y, classes=classes, **fit_params)
        finally:
            if self.unwrap_after_train:
                self._unwrap_accelerator()

    def on_epoch_end(self, net, **kwargs):
        super().on_epoch_end(net, **kwargs)
        if self.accelerator.num_processes > 1:
            # This hook runs before the callbacks: give every process the main
            # process's losses, so that early stopping decides alike everywhere
            # (a process stopping alone would leave the others waiting forever).
            from accelerate.utils import broadcast_object_list

            row = broadcast_object_list([dict(self.history[-1])], from_process=0)[0]
            self.history[-1].update(row)

    def on_train_end(self, net, X=None, y=None, **kwargs):
        # Unlike the mixin, do not unwrap here: the callbacks' on_train_end (early
        # stopping loading the best weights) runs after this and needs the module
        # as it was prepared. partial_fit unwraps once they are done.
        self.accelerator.wait_for_everyone()
        return ImageNeuralNet.on_train_end(self, net, X=X, y=y, **kwargs)


class _ShardedBatchIterator(BatchIterator):
    """This process's share of every training epoch, as ``DistributedSampler`` does.

    The main process's shuffled order is broadcast; it is padded by wrapping
    around to a multiple of the number of processes, and process ``k`` takes
    every ``num_processes``-th image from position ``k``. All processes get the
    same number of batches, as data-parallel training requires.
    """

    def __init__(self, data, *, accelerator, **kwargs):
        super().__init__(data, **kwargs)
        self.accelerator = accelerator

    def _n_local(self) -> int:
        return math.ceil(len(self.data) / self.accelerator.num_processes)

    def _bounds(self) -> list[tuple[int, int]]:
        n = self._n_local()
        bounds = [
            (start, min(start + self.batch_size, n))
            for start in range(0, n, self.batch_size)
        ]
        last_is_singleton = len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1
        if self.merge_singleton and last_is_singleton:
            bounds[-2] = (bounds[-2][0], n)
            bounds.pop()
        return bounds

    def _local_order(self) -> torch.Tensor:
        from accelerate.utils import broadcast

        n = len(self.data)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator)
        else:
            order = torch.arange(n)
        order = broadcast(order.to(self.accelerator.device), from_process=0)
        n_processes = self.accelerator.num_processes
        padded = order.repeat(math.ceil(n_processes * self._n_local() / n))
        padded = padded[: n_processes * self._n_local()]
        return padded[self.accelerator.process_index :: n_processes]

    def __iter__(self):
        images, labels = self.data.images, self.data.y
        order = self._local_order().to(images.device)
        non_blocking = self.device.type == "cuda"
        for start, stop in self._bounds():
            index = order[start:stop]
            batch = images[index].to(self.device, non_blocking=non_blocking)
            batch_labels = None
            if labels is not None:
                batch_labels = labels[index.to(labels.device)].to(
                    self.device, non_blocking=non_blocking
                )
            yield batch, batch_labels


class _ShardedFileBatchIterator(_ShardedBatchIterator, FileBatchIterator):
    """This process's share of every epoch of image files: only its files are read."""

    _order = _ShardedBatchIterator._local_order
    __iter__ = FileBatchIterator.__iter__


def _silent(*args, **kwargs) -> None:
    pass


def _has_trainable_parameters(module) -> bool:
    return isinstance(module, torch.nn.Module) and any(
        parameter.requires_grad for parameter in module.parameters()
    )


def _same_device(device: torch.device, other: torch.device) -> bool:
    """Equal devices, reading 'cuda' without an index as the current CUDA device."""

    def index(d: torch.device):
        if d.type == "cuda" and d.index is None:
            return torch.cuda.current_device()
        return d.index

    return device.type == other.type and index(device) == index(other)


class AcceleratedCNNImageClassifier(CNNImageClassifier):
    """A :class:`~sklearn_cnn.CNNImageClassifier` trained data-parallel with Accelerate.

    Launch the script that fits it once per GPU (``accelerate launch
    script.py``, or ``torchrun --nproc-per-node=4 script.py``). Every process
    trains on its own share of each epoch's images and the gradients are
    averaged across processes, so all processes end with the same network.
    ``batch_size`` is per process: the effective batch is ``batch_size`` times
    the number of processes (raise ``lr`` accordingly). Validation (early
    stopping) and prediction run on every process in full. In one process, it
    trains exactly as :class:`~sklearn_cnn.CNNImageClassifier` does.

    Requires the ``accelerate`` package (``pip install 'sklearn-cnn[distributed]'``).

    Parameters
    ----------
    accelerator : accelerate.Accelerator or None, default=None
        The accelerator to train with; None creates ``Accelerator()`` when
        fitting. It chooses the device: there is no ``device`` parameter. Leave
        its ``mixed_precision`` at 'no' and use ``precision``, or set
        ``precision='float32'`` and let the accelerator's mixed precision apply.
    filters, kernel_size, dense_units, dropout, module, epochs, batch_size, lr, \
optimizer, weight_decay, class_weight, early_stopping, validation_fraction, \
n_iter_no_change, warm_start, callbacks, augment, precision, random_state, \
verbose, image_shape, image_size, unreadable_files, cache_decoded, checkpoint
        As in :class:`~sklearn_cnn.CNNImageClassifier`. With several processes,
        ``random_state`` must be an int, so that every process holds out the
        same validation images.

    Attributes
    ----------
    accelerator_ : accelerate.Accelerator
        The accelerator used for training.
    classes_, n_features_in_, image_shape_, net_, history_, loss_curve_, \
validation_scores_, n_iter_, device_
        As in :class:`~sklearn_cnn.CNNImageClassifier`; ``history_`` holds the
        main process's training loss (its shard of the data).

    See Also
    --------
    CNNImageClassifier : The same classifier on one device.

    Examples
    --------
    >>> import numpy as np
    >>> from accelerate import Accelerator
    >>> from sklearn_cnn import AcceleratedCNNImageClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randint(0, 256, size=(40, 8, 8, 3), dtype=np.uint8)
    >>> y = np.array(["cat", "dog"] * 20)
    >>> clf = AcceleratedCNNImageClassifier(
    ...     accelerator=Accelerator(cpu=True), filters=(8,), epochs=2, random_state=0
    ... ).fit(X, y)
    >>> clf.predict(X[:3]).shape
    (3,)
    """

    _parameter_constraints: dict = {
        **{
            name: constraint
            for name, constraint in CNNImageClassifier._parameter_constraints.items()
            if name != "device"
        },
        "accelerator": [HasMethods(["prepare", "backward", "unwrap_model"]), None],
    }

    def __init__(
        self,
        *,
        accelerator=None,
        filters=(32, 64),
        kernel_size=3,
        dense_units=64,
        dropout=0.0,
        module=None,
        epochs=10,
        batch_size=64,
        lr=1e-3,
        optimizer="adam",
        weight_decay=0.0,
        lr_schedule="constant",
        class_weight=None,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        warm_start=False,
        callbacks=None,
        augment=None,
        precision="auto",
        random_state=None,
        verbose=0,
        image_shape=None,
        image_size=None,
        unreadable_files="skip",
        cache_decoded=False,
        checkpoint=None,
    ):
        self.accelerator = accelerator
        self.filters = filters
        self.kernel_size = kernel_size
        self.dense_units = dense_units
        self.dropout = dropout
        self.module = module
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.class_weight = class_weight
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.callbacks = callbacks
        self.augment = augment
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose
        self.image_shape = image_shape
        self.image_size = image_size
        self.unreadable_files = unreadable_files
        self.cache_decoded = cache_decoded
        self.checkpoint = checkpoint

    @property
    def device(self) -> str:
        """The accelerator's device, which CNNImageClassifier's fitting reads."""
        return str(self._accelerator().device)

    def _accelerator(self):
        if self.accelerator is not None:
            self.accelerator_ = self.accelerator
        elif getattr(self, "accelerator_", None) is None:
            from accelerate import Accelerator

            self.accelerator_ = Accelerator()
        return self.accelerator_

    def _fit(self, X, y, **kwargs):
        accelerator = self._accelerator()
        if accelerator.num_processes > 1 and (
            not isinstance(self.random_state, Integral)
        ):
            raise ValueError(
                f"Training on {accelerator.num_processes} processes needs an int "
                f"random_state, so that every process holds out and shuffles the "
                f"same images; got random_state={self.random_state!r}."
            )
        return super()._fit(X, y, **kwargs)

    def _build_net(self, classes_, y_encoded, device):
        accelerator = self._accelerator()
        net = super()._build_net(classes_, y_encoded, device)
        params = {
            name: value
            for name, value in net.get_params(deep=False).items()
            if not name.startswith("_")
        }
        callbacks = params["callbacks"]
        if callbacks and not accelerator.is_main_process:
            # One progress bar for the whole run: the main process's.
            callbacks = [
                callback
                for callback in callbacks
                if not (isinstance(callback, tuple) and callback[0] == "progress_bar")
            ]
            params["callbacks"] = callbacks or None
        return AcceleratedImageNet(**params, accelerator=accelerator)
