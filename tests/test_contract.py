"""CNNImageClassifier and scikit-learn's contract: sample weights, metadata
routing, lazy layers, threads and a prediction that reads the fitted model only."""

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import sklearn
import torch
from conftest import FAST, make_images
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import Pipeline
from torch import nn

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn.preprocessing import ImageScaler


def fast(**params):
    return CNNImageClassifier(**{**FAST, **params})


# -- sample_weight ---------------------------------------------------------------
def test_sample_weight_changes_the_model(images):
    X, y = images
    weights = np.where(y == "cat", 5.0, 0.2)
    plain = fast().fit(X, y).predict_proba(X)
    weighted = fast().fit(X, y, sample_weight=weights).predict_proba(X)
    assert not np.allclose(plain, weighted)
    # Cats weigh more: the weighted model leans towards them.
    assert weighted[:, 0].mean() > plain[:, 0].mean()


def test_zero_weight_means_the_image_is_ignored(images):
    X, y = images
    weights = np.ones(len(y))
    weights[::3] = 0
    kept = weights > 0
    with_zeros = fast().fit(X, y, sample_weight=weights).predict_proba(X)
    without = fast().fit(X[kept], y[kept]).predict_proba(X)
    np.testing.assert_allclose(with_zeros, without, rtol=1e-5, atol=1e-6)


def test_unit_weights_give_the_unweighted_model(images):
    X, y = images
    plain = fast().fit(X, y).predict_proba(X)
    ones = fast().fit(X, y, sample_weight=np.ones(len(y))).predict_proba(X)
    np.testing.assert_allclose(ones, plain, rtol=1e-5, atol=1e-6)


def test_class_weight_and_sample_weight_combine_as_in_scikit_learn(images):
    X, y = images
    class_weight = {"cat": 3.0, "dog": 1.0}
    by_class = fast(class_weight=class_weight).fit(X, y).predict_proba(X)
    as_samples = np.array([class_weight[label] for label in y])
    by_sample = fast().fit(X, y, sample_weight=as_samples).predict_proba(X)
    np.testing.assert_allclose(by_class, by_sample, rtol=1e-4, atol=1e-5)
    # Both at once multiply.
    both = fast(class_weight=class_weight).fit(X, y, sample_weight=as_samples)
    squared = fast().fit(X, y, sample_weight=as_samples**2)
    np.testing.assert_allclose(
        both.predict_proba(X), squared.predict_proba(X), rtol=1e-4, atol=1e-5
    )


def test_validation_split_is_weighted(images):
    X, y = images
    params = dict(early_stopping=True, validation_fraction=0.3, epochs=2)
    plain = fast(**params).fit(X, y)
    weights = np.where(y == "cat", 4.0, 0.5)
    weighted = fast(**params).fit(X, y, sample_weight=weights)
    assert weighted.history_[0]["valid_loss"] != plain.history_[0]["valid_loss"]


def test_partial_fit_takes_sample_weight(images):
    X, y = images
    weights = np.where(y == "cat", 3.0, 1.0)
    clf = fast().partial_fit(X, y, classes=["cat", "dog"], sample_weight=weights)
    clf.partial_fit(X, y, sample_weight=weights)
    assert clf.n_iter_ == 2


@pytest.mark.parametrize(
    "weights, message",
    [
        (np.ones(5), "sample_weight.shape"),
        (-np.ones(60), "Negative"),
        (np.zeros(60), "zero"),
    ],
)
def test_bad_sample_weight_is_refused_and_nothing_changes(images, weights, message):
    X, y = images
    clf = fast().fit(X, y)
    before = clf.predict_proba(X)
    with pytest.raises(ValueError, match=message):
        clf.fit(X, y, sample_weight=weights)
    np.testing.assert_array_equal(clf.predict_proba(X), before)


def test_sample_weight_through_a_pipeline(images):
    X, y = images
    weights = np.where(y == "cat", 5.0, 0.2)
    pipe = Pipeline([("scale", ImageScaler()), ("cnn", fast())])
    pipe.fit(X, y, cnn__sample_weight=weights)
    direct = fast().fit(ImageScaler().fit_transform(X), y, sample_weight=weights)
    np.testing.assert_allclose(
        pipe.predict_proba(X), direct.predict_proba(ImageScaler().fit_transform(X))
    )


def test_metadata_routing_reaches_training_in_searches(images):
    X, y = images
    weights = np.where(y == "cat", 5.0, 0.2)
    with sklearn.config_context(enable_metadata_routing=True):
        clf = fast().set_fit_request(sample_weight=True)
        clf.set_score_request(sample_weight=True)
        search = GridSearchCV(clf, {"epochs": [1, 2]}, cv=2)
        search.fit(X, y, sample_weight=weights)
        refit = fast(epochs=search.best_params_["epochs"])
        expected = refit.fit(X, y, sample_weight=weights).predict_proba(X)
        np.testing.assert_allclose(search.predict_proba(X), expected)

        scores = cross_validate(
            fast()
            .set_fit_request(sample_weight=True)
            .set_score_request(sample_weight=True),
            X,
            y,
            cv=2,
            params={"sample_weight": weights},
        )
        assert len(scores["test_score"]) == 2


