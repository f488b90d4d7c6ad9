"""CNNImageClassifier: inputs, parameters, fitted attributes and model selection."""

import io
import pickle
import random
import sys
import tracemalloc

import joblib
import numpy as np
import pytest
import torch
from conftest import FAST, make_images
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn.utils._sklearn_private import InvalidParameterError


def fast(**params):
    return CNNImageClassifier(**{**FAST, **params})


# -- input layouts -----------------------------------------------------------------
def test_channels_last_and_first_give_the_same_model(images):
    X, y = images
    proba_last = fast().fit(X, y).predict_proba(X)
    X_first = np.ascontiguousarray(X.transpose(0, 3, 1, 2))
    clf = fast().fit(X_first, y)
    np.testing.assert_allclose(clf.predict_proba(X_first), proba_last, rtol=1e-5)
    assert clf.image_shape_ == (8, 8, 3)
    assert clf.n_features_in_ == 8 * 8 * 3


def test_grayscale_and_flattened_layouts(images):
    X, y = images
    gray = X[..., 0]
    clf = fast().fit(gray, y)
    assert clf.image_shape_ == (8, 8, 1)
    # Square flattened rows are inferred as square grayscale images.
    flat_proba = (
        fast()
        .fit(gray.reshape(len(gray), -1), y)
        .predict_proba(gray.reshape(len(gray), -1))
    )
    np.testing.assert_allclose(flat_proba, clf.predict_proba(gray), rtol=1e-5)
    # Flattened colour images need image_shape.
    flat = X.reshape(len(X), -1)
    clf = fast(image_shape=(8, 8, 3)).fit(flat, y)
    assert clf.image_shape_ == (8, 8, 3)
    np.testing.assert_allclose(
        clf.predict_proba(flat), fast().fit(X, y).predict_proba(X), rtol=1e-5
    )


def test_ambiguous_channel_axis_says_how_to_state_it():
    X = np.zeros((4, 3, 5, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="image_shape=.height, width, channels."):
        fast().fit(X, [0, 1, 0, 1])
    clf = fast(image_shape=(3, 5, 3)).fit(X, [0, 1, 0, 1])
    assert clf.image_shape_ == (3, 5, 3)


def test_uint8_is_scaled_inside_batch_by_batch(images):
    X, y = images
    proba_uint8 = fast().fit(X, y).predict_proba(X)
    X_float = X.astype(np.float32) / 255
    proba_float = fast().fit(X_float, y).predict_proba(X_float)
    np.testing.assert_allclose(proba_uint8, proba_float, rtol=1e-4, atol=1e-6)


def test_fit_makes_no_float_copy_of_the_whole_data():
    X, y = make_images(n_samples=400, size=32)
    tracemalloc.start()
    fast(epochs=1).fit(X, y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # A float32 copy of X would be 4 * X.nbytes; numpy allocations stay far below.
    assert peak < X.nbytes


@pytest.mark.parametrize("size", [1, 2, 5])
def test_any_image_size_from_1x1(size):
    X, y = make_images(n_samples=20, size=size)
    clf = fast(filters=(4, 8, 8)).fit(X, y)
    assert clf.predict(X).shape == (20,)


def test_lists_and_integer_dtypes(images):
    X, y = images
    clf = fast().fit(X.astype(np.int64).tolist(), list(y))
    assert set(clf.predict(X.astype(np.int32))) <= {"cat", "dog"}


# -- labels ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "labels", [("cat", "dog"), (3, 7), (False, True), (1.0, 2.0), ("a", "b", "c")]
)
def test_predict_returns_original_labels(labels):
    X, y = make_images(n_samples=60, labels=labels)
    clf = fast(epochs=6).fit(X, y)
    assert list(clf.classes_) == sorted(labels)
    predictions = clf.predict(X)
    assert predictions.dtype == np.asarray(labels).dtype
    assert set(predictions) <= set(labels)
    assert clf.score(X, y) > 1.5 / len(labels)  # well above chance
    proba = clf.predict_proba(X)
    assert proba.shape == (60, len(labels))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], predictions)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, rtol=1e-6)


