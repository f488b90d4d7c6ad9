"""Augmentation inside a Pipeline: fresh every epoch, only in training (issue 3)."""

import warnings

import numpy as np
import pytest
import torch
from conftest import FAST, make_images
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn.augmentation import (
    AugmentationLostWarning,
    AugmentedImages,
    RandomAugment,
    RandomHorizontalFlip,
    RandomRotation,
)
from sklearn_cnn.preprocessing import ImageScaler, ImageStandardizer

# sklearn_cnn-only pipelines keep per-epoch augmentation: any warning is a bug.
NOTHING_LOST = pytest.mark.filterwarnings(
    "error::sklearn_cnn.augmentation.AugmentationLostWarning"
)


class RecordingNet(torch.nn.Module):
    """Remembers every batch it sees, in training and in evaluation mode."""

    def __init__(self, in_channels=3, n_classes=2, image_size=(8, 8)):
        super().__init__()
        self.linear = torch.nn.Linear(
            in_channels * image_size[0] * image_size[1], n_classes
        )
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, x.detach().clone()))
        return self.linear(x.flatten(1))


def recorded(clf):
    return clf.net_.module_.seen if hasattr(clf, "net_") else clf[-1].net_.module_.seen


def sorted_rows(images):
    """The images of an epoch as a set-like sorted array (order is shuffled)."""
    flat = images.flatten(1).numpy()
    return flat[np.lexsort(flat.T[::-1])]


def pipeline(augment, **params):
    clf = CNNImageClassifier(
        **{**FAST, "module": RecordingNet(), "batch_size": 64, "epochs": 3, **params}
    )
    return Pipeline([("scale", ImageScaler()), ("augment", augment), ("cnn", clf)])


@pytest.fixture
def data():
    return make_images(n_samples=40)


def training_epochs(clf):
    return [x for training, x in recorded(clf) if training]


@NOTHING_LOST
def test_every_epoch_trains_on_a_fresh_augmentation(data):
    X, y = data
    pipe = pipeline(RandomAugment(degrees=30, random_state=0)).fit(X, y)
    epochs = training_epochs(pipe)
    assert len(epochs) == 3  # one batch of 40 per epoch
    scaled = torch.from_numpy(X.transpose(0, 3, 1, 2) / np.float32(255))
    for epoch in epochs:
        assert not torch.allclose(epoch, scaled)  # augmented, not the raw images
    first, second, third = (sorted_rows(epoch) for epoch in epochs)
    assert not np.allclose(first, second)
    assert not np.allclose(second, third)


def test_predict_score_and_validation_never_see_augmented_images(data):
    X, y = data
    pipe = pipeline(
        RandomAugment(degrees=30, random_state=0),
        early_stopping=True,
        validation_fraction=0.25,
    ).fit(X, y)
    scaled = torch.from_numpy(
        np.ascontiguousarray(X.transpose(0, 3, 1, 2)) / np.float32(255)
    )
    scaled_rows = {tuple(row) for row in scaled.flatten(1).numpy().round(5)}
    evaluation = [x for training, x in recorded(pipe) if not training]
    assert evaluation  # the validation split was evaluated in every epoch
    for batch in evaluation:
        for row in batch.flatten(1).numpy().round(5):
            assert tuple(row) in scaled_rows
    recorded(pipe).clear()
    pipe.predict(X)
    pipe.predict_proba(X)
    pipe.score(X, y)
    for training, batch in recorded(pipe):
        assert not training
        torch.testing.assert_close(batch, scaled)


def test_fit_transform_alone_returns_one_augmentation_transform_returns_x(data):
    X, _ = data
    augment = RandomHorizontalFlip(p=1.0)
    X_aug = augment.fit_transform(X)
    assert isinstance(X_aug, AugmentedImages)
    assert X_aug.shape == X.shape and X_aug.dtype == X.dtype and len(X_aug) == len(X)
    assert isinstance(X_aug.to_numpy(), np.ndarray)
    np.testing.assert_array_equal(X_aug.to_numpy(), X[:, :, ::-1])
    np.testing.assert_array_equal(augment.transform(X), X)


def test_augment_parameter_takes_the_same_objects(data):
    X, y = data
    clf = CNNImageClassifier(
        **{**FAST, "module": RecordingNet(), "batch_size": 64, "epochs": 2},
        augment=RandomRotation(degrees=30, random_state=0),
    ).fit(X, y)
    first, second = (sorted_rows(epoch) for epoch in training_epochs(clf))
    assert not np.allclose(first, second)
    recorded(clf).clear()
    clf.predict(X)
    ((training, batch),) = recorded(clf)
    assert not training
    torch.testing.assert_close(
        batch, torch.from_numpy(X.transpose(0, 3, 1, 2) / np.float32(255))
    )


