"""CNNImageClassifier given image files as X: decoded batch by batch while training."""

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, StandInAccelerator, make_images
from PIL import Image
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline
from skorch.callbacks import Callback

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn._sources import LabelledImages, image_source
from sklearn_cnn.augmentation import RandomHorizontalFlip, RandomVerticalFlip
from sklearn_cnn.datasets import load_image_folder
from sklearn_cnn.preprocessing import ImageScaler


def fast(**params):
    return CNNImageClassifier(**{**FAST, **params})


def write_folder(root, n_samples=40, size=8, suffix=".png", channels=3, seed=0):
    """A class folder per label of conftest's tiny images; returns (paths, labels)."""
    X, y = make_images(n_samples, size=size, channels=channels, seed=seed)
    for i, (pixels, label) in enumerate(zip(X, y)):
        (root / label).mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
        image.save(root / label / f"{i:03d}{suffix}", quality=95)
    return load_image_folder(root, paths_only=True, return_X_y=True)


@pytest.fixture
def files(tmp_path):
    return write_folder(tmp_path / "images")


# -- every method, same model as the arrays --------------------------------------------
def test_paths_work_in_every_method(files):
    paths, y = files
    clf = fast().fit(paths, y)
    assert clf.image_shape_ == (8, 8, 3) and clf.n_features_in_ == 8 * 8 * 3
    as_path_objects = [Path(path) for path in paths]
    assert clf.predict(as_path_objects).shape == (40,)
    proba = clf.predict_proba(list(paths))
    assert proba.shape == (40, 2) and np.allclose(proba.sum(axis=1), 1)
    assert np.allclose(np.exp(clf.predict_log_proba(paths)), proba)
    assert clf.score(paths, y) >= 0.9
    clf.partial_fit(paths[:10], y[:10])
    assert clf.n_iter_ == FAST["epochs"] + 1
    first = CNNImageClassifier(**FAST).partial_fit(paths, y, classes=["cat", "dog"])
    assert first.n_iter_ == 1


def test_paths_give_the_same_model_as_the_decoded_arrays(files, tmp_path):
    paths, y = files
    arrays, y_arrays = load_image_folder(
        tmp_path / "images", image_size=None, return_X_y=True
    )
    assert np.array_equal(y, y_arrays)
    params = dict(
        early_stopping=True, validation_fraction=0.25, class_weight="balanced"
    )
    from_files = fast(**params).fit(paths, y)
    from_arrays = fast(**params).fit(arrays, y)
    assert from_files.history_[-1]["valid_loss"] == pytest.approx(
        from_arrays.history_[-1]["valid_loss"], rel=1e-5
    )
    np.testing.assert_allclose(
        from_files.predict_proba(paths), from_arrays.predict_proba(arrays), atol=1e-5
    )
    # A model trained on files predicts arrays of the same images alike.
    np.testing.assert_allclose(
        from_files.predict_proba(arrays), from_files.predict_proba(paths), atol=1e-6
    )


def test_sample_weight_weighs_files_as_arrays(files, tmp_path):
    paths, y = files
    arrays, _ = load_image_folder(tmp_path / "images", image_size=None, return_X_y=True)
    weights = np.tile([0.0, 1.0, 2.0, 0.5], 10)
    from_files = fast().fit(paths, y, sample_weight=weights)
    from_arrays = fast().fit(arrays, y, sample_weight=weights)
    np.testing.assert_allclose(
        from_files.predict_proba(paths), from_arrays.predict_proba(arrays), atol=1e-5
    )
    assert not np.allclose(
        from_files.predict_proba(paths), fast().fit(paths, y).predict_proba(paths)
    )


def test_same_seed_same_files_same_result(files):
    paths, y = files
    flips = dict(augment=RandomHorizontalFlip(random_state=0))
    first = fast(**flips).fit(paths, y).predict_proba(paths)
    again = fast(**flips).fit(paths, y).predict_proba(paths)
    assert np.array_equal(first, again)
    other_seed = fast(random_state=1, **flips).fit(paths, y).predict_proba(paths)
    assert not np.array_equal(first, other_seed)


def test_resized_jpeg_files_match_load_image_folder(tmp_path):
    paths, y = write_folder(tmp_path / "jpegs", size=10, suffix=".jpg")
    arrays, _ = load_image_folder(tmp_path / "jpegs", image_size=6, return_X_y=True)
    clf = fast(image_size=6).fit(paths, y)
    assert clf.image_shape_ == (6, 6, 3)
    np.testing.assert_allclose(
        clf.predict_proba(paths), clf.predict_proba(arrays), atol=1e-6
    )


