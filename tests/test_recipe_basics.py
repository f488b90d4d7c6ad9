"""The training recipe: label smoothing, mixup and cutmix, weight averaging."""

import pickle

import numpy as np
import pytest
import torch
from conftest import FAST, make_images
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback

from sklearn_cnn import CNNImageClassifier, CNNImageRegressor, load_model, save_model
from sklearn_cnn._net import LabelWeightedBCEWithLogitsLoss
from sklearn_cnn._recipe import Mix, MixingSettings, cutmix_box


@pytest.fixture(scope="module")
def data():
    return make_images(n_samples=64, size=8)


class Batches(Callback):
    """What the network was given in each training step, and the loss's targets."""

    def initialize(self):
        self.inputs_, self.mixes_, self.validation_mixes_ = [], [], []
        return self

    def on_train_begin(self, net, **kwargs):
        self._handle = net.module_.register_forward_pre_hook(self._record)
        self._net = net

    def _record(self, module, args):
        if module.training:
            self.inputs_.append(args[0].detach().clone())
            self.mixes_.append(self._net._batch_mix)
        else:
            self.validation_mixes_.append(self._net._batch_mix)

    def on_train_end(self, net, **kwargs):
        self._handle.remove()


# -- label smoothing ------------------------------------------------------------------
def test_label_smoothing_lowers_the_training_targets_confidence(data):
    X, y = data
    clf = CNNImageClassifier(**FAST, label_smoothing=0.2).fit(X, y)
    assert clf.net_.criterion_.label_smoothing == 0.2
    logits = torch.randn(5, 2)
    targets = torch.tensor([0, 1, 1, 0, 1])
    smoothed = torch.nn.functional.one_hot(targets, 2) * 0.8 + 0.2 / 2
    by_hand = -(smoothed * logits.log_softmax(dim=1)).sum(dim=1)
    torch.testing.assert_close(clf.net_.criterion_(logits, targets), by_hand)
    settings = {**FAST, "epochs": 6}
    sharp = CNNImageClassifier(**settings).fit(X, y)
    smooth = CNNImageClassifier(**settings, label_smoothing=0.3).fit(X, y)
    confidence = [
        model.predict_proba(X).max(axis=1).mean() for model in (sharp, smooth)
    ]
    assert confidence[1] < confidence[0]
    # A smoothed target is 1 - 0.3 + 0.15 = 0.85 at most: so is the confidence.
    assert confidence[1] < 0.9


def test_multilabel_smoothing_moves_the_targets_towards_one_half():
    logits, targets = torch.randn(4, 3), torch.randint(0, 2, (4, 3)).float()
    smoothed = LabelWeightedBCEWithLogitsLoss(3, label_smoothing=0.2)(logits, targets)
    plain = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, targets * 0.8 + 0.1, reduction="none"
    )
    torch.testing.assert_close(smoothed, plain)


# -- mixup and cutmix -----------------------------------------------------------------
def test_mix_blends_or_pastes_images_and_blends_targets():
    images = torch.rand(4, 3, 6, 6)
    permutation = torch.tensor([2, 0, 3, 1])
    mixup = Mix(0.3, permutation)
    torch.testing.assert_close(
        mixup.images(images), 0.3 * images + 0.7 * images[permutation]
    )
    targets = torch.eye(4)
    torch.testing.assert_close(
        mixup.targets(targets), 0.3 * targets + 0.7 * targets[permutation]
    )
    cutmix = Mix(1 - 4 / 36, permutation, box=(1, 3, 2, 4))
    pasted = cutmix.images(images)
    torch.testing.assert_close(
        pasted[..., 1:3, 2:4], images[permutation][..., 1:3, 2:4]
    )
    outside = torch.ones(6, 6, dtype=torch.bool)
    outside[1:3, 2:4] = False
    torch.testing.assert_close(pasted[..., outside], images[..., outside])


