"""One road for images: every input kind, every consumer, where the roads parted."""

from __future__ import annotations

import ast
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, StandInAccelerator, make_images
from PIL import Image
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score

import sklearn_cnn
from sklearn_cnn import CNNFeatureExtractor, CNNImageClassifier
from sklearn_cnn.inspection import layer_trace
from sklearn_cnn.preprocessing import ImageScaler


def fast(**params):
    return CNNImageClassifier(**{**FAST, **params})


def as_pil(X):
    return [Image.fromarray(image) for image in X]


def write_pngs(folder: Path, X) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(X):
        path = folder / f"{i:03d}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return paths


# -- new input kinds -------------------------------------------------------------------
def test_pil_images_train_and_predict_like_the_array(images):
    X, y = images
    from_array = fast().fit(X, y)
    from_pil = fast().fit(as_pil(X), y)
    np.testing.assert_allclose(
        from_pil.predict_proba(as_pil(X)), from_array.predict_proba(X), atol=1e-6
    )
    assert from_pil.image_shape_ == (8, 8, 3)
    assert not hasattr(from_pil, "feature_names_in_")


def test_pil_images_of_other_sizes_are_resized_with_image_size(images):
    X, y = images
    pil = [image.resize((12, 10)) for image in as_pil(X)]
    clf = fast(image_size=(6, 6)).fit(pil, y)
    assert clf.image_shape_ == (6, 6, 3)
    assert clf.predict(pil).shape == (len(X),)
    with pytest.raises(ValueError, match="image_size"):
        fast().fit(pil[:3] + as_pil(X[3:]), y)


def test_pil_grayscale_images_read_as_one_channel(images):
    X, y = images
    gray = [image.convert("L") for image in as_pil(X)]
    clf = fast().fit(gray, y)
    assert clf.image_shape_ == (8, 8, 1)
    assert fast(color_mode="rgb").fit(gray, y).image_shape_ == (8, 8, 3)


def test_pil_images_in_cross_validation_and_search(images):
    X, y = images
    pil = np.empty(len(X), dtype=object)
    pil[:] = as_pil(X)
    scores = cross_val_score(fast(), pil, y, cv=2)
    np.testing.assert_allclose(scores, cross_val_score(fast(), X, y, cv=2), atol=1e-6)
    search = GridSearchCV(fast(), {"epochs": [1, 2]}, cv=2).fit(pil, y)
    assert search.best_params_["epochs"] in (1, 2)


def _image_column(X, labels=None):
    datasets = pytest.importorskip("datasets")
    columns = {"image": as_pil(X)}
    if labels is not None:
        columns["label"] = list(labels)
    dataset = datasets.Dataset.from_dict(columns)
    return dataset.cast_column("image", datasets.Image())


def test_hugging_face_image_column_is_read_batch_by_batch(images, monkeypatch):
    X, y = images
    dataset = _image_column(X, y)
    column = dataset["image"]
    fetched = []
    column_type = type(column)
    original = column_type.__getitem__

    def spying(self, key):
        fetched.append(len(key) if isinstance(key, list) else 1)
        return original(self, key)

    monkeypatch.setattr(column_type, "__getitem__", spying)
    clf = fast(batch_size=16).fit(column, y)
    # Batches of the column are decoded as asked, never the whole column at once.
    assert fetched and max(fetched) <= 16
    expected = fast(batch_size=16).fit(X, y).predict_proba(X)
    np.testing.assert_allclose(clf.predict_proba(column), expected, atol=1e-6)


def test_hugging_face_image_column_in_cross_validation_and_search(images):
    X, y = images
    column = _image_column(X)["image"]
    scores = cross_val_score(fast(), column, y, cv=2)
    np.testing.assert_allclose(scores, cross_val_score(fast(), X, y, cv=2), atol=1e-6)
    GridSearchCV(fast(), {"epochs": [1, 2]}, cv=2).fit(column, y)


