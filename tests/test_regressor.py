"""CNNImageRegressor: numbers from images, with the classifier's road."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image
from sklearn.compose import TransformedTargetRegressor
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline

from sklearn_cnn import CNNImageRegressor, load_model, save_model
from sklearn_cnn.preprocessing import ImageScaler

FAST = dict(filters=(8,), dense_units=16, epochs=5, lr=0.01, random_state=0)


def fast(**params):
    return CNNImageRegressor(**{**FAST, **params})


def two_halves(n_samples, seed):
    """Images whose left and right halves have a brightness each: the targets."""
    rng = np.random.RandomState(seed)
    left, right = rng.uniform(20, 230, n_samples), rng.uniform(20, 230, n_samples)
    X = np.empty((n_samples, 8, 8, 3))
    X[:, :, :4] = left[:, None, None, None]
    X[:, :, 4:] = right[:, None, None, None]
    X = np.clip(X + rng.normal(0, 10, X.shape), 0, 255).astype(np.uint8)
    return X, np.c_[left, right]


@pytest.fixture
def halves():
    X, Y = two_halves(200, seed=0)
    X_test, Y_test = two_halves(100, seed=1)
    return X, Y, X_test, Y_test


def test_learns_the_brightness_of_held_out_images(halves):
    X, Y, X_test, Y_test = halves
    regressor = fast().fit(X, Y[:, 0])
    predictions = regressor.predict(X_test)
    assert predictions.shape == (100,)
    assert regressor.score(X_test, Y_test[:, 0]) >= 0.9
    assert regressor.n_outputs_ == 1
    assert [row["epoch"] for row in regressor.history_] == [1, 2, 3, 4, 5]
    assert "train_r2" in regressor.history_[-1]


def test_several_outputs_come_back_in_the_shape_given(halves):
    X, Y, X_test, Y_test = halves
    regressor = fast().fit(X, Y)
    assert regressor.predict(X_test).shape == (100, 2)
    assert regressor.score(X_test, Y_test) >= 0.9
    column = fast().fit(X, Y[:, :1])
    assert column.predict(X_test).shape == (100, 1)


def test_the_targets_scale_does_not_matter(halves):
    X, Y, X_test, _ = halves
    small = fast().fit(X, Y[:, 0] / 1000).predict(X_test)
    large = fast().fit(X, Y[:, 0] * 1000).predict(X_test)
    np.testing.assert_allclose(large, small * 1e6, rtol=1e-3)
    regressor = fast().fit(X, Y[:, 0] * 1000)
    np.testing.assert_allclose(regressor.target_scale_, [Y[:, 0].std() * 1000])


@pytest.mark.parametrize("loss", ["squared_error", "absolute_error", "huber"])
def test_each_loss_learns(halves, loss):
    X, Y, X_test, Y_test = halves
    assert fast(loss=loss).fit(X, Y[:, 0]).score(X_test, Y_test[:, 0]) >= 0.8


def test_validation_scores_are_r2(halves):
    X, Y, _, _ = halves
    regressor = fast(early_stopping=True, n_iter_no_change=10).fit(X, Y[:, 0])
    assert len(regressor.validation_scores_) == regressor.n_iter_
    assert regressor.validation_scores_[-1] > 0.5
    assert "valid_r2" in regressor.history_[-1]


def test_in_pipeline_search_cross_validation_and_transformed_target(halves):
    X, Y, X_test, Y_test = halves
    y, y_test = Y[:, 0], Y_test[:, 0]
    pipe = make_pipeline(ImageScaler(), fast()).fit(X, y)
    assert pipe.score(X_test, y_test) >= 0.9
    search = GridSearchCV(fast(), {"epochs": [2, 5]}, cv=2).fit(X, y)
    assert search.best_params_ == {"epochs": 5}
    scores = cross_val_score(fast(), X, y, cv=2)
    assert scores.shape == (2,) and (scores > 0.5).all()
    logged = TransformedTargetRegressor(fast(), func=np.log, inverse_func=np.exp)
    assert logged.fit(X, y).score(X_test, y_test) >= 0.8


def test_image_files_give_the_predictions_of_the_array(halves, tmp_path):
    X, Y, _, _ = halves
    X, y = X[:40], Y[:40, 0]
    paths = []
    for i, image in enumerate(X):
        path = tmp_path / f"{i:02d}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    from_files = fast(epochs=2).fit(paths, y)
    from_array = fast(epochs=2).fit(X, y)
    np.testing.assert_allclose(
        from_files.predict(paths), from_array.predict(X), rtol=1e-5, atol=1e-4
    )


def test_partial_fit_warm_start_and_sample_weight(halves):
    X, Y, _, _ = halves
    y = Y[:, 0]
    regressor = fast().partial_fit(X, y)
    regressor.partial_fit(X, y)
    assert regressor.n_iter_ == 2
    warm = fast(epochs=2, warm_start=True).fit(X, y).fit(X, y)
    assert warm.n_iter_ == 4
    weights = np.ones(len(y))
    weights[::2] = 0
    weighted = fast(epochs=2).fit(X, y, sample_weight=weights).predict(X)
    subset = fast(epochs=2).fit(X[1::2], y[1::2]).predict(X)
    np.testing.assert_allclose(weighted, subset, rtol=1e-4, atol=1e-3)


def test_model_file_and_pickle_round_trips(halves, tmp_path):
    X, Y, X_test, _ = halves
    regressor = fast(epochs=2).fit(X, Y)
    expected = regressor.predict(X_test)
    save_model(regressor, tmp_path / "regressor.safetensors")
    loaded = load_model(tmp_path / "regressor.safetensors")
    assert isinstance(loaded, CNNImageRegressor)
    np.testing.assert_allclose(loaded.predict(X_test), expected, rtol=1e-6)
    np.testing.assert_allclose(
        pickle.loads(pickle.dumps(regressor)).predict(X_test), expected, rtol=1e-6
    )


@pytest.mark.parametrize(
    "bad_y, message",
    [
        (lambda y: np.where(np.arange(len(y)) == 3, np.nan, y), "NaN"),
        (lambda y: y[:-1], "inconsistent numbers of samples"),
        (lambda y: y.reshape(-1, 1, 1), "dim 3"),
        (lambda y: np.array(["a"] * len(y)), "needs numeric targets"),
    ],
    ids=["nan", "length", "3-D", "strings"],
)
def test_bad_targets_are_refused_clearly(halves, bad_y, message):
    X, Y, _, _ = halves
    regressor = fast(epochs=1)
    with pytest.raises(ValueError, match=message):
        regressor.fit(X, bad_y(Y[:, 0]))
    assert not hasattr(regressor, "net_")


def test_outputs_of_a_continued_fit_must_match(halves):
    X, Y, _, _ = halves
    regressor = fast(epochs=1, warm_start=True).fit(X, Y)
    with pytest.raises(ValueError, match="fitted on 2"):
        regressor.fit(X, Y[:, 0])
    assert regressor.n_outputs_ == 2