def test_cutmix_lam_is_the_uncovered_share_and_both_alternate():
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    both = MixingSettings(mixup_alpha=0.4, cutmix_alpha=1.0)
    kinds = set()
    for _ in range(60):
        mix = both.draw(8, (10, 12), rng=rng, generator=generator)
        kinds.add(mix.box is None)
        assert sorted(mix.permutation.tolist()) == list(range(8))
        if mix.box is not None:
            top, bottom, left, right = mix.box
            assert mix.lam == pytest.approx(1 - (bottom - top) * (right - left) / 120)
    assert kinds == {True, False}  # mixup and cutmix both occur
    only_mixup = MixingSettings(mixup_alpha=0.4)
    assert all(
        only_mixup.draw(8, (10, 12), rng=rng, generator=generator).box is None
        for _ in range(20)
    )
    top, bottom, left, right = cutmix_box((10, 10), 0.75, np.random.default_rng(1))
    assert 0 <= top <= bottom <= 10 and 0 <= left <= right <= 10


@pytest.mark.parametrize("params", [{"mixup_alpha": 0.4}, {"cutmix_alpha": 1.0}])
def test_training_batches_are_mixed_and_validation_ones_never(data, params):
    X, y = data
    record = Batches()
    settings = {**FAST, "early_stopping": True, "validation_fraction": 0.25}
    CNNImageClassifier(**settings, **params, callbacks=[record]).fit(X, y)
    assert record.mixes_ and all(mix is not None for mix in record.mixes_)
    assert record.validation_mixes_ and all(
        mix is None for mix in record.validation_mixes_
    )
    plain = Batches()
    CNNImageClassifier(**settings, callbacks=[plain]).fit(X, y)
    # The same shuffled batches, mixed: the network saw other images.
    assert len(plain.inputs_) == len(record.inputs_)
    assert not torch.equal(plain.inputs_[0], record.inputs_[0])
    mix = record.mixes_[0]
    expected = mix.images(plain.inputs_[0])
    torch.testing.assert_close(record.inputs_[0], expected)