@pytest.mark.parametrize("kind", ["pil", "files", "column"])
def test_feature_extractor_reads_every_input_kind(kind, tmp_path):
    X, _ = make_images(n_samples=6, size=16)
    inputs = {
        "pil": lambda: as_pil(X),
        "files": lambda: write_pngs(tmp_path / "images", X),
        "column": lambda: _image_column(X)["image"],
    }[kind]()
    params = dict(backbone="mobilenet_v3_small", precision="float32", random_state=0)
    expected = CNNFeatureExtractor(**params).fit(X).transform(X)
    extractor = CNNFeatureExtractor(**params).fit(inputs)
    np.testing.assert_allclose(extractor.transform(inputs), expected, atol=1e-5)


# -- defect 1: the feature extractor and flattened rows --------------------------------
def test_feature_extractor_reads_flattened_colour_rows_with_image_shape():
    X, _ = make_images(n_samples=4, size=16)
    params = dict(backbone="mobilenet_v3_small", precision="float32", random_state=0)
    flat = CNNFeatureExtractor(**params, image_shape=(16, 16, 3)).fit(X.reshape(4, -1))
    assert flat.image_shape_ == (16, 16, 3)
    np.testing.assert_allclose(
        flat.transform(X.reshape(4, -1)),
        CNNFeatureExtractor(**params).fit(X).transform(X),
        atol=1e-5,
    )


# -- defect 2: grayscale batches given to a colour model -------------------------------
@pytest.mark.parametrize("gray", [lambda X: X[..., 0], lambda X: X.mean(-1)])
def test_colour_model_refuses_grayscale_images_with_the_fitted_shape(images, gray):
    X, y = images
    clf = fast().fit(X, y)
    with pytest.raises(ValueError, match=r"fitted on images of shape .*\(8, 8, 3\)"):
        clf.predict(gray(X))
    smaller = gray(X)[:, :4, :4]
    with pytest.raises(ValueError, match=r"fitted on images of shape"):
        clf.predict(smaller)


def test_scaler_fitted_on_colour_refuses_grayscale(images):
    X, _ = images
    scaler = ImageScaler().fit(X)
    with pytest.raises(ValueError, match=r"fitted on images of shape .*\(8, 8, 3\)"):
        scaler.transform(X[..., 0])


# -- defect 3 and the fitted model as a value: threads ---------------------------------
def test_traces_and_predictions_from_eight_threads_at_once(images):
    X, y = images
    clf = fast().fit(X, y)
    expected_proba = clf.predict_proba(X)
    expected_rows = layer_trace(clf, X, index=0).rows
    start = threading.Barrier(8)

    def work(worker):
        start.wait()
        results = []
        for round_ in range(5):
            if (worker + round_) % 2:
                results.append(("trace", layer_trace(clf, X, index=0).rows))
            else:
                results.append(("proba", clf.predict_proba(X)))
        return results

    with ThreadPoolExecutor(8) as executor:
        outcomes = [r for rs in executor.map(work, range(8)) for r in rs]
    for kind, value in outcomes:
        if kind == "trace":
            assert value == expected_rows  # only the trace's own layers
        else:
            np.testing.assert_array_equal(value, expected_proba)
    # The fitted network was not switched to training nor left with hooks.
    module = clf.net_.module_
    assert not module.training
    assert all(not layer._forward_hooks for layer in module.modules())


# -- defect 4: whatever draws in a forward pass is seeded ------------------------------
class _FunctionalDropout(torch.nn.Module):
    """A network calling F.dropout and torch.rand_like itself, in forward."""

    def __init__(self, in_channels, n_classes, image_size, kind="dropout"):
        super().__init__()
        height, width = image_size
        self.kind = kind
        self.linear = torch.nn.Linear(in_channels * height * width, n_classes)
        if kind == "alpha":
            self.alpha = torch.nn.AlphaDropout(0.3)

    def forward(self, x):
        x = x.flatten(1)
        if self.training and self.kind == "dropout":
            x = torch.nn.functional.dropout(x, 0.3, training=True)
        elif self.training and self.kind == "noise":
            x = x + 0.1 * torch.rand_like(x)
        elif self.kind == "alpha":
            x = self.alpha(x)
        return self.linear(x)


