"""Test-time augmentation: every image predicted as several views, averaged.

``test_time_augmentation`` of the estimators, read at prediction (not fitted,
so ``set_params`` on a fitted model takes effect at the next prediction):

* ``None``: one view, the image itself; prediction is what it is without this
  module;
* ``"flip"``: the image and its horizontal mirror (fastai's ``Learner.tta``
  without the random draws);
* an augmenter, or a list of them applied in turn: the image itself plus
  ``n_test_time_draws`` random draws, from a generator seeded by
  ``random_state``.

:class:`TestTimeViews` makes the views of a batch; the inference loop
(``_inference.py``) stacks them along the batch dimension, so all the views of
a batch go through the network in one forward pass (and the out-of-memory rule
splits them as any batch). The estimators average what their outputs mean:
probabilities for a classifier, values for a regressor.
"""

from __future__ import annotations

import torch

from .utils._runtime import derive_seeds, resolve_seed


def check_test_time_augmentation(setting) -> tuple:
    """The augmenters of ``setting`` (empty for None and "flip"); else an error."""
    if setting is None or (isinstance(setting, str) and setting == "flip"):
        return ()
    augmenters = list(setting) if isinstance(setting, (list, tuple)) else [setting]
    if not augmenters:
        raise ValueError(
            "test_time_augmentation must be None, 'flip', an augmenter or a "
            "non-empty list of augmenters; got an empty list."
        )
    for augmenter in augmenters:
        if not hasattr(augmenter, "augment_batch"):
            raise ValueError(
                "test_time_augmentation must be None, 'flip', an augmenter (such "
                "as RandomHorizontalFlip()) or a list of augmenters; got "
                f"{type(augmenter).__name__} {augmenter!r}, which has no "
                "augment_batch method."
            )
    return tuple(augmenters)


class TestTimeViews:
    """The views of each batch for one prediction call.

    Parameters
    ----------
    setting : "flip", an augmenter or a list of augmenters
        As ``test_time_augmentation``.
    n_draws : int
        Random draws per image besides the image itself (augmenters only).
    random_state : int, RandomState or None
        Seeds the draws: an int gives the same views on every call.
    """

    __test__ = False  # not a pytest class, despite its name

    def __init__(self, setting, n_draws: int, random_state):
        self.augmenters = check_test_time_augmentation(setting)
        self.n_draws = int(n_draws)
        (self.seed,) = derive_seeds(resolve_seed(random_state), 1)
        self._generators: dict[torch.device, torch.Generator] = {}

    @property
    def n_views(self) -> int:
        return 2 if not self.augmenters else 1 + self.n_draws

    def __call__(self, images: torch.Tensor, value_range: float) -> torch.Tensor:
        """``(n_views * n, C, H, W)``: view ``v`` of image ``i`` at ``v * n + i``.

        ``images`` are float, on the device, in their stored scale (0-255 for
        uint8 images, as ``value_range`` says).
        """
        if not self.augmenters:
            return torch.cat([images, images.flip(-1)])
        generator = self._generator(images.device)
        views = [images]
        for _ in range(self.n_draws):
            view = images
            for augmenter in self.augmenters:
                view = augmenter.augment_batch(
                    view, generator=generator, value_range=value_range
                )
            views.append(view)
        return torch.cat(views)

    def _generator(self, device: torch.device) -> torch.Generator:
        # One stream per call, continued batch after batch, on the device.
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(
                self.seed
            )
        return self._generators[device]


def views_of(estimator) -> TestTimeViews | None:
    """The views an estimator's prediction averages over (None: the image alone)."""
    setting = estimator.test_time_augmentation
    if setting is None:
        return None
    return TestTimeViews(setting, estimator.n_test_time_draws, estimator.random_state)
