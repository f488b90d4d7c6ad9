"""Data-parallel training with Hugging Face Accelerate: the net's side.

``CNNImageClassifier(accelerator=Accelerator())`` trains an
:class:`AcceleratedImageNet`, our :class:`~sklearn_cnn._training.ImageNeuralNet`
with skorch's :class:`skorch.hf.AccelerateMixin`, as skorch's own ``hf.py`` puts
the mixin on the net. Run the same script in every process (``accelerate
launch script.py`` or ``torchrun``); each process trains on its own shard of
every epoch and the gradients are averaged across processes, so all processes
end with the same weights.

The mixin's training step is used as it is (``accelerator.autocast``,
``accelerator.backward``, gradient accumulation): the check that stops training
on a NaN loss lives in ``get_loss``. What differs from the mixin, and why:

* ``get_iterator``: with several processes, training batches come from a
  ``DataLoader`` over a standard shuffled ``BatchSampler``, which
  ``accelerator.prepare`` shards as for any DataLoader; image files given as
  ``X`` are decoded batch by batch there, each process opening only the files
  of its own shard. Validation and prediction run whole on every process
  (they are cheap next to training, and identical results on every process
  keep early stopping in step), so nothing is gathered in ``evaluation_step``.
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

import torch
from accelerate.optimizer import AcceleratedOptimizer
from skorch.callbacks import LRScheduler
from skorch.hf import AccelerateMixin

from ._training import ImageData, ImageFiles, ImageNeuralNet


class AcceleratedImageNet(AccelerateMixin, ImageNeuralNet):
    """:class:`ImageNeuralNet` trained through an ``accelerate.Accelerator``."""

    def _validate_params(self):
        # Skip the mixin's rule that device must be None: our batches are cut and
        # prepared on the net's device, which must be the accelerator's.
        ImageNeuralNet._validate_params(self)
        accelerator = self.accelerator
        if not same_device(torch.device(self.device), accelerator.device):
            raise ValueError(
                f"The net's device is {self.device!r} but the accelerator's is "
                f"{str(accelerator.device)!r}; they must be the same."
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

    def _unwrap_accelerator(self):
        """The mixin's, and the optimizers too, so that the fitted net pickles.

        torch's learning-rate schedulers patch the ``step`` of the optimizer
        they get, here Accelerate's wrapper (which the accelerator keeps too),
        with a function pickle cannot find by name. Training wraps the
        optimizers again, and skorch's ``LRScheduler`` makes its scheduler anew
        at the start of every training.
        """
        wrapped = self._wrapped_with_accelerator
        super()._unwrap_accelerator()
        if not wrapped:
            return
        for name in self._optimizers:
            optimizer = getattr(self, name + "_")
            if isinstance(optimizer, AcceleratedOptimizer):
                # The accelerator keeps the wrapper: drop the scheduler's patch.
                vars(optimizer).pop("step", None)
                setattr(self, name + "_", optimizer.optimizer)

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
        if not training or self.accelerator.num_processes == 1:
            # Whole on every process; accelerator.prepare leaves it as it is.
            return ImageNeuralNet.get_iterator(self, dataset, training=training)
        sampler = torch.utils.data.BatchSampler(
            torch.utils.data.RandomSampler(dataset, generator=self.shuffle_generator),
            batch_size=self.batch_size,
            drop_last=False,
        )
        loader = torch.utils.data.DataLoader(
            _Batches(dataset), batch_sampler=sampler, collate_fn=_whole_batch
        )
        return self.accelerator.prepare(loader)

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


class _Batches(torch.utils.data.Dataset):
    """Images cut by a whole batch of indices at once (``__getitems__``)."""

    def __init__(self, data: ImageData | ImageFiles):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, indices):
        # Image files: only the files of this process's batches are decoded.
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.data.images_at(index), self.data.target(index)


def _whole_batch(batch):
    return batch


def _silent(*args, **kwargs) -> None:
    pass


def _has_trainable_parameters(module) -> bool:
    return isinstance(module, torch.nn.Module) and any(
        parameter.requires_grad for parameter in module.parameters()
    )


def same_device(device: torch.device, other: torch.device) -> bool:
    """Equal devices, reading 'cuda' without an index as the current CUDA device."""

    def index(d: torch.device):
        if d.type == "cuda" and d.index is None:
            return torch.cuda.current_device()
        return d.index

    return device.type == other.type and index(device) == index(other)
