"""Bad input, faults and reproducibility of CNNImageClassifier."""

import os
import warnings

import joblib
import numpy as np
import pytest
import scipy.sparse
import torch
from conftest import FAST, make_images
from sklearn.exceptions import FitFailedWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from skorch.callbacks import Callback

from sklearn_cnn import CNNImageClassifier


def fast(**params):
    return CNNImageClassifier(**{**FAST, **params})


# -- bad input: a clear error saying what was expected and what was received ----------
@pytest.mark.parametrize(
    "X, message",
    [
        (np.zeros(10), "1D array"),
        (np.zeros((10, 2, 4, 4, 3)), "5D array"),
        (np.zeros((0, 8, 8, 3)), "0 sample"),
        (np.full((10, 4, 4, 3), np.nan), "NaN"),
        (np.full((10, 4, 4, 3), np.inf), "infinity"),
        (np.full((10, 4, 4, 3), "a"), "dtype='numeric' is not compatible"),
        (np.zeros((10, 4, 4, 3), dtype=complex), "Complex data not supported"),
        (np.zeros((10, 0, 4, 3)), "size 0"),
    ],
)
def test_bad_images_are_refused_clearly(X, message):
    y = np.arange(len(X)) % 2
    with pytest.raises(ValueError, match=message):
        fast().fit(X, y)


def test_sparse_input_is_refused():
    X = scipy.sparse.random(10, 16, format="csr", random_state=0)
    with pytest.raises(TypeError, match="dense data is required"):
        fast().fit(X, np.arange(10) % 2)


@pytest.mark.parametrize(
    "y, error, message",
    [
        (np.arange(59) % 2, ValueError, "inconsistent numbers of samples"),
        (np.linspace(0, 1, 60), ValueError, "Unknown label type: continuous"),
        (np.r_[np.nan, np.zeros(59)], ValueError, "NaN"),
        (np.zeros(60), ValueError, "only one class"),
        (None, ValueError, "requires y to be passed"),
    ],
)
def test_bad_labels_are_refused_clearly(images, y, error, message):
    X, _ = images
    with pytest.raises(error, match=message):
        fast().fit(X, y)


def test_predicting_on_other_image_shapes_says_what_was_fitted(images):
    X, y = images
    clf = fast().fit(X, y)
    other_size = np.zeros((3, 10, 10, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"fitted on images of shape .* \(8, 8, 3\)"):
        clf.predict(other_size)
    other_channels = np.zeros((3, 8, 8, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"\(8, 8, 1\).*\(8, 8, 3\)"):
        clf.predict(other_channels)
    with pytest.raises(ValueError, match="X has 64 features"):
        clf.predict(np.zeros((3, 64)))


def test_unfitted_predict_raises_not_fitted():
    with pytest.raises(NotFittedError):
        fast().predict(np.zeros((2, 8, 8, 3)))


def test_failed_fit_leaves_the_previous_fit_intact(images):
    X, y = images
    clf = fast().fit(X, y)
    expected = clf.predict_proba(X)
    state = set(vars(clf))
    with pytest.raises(ValueError):
        clf.fit(np.zeros((10, 5, 5, 3)), np.zeros(10))  # one class
    with pytest.raises(ValueError):
        clf.fit(np.full((10, 5, 5, 3), np.nan), np.arange(10) % 2)
    assert set(vars(clf)) == state
    assert clf.image_shape_ == (8, 8, 3)
    np.testing.assert_array_equal(clf.predict_proba(X), expected)


def test_failed_first_fit_leaves_no_fitted_attributes():
    clf = fast()
    with pytest.raises(ValueError):
        clf.fit(np.zeros((10, 5, 5, 3)), np.zeros(10))
    assert not [name for name in vars(clf) if name.endswith("_")]


# -- odd but valid input ------------------------------------------------------------
def test_odd_memory_layouts_work(images, tmp_path):
    X, y = images
    expected = fast().fit(X, y).predict_proba(X)
    fortran = np.asfortranarray(X)
    strided = np.repeat(X, 2, axis=0)[::2]
    path = tmp_path / "X.joblib"
    joblib.dump(X, path)
    memmap = joblib.load(path, mmap_mode="r")
    for variant in (fortran, strided, memmap):
        proba = fast().fit(variant, y).predict_proba(variant)
        np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-7)


def test_batch_of_one_and_a_last_batch_of_one_with_batch_norm():
    X, y = make_images(n_samples=17, size=1)
    clf = fast(batch_size=16).fit(X, y)  # 17 % 16 == 1 on 1x1 images
    assert clf.predict(X[:1]).shape == (1,)
    clf = fast(batch_size=1, epochs=1).fit(X[:4], y[:4])
    assert clf.predict(X[:1]).shape == (1,)


# -- faults ---------------------------------------------------------------------------
class _InterruptAt(Callback):
    def __init__(self, epoch, batch=None):
        self.epoch = epoch
        self.batch = batch

    def on_batch_end(self, net, training=False, **kwargs):
        batches = len(net.history[-1, "batches"])
        if training and len(net.history) == self.epoch and batches == self.batch:
            raise KeyboardInterrupt

    def on_epoch_end(self, net, **kwargs):
        if self.batch is None and len(net.history) == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("batch, epochs_kept", [(None, 2), (2, 1)])
def test_ctrl_c_keeps_completed_epochs_and_propagates(images, batch, epochs_kept):
    X, y = images
    clf = fast(epochs=5, callbacks=[("stop", _InterruptAt(2, batch))])
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y)
    assert clf.n_iter_ == epochs_kept
    assert len(clf.history_) == epochs_kept
    assert clf.predict(X).shape == (len(X),)