@NOTHING_LOST
def test_only_training_folds_are_augmented_and_parameters_are_searchable(data):
    X, y = data
    pipe = Pipeline(
        [
            ("scale", ImageScaler()),
            ("augment", RandomAugment(random_state=0)),
            ("cnn", CNNImageClassifier(**FAST)),
        ]
    )
    search = GridSearchCV(pipe, {"augment__degrees": [0, 15]}, cv=2).fit(X, y)
    assert search.best_params_["augment__degrees"] in (0, 15)
    assert {p["augment__degrees"] for p in search.cv_results_["params"]} == {0, 15}

    # Scoring a fold passes its test images through transform: never augmented.
    seen_at_test_time = []

    class Spy(RandomHorizontalFlip):
        def transform(self, X):
            result = super().transform(X)
            seen_at_test_time.append(np.array_equal(result, X))
            return result

    scores = cross_val_score(
        Pipeline([("augment", Spy(p=1.0)), ("cnn", CNNImageClassifier(**FAST))]),
        X,
        y,
        cv=2,
    )
    assert scores.shape == (2,)
    assert seen_at_test_time and all(seen_at_test_time)


@NOTHING_LOST
def test_fixed_random_state_reproduces_the_whole_fit(data):
    X, y = data
    make = lambda: pipeline(  # noqa: E731
        RandomAugment(degrees=20, random_state=0), module=None, random_state=7
    )
    a = make().fit(X, y).predict_proba(X)
    b = make().fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)


@NOTHING_LOST
def test_pipeline_memory_cache_hit_keeps_per_epoch_augmentation(data, tmp_path):
    X, y = data

    def make():
        return Pipeline(
            [
                ("scale", ImageScaler()),
                ("augment", RandomAugment(degrees=30, random_state=0)),
                (
                    "cnn",
                    CNNImageClassifier(
                        **{**FAST, "module": RecordingNet(), "batch_size": 64}
                    ),
                ),
            ],
            memory=str(tmp_path),
        )

    make().fit(X, y)
    cached = make().fit(X, y)  # the augment step's output comes from the cache
    first, second = (sorted_rows(epoch) for epoch in training_epochs(cached))
    assert not np.allclose(first, second)