# -- lazy layers -------------------------------------------------------------------
class LazyNet(nn.Module):
    def __init__(self, in_channels, n_classes, image_size):
        super().__init__()
        self.layers = nn.Sequential(
            nn.LazyConv2d(4, 3, padding=1),
            nn.LazyBatchNorm2d(),
            nn.ReLU(),
            nn.Flatten(),
            nn.LazyLinear(n_classes),
        )

    def forward(self, x):
        return self.layers(x)


@pytest.mark.parametrize(
    "module",
    [nn.Sequential(nn.Flatten(), nn.LazyLinear(2)), LazyNet],
    ids=["instance", "class"],
)
def test_lazy_layers_are_initialized_and_trained(images, module):
    X, y = images
    clf = fast(module=module, epochs=3).fit(X, y)
    assert clf.predict(X).shape == (len(X),)
    parameters = list(clf.net_.module_.parameters())
    assert not any(nn.parameter.is_lazy(p) for p in parameters)
    # The optimizer holds the real parameters, so training moved them.
    optimized = {
        id(p) for group in clf.net_.optimizer_.param_groups for p in group["params"]
    }
    assert {id(p) for p in parameters} <= optimized
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]


def test_lazy_batch_norm_statistics_start_untouched(images):
    X, y = images
    clf = fast(module=LazyNet, epochs=1)
    clf.fit(X, y)
    batch_norm = clf.net_.module_.layers[1]
    # One epoch of 60 images at batch 16: 4 batches, not 4 plus a dry run.
    assert int(batch_norm.num_batches_tracked) == 4


# -- threads -----------------------------------------------------------------------
def test_seeded_fits_in_threads_match_the_sequential_result():
    X, y = make_images(n_samples=40)
    params = dict(FAST, dropout=0.3, epochs=2)
    sequential = [
        CNNImageClassifier(**{**params, "random_state": seed}).fit(X, y)
        for seed in range(4)
    ]
    expected = [clf.predict_proba(X) for clf in sequential]

    def fit(seed):
        clf = CNNImageClassifier(**{**params, "random_state": seed}).fit(X, y)
        return clf.predict_proba(X)

    for _ in range(2):
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(fit, range(4)))
        for got, want in zip(results, expected, strict=True):
            np.testing.assert_array_equal(got, want)


def test_a_fit_in_a_thread_leaves_other_threads_random_draws_alone():
    X, y = make_images(n_samples=40)
    torch.manual_seed(123)
    expected = torch.rand(2000)
    torch.manual_seed(123)
    done = threading.Event()

    def fit():
        try:
            fast(dropout=0.3, epochs=3).fit(X, y)
        finally:
            done.set()

    thread = threading.Thread(target=fit)
    thread.start()
    draws = []
    while len(draws) < 2000:
        draws.append(torch.rand(1))
        if not done.is_set() and len(draws) == 1999:
            done.wait()
    thread.join()
    np.testing.assert_array_equal(torch.cat(draws).numpy(), expected.numpy())


def test_fit_leaves_the_process_random_state_alone(images):
    X, y = images
    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    fast(dropout=0.5).fit(X, y)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_predictions_from_threads_with_mixed_dtypes(images):
    X, y = images
    clf = fast().fit(X, y)
    X_float = X.astype(np.float32) / 255
    expected_uint8 = clf.predict_proba(X)
    expected_float = clf.predict_proba(X_float)
    np.testing.assert_allclose(expected_uint8, expected_float, rtol=1e-5)

    def predict(i):
        return clf.predict_proba(X if i % 2 else X_float), i

    with ThreadPoolExecutor(4) as pool:
        for proba, i in pool.map(predict, range(24)):
            want = expected_uint8 if i % 2 else expected_float
            np.testing.assert_allclose(proba, want, rtol=1e-6)


def test_predict_reads_the_fitted_model_and_changes_nothing(images):
    X, y = images
    clf = fast().fit(X, y)
    net_state = dict(vars(clf.net_))
    clf_state = dict(vars(clf))
    clf.predict(X.astype(np.float64) / 255)
    clf.predict(X)
    assert dict(vars(clf.net_)).keys() == net_state.keys()
    assert all(vars(clf.net_)[key] is value for key, value in net_state.items())
    assert all(vars(clf)[key] is value for key, value in clf_state.items())
    with pytest.raises(dataclasses.FrozenInstanceError):
        clf.prediction_settings_.channels_last = False