def test_ctrl_c_stops_a_grid_search(images):
    X, y = images
    search = GridSearchCV(
        fast(epochs=3, callbacks=[("stop", _InterruptAt(2))]),
        {"lr": [0.01, 0.02]},
        cv=2,
    )
    with pytest.raises(KeyboardInterrupt):
        search.fit(X, y)
    assert not hasattr(search, "best_params_")


class _DivergingNet(torch.nn.Module):
    """Returns NaN logits from the given training batch on."""

    def __init__(self, in_channels, n_classes, image_size, diverge_at=3):
        super().__init__()
        self.linear = torch.nn.Linear(
            in_channels * image_size[0] * image_size[1], n_classes
        )
        self.diverge_at = diverge_at
        self.calls = 0

    def forward(self, x):
        out = self.linear(x.flatten(1))
        if self.training:
            self.calls += 1
            if self.calls >= self.diverge_at:
                return out * float("nan")
        return out


def test_non_finite_loss_stops_fit_naming_epoch_and_batch(images):
    X, y = images  # 60 images, batches of 16: 4 batches per epoch
    clf = fast(module=_DivergingNet, epochs=3)
    with pytest.raises(FloatingPointError, match="epoch 1, batch 3"):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")
    clf = fast(module=_DivergingNet(3, 2, (8, 8), diverge_at=6), epochs=3)
    with pytest.raises(FloatingPointError, match="epoch 2, batch 2"):
        clf.fit(X, y)


def test_diverged_candidate_gets_error_score_never_the_best(images):
    X, y = images
    search = GridSearchCV(
        fast(epochs=2),
        {"module": [None, _DivergingNet]},
        cv=2,
        error_score=np.nan,
    )
    with pytest.warns(FitFailedWarning):
        search.fit(X, y)
    assert search.best_params_ == {"module": None}
    assert np.isnan(search.cv_results_["mean_test_score"][1])


class _Bfloat16DivergingNet(torch.nn.Module):
    """Learns in float32; its training logits become NaN under bfloat16 autocast."""

    def __init__(self, in_channels, n_classes, image_size):
        super().__init__()
        self.linear = torch.nn.Linear(
            in_channels * image_size[0] * image_size[1], n_classes
        )

    def forward(self, x):
        out = self.linear(x.flatten(1))
        if self.training and out.dtype == torch.bfloat16:
            return out * float("nan")
        return out


def test_auto_precision_refits_in_float32_when_bfloat16_diverges(images, monkeypatch):
    # 'auto' picks bfloat16 on the CPU of this test, whatever the real CPU is.
    monkeypatch.setattr("sklearn_cnn.utils._runtime.cpu_has_native_bf16", lambda: True)
    X, y = images
    with pytest.raises(FloatingPointError, match="epoch 1, batch 1"):
        fast(module=_Bfloat16DivergingNet, precision="bfloat16").fit(X, y)
    clf = fast(module=_Bfloat16DivergingNet)  # precision="auto"
    with pytest.warns(RuntimeWarning, match="started again in float32"):
        clf.fit(X, y)
    assert clf.n_iter_ == 2
    assert clf.prediction_settings_.autocast_dtype is None
    float32 = fast(module=_Bfloat16DivergingNet, precision="float32").fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), float32.predict_proba(X))


class _OutOfMemoryNet(torch.nn.Module):
    """Raises CUDA's out-of-memory error for batches larger than ``limit``."""

    def __init__(self, in_channels, n_classes, image_size, limit=8):
        super().__init__()
        self.linear = torch.nn.Linear(
            in_channels * image_size[0] * image_size[1], n_classes
        )
        self.limit = limit
        self.batch_sizes = []

    def forward(self, x):
        self.batch_sizes.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return self.linear(x.flatten(1))


def test_out_of_memory_in_training_says_which_batch_size_failed(images):
    X, y = images
    clf = fast(module=_OutOfMemoryNet(3, 2, (8, 8), limit=8), batch_size=32)
    with pytest.raises(MemoryError, match="batch_size=32.*Lower batch_size"):
        clf.fit(X, y)


