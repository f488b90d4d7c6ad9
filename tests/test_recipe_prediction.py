"""Test-time augmentation and the learning-rate finder."""

import pickle

import numpy as np
import pytest
import torch
from conftest import FAST, make_images
from PIL import Image
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback

from sklearn_cnn import CNNImageClassifier, CNNImageRegressor, load_model, save_model
from sklearn_cnn.augmentation import RandomHorizontalFlip, RandomRotation


@pytest.fixture(scope="module")
def data():
    return make_images(n_samples=48, size=8)


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    return CNNImageClassifier(**FAST).fit(X, y)


def mirrored(X):
    return np.ascontiguousarray(X[:, :, ::-1])


# -- test-time augmentation ---------------------------------------------------------
def test_flip_averages_the_image_and_its_mirror(fitted, data):
    X, y = data
    clf = pickle.loads(pickle.dumps(fitted))
    plain, mirror = clf.predict_proba(X), clf.predict_proba(mirrored(X))
    clf.set_params(test_time_augmentation="flip")
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba, (plain + mirror) / 2, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba), rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
    assert clf.score(X, y) == np.mean(clf.predict(X) == y)


def test_without_it_prediction_is_unchanged_bit_for_bit(fitted, data):
    X, _ = data
    clf = pickle.loads(pickle.dumps(fitted))
    before = clf.predict_proba(X), clf.predict_log_proba(X), clf.predict(X)
    clf.set_params(test_time_augmentation="flip")
    clf.predict_proba(X)
    clf.set_params(test_time_augmentation=None)
    after = clf.predict_proba(X), clf.predict_log_proba(X), clf.predict(X)
    for one, other in zip(before, after):
        np.testing.assert_array_equal(one, other)


def test_all_views_of_a_batch_go_through_one_forward_pass(fitted, data):
    X, _ = data
    clf = pickle.loads(pickle.dumps(fitted))
    sizes = []
    handle = clf.net_.module_.register_forward_pre_hook(
        lambda module, args: sizes.append(len(args[0]))
    )
    try:
        clf.set_params(batch_size=16, test_time_augmentation="flip")
        clf.predict_proba(X)
        assert sizes == [32, 32, 32]  # 48 images, 16 per batch, two views each
        sizes.clear()
        clf.set_params(test_time_augmentation=RandomRotation(degrees=30))
        clf.set_params(n_test_time_draws=3)
        clf.predict_proba(X[:10])
        assert sizes == [40]  # the image and three draws
    finally:
        handle.remove()


def test_augmenter_draws_are_seeded_and_include_the_image(fitted, data):
    X, _ = data
    clf = pickle.loads(pickle.dumps(fitted))
    plain = clf.predict_proba(X)
    clf.set_params(
        test_time_augmentation=[RandomRotation(degrees=40), RandomHorizontalFlip()],
        n_test_time_draws=5,
        random_state=3,
    )
    torch.manual_seed(0)
    expected_stream = torch.rand(3)
    torch.manual_seed(0)
    first = clf.predict_proba(X)
    assert torch.equal(torch.rand(3), expected_stream)  # global stream untouched
    np.testing.assert_array_equal(clf.predict_proba(X), first)
    assert not np.allclose(first, plain)
    clf.set_params(random_state=4)
    assert not np.array_equal(clf.predict_proba(X), first)
    # An augmenter that changes nothing averages six identical views.
    clf.set_params(test_time_augmentation=RandomRotation(degrees=0))
    np.testing.assert_allclose(clf.predict_proba(X), plain, rtol=1e-6)


def test_files_give_what_arrays_give(data, tmp_path):
    X, y = data
    paths = []
    for i, image in enumerate(X):
        paths.append(str(tmp_path / f"{i:02d}.png"))
        Image.fromarray(image).save(paths[-1])
    clf = CNNImageClassifier(**FAST, test_time_augmentation="flip").fit(paths, y)
    np.testing.assert_allclose(
        clf.predict_proba(paths), clf.predict_proba(X), rtol=1e-6, atol=1e-7
    )


