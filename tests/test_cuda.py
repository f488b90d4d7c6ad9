"""The CUDA paths, run for real on a GPU; every test marked ``cuda`` skips without one.

Nothing here simulates a device: the tests train and predict on the GPU that
torch sees, and the few settings forced (the share of GPU memory that keeps a
training set resident, a cap on this process's GPU memory) make the real code
take the path under test. ``benchmarks/gpu_check.sh`` runs them on a GPU machine
with ``pytest -m cuda``. The tests at the end run everywhere: they check that a
machine without CUDA skips the others cleanly, and that a pickled model holds
no tensor that would tie it to the GPU it was trained on.
"""

import io
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, make_images
from numpy.testing import assert_array_equal
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback
from torch import nn

import sklearn_cnn
from sklearn_cnn import CNNImageClassifier, save_model

cuda = pytest.mark.cuda
HAS_CUDA = torch.cuda.is_available()
ROOT = Path(sklearn_cnn.__file__).resolve().parent.parent


def assert_same_predictions(proba, other, *, atol):
    """Probabilities within ``atol``, and the same label wherever it is not a tie."""
    proba, other = np.asarray(proba), np.asarray(other)
    assert proba.shape == other.shape
    np.testing.assert_allclose(proba, other, atol=atol)
    top_two = np.sort(proba, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 2 * atol
    assert_array_equal(proba[clear].argmax(axis=1), other[clear].argmax(axis=1))


def on_cuda(clf):
    return all(parameter.is_cuda for parameter in clf.net_.module_.parameters())


class RecordTrainingData(Callback):
    """Where the training images lived while the net trained on them."""

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        # X is the LabelledImages of the training set; its source keeps a
        # resident copy on the GPU, or reads batches from the CPU.
        resident = getattr(X.source, "_device_images", None)
        self.device_ = torch.device("cpu") if resident is None else resident.device
        # How the DataLoader reads a batch for a CUDA device.
        self.pinned_ = X.source.read(np.arange(1), pin_memory=True).is_pinned()


@pytest.fixture
def learnable():
    """Images that FAST settings learn in two epochs, and their labels."""
    return make_images(n_samples=128, size=8)


@pytest.fixture
def gpu_memory():
    """Leave the GPU's memory as it was: no cap, no cached blocks."""
    yield
    torch.cuda.set_per_process_memory_fraction(1.0)
    torch.cuda.empty_cache()


# -- fit and predict on the GPU ----------------------------------------------------
@cuda
@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_fits_and_predicts_on_the_gpu(learnable, device):
    X, y = learnable
    clf = CNNImageClassifier(**FAST, device=device).fit(X, y)

    assert clf.device_ == "cuda"
    assert on_cuda(clf)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
    assert clf.score(X, y) >= 0.9


@cuda
def test_auto_precision_trains_in_bfloat16_like_float32(learnable):
    if not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} has no native bfloat16")
    X, y = learnable
    auto = CNNImageClassifier(**FAST, device="cuda").fit(X, y)
    float32 = CNNImageClassifier(**FAST, device="cuda", precision="float32")
    float32.fit(X, y)

    assert auto.prediction_settings_.autocast_dtype is torch.bfloat16
    assert auto.prediction_settings_.channels_last
    assert float32.prediction_settings_.autocast_dtype is None
    conv = next(m for m in auto.net_.module_.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # The weights stay float32; only the arithmetic is bfloat16.
    assert conv.weight.dtype == torch.float32
    # Same seed, same batches: the two trainings part only by rounding.
    np.testing.assert_allclose(auto.loss_curve_, float32.loss_curve_, atol=0.05)
    proba_auto, proba_float32 = auto.predict_proba(X), float32.predict_proba(X)
    assert np.abs(proba_auto - proba_float32).mean() < 0.05
    assert (proba_auto.argmax(1) == proba_float32.argmax(1)).mean() >= 0.95
    assert abs(auto.score(X, y) - float32.score(X, y)) <= 0.05


# -- where the training data lives -------------------------------------------------
@cuda
def test_a_set_that_fits_stays_on_the_gpu(learnable):
    X, y = learnable
    record = RecordTrainingData()
    clf = CNNImageClassifier(**FAST, device="cuda", callbacks=[record]).fit(X, y)

    assert record.device_.type == "cuda"
    assert clf.score(X, y) >= 0.9


@cuda
def test_a_set_too_large_for_the_gpu_streams_from_pinned_memory(learnable, monkeypatch):
    X, y = learnable
    resident = CNNImageClassifier(**FAST, device="cuda").fit(X, y)
    # No share of GPU memory is small enough for any set: the real streaming path.
    monkeypatch.setattr("sklearn_cnn._sources._GPU_RESIDENT_FRACTION", 0.0)
    record = RecordTrainingData()
    streamed = CNNImageClassifier(**FAST, device="cuda", callbacks=[record])
    streamed.fit(X, y)

    assert record.device_.type == "cpu"
    assert record.pinned_
    assert on_cuda(streamed)
    assert streamed.n_iter_ == FAST["epochs"]
    assert streamed.score(X, y) >= 0.9
    # The same training, batches copied instead of indexed on the GPU.
    assert_same_predictions(
        streamed.predict_proba(X), resident.predict_proba(X), atol=0.02
    )


# -- out of memory in predict ------------------------------------------------------
WIDE_CHANNELS = 4096
# The share of the GPU's memory this process may use in the out-of-memory test.
MEMORY_CAP = 0.05


class WideNet(nn.Module):
    """A 1x1 convolution to many channels: about 4 MiB of activation per 16x16 image."""

    def __init__(self, in_channels, n_classes, image_size):
        super().__init__()
        self.expand = nn.Conv2d(in_channels, WIDE_CHANNELS, kernel_size=1)
        self.head = nn.Linear(WIDE_CHANNELS, n_classes)

    def forward(self, x):
        return self.head(self.expand(x).relu().mean(dim=(2, 3)))


@cuda
def test_predict_halves_the_batch_after_a_real_out_of_memory(gpu_memory):
    # Cap this process's share of the GPU so that the test needs the same few
    # gigabytes on any GPU: past the cap, the caching allocator raises the
    # OutOfMemoryError of a full device.
    device = torch.cuda.current_device()
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(MEMORY_CAP, device)
    cap = MEMORY_CAP * torch.cuda.get_device_properties(device).total_memory
    bytes_per_image = WIDE_CHANNELS * 16 * 16 * 4
    n_images = int(1.5 * cap / bytes_per_image) + 1
    X, y = make_images(n_samples=n_images, size=16)
    # Trained on 64 images in one batch; prediction batches take batch_size
    # images, whose activations need 1.5 times the cap.
    clf = CNNImageClassifier(
        module=WideNet,
        epochs=1,
        batch_size=n_images,
        precision="float32",
        device="cuda",
        random_state=0,
    ).fit(X[:64], y[:64])
    out_of_memory_before = torch.cuda.memory_stats().get("num_ooms", 0)

    proba = clf.predict_proba(X)

    assert torch.cuda.memory_stats().get("num_ooms", 0) > out_of_memory_before
    # Batches small enough to fit from the start give the same answers.
    in_chunks = np.concatenate(
        [clf.predict_proba(X[start : start + 256]) for start in range(0, n_images, 256)]
    )
    assert_same_predictions(proba, in_chunks, atol=1e-3)


# -- pickles and model files travel to machines without CUDA -----------------------
LOAD_ON_CPU = textwrap.dedent(
    """
    import json, pickle, sys, warnings
    import numpy as np, torch
    from sklearn_cnn import load_model

    assert not torch.cuda.is_available(), "CUDA_VISIBLE_DEVICES='' was ignored"
    pickled_path, model_path, images_path, out_path = sys.argv[1:]
    X = np.load(images_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open(pickled_path, "rb") as f:
            pickled = pickle.load(f)
        from_file = load_model(model_path)
    np.savez(
        out_path,
        pickled=pickled.predict_proba(X),
        from_file=from_file.predict_proba(X),
    )
    print(json.dumps({
        "devices": [pickled.device_, from_file.device_],
        "parameters": [
            str(next(model.net_.module_.parameters()).device)
            for model in (pickled, from_file)
        ],
        "warnings": [str(w.message) for w in caught],
    }))
    """
)


@cuda
@pytest.mark.parametrize("early_stopping", [False, True])
def test_a_gpu_trained_model_loads_and_predicts_without_cuda(
    learnable, tmp_path, early_stopping
):
    X, y = learnable
    clf = CNNImageClassifier(
        **FAST, device="cuda", early_stopping=early_stopping, validation_fraction=0.25
    ).fit(X, y)
    proba = clf.predict_proba(X)
    pickled_path, model_path = tmp_path / "model.pkl", tmp_path / "model.safetensors"
    images_path, out_path = tmp_path / "X.npy", tmp_path / "out.npz"
    pickled_path.write_bytes(pickle.dumps(clf))
    save_model(clf, model_path)
    np.save(images_path, X)

    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])
    )
    paths = [str(p) for p in (pickled_path, model_path, images_path, out_path)]
    completed = subprocess.run(
        [sys.executable, "-c", LOAD_ON_CPU, *paths],
        env=env,
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])

    assert report["devices"] == ["cpu", "cpu"]
    assert report["parameters"] == ["cpu", "cpu"]
    assert any("CUDA" in message for message in report["warnings"])
    loaded = np.load(out_path)
    # bfloat16 arithmetic on the GPU and on the CPU round differently.
    assert_same_predictions(loaded["pickled"], proba, atol=0.02)
    assert_same_predictions(loaded["from_file"], proba, atol=0.02)