# -- fitted attributes -----------------------------------------------------------------
def test_fitted_attributes(images):
    X, y = images
    clf = fast(epochs=3).fit(X, y)
    assert isinstance(clf.net_, NeuralNetClassifier)
    assert clf.n_iter_ == 3
    assert [row["epoch"] for row in clf.history_] == [1, 2, 3]
    assert set(clf.history_[0]) == {"epoch", "train_loss", "train_accuracy", "dur"}
    assert clf.loss_curve_ == [row["train_loss"] for row in clf.history_]
    assert clf.validation_scores_ is None
    assert clf.device_ == "cpu"


def test_early_stopping_holds_out_a_stratified_split_and_stops():
    X, y = make_images(n_samples=80)
    rng = np.random.RandomState(0)
    y_random = rng.permutation(y)  # nothing to learn: validation loss stalls
    clf = fast(
        epochs=40, early_stopping=True, n_iter_no_change=2, validation_fraction=0.25
    ).fit(X, y_random)
    assert clf.n_iter_ < 40
    assert {"valid_loss", "valid_accuracy"} <= set(clf.history_[0])
    assert len(clf.validation_scores_) == clf.n_iter_
    # 20 validation images, 10 of each class: accuracies are multiples of 1/20.
    assert all(
        abs(score * 20 - round(score * 20)) < 1e-9 for score in clf.validation_scores_
    )


def test_verbose_prints_an_epoch_table(images, capsys):
    X, y = images
    fast(verbose=1, early_stopping=True).fit(X, y)
    out = capsys.readouterr().out
    for column in (
        "epoch",
        "train_loss",
        "train_accuracy",
        "valid_loss",
        "valid_accuracy",
        "dur",
    ):
        assert column in out
    fast(verbose=0).fit(X, y)
    assert capsys.readouterr().out == ""


class _Terminal(io.StringIO):
    """A captured stdout that says it is a terminal."""

    def isatty(self):
        return True


def test_verbose_auto_prints_on_a_terminal_only(images, capsys, monkeypatch):
    X, y = images
    assert CNNImageClassifier().verbose == "auto"
    fast().fit(X, y)  # pytest's captured output is no terminal
    assert capsys.readouterr() == ("", "")

    terminal = _Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    fast().fit(X, y)
    assert "train_loss" in terminal.getvalue()

    # Fits in threads (a threaded search, Dask's threads) stay silent.
    terminal.truncate(0)
    joblib.Parallel(n_jobs=2, backend="threading")(
        joblib.delayed(fast().fit)(X, y) for _ in range(2)
    )
    assert terminal.getvalue() == ""


def test_verbose_auto_prints_in_a_jupyter_notebook(images, capsys, monkeypatch):
    import types

    class Kernel:
        config = {"IPKernelApp": {"connection_file": "kernel.json"}}

    ipython = types.ModuleType("IPython")
    ipython.get_ipython = Kernel
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    X, y = images
    fast().fit(X, y)
    assert "train_loss" in capsys.readouterr().out


def test_warm_start_and_partial_fit_continue_training(images):
    X, y = images
    clf = fast(epochs=2, warm_start=True).fit(X, y)
    first_weights = [p.detach().clone() for p in clf.net_.module_.parameters()]
    clf.fit(X, y)
    assert clf.n_iter_ == 4
    assert [row["epoch"] for row in clf.history_] == [1, 2, 3, 4]
    changed = [
        not torch.equal(a, b)
        for a, b in zip(first_weights, clf.net_.module_.parameters())
    ]
    assert any(changed)

    online = fast()
    with pytest.raises(ValueError, match="classes must be passed"):
        online.partial_fit(X, y)
    online.partial_fit(X[:30], y[:30], classes=["cat", "dog"])
    online.partial_fit(X[30:], y[30:])
    assert online.n_iter_ == 2
    with pytest.raises(ValueError, match="not in the classes"):
        online.partial_fit(X[:4], ["cat", "cow", "cat", "dog"])
    assert online.n_iter_ == 2


def test_fit_without_warm_start_starts_afresh(images):
    X, y = images
    clf = fast(epochs=2).fit(X, y)
    clf.fit(X, y)
    assert clf.n_iter_ == 2