def test_multilabel_and_regressor_average_probabilities_and_values(data):
    X, y = data
    labels = np.stack([y == y[0], X.mean(axis=(1, 2, 3)) > 127], axis=1).astype(int)
    multilabel = CNNImageClassifier(**FAST).fit(X, labels)
    plain, mirror = multilabel.predict_proba(X), multilabel.predict_proba(mirrored(X))
    multilabel.set_params(test_time_augmentation="flip")
    proba = multilabel.predict_proba(X)
    np.testing.assert_allclose(proba, (plain + mirror) / 2, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(multilabel.predict(X), (proba > 0.5).astype(int))

    target = X.mean(axis=(1, 2, 3)) / 255
    regressor = CNNImageRegressor(**FAST).fit(X, target)
    plain, mirror = regressor.predict(X), regressor.predict(mirrored(X))
    regressor.set_params(test_time_augmentation="flip")
    np.testing.assert_allclose(regressor.predict(X), (plain + mirror) / 2, rtol=1e-6)


@pytest.mark.parametrize(
    "value, match",
    [
        ("mirror", "test_time_augmentation"),
        (3, "test_time_augmentation"),
        ([], "empty list"),
        (["flip"], "no augment_batch method"),
    ],
)
def test_bad_settings_are_refused(fitted, data, value, match):
    X, y = data
    with pytest.raises(ValueError, match=match):
        CNNImageClassifier(**FAST, test_time_augmentation=value).fit(X, y)
    clf = pickle.loads(pickle.dumps(fitted))
    expected = clf.predict_proba(X)
    if isinstance(value, list):  # a list passes the parameter check of fit
        clf.set_params(test_time_augmentation=value)
        with pytest.raises(ValueError, match=match):
            clf.predict_proba(X)
        clf.set_params(test_time_augmentation=None)
    np.testing.assert_array_equal(clf.predict_proba(X), expected)
    with pytest.raises(ValueError, match="n_test_time_draws"):
        CNNImageClassifier(**FAST, n_test_time_draws=0).fit(X, y)


def test_searchable_and_kept_in_model_files(data, tmp_path):
    X, y = data
    search = GridSearchCV(
        CNNImageClassifier(**FAST),
        {"test_time_augmentation": [None, "flip"]},
        cv=2,
    ).fit(X, y)
    assert search.best_params_["test_time_augmentation"] in (None, "flip")
    assert len(search.cv_results_["mean_test_score"]) == 2
    clf = CNNImageClassifier(
        **FAST, test_time_augmentation=[RandomRotation(degrees=20)], n_test_time_draws=2
    ).fit(X, y)
    save_model(clf, tmp_path / "model.safetensors")
    loaded = load_model(tmp_path / "model.safetensors")
    assert loaded.n_test_time_draws == 2
    assert isinstance(loaded.test_time_augmentation[0], RandomRotation)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_onnx_export_says_it_predicts_each_image_once(fitted, tmp_path):
    pytest.importorskip("onnx")
    from sklearn_cnn import export_onnx

    clf = pickle.loads(pickle.dumps(fitted)).set_params(test_time_augmentation="flip")
    with pytest.warns(UserWarning, match="predicts each image once"):
        export_onnx(clf, tmp_path / "model.onnx")


# -- the learning-rate finder -------------------------------------------------------
@pytest.fixture(scope="module")
def separable():
    """Bright against dark 8x8 images: any sensible rate learns them."""
    return make_images(n_samples=240, size=8, seed=1)


def test_finder_leaves_the_estimator_unchanged(fitted, separable):
    from sklearn_cnn.inspection import find_learning_rate

    X, y = separable
    unfitted = CNNImageClassifier(**{**FAST, "batch_size": 4})
    params = unfitted.get_params()
    result = find_learning_rate(unfitted, X, y)
    assert unfitted.get_params() == params and not hasattr(unfitted, "net_")
    weights = {k: v.clone() for k, v in fitted.net_.module_.state_dict().items()}
    history = list(fitted.history_)
    find_learning_rate(fitted, X, y)
    for name, value in fitted.net_.module_.state_dict().items():
        assert torch.equal(value, weights[name]), name
    assert fitted.history_ == history

    assert len(result.lrs) == len(result.losses) == len(result.raw_losses) <= 60
    assert np.all(np.diff(result.lrs) > 0) and result.lrs[0] == pytest.approx(1e-7)
    assert np.isfinite(result.losses).all()
    assert result.lrs[0] <= result.suggested_lr <= result.lrs[-1]
    ax = result.plot()
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "learning rate"


def test_the_suggestion_trains_as_well_as_the_default_rate(separable):
    from sklearn.model_selection import train_test_split

    from sklearn_cnn.inspection import find_learning_rate

    X, y = separable
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    settings = dict(filters=(8,), dense_units=16, epochs=3, random_state=0)
    suggested = find_learning_rate(
        CNNImageClassifier(**settings, batch_size=4), X_train, y_train
    ).suggested_lr
    default = CNNImageClassifier(**settings).fit(X_train, y_train)
    found = CNNImageClassifier(**settings, lr=suggested).fit(X_train, y_train)
    assert found.score(X_test, y_test) >= default.score(X_test, y_test) - 0.02


def test_finder_on_a_pipeline_and_with_few_batches(separable):
    from sklearn.pipeline import make_pipeline

    from sklearn_cnn.inspection import find_learning_rate
    from sklearn_cnn.preprocessing import ImageScaler

    X, y = separable
    pipe = make_pipeline(ImageScaler(), CNNImageClassifier(**FAST))
    with pytest.warns(UserWarning, match="the suggested rate is rough"):
        result = find_learning_rate(pipe, X[:64], y[:64])  # 4 batches of 16
    assert len(result.lrs) == 4
    assert not hasattr(pipe[0], "n_features_in_")  # the steps stay unfitted
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        find_learning_rate(pipe, X, y, start_lr=1.0, end_lr=0.1)
    with pytest.raises(TypeError, match="CNNImageClassifier, a CNNImageRegressor"):
        find_learning_rate(ImageScaler(), X, y)


def test_finder_with_a_backbone_keeps_the_body_at_its_ratio(separable, tmp_path):
    torchvision = pytest.importorskip("torchvision")
    from sklearn_cnn.inspection import find_learning_rate

    X, y = separable
    weights = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    clf = CNNImageClassifier(
        backbone="resnet18", weights=weights, epochs=1, batch_size=32,
        freeze_epochs=0, backbone_lr=1e-4, lr=1e-3, random_state=0,
    )  # fmt: skip
    seen = []

    class Groups(Callback):
        def on_batch_end(self, net, training=False, **kwargs):
            if training:
                seen.append([group["lr"] for group in net.optimizer_.param_groups])

    clf.set_params(callbacks=[Groups()])
    result = find_learning_rate(clf, X[:96], y[:96], num_it=3)
    assert len(seen) == 3
    for groups, rate in zip(seen, result.lrs):
        # The head at the rate tried, the body at a tenth, as backbone_lr / lr.
        assert sorted(groups) == pytest.approx([rate / 10, rate])


def test_lr_auto_uses_the_finder_inside_fit(separable, capsys):
    from sklearn_cnn.inspection import find_learning_rate

    X, y = separable
    settings = dict(filters=(8,), dense_units=16, epochs=1, batch_size=8)
    clf = CNNImageClassifier(**settings, lr="auto", random_state=0, verbose=1)
    clf.fit(X, y)
    expected = find_learning_rate(
        CNNImageClassifier(**settings, random_state=0), X, y
    ).suggested_lr
    assert clf.lr == "auto" and clf.lr_ == pytest.approx(expected)
    out = capsys.readouterr().out
    assert f"picked lr={expected:.3g}" in out
    assert clf.net_.history[0, "event_lr"] == pytest.approx(expected)
    assert CNNImageClassifier(**settings, lr=0.01).fit(X, y).lr_ == 0.01
    regressor = CNNImageRegressor(**settings, lr="auto", random_state=0)
    assert regressor.fit(X, X.mean(axis=(1, 2, 3))).lr_ > 0
    with pytest.raises(ValueError, match="lr"):
        CNNImageClassifier(**settings, lr="fast").fit(X, y)