# -- model selection and Accelerate on the GPU -------------------------------------
@cuda
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search_on_the_gpu(learnable, n_jobs):
    X, y = learnable
    search = GridSearchCV(
        CNNImageClassifier(**FAST, device="cuda"),
        {"filters": [(4,), (8,)]},
        cv=2,
        n_jobs=n_jobs,
    ).fit(X, y)

    assert search.best_estimator_.device_ == "cuda"
    assert on_cuda(search.best_estimator_)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.score(X, y) >= 0.9


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state: start and leave it unset."""
    accelerate = pytest.importorskip("accelerate")
    accelerate.state.AcceleratorState._reset_state(reset_partial_state=True)
    yield accelerate
    accelerate.state.AcceleratorState._reset_state(reset_partial_state=True)


def accelerated_classifier(accelerate, **params):
    """The classifier trained through ``accelerate.Accelerator()``, one process."""
    return CNNImageClassifier(accelerator=accelerate.Accelerator(), **params)


@cuda
def test_accelerate_trains_on_the_gpu_with_one_process(
    learnable, fresh_accelerate_state
):
    X, y = learnable
    accelerated = accelerated_classifier(fresh_accelerate_state, **FAST).fit(X, y)
    plain = CNNImageClassifier(**FAST, device="cuda").fit(X, y)

    assert accelerated.accelerator.device.type == "cuda"
    assert accelerated.device_.startswith("cuda")
    assert on_cuda(accelerated)
    # One process trains as the plain classifier does, batch for batch.
    np.testing.assert_allclose(accelerated.loss_curve_, plain.loss_curve_, atol=0.02)
    assert_same_predictions(
        accelerated.predict_proba(X), plain.predict_proba(X), atol=0.02
    )
    assert accelerated.score(X, y) >= 0.9


# -- pretrained backbones on the GPU -----------------------------------------------
@pytest.mark.cuda
def test_backbone_fine_tunes_and_extracts_on_cuda(tmp_path):
    import torchvision

    from sklearn_cnn import CNNFeatureExtractor

    weights = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    X, y = make_images(n_samples=48, size=32)
    params = dict(
        backbone="resnet18", weights=weights, epochs=2, batch_size=16, random_state=0
    )
    clf = CNNImageClassifier(**params, device="cuda").fit(X, y)
    assert clf.device_.startswith("cuda") and on_cuda(clf)
    on_cpu = CNNImageClassifier(**params, device="cpu", precision="float32").fit(X, y)
    # bf16 on the GPU against float32 on the CPU: close, not equal.
    assert_same_predictions(clf.predict_proba(X), on_cpu.predict_proba(X), atol=0.15)
    extractor = CNNFeatureExtractor("resnet18", weights=weights, device="cuda")
    features = extractor.fit_transform(X)
    reference = CNNFeatureExtractor(
        "resnet18", weights=weights, device="cpu", precision="float32"
    ).fit_transform(X)
    assert features.shape == reference.shape == (48, 512)
    np.testing.assert_allclose(features, reference, rtol=0.1, atol=0.05)


# -- what this round adds, on the GPU -----------------------------------------------
@cuda
def test_pil_images_and_image_columns_train_on_the_gpu(learnable):
    from PIL import Image

    X, y = learnable
    pil = [Image.fromarray(image) for image in X]
    from_array = CNNImageClassifier(**FAST, device="cuda").fit(X, y)
    from_pil = CNNImageClassifier(**FAST, device="cuda").fit(pil, y)
    assert on_cuda(from_pil)
    assert_same_predictions(
        from_pil.predict_proba(pil), from_array.predict_proba(X), atol=1e-3
    )
    datasets = pytest.importorskip("datasets")
    column = datasets.Dataset.from_dict({"image": pil}).cast_column(
        "image", datasets.Image()
    )["image"]
    assert_same_predictions(
        from_array.predict_proba(column), from_array.predict_proba(X), atol=1e-6
    )


@cuda
def test_traces_and_predictions_from_threads_on_the_gpu(learnable):
    from concurrent.futures import ThreadPoolExecutor

    from sklearn_cnn.inspection import layer_trace

    X, y = learnable
    clf = CNNImageClassifier(**FAST, device="cuda").fit(X, y)
    expected = clf.predict_proba(X)
    rows = layer_trace(clf, X).rows

    def work(i):
        return layer_trace(clf, X).rows if i % 2 else clf.predict_proba(X)

    with ThreadPoolExecutor(8) as executor:
        for i, result in enumerate(executor.map(work, range(16))):
            if i % 2:
                assert result == rows
            else:
                assert_array_equal(result, expected)


@cuda
def test_activation_maps_on_the_gpu_match_the_cpu(learnable):
    from sklearn_cnn.inspection import class_activation_map

    X, y = learnable
    params = dict(**FAST, precision="float32")
    on_gpu = CNNImageClassifier(**params, device="cuda").fit(X, y)
    maps = class_activation_map(on_gpu, X[:16])
    assert maps.shape == (16, 8, 8)
    assert maps.min() >= 0 and maps.max() <= 1
    # The same network moved to the CPU gives the same maps.
    import copy

    on_cpu = copy.deepcopy(on_gpu)
    on_cpu.net_.module_.to("cpu")
    on_cpu.device_ = "cpu"
    np.testing.assert_allclose(class_activation_map(on_cpu, X[:16]), maps, atol=1e-3)


@cuda
def test_onnx_export_of_a_gpu_model_runs_with_onnxruntime(learnable, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    from sklearn_cnn import export_onnx

    X, y = learnable
    clf = CNNImageClassifier(**FAST, device="cuda", precision="float32").fit(X, y)
    path = export_onnx(clf, tmp_path / "model.onnx")
    # The CUDA provider where onnxruntime-gpu is installed, else the CPU one.
    available = onnxruntime.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider",) if p in available]
    session = onnxruntime.InferenceSession(
        str(path), providers=[*providers, "CPUExecutionProvider"]
    )
    (name,) = [i.name for i in session.get_inputs()]
    for n in (1, 7, 30):
        (proba,) = session.run(None, {name: X[:n]})
        np.testing.assert_allclose(proba, clf.predict_proba(X[:n]), atol=1e-4)
    print("onnxruntime providers used:", session.get_providers())


@cuda
def test_regressor_and_multilabel_train_and_predict_on_the_gpu(learnable, tmp_path):
    from sklearn_cnn import CNNImageRegressor, load_model

    X, y = learnable
    brightness = X.reshape(len(X), -1).mean(axis=1) / 255.0
    params = dict(**FAST, precision="float32")
    regressor = CNNImageRegressor(**params, device="cuda").fit(X, brightness)
    assert regressor.device_ == "cuda" and on_cuda(regressor)
    predicted = regressor.predict(X)
    assert predicted.shape == brightness.shape and np.isfinite(predicted).all()
    # The same network on the CPU predicts the same values.
    save_model(regressor, tmp_path / "regressor.safetensors")
    on_cpu = load_model(tmp_path / "regressor.safetensors", device="cpu")
    np.testing.assert_allclose(on_cpu.predict(X), predicted, rtol=1e-4, atol=1e-4)

    labels = np.stack([y == y[0], brightness > np.median(brightness)], axis=1)
    multilabel = CNNImageClassifier(**params, device="cuda").fit(X, labels.astype(int))
    assert multilabel.multilabel_ and on_cuda(multilabel)
    proba = multilabel.predict_proba(X)
    assert proba.shape == (len(X), 2)
    assert_array_equal(multilabel.predict(X), (proba > 0.5).astype(int))
    save_model(multilabel, tmp_path / "multilabel.safetensors")
    on_cpu = load_model(tmp_path / "multilabel.safetensors", device="cpu")
    np.testing.assert_allclose(on_cpu.predict_proba(X), proba, atol=1e-4)


# -- without a GPU ------------------------------------------------------------------
@pytest.mark.skipif(HAS_CUDA, reason="checks what a machine without CUDA does")
def test_without_cuda_the_cuda_tests_skip_and_say_why():
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "cuda",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            __file__,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "torch.cuda.is_available() is False" in output
    # pytest's closing line (a plugin's warning may follow it, as under xdist).
    summary = [
        line
        for line in output.splitlines()
        if re.search(r"\d+ (skipped|passed|failed|deselected)", line)
    ][-1]
    assert re.search(r"\d+ skipped", summary), summary
    assert not re.search(r"passed|failed|error", summary), summary


@pytest.mark.parametrize("early_stopping", [False, True])
def test_a_pickle_holds_tensors_only_where_loading_maps_devices(early_stopping):
    # skorch saves the module, criterion and optimizer with torch and loads them
    # back onto the CPU when CUDA is missing; any other tensor in the pickle
    # keeps the device it had, and a CUDA one cannot be unpickled without CUDA.
    X, y = make_images(n_samples=40)
    clf = CNNImageClassifier(**FAST, device="cpu", early_stopping=early_stopping)
    clf.fit(X, y)
    tensors = []

    class Spy(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, torch.Tensor):
                tensors.append(tuple(obj.shape))
            return NotImplemented

    Spy(io.BytesIO()).dump(clf)
    assert tensors == []