@pytest.mark.parametrize("kind", ["dropout", "noise", "alpha"])
def test_random_ops_in_forward_are_seeded_and_leave_the_global_stream(images, kind):
    X, y = images

    def module(in_channels, n_classes, image_size):
        return _FunctionalDropout(in_channels, n_classes, image_size, kind)

    torch.manual_seed(123)
    expected_stream = torch.rand(2000)
    torch.manual_seed(123)
    first = fast(module=module).fit(X, y).predict_proba(X)
    assert torch.equal(torch.rand(2000), expected_stream)
    second = fast(module=module).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, second)
    other_seed = fast(module=module, random_state=1).fit(X, y).predict_proba(X)
    assert not np.array_equal(first, other_seed)


def test_timm_drop_path_is_seeded():
    timm = pytest.importorskip("timm")
    X, y = make_images(n_samples=16, size=32)
    # Stochastic depth on every residual block, drawn in timm's own forward.
    body = timm.create_model("resnet10t", num_classes=0, drop_path_rate=0.5)
    params = dict(backbone=body, epochs=1, batch_size=8, precision="float32")
    torch.manual_seed(5)
    expected_stream = torch.rand(100)
    torch.manual_seed(5)
    runs = [
        CNNImageClassifier(**params, random_state=0).fit(X, y).predict_proba(X)
        for _ in range(2)
    ]
    assert torch.equal(torch.rand(100), expected_stream)
    np.testing.assert_array_equal(runs[0], runs[1])


# -- defect 5: seeded backbone fits and threads ----------------------------------------
def test_seeded_backbone_fits_in_threads_equal_the_sequential_ones():
    X, y = make_images(n_samples=16, size=16)
    params = dict(backbone="resnet18", epochs=1, batch_size=8, random_state=0)
    alone = CNNImageClassifier(**params).fit(X, y).predict_proba(X)
    with ThreadPoolExecutor(2) as executor:
        fits = list(
            executor.map(
                lambda _: CNNImageClassifier(**params).fit(X, y).predict_proba(X),
                range(2),
            )
        )
    for proba in fits:
        np.testing.assert_array_equal(proba, alone)


# -- defect 6: checkpoints found again, written once -----------------------------------
@pytest.mark.parametrize(
    "params",
    [
        {"random_state": np.random.RandomState(0)},
        {"callbacks": [("noop", __import__("skorch").callbacks.EpochTimer())]},
    ],
    ids=["RandomState", "callbacks"],
)
def test_checkpoint_key_holds_values_not_addresses(images, tmp_path, params):
    X, y = images
    fast(epochs=2, checkpoint=tmp_path, **params).fit(X, y)
    # Built afresh, as another process would: the same values, other objects.
    again = {
        key: np.random.RandomState(0)
        if key == "random_state"
        else clone(value, safe=False)
        for key, value in params.items()
    }
    resumed = fast(epochs=3, checkpoint=tmp_path, **again).fit(X, y)
    assert len(list(tmp_path.iterdir())) == 1
    assert [row["epoch"] for row in resumed.history_] == [1, 2, 3]


def test_only_the_main_process_writes_the_checkpoint(tmp_path):
    from sklearn_cnn._checkpoint import TrainingCheckpoint

    class Net:
        module_ = torch.nn.Linear(1, 1)
        optimizer_ = torch.optim.SGD(module_.parameters(), lr=0.1)
        history = []

    for rank in (1, 2):
        net = Net()
        net.accelerator = StandInAccelerator(rank, 3)
        net.accelerator.is_main_process = False
        TrainingCheckpoint(tmp_path / "other.pt").on_epoch_end(net)
    assert not (tmp_path / "other.pt").exists()
    net = Net()
    net.accelerator = StandInAccelerator(0, 3)
    net.accelerator.is_main_process = True
    TrainingCheckpoint(tmp_path / "main.pt").on_epoch_end(net)
    assert (tmp_path / "main.pt").exists()


