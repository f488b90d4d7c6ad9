"""The training recipe: label smoothing, mixup and cutmix, weight averaging.

What fastai and timm users expect of a training loop, each a parameter of the
estimators and each off by default:

* :func:`label_smoothing_kwargs`: the loss's arguments for label smoothing;
* :class:`MixingSettings` and :class:`BatchMixer`: mixup and cutmix of the
  training batches, drawn (:meth:`MixingSettings.draw`) then applied
  (:class:`Mix`), as torchvision's ``v2`` transforms separate ``make_params``
  from ``transform``;
* :class:`WeightAveraging`: a skorch callback keeping an exponential moving
  average of the weights (timm's ``ModelEmaV3``), used for validation, early
  stopping and prediction.

The net (``_net.py``) calls the mixer in its training step; the estimators'
``fit`` (``_fitting.py``) builds both from the parameters.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from skorch.callbacks import Callback


def label_smoothing_kwargs(label_smoothing: float) -> dict:
    """Keyword arguments of the classification loss for ``label_smoothing``.

    Both classification losses take it: for the softmax loss
    (``CrossEntropyLoss``) torch replaces the target distribution ``p`` by
    ``(1 - eps) * p + eps / n_classes``, mixed targets included; the multi-label
    loss (``_net.LabelWeightedBCEWithLogitsLoss``) smooths each 0/1 target to
    ``y * (1 - eps) + eps / 2``.
    """
    return {"label_smoothing": float(label_smoothing)} if label_smoothing else {}


@dataclass(frozen=True)
class Mix:
    """One batch's draw: how its images and targets are mixed.

    Image ``i`` is mixed with image ``permutation[i]``: mixup blends them,
    ``lam * x + (1 - lam) * x[permutation]``; cutmix pastes the ``box``
    (``top, bottom, left, right``) of the partner into the image, and ``lam`` is
    the share of the image left uncovered. Targets (and sample weights) are
    mixed with the same ``lam``: ``lam * t + (1 - lam) * t[permutation]``.
    """

    lam: float
    permutation: torch.Tensor
    box: tuple[int, int, int, int] | None = None

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """The mixed images, of the shape of ``images`` (n, channels, height, width)."""
        partners = images[self.permutation]
        if self.box is None:
            return images * self.lam + partners * (1.0 - self.lam)
        top, bottom, left, right = self.box
        mixed = images.clone()
        mixed[..., top:bottom, left:right] = partners[..., top:bottom, left:right]
        return mixed

    def targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Mixed per-image values: class probabilities (n, n_classes), weights (n,)."""
        return targets * self.lam + targets[self.permutation] * (1.0 - self.lam)


@dataclass(frozen=True)
class MixingSettings:
    """Mixup and cutmix as the parameters ask; 0 turns one off.

    With both on, each batch is mixed by one of the two, cutmix with
    probability ``switch_prob``, as timm's ``Mixup`` does.
    """

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    switch_prob: float = 0.5

    @property
    def active(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def draw(
        self,
        n_images: int,
        image_size: tuple[int, int],
        *,
        rng: np.random.Generator,
        generator: torch.Generator,
    ) -> Mix:
        """Draw the mixing of a batch of ``n_images`` of ``image_size`` (h, w).

        The scalars (which of the two, ``lam``, the box) come from ``rng``; the
        permutation from ``generator``, on the generator's device.
        """
        cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha <= 0 or rng.random() < self.switch_prob
        )
        alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
        lam = float(rng.beta(alpha, alpha))
        permutation = torch.randperm(
            n_images, generator=generator, device=generator.device
        )
        if not cutmix:
            return Mix(lam, permutation)
        box = cutmix_box(image_size, lam, rng)
        top, bottom, left, right = box
        height, width = image_size
        # The box is clipped at the borders: lam is what it really covers.
        lam = 1.0 - (bottom - top) * (right - left) / (height * width)
        return Mix(lam, permutation, box)