def test_sklearn_cnn_steps_after_the_augmenter_keep_it_alive(data):
    X, y = data
    pipe = Pipeline(
        [
            ("augment", RandomAugment(degrees=30, random_state=0)),
            ("scale", ImageScaler()),
            ("standardize", ImageStandardizer()),
            (
                "cnn",
                CNNImageClassifier(
                    **{
                        **FAST,
                        "module": RecordingNet(),
                        "batch_size": 64,
                        "early_stopping": True,
                        "validation_fraction": 0.25,
                    }
                ),
            ),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", AugmentationLostWarning)
        pipe.fit(X, y)
    first, second = (sorted_rows(epoch) for epoch in training_epochs(pipe))
    assert not np.allclose(first, second)
    # The validation split went through the same scaling and standardizing.
    expected_rows = {
        tuple(row)
        for row in np.ascontiguousarray(pipe[:-1].transform(X).transpose(0, 3, 1, 2))
        .reshape(len(X), -1)
        .round(4)
    }
    validation = [x for training, x in recorded(pipe) if not training]
    assert validation
    for batch in validation:
        for row in batch.flatten(1).numpy().round(4):
            assert tuple(row) in expected_rows
    # Standardized with the statistics learned in fit, at predict time too.
    recorded(pipe).clear()
    pipe.predict(X)
    ((_, batch),) = recorded(pipe)
    expected = pipe[:-1].transform(X)
    torch.testing.assert_close(
        batch, torch.from_numpy(np.ascontiguousarray(expected.transpose(0, 3, 1, 2)))
    )


def test_foreign_steps_after_the_augmenter_warn(data):
    X, y = data
    pipe = Pipeline(
        [
            ("augment", RandomAugment(random_state=0)),
            ("scale", FunctionTransformer(lambda images: images / 255.0)),
            ("cnn", CNNImageClassifier(**FAST)),
        ]
    )
    with pytest.warns(AugmentationLostWarning, match="Per-epoch augmentation is lost"):
        pipe.fit(X, y)


def test_augmented_images_survive_clone_and_pickle(data):
    import pickle

    X, _ = data
    augment = clone(RandomAugment(random_state=0))
    X_aug = augment.fit_transform(X)
    assert isinstance(X_aug, AugmentedImages) and X_aug.has_recipe
    restored = pickle.loads(pickle.dumps(X_aug))
    assert restored.has_recipe
    np.testing.assert_array_equal(restored.source, X)
    np.testing.assert_array_equal(restored.to_numpy(), X_aug.to_numpy())
    with pytest.warns(AugmentationLostWarning, match="numpy's add"):
        derived = X_aug + 0
    assert type(derived) is np.ndarray  # derived arrays forget the recipe


# A foreign step after an augmenter is never silent ---------------------------------


def _flat(X):
    return X.reshape(len(X), -1)


@pytest.mark.parametrize(
    "foreign",
    [
        FunctionTransformer(np.asarray),
        FunctionTransformer(lambda images: images / 255.0),
        FunctionTransformer(validate=True),  # check_array
        StandardScaler(),  # validate_data
    ],
    ids=["np.asarray", "arithmetic", "check_array", "StandardScaler"],
)
def test_a_foreign_step_warns_when_the_augmented_images_become_an_array(data, foreign):
    X, y = data
    flip = RandomHorizontalFlip(image_shape=(8, 8, 3), random_state=0)
    X_augmented = flip.fit_transform(_flat(X))
    # The moment of the loss, with no classifier involved.
    with pytest.warns(AugmentationLostWarning, match="Per-epoch augmentation"):
        X_plain = clone(foreign).fit_transform(X_augmented)
    assert not isinstance(X_plain, AugmentedImages)
    pipe = Pipeline(
        [
            ("augment", flip),
            ("foreign", foreign),
            ("cnn", CNNImageClassifier(**{**FAST, "epochs": 1}, image_shape=(8, 8, 3))),
        ]
    )
    with pytest.warns(AugmentationLostWarning):
        pipe.fit(_flat(X), y)


def test_to_numpy_and_metadata_do_not_warn(data):
    X, _ = data
    X_augmented = RandomHorizontalFlip(random_state=0).fit_transform(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AugmentationLostWarning)
        assert X_augmented.shape == X.shape and X_augmented.ndim == 4
        assert np.shape(X_augmented) == X.shape and len(X_augmented) == len(X)
        assert X_augmented[0].shape == X.shape[1:]  # one image is not a batch
        X_augmented.to_numpy()
    with pytest.warns(AugmentationLostWarning):
        np.asarray(X_augmented)
    with pytest.warns(AugmentationLostWarning):
        X_augmented.reshape(len(X), -1)


@NOTHING_LOST
def test_selecting_images_keeps_the_recipe(data):
    X, y = data
    X_augmented = RandomRotation(degrees=30, random_state=0).fit_transform(X)
    rows = np.arange(30)
    subset = X_augmented[rows]
    assert isinstance(subset, AugmentedImages) and subset.has_recipe
    np.testing.assert_array_equal(subset.source, X[rows])
    np.testing.assert_array_equal(subset.to_numpy(), X_augmented.to_numpy()[rows])
    # Cross-validation indexes the augmented images: each training fold still
    # trains on a fresh augmentation in every epoch.
    clf = CNNImageClassifier(
        **{**FAST, "module": RecordingNet(), "batch_size": 64, "epochs": 2}
    )
    scores = cross_val_score(clf, X_augmented, y, cv=2)
    assert scores.shape == (2,)
    clf.fit(X_augmented[rows], y[rows])
    first, second = (sorted_rows(epoch) for epoch in training_epochs(clf))
    assert not np.allclose(first, second)


# set_output ---------------------------------------------------------------------


def _pixel_frame():
    """40 flattened 8x8 grayscale images as a DataFrame, and their labels."""
    pd = pytest.importorskip("pandas")
    X, y = make_images(n_samples=40, channels=1)
    return pd.DataFrame(_flat(X), columns=[f"pixel{i}" for i in range(64)]), y


@NOTHING_LOST
def test_pipeline_set_output_pandas_fits_and_predicts():
    X, y = _pixel_frame()
    pipe = Pipeline(
        [("s", ImageScaler()), ("cnn", CNNImageClassifier(**FAST, image_shape=(8, 8)))]
    ).set_output(transform="pandas")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*feature names")
        pipe.fit(X, y)
        assert pipe.predict(X).shape == (40,)
        assert isinstance(pipe[:-1].transform(X), type(X))
    assert list(pipe[-1].feature_names_in_) == list(X.columns)


@NOTHING_LOST
def test_pipeline_set_output_pandas_keeps_per_epoch_augmentation():
    X, y = _pixel_frame()
    clf = CNNImageClassifier(
        **{**FAST, "module": RecordingNet(in_channels=1), "batch_size": 64},
        image_shape=(8, 8),
    )
    pipe = Pipeline(
        [
            ("scale", ImageScaler()),
            ("augment", RandomRotation(degrees=30, random_state=0)),
            ("cnn", clf),
        ]
    ).set_output(transform="pandas")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*feature names")
        pipe.fit(X, y)
        pipe.predict(X)
    first, second = (sorted_rows(epoch) for epoch in training_epochs(pipe))
    assert not np.allclose(first, second)
    assert list(pipe[-1].feature_names_in_) == list(X.columns)