# -- defect 7: only the file's own faults are the file's -------------------------------
def test_memory_error_while_listing_files_is_not_an_unreadable_file(
    tmp_path, monkeypatch
):
    X, y = make_images(n_samples=12)
    paths = write_pngs(tmp_path / "images", X)
    import sklearn_cnn._sources as sources

    reading = sources.read_image_header

    def header(path):
        if path == paths[3]:
            raise MemoryError("no memory left")
        return reading(path)

    monkeypatch.setattr(sources, "read_image_header", header)
    with pytest.raises(MemoryError, match="no memory left"):
        fast(unreadable_files="skip").fit(paths, y)


def test_memory_error_while_decoding_is_not_a_damaged_file(tmp_path, monkeypatch):
    X, y = make_images(n_samples=12)
    paths = write_pngs(tmp_path / "images", X)
    import sklearn_cnn._sources as sources

    def decode(path, *args, **kwargs):
        raise MemoryError("no memory left")

    monkeypatch.setattr(sources, "read_image", decode)
    with pytest.raises(MemoryError, match="no memory left"):
        fast(unreadable_files="raise").fit(paths, y)


def test_loading_a_folder_lets_memory_errors_through(tmp_path, monkeypatch):
    from sklearn_cnn.datasets import _folder, load_image_folder

    X, _ = make_images(n_samples=4)
    write_pngs(tmp_path / "cat", X[:2])
    write_pngs(tmp_path / "dog", X[2:])

    def decode(path, image_size):
        raise MemoryError("no memory left")

    monkeypatch.setattr(_folder, "read_image", decode)
    with pytest.raises(MemoryError):
        load_image_folder(tmp_path, strict=False)


# -- defect 8: nothing process-wide is switched during a fit ---------------------------
def test_fitting_read_only_arrays_changes_no_process_wide_warning_filter(
    images, monkeypatch
):
    X, y = images
    X = X.copy()
    X.setflags(write=False)  # as joblib's memmaps are

    package = str(Path(sklearn_cnn.__file__).parent)
    callers = []
    catch_warnings = warnings.catch_warnings

    def recording(*args, **kwargs):
        caller = sys._getframe(1).f_code.co_filename
        if caller.startswith(package):
            callers.append(caller)
        return catch_warnings(*args, **kwargs)

    monkeypatch.setattr(warnings, "catch_warnings", recording)
    with ThreadPoolExecutor(2) as executor:
        results = list(
            executor.map(lambda _: fast().fit(X, y).predict_proba(X), range(2))
        )
    monkeypatch.undo()
    np.testing.assert_array_equal(results[0], results[1])
    # catch_warnings is process-wide: a fit in one thread would change the
    # warning filters of every other thread.
    assert callers == []


