"""The training recipe in a fit: label smoothing, mixup and cutmix, weight averaging."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from conftest import make_images
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, ParameterGrid
from skorch.callbacks import Callback

from sklearn_cnn import CNNImageClassifier, CNNImageRegressor, load_model, save_model
from sklearn_cnn._net import LabelWeightedBCEWithLogitsLoss, WeightedTarget
from sklearn_cnn._recipe import Mix, MixingSettings
from sklearn_cnn.utils._sklearn_private import InvalidParameterError

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
    torch.testing.assert_close(mix.targets(weights), torch.tensor([1.25, 2.5, 3.25]))


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


class MixSpy(Callback):
    """Records what the network and the loss see in each step of a fit."""

    def __init__(self):
        self.inputs = []  # (training, mix drawn for the step, the module's input)
        self.targets = []  # (training, the criterion's targets)

    def on_train_begin(self, net, **kwargs):
        def pre_hook(module, args):
            self.inputs.append((module.training, net._batch_mix, args[0].clone()))

        net.module_.register_forward_pre_hook(pre_hook)
        forward = net.criterion_.forward

        def criterion(y_pred, y_true):
            self.targets.append((net.module_.training, y_true.clone()))
            return forward(y_pred, y_true)

        net.criterion_.forward = criterion


@pytest.fixture
def applied_mixes(monkeypatch):
    """Each (unmixed, mixed) batch of Mix.images."""
    applied = []
    images = Mix.images

    def recording(self, batch):
        mixed = images(self, batch)
        applied.append((batch.clone(), mixed.clone()))
        return mixed

    monkeypatch.setattr(Mix, "images", recording)
    return applied


def test_mixup_mixes_training_batches_and_targets_only(images, applied_mixes):
    X, y = images
    spy = MixSpy()
    tiny(
        mixup_alpha=0.4,
        epochs=2,
        early_stopping=True,
        validation_fraction=0.25,
        callbacks=[("spy", spy)],
    ).fit(X, y)
    training = [(mix, x) for is_training, mix, x in spy.inputs if is_training]
    validation = [(mix, x) for is_training, mix, x in spy.inputs if not is_training]
    # 24 training images in batches of 16, 8 validation images, 2 epochs.
    assert len(training) == 4 and len(validation) == 2
    assert len(applied_mixes) == len(training)
    for (mix, x), (unmixed, mixed) in zip(training, applied_mixes):
        assert mix is not None and 0 < mix.lam < 1
        assert torch.equal(x, mixed)
        assert not torch.equal(x, unmixed)
        torch.testing.assert_close(
            x, mix.lam * unmixed + (1 - mix.lam) * unmixed[mix.permutation]
        )
    assert all(mix is None for mix, _ in validation)
    # Training targets are class probabilities, mixed; validation's class indices.
    train_targets = [t for is_training, t in spy.targets if is_training]
    valid_targets = [t for is_training, t in spy.targets if not is_training]
    assert len(train_targets) == 4 and len(valid_targets) == 2
    for t in train_targets:
        assert t.dim() == 2 and t.is_floating_point()
        torch.testing.assert_close(t.sum(dim=1), torch.ones(len(t)))
        assert ((t > 0) & (t < 1)).any()
    assert all(t.dim() == 1 and not t.is_floating_point() for t in valid_targets)


def test_mixing_parameters_leave_prediction_unchanged(images):
    X, y = images
    clf = tiny(mixup_alpha=0.4).fit(X, y)
    proba = clf.predict_proba(X)
    assert clf.net_._batch_mix is None
    clf.set_params(mixup_alpha=0.8, cutmix_alpha=1.0)
    np.testing.assert_array_equal(clf.predict_proba(X), proba)


def test_seeded_mixup_fits_are_reproducible(images):
    X, y = images
    params = dict(mixup_alpha=0.4, cutmix_alpha=1.0, epochs=2)
    first = tiny(**params).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(tiny(**params).fit(X, y).predict_proba(X), first)
    assert not np.array_equal(tiny(epochs=2).fit(X, y).predict_proba(X), first)


def test_mixup_fit_leaves_the_global_random_stream_alone(images):
    X, y = images
    torch.manual_seed(0)
    expected = torch.rand(5)
    np_state = np.random.get_state()[1].copy()  # noqa: NPY002
    torch.manual_seed(0)
    tiny(mixup_alpha=0.4, cutmix_alpha=1.0, epochs=2).fit(X, y)
    torch.testing.assert_close(torch.rand(5), expected, rtol=0, atol=0)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002


# -- weight averaging --------------------------------------------------------------
class WeightRecorder(Callback):
    """The training weights at the start and after each optimizer step.

    The user's callbacks come after weight averaging's, so at each training
    batch's end the network still holds the training weights.
    """

    def __init__(self):
        self.parameters = []
        self.buffers = []

    def _record(self, net):
        module = net.module_
        self.parameters.append(
            {name: p.detach().clone() for name, p in module.named_parameters()}
        )
        self.buffers.append(
            {name: b.detach().clone() for name, b in module.named_buffers()}
        )

    def on_train_begin(self, net, **kwargs):
        self._record(net)

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self._record(net)


def test_ema_is_the_hand_computed_average(images):
    X, y = images
    recorder = WeightRecorder()
    clf = tiny(
        weight_averaging="ema",
        ema_decay=0.5,
        epochs=2,
        callbacks=[("recorder", recorder)],
    ).fit(X, y)
    names = [name for name, _ in clf.net_.callbacks_]
    assert names.index("weight_averaging") < names.index("recorder")
    n_steps = len(recorder.parameters) - 1
    assert n_steps >= 4
    expected = dict(recorder.parameters[0])
    for weights in recorder.parameters[1:]:
        expected = {k: 0.5 * v + 0.5 * weights[k] for k, v in expected.items()}
    fitted = dict(clf.net_.module_.named_parameters())
    assert fitted.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(fitted[name].detach(), value, rtol=0, atol=1e-6)
    # Not the last training weights: the average.
    last = recorder.parameters[-1]
    assert any(not torch.allclose(fitted[k], last[k]) for k in last)
    # Buffers (batch norm's running statistics) are the last training buffers.
    buffers = dict(clf.net_.module_.named_buffers())
    assert "features.1.running_mean" in buffers
    for name, value in recorder.buffers[-1].items():
        torch.testing.assert_close(buffers[name], value, rtol=0, atol=0)
    assert clf.net_.module_.features[1].running_mean.abs().sum() > 0


def test_ema_over_too_few_steps_warns_naming_ema_decay(images):
    X, y = images
    with pytest.warns(UserWarning, match="ema_decay=0.999"):
        tiny(weight_averaging="ema").fit(X, y)


def test_ema_warning_suggests_a_valid_decay_after_a_few_steps(images):
    X, y = images
    # 2 optimizer steps: 1 - 3 / n_steps would be -0.5, no valid ema_decay.
    with pytest.warns(UserWarning, match="ema_decay=0.5") as record:
        tiny(weight_averaging="ema", ema_decay=0.5).fit(X, y)
    (message,) = [str(w.message) for w in record if "ema_decay" in str(w.message)]
    suggested = float(message.split("to about ")[1].split()[0])
    assert 0 < suggested < 1 and suggested**2 <= 0.1


def test_ema_callback_keeps_no_tensors_after_fit(images):
    X, y = images
    clf = tiny(weight_averaging="ema", ema_decay=0.5, epochs=2).fit(X, y)
    averaging = dict(clf.net_.callbacks_)["weight_averaging"]
    assert averaging.average_ is None
    assert averaging.training_weights_ is None


def test_ema_model_survives_model_files_and_pickle(images, tmp_path):
    X, y = images
    clf = tiny(weight_averaging="ema", ema_decay=0.5, epochs=2).fit(X, y)
    proba = clf.predict_proba(X)
    save_model(clf, tmp_path / "model.safetensors")
    loaded = load_model(tmp_path / "model.safetensors")
    np.testing.assert_allclose(loaded.predict_proba(X), proba, rtol=1e-6)
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(clf)).predict_proba(X), proba
    )


def test_regressor_with_ema_fits_and_predicts_finite_values(images):
    X, _ = images
    target = X.mean(axis=(1, 2, 3)) / 255.0
    params = {**TINY, "epochs": 2, "weight_averaging": "ema", "ema_decay": 0.5}
    reg = CNNImageRegressor(**params)
    reg.fit(X, target)
    prediction = reg.predict(X)
    assert prediction.shape == (len(X),)
    assert np.isfinite(prediction).all()
    assert dict(reg.net_.callbacks_)["weight_averaging"].average_ is None


# -- parameter validation ------------------------------------------------------------
@pytest.mark.parametrize(
    "params, name",
    [
        (dict(label_smoothing=1.0), "label_smoothing"),
        (dict(label_smoothing=-0.1), "label_smoothing"),
        (dict(mixup_alpha=-1), "mixup_alpha"),
        (dict(cutmix_alpha=-0.5), "cutmix_alpha"),
        (dict(weight_averaging="ema", ema_decay=1.0), "ema_decay"),
        (dict(weight_averaging="ema", ema_decay=0), "ema_decay"),
        (dict(weight_averaging="swa"), "weight_averaging"),
    ],
)
def test_invalid_recipe_parameters_raise_and_keep_the_fitted_model(
    images, params, name
):
    X, y = images
    clf = tiny().fit(X, y)
    proba = clf.predict_proba(X)
    clf.set_params(**params)
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter") as error:
        clf.fit(X, y)
    assert isinstance(error.value, ValueError)
    # Parameters are checked before anything else: the fitted model is intact.
    np.testing.assert_array_equal(clf.predict_proba(X), proba)


@pytest.mark.parametrize(
    "params, name",
    [
        (dict(ema_decay=1.0), "ema_decay"),
        (dict(weight_averaging="swa"), "weight_averaging"),
    ],
)
def test_invalid_regressor_averaging_parameters_raise(images, params, name):
    X, _ = images
    target = X.mean(axis=(1, 2, 3)) / 255.0
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter"):
        CNNImageRegressor(**{**TINY, **params}).fit(X, target)


# -- model selection ----------------------------------------------------------------
def test_grid_search_over_the_recipe(images):
    X, y = images
    grid = {"label_smoothing": [0.0, 0.1], "mixup_alpha": [0.0, 0.2]}
    search = GridSearchCV(tiny(), grid, cv=2).fit(X, y)
    assert search.best_params_ in list(ParameterGrid(grid))
    assert len(search.cv_results_["params"]) == 4
    assert (
        search.best_estimator_.label_smoothing == search.best_params_["label_smoothing"]
    )
    assert search.predict(X).shape == (len(X),)


def test_clone_keeps_the_recipe_parameters():
    params = dict(
        label_smoothing=0.1,
        mixup_alpha=0.2,
        cutmix_alpha=1.0,
        weight_averaging="ema",
        ema_decay=0.9,
    )
    cloned = clone(tiny(**params)).get_params()
    assert {k: cloned[k] for k in params} == params


def test_regressor_has_weight_averaging_but_no_classification_recipe():
    params = CNNImageRegressor().get_params()
    assert params["weight_averaging"] is None and params["ema_decay"] == 0.999
    for name in ("label_smoothing", "mixup_alpha", "cutmix_alpha"):
        assert name not in params
    classifier = CNNImageClassifier().get_params()
    assert classifier["label_smoothing"] == 0.0
    assert classifier["mixup_alpha"] == classifier["cutmix_alpha"] == 0.0


# -- mixing in the loss: multi-label rows, sample weights, cutmix ----------------------
def test_multilabel_fit_mixes_indicator_rows_and_smooths_them(images):
    X, _ = images
    Y = np.random.default_rng(0).integers(0, 2, size=(len(X), 3))
    spy = MixSpy()
    clf = tiny(mixup_alpha=0.4, label_smoothing=0.2, callbacks=[("spy", spy)]).fit(X, Y)
    assert isinstance(clf.net_.criterion_, LabelWeightedBCEWithLogitsLoss)
    assert clf.net_.criterion_.label_smoothing == pytest.approx(0.2)
    train_targets = [t for is_training, t in spy.targets if is_training]
    assert train_targets
    for t in train_targets:
        assert t.shape[1] == 3 and t.is_floating_point()
        assert ((t >= 0) & (t <= 1)).all()
        assert ((t > 0) & (t < 1)).any()  # mixed rows, not 0/1 indicators
    assert clf.predict_proba(X).shape == (len(X), 3)


def test_mixed_loss_mixes_targets_and_sample_weights(images):
    X, y = images
    net = tiny().fit(X, y).net_
    y_pred = torch.randn(4, 2)
    y_true = torch.tensor([0, 1, 1, 0])
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mix = Mix(0.25, torch.tensor([1, 0, 3, 2]))
    net._batch_mix = mix
    try:
        loss = net.get_loss(y_pred, WeightedTarget(y_true, weights), training=True)
        unmixed = net.get_loss(y_pred, WeightedTarget(y_true, weights), training=False)
    finally:
        net._batch_mix = None
    probabilities = torch.nn.functional.one_hot(y_true, 2).float()
    targets = 0.25 * probabilities + 0.75 * probabilities[mix.permutation]
    mixed_weights = 0.25 * weights + 0.75 * weights[mix.permutation]
    losses = -(targets * y_pred.log_softmax(dim=1)).sum(dim=1)
    expected = (losses * mixed_weights).sum() / mixed_weights.sum()
    torch.testing.assert_close(loss, expected)
    plain = torch.nn.functional.cross_entropy(y_pred, y_true, reduction="none")
    torch.testing.assert_close(unmixed, (plain * weights).sum() / weights.sum())


def test_cutmix_fit_pastes_boxes_into_training_batches(images, applied_mixes):
    X, y = images
    spy = MixSpy()
    tiny(cutmix_alpha=1.0, epochs=2, callbacks=[("spy", spy)]).fit(X, y)
    training = [(mix, x) for is_training, mix, x in spy.inputs if is_training]
    assert len(training) == len(applied_mixes) > 0
    for (mix, x), (unmixed, mixed) in zip(training, applied_mixes):
        assert mix.box is not None and torch.equal(x, mixed)
        top, bottom, left, right = mix.box
        partners = unmixed[mix.permutation]
        torch.testing.assert_close(
            x[..., top:bottom, left:right], partners[..., top:bottom, left:right]
        )
        outside = x.clone()
        outside[..., top:bottom, left:right] = 0
        unmixed_outside = unmixed.clone()
        unmixed_outside[..., top:bottom, left:right] = 0
        torch.testing.assert_close(outside, unmixed_outside)


# -- weight averaging across fits and with early stopping ------------------------------
def expected_average(recorded, decay):
    average = dict(recorded[0])
    for weights in recorded[1:]:
        average = {k: decay * v + (1 - decay) * weights[k] for k, v in average.items()}
    return average


def assert_module_holds(module, expected):
    fitted = dict(module.named_parameters())
    for name, value in expected.items():
        torch.testing.assert_close(fitted[name].detach(), value, rtol=0, atol=1e-6)


def test_ema_partial_fit_starts_from_the_fitted_average(images):
    X, y = images
    recorder = WeightRecorder()
    clf = tiny(
        weight_averaging="ema", ema_decay=0.5, callbacks=[("recorder", recorder)]
    )
    with pytest.warns(UserWarning, match="ema_decay"):
        clf.partial_fit(X, y, classes=["cat", "dog"])
    first = {k: v.detach().clone() for k, v in clf.net_.module_.named_parameters()}
    assert_module_holds(clf.net_.module_, expected_average(recorder.parameters, 0.5))
    recorder = dict(clf.net_.callbacks_)["recorder"]
    n_recorded = len(recorder.parameters)
    with pytest.warns(UserWarning, match="ema_decay"):
        clf.partial_fit(X, y)
    second = recorder.parameters[n_recorded:]
    for name, value in first.items():
        torch.testing.assert_close(second[0][name], value, rtol=0, atol=0)
    assert_module_holds(clf.net_.module_, expected_average(second, 0.5))


def test_ema_with_early_stopping_keeps_an_averaged_best_epoch(images):
    X, y = images
    recorder = WeightRecorder()
    clf = tiny(
        weight_averaging="ema",
        ema_decay=0.5,
        epochs=3,
        early_stopping=True,
        validation_fraction=0.25,
        n_iter_no_change=5,
        callbacks=[("recorder", recorder)],
    ).fit(X, y)
    assert dict(clf.net_.callbacks_)["weight_averaging"].average_ is None
    history = clf.net_.history
    best = int(np.argmin(history[:, "valid_loss"]))
    # The best epoch's average: its steps are the first (best + 1) epochs'.
    steps_per_epoch = (len(recorder.parameters) - 1) // len(history)
    recorded = recorder.parameters[: 1 + steps_per_epoch * (best + 1)]
    assert_module_holds(clf.net_.module_, expected_average(recorded, 0.5))


def test_ema_resumed_from_a_checkpoint_goes_on_from_the_saved_average(images, tmp_path):
    X, y = images
    params = dict(weight_averaging="ema", ema_decay=0.5, checkpoint=tmp_path)
    # The same callbacks in both fits: they are part of the checkpoint's key.
    first = tiny(epochs=2, callbacks=[("recorder", WeightRecorder())], **params)
    first.fit(X, y)
    average = {k: v.detach().clone() for k, v in first.net_.module_.named_parameters()}
    recorder = WeightRecorder()
    resumed = tiny(epochs=4, callbacks=[("recorder", recorder)], **params).fit(X, y)
    assert len(resumed.net_.history) == 4
    assert len(list(tmp_path.iterdir())) == 1
    # Training begins with the average in the network, the checkpoint's.
    for name, value in average.items():
        torch.testing.assert_close(recorder.parameters[0][name], value)
    assert len(recorder.parameters) == 1 + 4
    assert_module_holds(
        resumed.net_.module_, expected_average(recorder.parameters, 0.5)
    )


def test_mixed_loss_with_class_weight_normalizes_by_the_mixed_class_weights(images):
    X, y = images
    net = tiny(class_weight={"cat": 1.0, "dog": 3.0}).fit(X, y).net_
    class_weight = net.criterion_.weight
    y_pred = torch.randn(4, 2)
    y_true = torch.tensor([0, 1, 1, 0])
    mix = Mix(0.4, torch.tensor([1, 2, 3, 0]))
    net._batch_mix = mix
    try:
        loss = net.get_loss(y_pred, y_true, training=True)
    finally:
        net._batch_mix = None
    probabilities = torch.nn.functional.one_hot(y_true, 2).float()
    targets = 0.4 * probabilities + 0.6 * probabilities[mix.permutation]
    losses = -(targets * class_weight * y_pred.log_softmax(dim=1)).sum(dim=1)
    expected = losses.sum() / (targets @ class_weight).sum()
    torch.testing.assert_close(loss, expected)
    # Unmixed, the same as torch's weighted mean.
    torch.testing.assert_close(
        net.get_loss(y_pred, y_true, training=False),
        torch.nn.functional.cross_entropy(y_pred, y_true, weight=class_weight),
    )


def test_label_smoothing_applies_to_mixed_targets(images):
    X, y = images
    net = tiny(label_smoothing=0.3, mixup_alpha=0.4).fit(X, y).net_
    y_pred = torch.randn(4, 2)
    y_true = torch.tensor([0, 1, 1, 0])
    mix = Mix(0.2, torch.tensor([3, 2, 1, 0]))
    net._batch_mix = mix
    try:
        loss = net.get_loss(y_pred, y_true, training=True)
    finally:
        net._batch_mix = None
    probabilities = torch.nn.functional.one_hot(y_true, 2).float()
    targets = 0.2 * probabilities + 0.8 * probabilities[mix.permutation]
    smoothed = targets * 0.7 + 0.3 / 2
    expected = -(smoothed * y_pred.log_softmax(dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(loss, expected)


class InterruptAt(Callback):
    """Ctrl-C after the given training batch of the given epoch."""

    def __init__(self, epoch, batch):
        self.epoch = epoch
        self.batch = batch

    def on_batch_end(self, net, training=False, **kwargs):
        batches = len(net.history[-1, "batches"])
        if training and len(net.history) == self.epoch and batches == self.batch:
            raise KeyboardInterrupt


def test_ctrl_c_leaves_the_average_of_the_steps_taken(images):
    X, y = images
    recorder = WeightRecorder()
    clf = tiny(
        weight_averaging="ema",
        ema_decay=0.5,
        epochs=4,
        callbacks=[("recorder", recorder), ("stop", InterruptAt(2, 1))],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(KeyboardInterrupt):
            clf.fit(X, y)
    assert len(recorder.parameters) == 1 + 3
    assert_module_holds(clf.net_.module_, expected_average(recorder.parameters, 0.5))
    averaging = dict(clf.net_.callbacks_)["weight_averaging"]
    assert averaging.average_ is None and averaging.training_weights_ is None
    assert np.isfinite(clf.predict_proba(X)).all()


def test_mixing_copes_with_a_batch_of_one_image_and_sample_weights():
    X, y = make_images(n_samples=17)
    weights = np.linspace(0.5, 2.0, len(X))
    clf = tiny(mixup_alpha=0.4, cutmix_alpha=1.0, epochs=3)
    clf.fit(X, y, sample_weight=weights)
    assert all(np.isfinite(epoch["train_loss"]) for epoch in clf.history_)
    assert clf.predict(X).shape == (17,)