# -- model selection and Pipelines -----------------------------------------------------
def test_paths_in_train_test_split_grid_search_and_cross_val_score(files):
    paths, y = files
    paths_train, paths_test, y_train, y_test = train_test_split(
        paths, y, test_size=0.25, stratify=y, random_state=0
    )
    assert fast().fit(paths_train, y_train).score(paths_test, y_test) >= 0.8
    search = GridSearchCV(fast(), {"lr": [0.01, 0.02]}, cv=2).fit(list(paths), y)
    assert search.best_estimator_.image_shape_ == (8, 8, 3)
    scores = cross_val_score(fast(), paths, y, cv=2)
    assert scores.shape == (2,) and scores.min() >= 0.5


def test_augmenter_in_a_pipeline_augments_the_decoded_batches(files, tmp_path):
    paths, y = files
    arrays, _ = load_image_folder(tmp_path / "images", image_size=None, return_X_y=True)

    def pipeline():
        return Pipeline(
            [
                ("flip", RandomHorizontalFlip(p=0.5)),
                ("flip_up", RandomVerticalFlip(p=0.5)),
                ("cnn", fast()),
            ]
        )

    from_files = pipeline().fit(paths, y)
    # The same per-batch augmentation as for arrays: identical models.
    np.testing.assert_allclose(
        from_files.predict_proba(paths),
        pipeline().fit(arrays, y).predict_proba(arrays),
        atol=1e-5,
    )
    unaugmented = fast().fit(paths, y).predict_proba(paths)
    assert not np.allclose(from_files.predict_proba(paths), unaugmented)
    flip = Pipeline([("flip", RandomHorizontalFlip(p=0.5)), ("cnn", fast())])
    as_parameter = fast(augment=RandomHorizontalFlip(p=0.5)).fit(paths, y)
    np.testing.assert_allclose(
        as_parameter.predict_proba(paths),
        flip.fit(paths, y).predict_proba(paths),
        atol=1e-6,
    )


def test_step_that_needs_pixels_says_so_and_how_to_fix_it(files):
    paths, y = files
    pipeline = Pipeline([("scale", ImageScaler()), ("cnn", fast())])
    with pytest.raises(TypeError, match="ImageScaler needs decoded pixels.*image_size"):
        pipeline.fit(paths, y)


# -- image shape: channels and size ----------------------------------------------------
def test_grayscale_files_give_one_channel_and_mixed_files_rgb(tmp_path):
    paths, y = write_folder(tmp_path / "gray", channels=1)
    clf = fast().fit(paths, y)
    assert clf.image_shape_ == (8, 8, 1) and clf.n_features_in_ == 64
    colour_paths, _ = write_folder(tmp_path / "colour")
    # A model of gray images reads colour files as gray levels.
    assert clf.predict(colour_paths).shape == (40,)
    mixed = np.concatenate([paths[:20], colour_paths[20:]])
    assert fast().fit(mixed, y).image_shape_ == (8, 8, 3)


def test_color_mode_says_which_channels_files_are_read_with(tmp_path):
    gray_paths, y = write_folder(tmp_path / "gray", channels=1)
    colour_paths, _ = write_folder(tmp_path / "colour")
    as_rgb = fast(color_mode="rgb").fit(gray_paths, y)
    assert as_rgb.image_shape_ == (8, 8, 3)
    as_gray = fast(color_mode="grayscale").fit(colour_paths, y)
    assert as_gray.image_shape_ == (8, 8, 1)
    # Gray files read as RGB give the same pixels as their RGB copies.
    np.testing.assert_allclose(
        as_rgb.predict_proba(gray_paths),
        as_rgb.predict_proba(
            load_image_folder(tmp_path / "gray", image_size=8)["data"]
        ),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="color_mode"):
        fast(color_mode="cmyk").fit(gray_paths, y)


def test_files_of_different_sizes_need_image_size(tmp_path):
    paths, y = write_folder(tmp_path / "eight")
    bigger, _ = write_folder(tmp_path / "ten", size=10)
    mixed = np.concatenate([paths[:20], bigger[20:]])
    with pytest.raises(ValueError, match=r"ten.*\(10, 10\).*image_size=\(height"):
        fast().fit(mixed, y)
    clf = fast(image_size=(8, 6)).fit(mixed, y)
    assert clf.image_shape_ == (8, 6, 3)
    assert clf.predict(bigger).shape == (40,)
    native = fast().fit(paths, y)
    with pytest.raises(ValueError, match=r"fitted on \(8, 8\)"):
        native.predict(bigger)
    # Told to resize, a model fitted without image_size reads any size.
    assert native.set_params(image_size=8).predict(bigger).shape == (40,)
    with pytest.raises(ValueError, match=r"image_size=6, but this model was fitted"):
        native.set_params(image_size=6).predict(bigger)