# -- parameters ---------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", torch.optim.RMSprop])
def test_optimizers(images, optimizer):
    X, y = images
    clf = fast(optimizer=optimizer, weight_decay=1e-4).fit(X, y)
    expected = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "sgd": torch.optim.SGD,
    }
    assert isinstance(clf.net_.optimizer_, expected.get(optimizer, optimizer))
    assert clf.net_.optimizer_.param_groups[0]["weight_decay"] == 1e-4


@pytest.mark.parametrize(
    "params, name",
    [
        ({"epochs": 0}, "epochs"),
        ({"lr": -1}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"optimizer": "adagrad"}, "optimizer"),
        ({"filters": (8, 0)}, "filters"),
        ({"filters": ()}, "filters"),
        ({"dropout": 1.0}, "dropout"),
        ({"precision": "float16"}, "precision"),
        ({"class_weight": "auto"}, "class_weight"),
    ],
)
def test_invalid_parameters_name_the_parameter(images, params, name):
    X, y = images
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter"):
        fast(**params).fit(X, y)


def test_class_weight(images):
    X, y = images
    X, y = X[:40], np.r_[y[:40][y[:40] == "cat"], ["dog"] * 5]
    X = X[: len(y)]
    clf = fast(class_weight="balanced").fit(X, y)
    weight = clf.net_.criterion_.weight.cpu().numpy()
    n_cat, n_dog = (y == "cat").sum(), (y == "dog").sum()
    np.testing.assert_allclose(weight, [len(y) / (2 * n_cat), len(y) / (2 * n_dog)])
    clf = fast(class_weight={"dog": 3.0}).fit(X, y)
    np.testing.assert_allclose(clf.net_.criterion_.weight.cpu().numpy(), [1.0, 3.0])
    with pytest.raises(ValueError, match="'cow'"):
        fast(class_weight={"cow": 2.0}).fit(X, y)


def test_architecture_parameters_shape_the_network(images):
    X, y = images
    clf = fast(filters=(4, 6), kernel_size=5, dense_units=None, dropout=0.2).fit(X, y)
    convs = [m for m in clf.net_.module_.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 6]
    assert convs[0].kernel_size == (5, 5)
    linears = [m for m in clf.net_.module_.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 1
    assert any(isinstance(m, torch.nn.Dropout) for m in clf.net_.module_.modules())


class TinyNet(torch.nn.Module):
    def __init__(self, in_channels, n_classes, image_size):
        super().__init__()
        self.image_size = image_size
        self.linear = torch.nn.Linear(
            in_channels * image_size[0] * image_size[1], n_classes
        )

    def forward(self, x):
        return self.linear(x.flatten(1))


def test_custom_module_class_and_instance(images):
    X, y = images
    clf = fast(module=TinyNet).fit(X, y)
    assert isinstance(clf.net_.module_, TinyNet)
    assert clf.net_.module_.image_size == (8, 8)
    assert clf.net_.module_.linear.in_features == 8 * 8 * 3

    instance = TinyNet(3, 2, (8, 8))
    before = [p.detach().clone() for p in instance.parameters()]
    clf = fast(module=instance).fit(X, y)
    assert clf.predict(X).shape == (len(X),)
    # The instance given as a parameter is copied, never trained in place.
    assert all(torch.equal(a, b) for a, b in zip(before, instance.parameters()))


def test_skorch_callbacks_pass_through(images):
    X, y = images

    class CountEpochs(Callback):
        def initialize(self):
            self.epochs_seen = 0
            return self

        def on_epoch_end(self, net, **kwargs):
            self.epochs_seen += 1

    clf = fast(epochs=3, callbacks=[("count", CountEpochs())]).fit(X, y)
    assert dict(clf.net_.callbacks_)["count"].epochs_seen == 3


# -- reproducibility and state --------------------------------------------
def test_same_seed_same_model_different_seed_different_model(images):
    X, y = images
    a = fast(random_state=1).fit(X, y).predict_proba(X)
    b = fast(random_state=1).fit(X, y).predict_proba(X)
    c = fast(random_state=2).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_fit_leaves_global_random_state_alone(images):
    X, y = images
    torch_state, numpy_state, python_state = (
        torch.get_rng_state(),
        np.random.get_state(),  # noqa: NPY002 (the legacy global state is the point)
        random.getstate(),
    )
    fast(random_state=None, early_stopping=True).fit(X, y)
    fast(random_state=0).fit(X, y)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()  # noqa: NPY002
    assert all(np.array_equal(a, b) for a, b in zip(after, numpy_state))
    assert random.getstate() == python_state


def test_inputs_are_never_modified_and_read_only_inputs_work(images):
    X, y = images
    X_before, y_before = X.copy(), y.copy()
    X.setflags(write=False)
    clf = fast().fit(X, y)
    clf.predict(X)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)
    X_float = X.astype(np.float32) / 255
    X_float_before = X_float.copy()
    fast().fit(X_float, y).predict(X_float)
    np.testing.assert_array_equal(X_float, X_float_before)


