"""Test-time augmentation and the learning-rate finder."""

import pickle

import numpy as np
import pytest
import torch
from conftest import FAST, make_images
from PIL import Image
from sklearn.model_selection import GridSearchCV

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


# -- test-time augmentation -------------------------------------------------------------
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