def test_image_size_refuses_arrays_of_another_size(files):
    X, y = make_images(20, size=8)
    assert fast(image_size=8).fit(X, y).image_shape_ == (8, 8, 3)
    with pytest.raises(ValueError, match="image_size=6 resizes image files"):
        fast(image_size=6).fit(X, y)


def test_image_shape_is_for_arrays_only(files):
    paths, y = files
    with pytest.raises(ValueError, match="image_shape describes the layout of arrays"):
        fast(image_shape=(8, 8, 3)).fit(paths, y)


def test_checkpoint_of_files_resumes_and_follows_their_changes(files, tmp_path):
    paths, y = files
    folder = tmp_path / "checkpoints"
    fast(epochs=1, checkpoint=folder).fit(paths, y)
    resumed = fast(epochs=2, checkpoint=folder).fit(paths, y)
    assert len(list(folder.iterdir())) == 1 and resumed.n_iter_ == 2
    # A file rewritten since: another data set, another checkpoint.
    pixels = np.asarray(Image.open(paths[0]))
    Image.fromarray(255 - pixels).save(paths[0])
    fast(epochs=1, checkpoint=folder).fit(paths, y)
    assert len(list(folder.iterdir())) == 2


# -- unreadable and vanishing files ----------------------------------------------------
def test_unreadable_files_are_skipped_with_one_warning_or_refused(files, tmp_path):
    paths, y = files
    broken = tmp_path / "images" / "cat" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    missing = str(tmp_path / "images" / "dog" / "gone.png")
    X = np.concatenate([paths, [str(broken), missing]])
    labels = np.concatenate([y, ["cat", "dog"]])
    with pytest.warns(UserWarning, match="Skipped 2 unreadable") as record:
        clf = fast().fit(X, labels)
    assert len(record) == 1
    assert "broken.png" in str(record[0].message) and "gone.png" in str(
        record[0].message
    )
    assert clf.predict(paths).shape == (40,)
    with pytest.raises(ValueError, match=r"broken.png.*unreadable_files='skip'"):
        fast(unreadable_files="raise").fit(X, labels)
    with pytest.raises(ValueError, match=r"broken.png.*every file of X gets"):
        clf.predict(X)


class _DeleteAfterFirstEpoch(Callback):
    def __init__(self, path):
        self.path = path

    def on_epoch_end(self, net, **kwargs):
        Path(self.path).unlink(missing_ok=True)


def test_file_vanishing_during_fit_is_a_clear_error_and_changes_nothing(files):
    paths, y = files
    clf = fast().fit(paths, y)
    before = clf.predict_proba(paths[1:])
    history = list(clf.history_)
    clf.set_params(warm_start=True, callbacks=[_DeleteAfterFirstEpoch(paths[0])])
    with pytest.raises(
        OSError, match=r"Cannot decode image file .*000.png.*stay in place"
    ):
        clf.fit(paths, y)
    assert clf.history_ == history
    assert np.array_equal(clf.predict_proba(paths[1:]), before)
    fresh = fast(callbacks=[_DeleteAfterFirstEpoch(paths[1])])
    with pytest.raises(OSError, match=Path(paths[1]).name):
        fresh.fit(paths[1:], y[1:])
    assert not hasattr(fresh, "classes_") and not hasattr(fresh, "net_")


# -- memory ----------------------------------------------------------------------------
def _peak_bytes_of_one_epoch(paths, y, **params):
    clf = fast(filters=(2,), dense_units=None, epochs=1, batch_size=8, **params)
    tracemalloc.start()
    try:
        clf.fit(paths, y)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_of_an_epoch_does_not_grow_with_the_number_of_files(tmp_path):
    few, y_few = write_folder(tmp_path / "few", n_samples=32, size=40)
    many, y_many = write_folder(tmp_path / "many", n_samples=256, size=40, seed=1)
    decoded_bytes = 256 * 40 * 40 * 3  # 1.2 MB; a batch of 8 is 38 kB
    _peak_bytes_of_one_epoch(few, y_few)  # warm up imports and caches
    peak_few = _peak_bytes_of_one_epoch(few, y_few)
    peak_many = _peak_bytes_of_one_epoch(many, y_many)
    # What grows is the list of paths, not the decoded images.
    assert peak_many - peak_few < decoded_bytes / 4
    # The cache holds every decoded image: the same measure sees it.
    cached = _peak_bytes_of_one_epoch(many, y_many, cache_decoded=True)
    assert cached - peak_many > decoded_bytes * 3 / 4