def test_mixed_targets_reach_the_loss(data, monkeypatch):
    from sklearn_cnn._net import ImageNetMixin

    X, y = data
    seen = []
    original = ImageNetMixin.get_loss

    def spy(self, y_pred, y_true, X=None, training=False):
        if training and self._batch_mix is not None:
            labels = y_true
            expected = self._batch_mix.targets(
                torch.nn.functional.one_hot(labels, 2).float()
            )
            seen.append(expected)
        return original(self, y_pred, y_true, X=X, training=training)

    monkeypatch.setattr(ImageNetMixin, "get_loss", spy)
    clf = CNNImageClassifier(**FAST, mixup_alpha=0.4).fit(X, y)
    assert seen
    # Soft targets: some rows are neither 0 nor 1 in both columns.
    assert any(((t > 0) & (t < 1)).any() for t in seen)
    # And the loss of a mixed batch is the cross-entropy with those targets.
    logits = torch.randn(4, 2)
    targets = torch.tensor([[0.3, 0.7], [1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    by_hand = -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(
        clf.net_.get_loss(logits, targets, training=False), by_hand
    )


def test_mixing_never_touches_prediction_and_is_seeded(data):
    X, y = data
    clf = CNNImageClassifier(**FAST, mixup_alpha=0.4, cutmix_alpha=1.0).fit(X, y)
    proba = clf.predict_proba(X)
    clf.set_params(mixup_alpha=0.0, cutmix_alpha=0.0)
    np.testing.assert_array_equal(clf.predict_proba(X), proba)
    again = CNNImageClassifier(**FAST, mixup_alpha=0.4, cutmix_alpha=1.0).fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(X), proba)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    CNNImageClassifier(**FAST, mixup_alpha=0.4).fit(X, y)
    assert torch.equal(torch.rand(3), expected)  # the global stream is untouched


def test_multilabel_rows_are_mixed_as_they_are(data):
    X, y = data
    labels = np.stack([y == y[0], X.mean(axis=(1, 2, 3)) > 60], axis=1).astype(int)
    clf = CNNImageClassifier(**FAST, mixup_alpha=0.4, label_smoothing=0.1)
    assert clf.fit(X, labels).predict_proba(X).shape == (len(X), 2)


# -- weight averaging ----------------------------------------------------------------
class TrainingWeights(Callback):
    """The weights before training and after every optimizer step."""

    def on_train_begin(self, net, **kwargs):
        self.steps_ = [self._copy(net)]

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self.steps_.append(self._copy(net))

    @staticmethod
    def _copy(net):
        return {k: v.detach().clone() for k, v in net.module_.state_dict().items()}


def test_ema_weights_equal_the_hand_computed_average(data):
    X, y = data
    record = TrainingWeights()
    # Placed after the averaging callback: it reads the weights after the
    # step, before the epoch's end swaps the average in.
    clf = CNNImageClassifier(
        **{**FAST, "epochs": 1, "batch_size": 16},
        weight_averaging="ema",
        ema_decay=0.5,
        callbacks=[record],
    )
    clf.fit(X, y)  # 4 steps
    steps = record.steps_
    assert len(steps) == 5
    average = dict(steps[0])
    for weights in steps[1:]:
        for name, value in weights.items():
            if value.is_floating_point() and "running" not in name:
                average[name] = 0.5 * average[name] + 0.5 * value
            else:
                average[name] = value  # buffers are copied
    fitted = clf.net_.module_.state_dict()
    for name, value in average.items():
        torch.testing.assert_close(fitted[name], value, atol=1e-6, rtol=1e-5)
    averaging = dict(clf.net_.callbacks_)["weight_averaging"]
    assert averaging.average_ is None and averaging.training_weights_ is None
    # Over 4 steps, the default decay leaves the average mostly at the start.
    with pytest.warns(UserWarning, match="Lower ema_decay"):
        clf.set_params(ema_decay=0.999, callbacks=None).fit(X, y)


def test_ema_is_what_prediction_model_files_and_pickles_use(data, tmp_path):
    X, y = data
    clf = CNNImageClassifier(
        **{**FAST, "epochs": 4}, weight_averaging="ema", ema_decay=0.8
    ).fit(X, y)
    plain = CNNImageClassifier(**{**FAST, "epochs": 4}).fit(X, y)
    proba = clf.predict_proba(X)
    assert not np.allclose(proba, plain.predict_proba(X))
    save_model(clf, tmp_path / "model.safetensors")
    np.testing.assert_array_equal(
        load_model(tmp_path / "model.safetensors").predict_proba(X), proba
    )
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(clf)).predict_proba(X), proba
    )
    regressor = CNNImageRegressor(**FAST, weight_averaging="ema", ema_decay=0.8)
    assert np.isfinite(regressor.fit(X, X.mean(axis=(1, 2, 3))).predict(X)).all()


# -- parameters -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "params",
    [
        {"label_smoothing": 1.0},
        {"mixup_alpha": -1},
        {"cutmix_alpha": -0.5},
        {"ema_decay": 1.0},
        {"ema_decay": 0},
        {"weight_averaging": "swa"},
    ],
)
def test_bad_recipe_parameters_are_refused_and_change_nothing(data, params):
    X, y = data
    clf = CNNImageClassifier(**FAST).fit(X, y)
    proba = clf.predict_proba(X)
    (name,) = params
    with pytest.raises(ValueError, match=name):
        clf.set_params(**params).fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), proba)


def test_recipe_parameters_are_searchable_and_cloned(data):
    X, y = data
    grid = {"label_smoothing": [0.0, 0.1], "mixup_alpha": [0.0, 0.2]}
    search = GridSearchCV(CNNImageClassifier(**FAST), grid, cv=2).fit(X, y)
    assert search.best_params_["label_smoothing"] in (0.0, 0.1)
    assert len(search.cv_results_["params"]) == 4
    copy = clone(CNNImageClassifier(cutmix_alpha=1.0, weight_averaging="ema"))
    assert copy.cutmix_alpha == 1.0 and copy.weight_averaging == "ema"
    regressor_params = CNNImageRegressor().get_params()
    assert "weight_averaging" in regressor_params
    assert not {"label_smoothing", "mixup_alpha", "cutmix_alpha"} & set(
        regressor_params
    )
