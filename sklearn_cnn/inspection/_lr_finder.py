"""The learning-rate finder: Leslie Smith's range test, as fastai's ``lr_find``.

:func:`find_learning_rate` trains a copy of the estimator for at most one
epoch while the learning rate grows exponentially from ``start_lr`` to
``end_lr``, records the smoothed training loss at every step and suggests the
rate in the middle of the loss's longest descent (fastai's "valley" rule).
``lr="auto"`` of the estimators calls it inside ``fit``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from skorch.callbacks import Callback


@dataclass(frozen=True)
class LearningRateFinderResult:
    """What the range test found.

    Attributes
    ----------
    lrs : ndarray of shape (n_steps,)
        The learning rate of each training step, growing exponentially.
    losses : ndarray of shape (n_steps,)
        The training loss after each step, smoothed (an exponential moving
        average with bias correction, as fastai's).
    suggested_lr : float
        The rate a third and a half of the way down the longest stretch over
        which the smoothed loss keeps falling (fastai's ``valley``), between
        the rates at which training starts to learn and where it diverges.
    raw_losses : ndarray of shape (n_steps,)
        The losses as they were, unsmoothed.
    """

    lrs: np.ndarray
    losses: np.ndarray
    suggested_lr: float
    raw_losses: np.ndarray = field(repr=False)

    def plot(self, ax=None):
        """Draw the smoothed loss against the learning rate (log scale).

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Where to draw; None makes a new figure.

        Returns
        -------
        ax : matplotlib Axes
        """
        from ._plot import _pyplot

        plt = _pyplot("LearningRateFinderResult.plot")
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4), layout="constrained")
        ax.plot(self.lrs, self.losses, label="smoothed training loss")
        index = int(np.argmin(np.abs(np.log(self.lrs) - math.log(self.suggested_lr))))
        ax.plot(
            [self.suggested_lr],
            [self.losses[index]],
            "o",
            color="tab:red",
            label=f"suggested lr {self.suggested_lr:.2g}",
        )
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.set_title("Learning-rate range test")
        ax.grid(True, alpha=0.3)
        ax.legend()
        return ax


class _StopRangeTest(Exception):
    """Ends the copy's training: enough steps, or the loss diverged."""


class _RangeTest(Callback):
    """Sets the rate of every step and records the loss after it.

    Every parameter group keeps its ratio to the head's rate: a backbone's body
    follows ``backbone_lr`` as it would in training.
    """

    def __init__(self, start_lr, end_lr, n_steps, smoothing, diverge_factor):
        self.start_lr, self.end_lr = start_lr, end_lr
        self.n_steps = n_steps
        self.smoothing, self.diverge_factor = smoothing, diverge_factor

    def initialize(self):
        self.lrs_, self.losses_, self.raw_losses_ = [], [], []
        self._average, self._best, self._ratios = 0.0, math.inf, None
        return self

    def _rate(self, step: int) -> float:
        if self.n_steps == 1:
            return self.start_lr
        return self.start_lr * (self.end_lr / self.start_lr) ** (
            step / (self.n_steps - 1)
        )

    def on_batch_begin(self, net, training=False, **kwargs):
        if not training:
            return
        groups = net.optimizer_.param_groups
        if self._ratios is None:
            self._ratios = [group["lr"] / self.start_lr for group in groups]
        rate = self._rate(len(self.lrs_))
        for group, ratio in zip(groups, self._ratios):
            group["lr"] = rate * ratio
        self.lrs_.append(rate)

    def on_batch_end(self, net, training=False, loss=None, **kwargs):
        if not training or loss is None:
            return
        value = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
        self.raw_losses_.append(value)
        beta = self.smoothing
        self._average = beta * self._average + (1 - beta) * value
        smoothed = self._average / (1 - beta ** len(self.raw_losses_))
        self.losses_.append(smoothed)
        self._best = min(self._best, smoothed)
        diverged = not math.isfinite(smoothed) or (
            smoothed > self.diverge_factor * self._best
        )
        if diverged or len(self.lrs_) >= self.n_steps:
            raise _StopRangeTest


def find_learning_rate(
    estimator,
    X,
    y,
    *,
    sample_weight=None,
    start_lr=1e-7,
    end_lr=10.0,
    num_it=100,
    smoothing=0.98,
    diverge_factor=4.0,
):
    """Run the learning-rate range test on a copy of ``estimator``.

    A copy of the estimator (unfitted; a Pipeline's earlier steps are fitted
    and applied to ``X`` first) trains for at most one epoch while the rate of
    each step grows exponentially from ``start_lr`` to ``end_lr``; the test
    stops early once the smoothed loss exceeds ``diverge_factor`` times its
    lowest value. The estimator itself is not changed. The copy trains as
    ``fit`` would (augmentation, mixup, the frozen body of a backbone in its
    first epoch), in float32, with a constant rate per step, without early
    stopping, checkpoints or weight averaging. With a backbone the rate found
    is the head's: the body follows in the ratio ``backbone_lr / lr`` of
    training (1/2 by default, and for ``lr="auto"``, where an explicit
    ``backbone_lr`` is then used as given).

    Parameters
    ----------
    estimator : CNNImageClassifier, CNNImageRegressor or Pipeline
        The model whose rate is wanted, fitted or not.
    X : array-like of images or image files
        Training images, as ``fit`` takes them.
    y : array-like
        Their targets.
    sample_weight : array-like of shape (n_samples,), default=None
        As for ``fit``.
    start_lr, end_lr : float, default=1e-7, 10.0
        The range of rates tried.
    num_it : int, default=100
        Steps of the test; fewer when one epoch has fewer batches (then use
        a smaller ``batch_size`` for a finer curve).
    smoothing : float, default=0.98
        Weight of the past in the moving average of the loss.
    diverge_factor : float, default=4.0
        Stop once the smoothed loss exceeds this multiple of its minimum.

    Returns
    -------
    result : LearningRateFinderResult
        ``lrs``, ``losses``, ``suggested_lr`` and ``plot()``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cnn import CNNImageClassifier
    >>> from sklearn_cnn.inspection import find_learning_rate
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randint(0, 256, size=(64, 8, 8, 3), dtype=np.uint8)
    >>> y = np.array(["cat", "dog"] * 32)
    >>> clf = CNNImageClassifier(filters=(4,), batch_size=4, random_state=0)
    >>> result = find_learning_rate(clf, X, y)
    >>> 1e-7 <= result.suggested_lr <= 10
    True
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(
            "find_learning_rate needs 0 < start_lr < end_lr; got start_lr="
            f"{start_lr!r} and end_lr={end_lr!r}."
        )
    if not (isinstance(num_it, (int, np.integer)) and num_it >= 2):
        raise ValueError(f"num_it must be an int of at least 2; got {num_it!r}.")
    final = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    if not hasattr(final, "_task_targets"):
        raise TypeError(
            "find_learning_rate takes a CNNImageClassifier, a CNNImageRegressor "
            f"or a Pipeline ending in one; got {type(final).__name__}."
        )
    if isinstance(estimator, Pipeline) and len(estimator) > 1:
        X = clone(estimator[:-1]).fit_transform(X, y)
    copy = clone(final)
    n_batches = math.ceil(_n_images(X) / copy.batch_size)
    n_steps = max(1, min(num_it, n_batches))
    test = _RangeTest(start_lr, end_lr, n_steps, smoothing, diverge_factor)
    if copy.backbone_lr is not None:
        # The body keeps its ratio to the head's rate (lr / 2 where the ratio
        # is unknown: lr="auto").
        ratio = 0.5 if isinstance(copy.lr, str) else copy.backbone_lr / copy.lr
        copy.set_params(backbone_lr=start_lr * ratio)
    copy.set_params(
        lr=start_lr,
        epochs=1,
        lr_schedule="constant",
        early_stopping=False,
        warm_start=False,
        checkpoint=None,
        weight_averaging=None,
        accelerator=None,
        precision="float32",
        verbose=0,
        test_time_augmentation=None,
        callbacks=[*(copy.callbacks or []), ("lr_range_test", test)],
    )
    from .._net import TrainingDivergedError

    try:
        copy.fit(X, y, sample_weight=sample_weight)
    except (_StopRangeTest, TrainingDivergedError):
        # Enough steps, or a rate so high that the loss is no longer finite.
        pass
    lrs = np.asarray(test.lrs_[: len(test.losses_)], dtype=np.float64)
    losses = np.asarray(test.losses_, dtype=np.float64)
    if len(losses) < 10:
        warnings.warn(
            f"The range test took {len(losses)} step(s) (at most one epoch): the "
            "suggested rate is rough. Use a smaller batch_size or more images "
            "for a finer curve.",
            UserWarning,
            stacklevel=2,
        )
    return LearningRateFinderResult(
        lrs=lrs,
        losses=losses,
        suggested_lr=_valley(lrs, losses),
        raw_losses=np.asarray(test.raw_losses_, dtype=np.float64),
    )


def _n_images(X) -> int:
    return X.shape[0] if hasattr(X, "shape") else len(X)


def _valley(lrs: np.ndarray, losses: np.ndarray) -> float:
    """fastai's ``valley``: inside the longest falling stretch of the loss.

    The first tenth and the last five steps are left out, as fastai does, when
    there are enough steps: the loss is still noisy at the start and diverging
    at the end.
    """
    n = len(losses)
    if n == 0:
        return float("nan")
    if n >= 20:
        lrs, losses = lrs[n // 10 : -5], losses[n // 10 : -5]
        n = len(losses)
    longest = [1] * n  # length of the longest falling run ending at i
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[end] < longest[i]:
            end = i
            start = end - longest[end]
    sections = (end - start) / 3
    index = min(n - 1, start + int(sections) + int(sections / 2))
    return float(lrs[index])