def test_cached_epochs_give_the_same_model(files):
    paths, y = files
    plain = fast(epochs=3).fit(paths, y).predict_proba(paths)
    cached = fast(epochs=3, cache_decoded=True).fit(paths, y).predict_proba(paths)
    assert np.array_equal(plain, cached)


# -- several processes -------------------------------------------------------------
def test_each_process_decodes_only_its_shard_of_the_files(tmp_path, monkeypatch):
    pytest.importorskip("accelerate")
    from sklearn_cnn._accelerate import AcceleratedImageNet
    from sklearn_cnn._network import ConvNet

    paths = []
    for value in range(11):
        path = tmp_path / f"{value:02d}.png"
        Image.fromarray(np.full((2, 2), value, dtype=np.uint8)).save(path)
        paths.append(str(path))
    files = LabelledImages(
        image_source(CNNImageClassifier(), paths, reset=True), device="cpu"
    )
    read = []
    import sklearn_cnn._sources as sources

    def read_image(path, *args, **kwargs):
        read.append(path)
        return reading(path, *args, **kwargs)

    reading = sources.read_image
    monkeypatch.setattr(sources, "read_image", read_image)
    shards = []
    for rank in range(3):
        net = AcceleratedImageNet(
            ConvNet,
            accelerator=StandInAccelerator(rank, 3),
            batch_size=2,
            shuffle_generator=torch.Generator().manual_seed(0),
            device="cpu",
        )
        read.clear()
        batches = [images[:, 0, 0, 0] for images, _ in net.get_iterator(files, True)]
        shards.append(torch.cat(batches).tolist())
        # This process opened the files of its own batches, and no others.
        assert sorted(read) == sorted(paths[value] for value in shards[-1])
    assert len({len(shard) for shard in shards}) == 1
    assert set(sum(shards, [])) == set(range(11))


def test_accelerator_trains_on_files_like_the_plain_classifier(files):
    accelerate = pytest.importorskip("accelerate")
    paths, y = files
    accelerated = fast(accelerator=accelerate.Accelerator(cpu=True)).fit(paths, y)
    plain = fast(device="cpu").fit(paths, y)
    np.testing.assert_allclose(
        accelerated.predict_proba(paths), plain.predict_proba(paths), atol=1e-5
    )


def test_saved_model_of_files_predicts_files(files, tmp_path):
    from sklearn_cnn import load_model, save_model

    paths, y = files
    clf = fast(image_size=(8, 8)).fit(paths, y)
    save_model(clf, tmp_path / "model.safetensors")
    loaded = load_model(tmp_path / "model.safetensors")
    assert loaded.get_params()["image_size"] in ((8, 8), [8, 8])
    np.testing.assert_allclose(
        loaded.predict_proba(paths), clf.predict_proba(paths), atol=1e-6
    )


def test_pipeline_of_augmenters_fitted_on_files_saves_and_predicts_arrays(
    files, tmp_path
):
    from sklearn_cnn import load_model, save_model

    paths, y = files
    model = Pipeline([("flip", RandomHorizontalFlip()), ("cnn", fast())])
    model.fit(paths, y)
    assert model[0].fitted_on_files_
    save_model(model, tmp_path / "model.safetensors")
    loaded = load_model(tmp_path / "model.safetensors")
    decoded = load_image_folder(tmp_path / "images", image_size=8, return_X_y=True)[0]
    np.testing.assert_allclose(
        loaded.predict_proba(decoded), model.predict_proba(paths), atol=1e-5
    )
    # Refitted on arrays, the augmenter records their shape again.
    model[0].fit(decoded)
    assert not hasattr(model[0], "fitted_on_files_")
    assert model[0].image_shape_ == (8, 8, 3)


# -- CUDA (skipped without a GPU) -----------------------------------------------------
@pytest.mark.cuda
def test_files_train_on_cuda_from_pinned_batches_like_arrays(files, tmp_path):
    paths, y = files
    arrays, _ = load_image_folder(tmp_path / "images", image_size=None, return_X_y=True)
    params = dict(device="cuda", precision="float32", cache_decoded=True)
    from_files = fast(**params).fit(paths, y)
    assert from_files.device_.startswith("cuda")
    from_arrays = fast(**params).fit(arrays, y)
    # cuDNN may pick other kernels run to run: close, not bitwise.
    np.testing.assert_allclose(
        from_files.predict_proba(paths), from_arrays.predict_proba(arrays), atol=1e-3
    )