def test_pickle_and_joblib_round_trips(images, tmp_path):
    X, y = images
    clf = fast().fit(X, y)
    expected = clf.predict_proba(X)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), expected)
    joblib.dump(clf, tmp_path / "model.joblib")
    np.testing.assert_array_equal(
        joblib.load(tmp_path / "model.joblib").predict_proba(X), expected
    )


def test_cuda_trained_model_loads_on_a_cpu_only_machine(images, monkeypatch):
    X, y = images
    clf = fast().fit(X, y)
    expected = clf.predict_proba(X)
    # Simulate a model that was trained on CUDA.
    clf.device_ = "cuda"
    clf.net_.device = "cuda"
    buffer = io.BytesIO()
    pickle.dump(clf, buffer)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="CUDA"):
        restored = pickle.loads(buffer.getvalue())
    assert restored.device_ == "cpu"
    assert restored.net_.device == "cpu"
    np.testing.assert_array_equal(restored.predict_proba(X), expected)


# -- model selection -------------------------------------------------------------------
def test_grid_search_over_filters_and_epochs_as_written(images):
    X, y = images
    search = GridSearchCV(
        CNNImageClassifier(batch_size=16, random_state=0),
        {"filters": [(16,), (16, 32)], "epochs": [2, 4]},
        cv=2,
    )
    search.fit(X, y)
    assert set(search.best_params_) == {"filters", "epochs"}
    assert len(search.cv_results_["mean_test_score"]) == 4


def test_pipeline_split_cross_validation_and_clone(images):
    from sklearn.preprocessing import FunctionTransformer

    X, y = images
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    pipe = Pipeline(
        [
            ("scale", FunctionTransformer(lambda images: images / np.float32(255))),
            ("cnn", fast(epochs=6)),
        ]
    )
    pipe.fit(X_train, y_train)
    assert pipe.score(X_test, y_test) > 0.8
    scores = cross_val_score(fast(), X, y, cv=3)
    assert scores.shape == (3,)
    cloned = clone(fast().fit(X, y))
    assert not hasattr(cloned, "net_")
    assert cloned.get_params() == fast().get_params()


def test_warm_start_follows_changed_parameters(images):
    X, y = images
    clf = fast(warm_start=True, early_stopping=True).fit(X, y)
    clf.set_params(early_stopping=False).fit(X, y)
    assert "valid_loss" not in clf.history_[-1]
    clf.set_params(early_stopping=True).fit(X, y)
    assert clf.n_iter_ == 6
    assert "valid_loss" in clf.history_[-1]


def test_cosine_lr_schedule_decays_the_learning_rate(images):
    X, y = images
    clf = fast(epochs=4, lr_schedule="cosine").fit(X, y)
    lrs = [group["lr"] for group in clf.net_.optimizer_.param_groups]
    assert lrs[0] < 0.01 * 0.2  # cos(pi * 4 / 4) brings it to ~0 after the fit
    constant = fast(epochs=4, lr_schedule="constant").fit(X, y)
    assert constant.net_.optimizer_.param_groups[0]["lr"] == 0.01
    assert not np.allclose(clf.predict_proba(X), constant.predict_proba(X))