def test_out_of_memory_in_prediction_splits_the_batch(images):
    X, y = images
    # float32: under precision="auto" a CPU with native bfloat16 rounds every
    # logit to 8 bits, and which kernel computes it depends on the batch size
    # (torch hands a bfloat16 product to oneDNN only above 16**3 multiply-adds:
    # 16 rows here, not 8). One rounding step of a logit near 4 moves a
    # probability near 0.986 by 1e-4, the difference the full suite showed.
    # What this test checks is the splitting, not bfloat16.
    net = _OutOfMemoryNet(3, 2, (8, 8), limit=16)
    clf = fast(module=net, batch_size=16, precision="float32").fit(X, y)
    module = clf.net_.module_
    module.limit = 10
    module.batch_sizes.clear()
    proba = clf.predict_proba(X)
    assert proba.shape == (60, 2)
    assert module.batch_sizes[:3] == [16, 8, 8]
    assert max(module.batch_sizes[1:]) <= 10
    module.limit = 1000
    # In float32 each logit is a sum of 192 products whose order a kernel chosen
    # by the batch size may change: at most 192 roundings of 2**-24 relative,
    # about 1e-5 of the logits' size (a few units here); a probability moves
    # by at most a quarter of its logits' change.
    np.testing.assert_allclose(clf.predict_proba(X), proba, rtol=0, atol=1e-5)


def test_checkpoint_resumes_epochs_and_optimizer_state(images, tmp_path):
    X, y = images
    clf = fast(epochs=3, checkpoint=tmp_path).fit(X, y)
    (checkpoint,) = tmp_path.iterdir()
    step_after_3 = clf.net_.optimizer_.state_dict()["state"][0]["step"].item()
    resumed = fast(epochs=6, checkpoint=tmp_path).fit(X, y)
    assert [row["epoch"] for row in resumed.history_] == [1, 2, 3, 4, 5, 6]
    assert resumed.history_[:3] == clf.history_
    # Adam's step count carried on from the checkpoint: 3 more epochs of 4 batches.
    step_after_6 = resumed.net_.optimizer_.state_dict()["state"][0]["step"].item()
    assert step_after_6 == step_after_3 + 3 * 4
    # A fit on other data or with other parameters does not pick it up.
    other = fast(epochs=2, checkpoint=tmp_path, lr=0.02).fit(X, y)
    assert other.n_iter_ == 2
    assert len(list(tmp_path.iterdir())) == 2


def test_checkpoint_writes_are_atomic(images, tmp_path, monkeypatch):
    X, y = images
    fast(epochs=1, checkpoint=tmp_path).fit(X, y)
    (checkpoint,) = tmp_path.iterdir()
    before = checkpoint.read_bytes()
    real_save = torch.save

    def failing_save(obj, stream, *args, **kwargs):
        real_save(obj, stream, *args, **kwargs)
        stream.truncate(10)
        raise OSError("disk full (injected)")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        fast(epochs=2, checkpoint=tmp_path).fit(X, y)
    assert checkpoint.read_bytes() == before
    assert os.listdir(tmp_path) == [checkpoint.name]


def test_parallel_fits_never_share_a_checkpoint(images, tmp_path):
    X, y = images
    search = GridSearchCV(
        fast(epochs=1, checkpoint=tmp_path), {"lr": [0.01, 0.02]}, cv=2, n_jobs=2
    )
    search.fit(X, y)
    # 2 candidates x 2 folds + the refit, each with its own file.
    assert len(list(tmp_path.glob("*.pt"))) == 5


# -- reproducibility ------------------------------------------------------
def test_same_seed_bitwise_identical_with_augmentation_and_validation(images):
    from sklearn_cnn.augmentation import RandomHorizontalFlip

    X, y = images
    params = dict(early_stopping=True, augment=RandomHorizontalFlip(), epochs=3)
    a = fast(random_state=3, **params).fit(X, y).predict_proba(X)
    b = fast(random_state=3, **params).fit(X, y).predict_proba(X)
    c = fast(random_state=4, **params).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_searches_give_identical_scores_with_one_or_two_jobs(images):
    X, y = images
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitFailedWarning)
        sequential = cross_val_score(fast(), X, y, cv=3, n_jobs=1)
        parallel = cross_val_score(fast(), X, y, cv=3, n_jobs=2)
    np.testing.assert_array_equal(sequential, parallel)
    grid = {"filters": [(4,), (8,)]}
    one = GridSearchCV(fast(), grid, cv=2, n_jobs=1).fit(X, y)
    two = GridSearchCV(fast(), grid, cv=2, n_jobs=2).fit(X, y)
    np.testing.assert_array_equal(
        one.cv_results_["mean_test_score"], two.cv_results_["mean_test_score"]
    )