# -- the shape of the package ----------------------------------------------------------
def _module_imports(package_root: Path) -> dict[str, set[str]]:
    """Module-level imports between the package's modules (not function-level)."""
    graph = {}
    for path in package_root.rglob("*.py"):
        parts = path.relative_to(package_root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                if base.startswith("sklearn_cnn"):
                    targets.add(base)
                    targets.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                targets.update(
                    alias.name
                    for alias in node.names
                    if alias.name.startswith("sklearn_cnn")
                )
        graph[name] = targets
    return {name: targets & graph.keys() - {name} for name, targets in graph.items()}


def test_no_import_circle_inside_the_package():
    graph = _module_imports(Path(sklearn_cnn.__file__).parent)
    # A module imports its package's __init__ first; ours import nothing eagerly.
    visiting, done = [], set()

    def visit(name):
        if name in done:
            return
        if name in visiting:
            circle = visiting[visiting.index(name) :] + [name]
            pytest.fail("import circle: " + " -> ".join(circle))
        visiting.append(name)
        for target in sorted(graph[name]):
            if not name.startswith(target + "."):  # a package is its parents' own
                visit(target)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_runs_of_images_are_read_as_views_and_give_what_a_gather_gives(images):
    from sklearn_cnn._sources import ArrayImages, ImageLayout

    X, y = images
    layout = ImageLayout("nhwc", X.shape[1:])
    source = ArrayImages(X, layout)
    run = source.read(np.arange(2, 7))
    assert np.shares_memory(run.numpy(), X)  # a view: prediction gathers nothing
    np.testing.assert_array_equal(
        run.numpy(), source.read(np.array([2, 3, 4, 5, 6, 0]))[:5].numpy()
    )
    # Shuffled training batches, float32 arrays (used as they are by the
    # network) and read-only arrays are gathered into a batch of their own.
    assert not np.shares_memory(source.read(np.array([3, 2])).numpy(), X)
    floats = X.astype(np.float32)
    assert not np.shares_memory(
        ArrayImages(floats, layout).read(np.arange(3)).numpy(), floats
    )
    frozen = X.copy()
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not np.shares_memory(
            ArrayImages(frozen, layout).read(np.arange(3)).numpy(), frozen
        )
    # Predictions read through views leave the images as they were.
    before = X.copy()
    clf = CNNImageClassifier(**FAST).fit(X, y)
    # (X[::-1] is gathered: the same images in other batches, float32 sums.)
    np.testing.assert_allclose(
        clf.predict_proba(X), clf.predict_proba(X[::-1])[::-1], atol=1e-6
    )
    np.testing.assert_array_equal(X, before)


def test_prediction_reads_several_forward_passes_at_once_with_the_same_outputs(
    images, monkeypatch
):
    from sklearn_cnn import _inference
    from sklearn_cnn._sources import ArrayImages

    X, y = images
    X = np.concatenate([X] * 4)[:-3]  # several forward passes, the last short
    clf = CNNImageClassifier(**FAST).fit(X[: len(y)], y)
    reads, passes = [], []
    read = ArrayImages.read

    def recording_read(self, indices, **kwargs):
        reads.append(len(indices))
        return read(self, indices, **kwargs)

    monkeypatch.setattr(ArrayImages, "read", recording_read)
    hook = clf.net_.module_.register_forward_hook(
        lambda module, inputs, output: passes.append(len(inputs[0]))
    )
    together = clf.predict_proba(X)
    read_together, passes_together = reads[:], passes[:]
    reads.clear(), passes.clear()
    monkeypatch.setattr(_inference, "_READ_BYTES", 1)  # one read per pass
    one_by_one = clf.predict_proba(X)
    hook.remove()

    assert read_together == [len(X)]
    assert reads == passes
    # The same forward passes, so the very same probabilities.
    assert len(X) % 16
    assert passes_together == passes == [16] * (len(X) // 16) + [len(X) % 16]
    np.testing.assert_array_equal(together, one_by_one)


def test_images_per_read_is_a_multiple_of_the_forward_pass():
    from sklearn_cnn._inference import _READ_BYTES, images_per_read
    from sklearn_cnn._sources import ArrayImages, ImageLayout

    def source(shape, dtype):
        array = np.zeros((1, *shape), dtype=dtype)
        return ArrayImages(array, ImageLayout("nhwc", shape))

    small = images_per_read(source((32, 32, 3), np.uint8), 16)
    assert small % 16 == 0 and small * 32 * 32 * 3 <= _READ_BYTES < (small + 16) * 3072
    # Eight bytes a value: an eighth as many images.
    assert images_per_read(source((32, 32, 3), np.float64), 16) == 16 * (
        small // 16 // 8
    )
    # Images larger than the budget: one forward pass at a time.
    assert images_per_read(source((1024, 1024, 3), np.uint8), 16) == 16


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("channels_last", [True, False])
def test_batch_preparer_gives_the_stepwise_result_and_leaves_the_batch(
    dtype, channels_last
):
    from sklearn_cnn._net import BatchPreparer

    generator = torch.Generator().manual_seed(0)
    nhwc = torch.randint(0, 256, (4, 5, 6, 3), generator=generator).to(dtype)
    for batch in (nhwc.permute(0, 3, 1, 2), nhwc.permute(0, 3, 1, 2).contiguous()):
        before = batch.clone()
        preparer = BatchPreparer(
            source_is_uint8=True, scale_uint8=True, channels_last=channels_last
        )
        images = preparer(batch, training=False)
        expected = batch.to(torch.float32) * (1.0 / 255.0)
        assert images.dtype == torch.float32
        torch.testing.assert_close(images, expected, rtol=0, atol=0)
        assert images.is_contiguous(
            memory_format=torch.channels_last if channels_last else batch_format(batch)
        )
        torch.testing.assert_close(batch, before, rtol=0, atol=0)  # untouched


def batch_format(batch):
    return torch.contiguous_format if batch.is_contiguous() else torch.channels_last


class _RecordingSource:
    """A source that decodes slowly: it records which batches were read."""

    slow_to_read = True
    image_shape = (2, 2, 1)

    def __init__(self, n, fail_at=None):
        self.n, self.fail_at = n, fail_at
        self.started = {}

    def __len__(self):
        return self.n

    def read(self, indices, *, pin_memory=False):
        first = int(indices[0])
        self.started.setdefault(first, threading.Event()).set()
        if first == self.fail_at:
            raise OSError(f"cannot decode image {first}")
        return torch.full((len(indices), 1, 2, 2), first, dtype=torch.uint8)


def test_decoding_sources_read_the_next_batch_while_this_one_is_used():
    from sklearn_cnn._sources import LabelledImages, batch_loader

    source = _RecordingSource(6)
    loader = batch_loader(
        LabelledImages(source, device="cpu"), batch_size=2, shuffle=False
    )
    seen = []
    for images, _ in loader:
        first = int(images[0, 0, 0, 0])
        seen.append(first)
        if first + 2 < len(source):
            # The next batch is being read already, before it is asked for.
            assert source.started.setdefault(first + 2, threading.Event()).wait(30)
    assert seen == [0, 2, 4]

    failing = _RecordingSource(6, fail_at=4)
    loader = batch_loader(
        LabelledImages(failing, device="cpu"), batch_size=2, shuffle=False
    )
    taken = []
    with pytest.raises(OSError, match="cannot decode image 4"):
        for images, _ in loader:
            taken.append(int(images[0, 0, 0, 0]))
    assert taken == [0, 2]  # the error comes where its batch is taken


@pytest.mark.parametrize("kind", ["files", "pil"])
def test_a_cached_subset_reads_its_own_images(images, tmp_path, kind):
    from sklearn_cnn._sources import FileImages, PILImages

    X, _ = images
    shape = X.shape[1:]
    if kind == "files":
        paths = []
        for i, image in enumerate(X[:6]):
            paths.append(str(tmp_path / f"{i}.png"))
            Image.fromarray(image).save(paths[-1])
        source = FileImages(np.asarray(paths, dtype=object), shape, resize=False)
    else:
        source = PILImages(
            [Image.fromarray(image) for image in X[:6]], shape, resize=False
        )
    fold = source.subset([4, 1, 3]).with_cache()
    validation = fold.subset([2, 0])
    for _ in range(2):  # decoded, then from the cache
        np.testing.assert_array_equal(
            fold.read(np.arange(3)).permute(0, 2, 3, 1).numpy(), X[[4, 1, 3]]
        )
        np.testing.assert_array_equal(
            validation.read(np.arange(2)).permute(0, 2, 3, 1).numpy(), X[[3, 4]]
        )
    assert fold.cache.filled.all()
