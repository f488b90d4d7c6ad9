"""Model selection on a real Dask cluster through joblib's Dask backend.

One ``LocalCluster`` with two worker processes serves every test of the module;
each search runs once sequentially and once on the cluster, and must give the
same results: training on the CPU with an int ``random_state`` is reproducible
in any process.
"""

import joblib
import numpy as np
import pytest
from conftest import FAST, make_images
from numpy.testing import assert_array_equal
from scipy.stats import loguniform
from sklearn.model_selection import (
    GridSearchCV,
    RandomizedSearchCV,
    StratifiedKFold,
    cross_val_score,
)
from sklearn.pipeline import make_pipeline

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn.augmentation import RandomHorizontalFlip
from sklearn_cnn.preprocessing import ImageStandardizer

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def data():
    return make_images(n_samples=48, size=8)


def _pipeline():
    return make_pipeline(
        ImageStandardizer(),
        RandomHorizontalFlip(random_state=0),
        CNNImageClassifier(**FAST, device="cpu"),
    )


CV = StratifiedKFold(n_splits=2, shuffle=True, random_state=0)


def _assert_same_search(on_cluster, sequential):
    assert on_cluster.best_params_ == sequential.best_params_
    for key, values in sequential.cv_results_.items():
        if key.startswith(("split", "mean_test", "std_test", "rank_test")):
            # Same code, same seeds, one thread each: the very same numbers.
            assert_array_equal(on_cluster.cv_results_[key], values, err_msg=key)
        elif key == "params":
            assert on_cluster.cv_results_[key] == values


def _on_cluster(client, X, y, function):
    """Run ``function`` on the cluster; check that its tasks ran on the workers."""
    # The images are sent to the workers once, not with every task.
    with (
        distributed.get_task_stream(client) as tasks,
        joblib.parallel_backend("dask", scatter=[X, y]),
    ):
        result = function()
    workers = {task["worker"] for task in tasks.data}
    assert workers == set(client.scheduler_info()["workers"])
    return result


def test_grid_search_on_cluster_matches_sequential(client, data):
    X, y = data
    grid = {
        "cnnimageclassifier__lr": [0.01, 0.003],
        "cnnimageclassifier__filters": [(4,), (8,)],
    }
    sequential = GridSearchCV(_pipeline(), grid, cv=CV).fit(X, y)
    on_cluster = _on_cluster(
        client,
        X,
        y,
        lambda: GridSearchCV(_pipeline(), grid, cv=CV, n_jobs=-1).fit(X, y),
    )

    _assert_same_search(on_cluster, sequential)
    assert_array_equal(on_cluster.predict(X), sequential.predict(X))


def test_randomized_search_on_cluster_matches_sequential(client, data):
    X, y = data
    distributions = {
        "cnnimageclassifier__lr": loguniform(1e-3, 3e-2),
        "cnnimageclassifier__dense_units": [8, 16],
    }

    def search(**kwargs):
        return RandomizedSearchCV(
            _pipeline(), distributions, n_iter=3, cv=CV, random_state=0, **kwargs
        )

    sequential = search().fit(X, y)
    on_cluster = _on_cluster(client, X, y, lambda: search(n_jobs=-1).fit(X, y))
    _assert_same_search(on_cluster, sequential)


def test_cross_val_score_on_cluster_matches_sequential(client, data):
    X, y = data
    sequential = cross_val_score(_pipeline(), X, y, cv=CV)
    on_cluster = _on_cluster(
        client, X, y, lambda: cross_val_score(_pipeline(), X, y, cv=CV, n_jobs=-1)
    )
    assert_array_equal(on_cluster, sequential)
    assert np.all((0 <= on_cluster) & (on_cluster <= 1))