def cutmix_box(
    image_size: tuple[int, int], lam: float, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """A box of about ``1 - lam`` of the image's area, centred at random.

    timm's ``rand_bbox``: sides ``sqrt(1 - lam)`` of the image's, clipped at the
    image's borders. Returns ``(top, bottom, left, right)``.
    """
    height, width = image_size
    ratio = math.sqrt(1.0 - lam)
    box_height, box_width = int(height * ratio), int(width * ratio)
    centre_y, centre_x = int(rng.integers(height)), int(rng.integers(width))
    top = min(max(centre_y - box_height // 2, 0), height)
    bottom = min(max(centre_y + box_height // 2, 0), height)
    left = min(max(centre_x - box_width // 2, 0), width)
    right = min(max(centre_x + box_width // 2, 0), width)
    return top, bottom, left, right


class BatchMixer:
    """Mixes training batches: the settings and this fit's two random streams.

    ``seed`` seeds both streams: a NumPy generator for the scalars of each draw
    and a torch generator on ``device`` for the permutations, so a fit with an
    int ``random_state`` mixes alike every time and never touches the global
    random state.
    """

    def __init__(self, settings: MixingSettings, seed: int, device):
        self.settings = settings
        rng_seed, permutation_seed = np.random.SeedSequence(seed).generate_state(2)
        self.rng = np.random.default_rng(int(rng_seed))
        self.generator = torch.Generator(device=device).manual_seed(
            int(permutation_seed)
        )

    def draw(self, images: torch.Tensor) -> Mix:
        return self.settings.draw(
            len(images),
            tuple(images.shape[-2:]),
            rng=self.rng,
            generator=self.generator,
        )


class WeightAveraging(Callback):
    """An exponential moving average of the weights: timm's ``ModelEmaV3``.

    After every training batch (optimizer step) each floating-point parameter's
    average becomes ``decay * average + (1 - decay) * parameter``; buffers
    (batch norm's running statistics and counts) are copied. The average
    starts from the weights training starts from: the initialization, or the
    fitted weights when training goes on (``warm_start``, ``partial_fit``).

    The network holds the average between epochs: it is swapped in before the
    first validation batch of an epoch (or at the epoch's end), so validation,
    early stopping (whose best weights are thus the average's) and
    checkpoints see it, and swapped out again before the next epoch's first
    training batch. At the end of training the average stays in the network,
    for prediction and model files, and the callback keeps no tensors.

    Place it before early stopping: early stopping's end of training loads
    the best epoch's (averaged) weights, which nothing must replace.
    """

    def __init__(self, decay: float = 0.999):
        self.decay = decay

    def initialize(self):
        self.average_ = None
        self.training_weights_ = None
        self.n_steps_ = 0
        return self

    # -- state -------------------------------------------------------------------
    @staticmethod
    def _tensors(net) -> dict[str, torch.Tensor]:
        return dict(net.module_.state_dict(keep_vars=True))

    def _copy(self, net) -> dict[str, torch.Tensor]:
        return {
            name: tensor.detach().clone() for name, tensor in self._tensors(net).items()
        }

    def _load(self, net, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, tensor in self._tensors(net).items():
                tensor.copy_(state[name])

    def _swap_in(self, net) -> None:
        if self.training_weights_ is None:
            self.training_weights_ = self._copy(net)
            self._load(net, self.average_)

    def _swap_out(self, net) -> None:
        if self.training_weights_ is not None:
            self._load(net, self.training_weights_)
            self.training_weights_ = None

    def checkpoint_state(self, net) -> dict:
        """The training weights and the average, while the average is swapped in."""
        self._swap_in(net)
        return {
            "module": {k: v.cpu() for k, v in self.training_weights_.items()},
            "average": {k: v.cpu() for k, v in self.average_.items()},
        }

    def restore(self, net, state: dict) -> None:
        """Resume from :meth:`checkpoint_state`: the network holds the average."""
        device = next(iter(self._tensors(net).values())).device
        self.average_ = {k: v.to(device) for k, v in state["average"].items()}
        self.training_weights_ = None
        self._swap_in(net)

    def finish(self, net) -> None:
        """Leave the average in the network and drop the copies (idempotent)."""
        if self.average_ is not None:
            self._swap_in(net)
        # Copies left here would go into pickles, as CUDA tensors on a GPU.
        self.average_ = None
        self.training_weights_ = None

    # -- callback hooks ---------------------------------------------------------------
    def on_train_begin(self, net, **kwargs):
        if self.average_ is None:
            self.average_ = self._copy(net)
        self.n_steps_ = 0

    def on_batch_begin(self, net, training=False, **kwargs):
        if training:
            self._swap_out(net)
        else:
            self._swap_in(net)

    def on_batch_end(self, net, training=False, **kwargs):
        if not training:
            return
        average, decay = self.average_, self.decay
        with torch.no_grad():
            for name, parameter in net.module_.named_parameters():
                if parameter.is_floating_point():
                    average[name].lerp_(parameter.detach(), 1.0 - decay)
            for name, buffer in net.module_.named_buffers():
                average[name].copy_(buffer)
        self.n_steps_ += 1

    def on_epoch_end(self, net, **kwargs):
        self._swap_in(net)

    def on_train_end(self, net, **kwargs):
        n_steps = self.n_steps_
        self.finish(net)
        start_share = self.decay**n_steps
        if n_steps and start_share > 0.1:
            # The decay leaving 5% of the start: about 1 - 3 / n_steps for many
            # steps, and still in (0, 1) for a few (where 1 - 3 / n_steps is not).
            suggested = 0.05 ** (1 / n_steps)
            warnings.warn(
                f"weight_averaging='ema' with ema_decay={self.decay} over "
                f"{n_steps} optimizer steps: {start_share:.0%} of the averaged "
                "weights are still the weights training started from. Lower "
                f"ema_decay (to about {suggested:.3g} or less) or train "
                "for more steps.",
                UserWarning,
                stacklevel=2,
            )
