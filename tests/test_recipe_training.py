"""The training recipe in a fit: label smoothing, mixup and cutmix, weight averaging."""

import numpy as np
import pytest
import torch
from conftest import make_images

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn._net import LabelWeightedBCEWithLogitsLoss
from sklearn_cnn._recipe import Mix, MixingSettings

TINY = dict(
    filters=(4,), dense_units=8, epochs=1, batch_size=16, lr=0.01, random_state=0
)


def tiny(**params):
    return CNNImageClassifier(**{**TINY, **params})


@pytest.fixture
def images():
    return make_images(n_samples=32)


# -- label smoothing ---------------------------------------------------------------
def test_fitted_criterion_has_the_label_smoothing(images):
    X, y = images
    clf = tiny(label_smoothing=0.2).fit(X, y)
    assert clf.net_.criterion_.label_smoothing == pytest.approx(0.2)
    assert tiny().fit(X, y).net_.criterion_.label_smoothing == 0.0


def test_smoothed_cross_entropy_equals_a_hand_computation():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
    target = torch.tensor([0, 2])
    eps, n_classes = 0.3, 3
    loss = torch.nn.functional.cross_entropy(logits, target, label_smoothing=eps)
    smoothed = torch.full((2, n_classes), eps / n_classes)
    smoothed[torch.arange(2), target] += 1 - eps
    expected = -(smoothed * logits.log_softmax(dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(loss, expected)


def test_label_smoothing_lowers_the_confidence_on_training_images():
    X, y = make_images(n_samples=48)
    params = dict(epochs=6, lr=0.02)
    sharp = tiny(**params).fit(X, y).predict_proba(X).max(axis=1).mean()
    smooth = tiny(label_smoothing=0.3, **params).fit(X, y).predict_proba(X)
    assert smooth.max(axis=1).mean() < sharp


def test_multilabel_loss_smooths_targets_towards_one_half():
    torch.manual_seed(0)
    logits = torch.randn(5, 3)
    targets = (torch.rand(5, 3) > 0.5).float()
    loss = LabelWeightedBCEWithLogitsLoss(3, label_smoothing=0.2)(logits, targets)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, targets * 0.8 + 0.1, reduction="none"
    )
    # 1 becomes 0.9 and 0 becomes 0.1: y * (1 - eps) + eps / 2.
    torch.testing.assert_close(loss, expected)


# -- mixup and cutmix ------------------------------------------------------------
def test_mixup_blends_images_and_targets():
    images = torch.arange(4 * 2 * 3 * 3, dtype=torch.float32).reshape(4, 2, 3, 3)
    targets = torch.eye(4)
    permutation = torch.tensor([2, 0, 3, 1])
    mix = Mix(0.3, permutation)
    torch.testing.assert_close(
        mix.images(images), 0.3 * images + 0.7 * images[permutation]
    )
    torch.testing.assert_close(
        mix.targets(targets), 0.3 * targets + 0.7 * targets[permutation]
    )


def test_cutmix_pastes_the_box_of_the_partner():
    images = torch.rand(3, 2, 4, 4)
    permutation = torch.tensor([1, 2, 0])
    mix = Mix(0.75, permutation, box=(0, 2, 1, 3))
    mixed = mix.images(images)
    inside = torch.zeros(4, 4, dtype=torch.bool)
    inside[0:2, 1:3] = True
    torch.testing.assert_close(mixed[..., inside], images[permutation][..., inside])
    torch.testing.assert_close(mixed[..., ~inside], images[..., ~inside])
    weights = torch.tensor([1.0, 2.0, 4.0])
    torch.testing.assert_close(mix.targets(weights), torch.tensor([1.25, 2.5, 1.75]))


def test_cutmix_draw_lam_is_the_uncovered_share():
    settings = MixingSettings(cutmix_alpha=1.0)
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    for _ in range(30):
        mix = settings.draw(5, (8, 6), rng=rng, generator=generator)
        top, bottom, left, right = mix.box
        assert 0 <= top <= bottom <= 8 and 0 <= left <= right <= 6
        assert mix.lam == pytest.approx(1 - (bottom - top) * (right - left) / 48)
        assert sorted(mix.permutation.tolist()) == list(range(5))


@pytest.mark.parametrize(
    "mixup_alpha, cutmix_alpha, kinds",
    [(0.4, 1.0, {"mixup", "cutmix"}), (0.4, 0.0, {"mixup"}), (0.0, 1.0, {"cutmix"})],
)
def test_draw_picks_mixup_or_cutmix_as_the_alphas_ask(mixup_alpha, cutmix_alpha, kinds):
    settings = MixingSettings(mixup_alpha, cutmix_alpha)
    rng, generator = np.random.default_rng(1), torch.Generator().manual_seed(1)
    draws = [settings.draw(4, (8, 8), rng=rng, generator=generator) for _ in range(50)]
    assert {"mixup" if d.box is None else "cutmix" for d in draws} == kinds
    assert all(0 <= d.lam <= 1 for d in draws)
