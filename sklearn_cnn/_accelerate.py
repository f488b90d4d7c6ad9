"""Data-parallel training with Hugging Face Accelerate: the net's side.

``CNNImageClassifier(accelerator=Accelerator())`` trains an
:class:`AcceleratedImageNet`, our :class:`~sklearn_cnn._net.ImageNeuralNet`
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
* ``device``: the mixin wants ``device=None`` when the accelerator places the
  modules (its default): the net gets that, and the batches are put on
  ``accelerator.device`` by the data source itself.
* The accelerator's own print function prints whatever ``verbose`` says, so the
  epoch table gets ``accelerator.print`` only when ``verbose`` is set.

* The mixin prepares the criterion too, which on several processes wraps it in
  ``DistributedDataParallel``; DDP refuses modules without trainable parameters
  (``CrossEntropyLoss``). The net's accelerator is the user's, behind a thin
  proxy that hands such modules back unprepared (``_TrainablePreparing``).
"""

from __future__ import annotations

import torch
from accelerate.optimizer import AcceleratedOptimizer
from skorch.hf import AccelerateMixin

from ._net import ImageNetMixin, ImageNeuralNet, ImageNeuralNetRegressor
from ._sources import LabelledImages, batch_loader
from .utils._runtime import resolve_verbose
from .utils._skorch_private import unwrap_from_accelerator, wrap_for_accelerator


def accelerated_net_kwargs(accelerator, verbose) -> dict:
    """The keyword arguments an :class:`AcceleratedImageNet` gets beside the rest."""
    return {
        "accelerator": _TrainablePreparing(accelerator),
        "device": None if accelerator.device_placement else str(accelerator.device),
        "callbacks__print_log__sink": accelerator.print
        if resolve_verbose(verbose)
        else _silent,
    }


class _TrainablePreparing:
    """The user's accelerator, preparing only modules with trainable parameters.

    The mixin prepares the criterion too, which on several processes Accelerate
    wraps in ``DistributedDataParallel``; DDP refuses a module without
    trainable parameters (``CrossEntropyLoss``). Everything else is the
    accelerator's own.
    """

    def __init__(self, accelerator):
        self.accelerator = accelerator

    def prepare(self, *objects, **kwargs):
        if len(objects) == 1 and _has_no_trainable_parameters(objects[0]):
            return objects[0]
        return self.accelerator.prepare(*objects, **kwargs)

    def __getattr__(self, name):
        if name == "accelerator":  # while unpickling, before __dict__ is set
            raise AttributeError(name)
        return getattr(self.accelerator, name)


def _has_no_trainable_parameters(value) -> bool:
    return isinstance(value, torch.nn.Module) and not any(
        parameter.requires_grad for parameter in value.parameters()
    )


def accelerated_net_class(net_class: type) -> type:
    """The Accelerate counterpart of one of our net classes."""
    return _ACCELERATED[net_class]


class _AcceleratedSteps:
    """What our nets do differently under Accelerate (see the module's docstring)."""

    # -- data ------------------------------------------------------------------
    def get_iterator(self, dataset, training=False):
        if not training or self.accelerator.num_processes == 1:
            # Whole on every process, not prepared (see evaluation_step).
            return ImageNetMixin.get_iterator(self, dataset, training=training)
        if not isinstance(dataset, LabelledImages):
            return super().get_iterator(dataset, training=True)
        loader = batch_loader(
            dataset,
            batch_size=self.batch_size,
            shuffle=True,
            generator=self.shuffle_generator,
        )
        return self.accelerator.prepare(loader)

    def evaluation_step(self, batch, training=False):
        # Evaluation batches are not sharded: nothing to gather.
        return ImageNetMixin.evaluation_step(self, batch, training=training)

    # -- training --------------------------------------------------------------
    def partial_fit(self, X, y=None, classes=None, **fit_params):
        if not self.initialized_:
            self.initialize()
        # Wrap again what the end of the previous fit unwrapped (no-op otherwise).
        wrap_for_accelerator(self)
        try:
            return super().partial_fit(X, y, classes=classes, **fit_params)
        finally:
            if self.unwrap_after_train:
                unwrap_from_accelerator(self)
                self._unwrap_optimizer()

    def _unwrap_optimizer(self):
        """The plain optimizer again, so that the fitted net pickles.

        torch's learning-rate schedulers patch the ``step`` of the optimizer
        they get, here Accelerate's wrapper (which the accelerator keeps too),
        with a function pickle cannot find by name. Training wraps the
        optimizer again, and skorch's ``LRScheduler`` makes its scheduler anew
        at the start of every training.
        """
        optimizer = self.optimizer_
        if isinstance(optimizer, AcceleratedOptimizer):
            vars(optimizer).pop("step", None)
            self.optimizer_ = optimizer.optimizer

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
        return super(AccelerateMixin, self).on_train_end(net, X=X, y=y, **kwargs)


class AcceleratedImageNet(_AcceleratedSteps, AccelerateMixin, ImageNeuralNet):
    """:class:`ImageNeuralNet` trained through an ``accelerate.Accelerator``."""


class AcceleratedImageNetRegressor(
    _AcceleratedSteps, AccelerateMixin, ImageNeuralNetRegressor
):
    """:class:`ImageNeuralNetRegressor` trained through an Accelerator."""


_ACCELERATED = {
    ImageNeuralNet: AcceleratedImageNet,
    ImageNeuralNetRegressor: AcceleratedImageNetRegressor,
}


def _silent(*args, **kwargs) -> None:
    pass


def same_device(device: torch.device, other: torch.device) -> bool:
    """Equal devices, reading 'cuda' without an index as the current CUDA device."""

    def index(d: torch.device):
        if d.type == "cuda" and d.index is None:
            return torch.cuda.current_device()
        return d.index

    return device.type == other.type and index(device) == index(other)
