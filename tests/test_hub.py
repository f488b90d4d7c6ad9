"""backbone="hf-hub:<org>/<name>": timm models from a Hugging Face cache, offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sklearn_cnn import CNNFeatureExtractor, CNNImageClassifier, export_onnx

timm = pytest.importorskip("timm")
huggingface_hub = pytest.importorskip("huggingface_hub")
from huggingface_hub import constants  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

REPO = "sklearn-cnn/tiny-resnet"
REVISION = "0123456789abcdef0123456789abcdef01234567"
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline: nothing can be downloaded."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # huggingface_hub reads its environment at import: set what it read.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def cache_repository(cache, files=("config.json", "model.safetensors")) -> dict:
    """A timm ``test_resnet`` with random weights, laid out as the Hub caches it."""
    repository = cache / ("models--" + REPO.replace("/", "--"))
    snapshot = repository / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text(REVISION)
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False)
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    config = {
        "architecture": "test_resnet",
        "num_classes": model.num_classes,
        "pretrained_cfg": {
            "mean": list(MEAN),
            "std": list(STD),
            "classifier": "fc",
            "input_size": [3, 32, 32],
        },
    }
    if "config.json" in files:
        (snapshot / "config.json").write_text(json.dumps(config))
    if "model.safetensors" in files:
        save_file(state, snapshot / "model.safetensors")
    return state


def make_images(n=12, size=32, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randint(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return X, np.array(["a", "b"] * (n // 2))


def test_weights_are_loaded_from_the_cache_with_their_normalization(hub_cache):
    state = cache_repository(hub_cache)
    X, _ = make_images(n=4)
    extractor = CNNFeatureExtractor(
        "hf-hub:" + REPO, weights="DEFAULT", precision="float32"
    ).fit(X)
    body = extractor.network_.body.state_dict()
    for key, value in body.items():
        torch.testing.assert_close(value.cpu(), state[key])
    assert extractor.input_normalization_["mean"] == pytest.approx(MEAN)
    assert extractor.input_normalization_["std"] == pytest.approx(STD)
    assert extractor.transform(X).shape == (4, extractor.network_.n_features)


def test_classifier_fine_tunes_a_hub_backbone_and_exports(hub_cache, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    cache_repository(hub_cache)
    X, y = make_images()
    classifier = CNNImageClassifier(
        backbone="hf-hub:" + REPO, weights="DEFAULT", epochs=1, batch_size=6,
        random_state=0, precision="float32",
    ).fit(X, y)  # fmt: skip
    assert classifier.input_normalization_["mean"] == pytest.approx(MEAN)
    path = export_onnx(classifier, tmp_path / "hub.onnx")
    (probabilities,) = onnxruntime.InferenceSession(path).run(None, {"images": X})
    np.testing.assert_allclose(probabilities, classifier.predict_proba(X), atol=1e-4)


def test_random_weights_still_take_the_architecture_from_the_repository(hub_cache):
    state = cache_repository(hub_cache, files=("config.json",))
    X, _ = make_images(n=2)
    extractor = CNNFeatureExtractor("hf-hub:" + REPO, precision="float32").fit(X)
    assert extractor.input_normalization_ is None
    body = extractor.network_.body.state_dict()
    assert body.keys() == {key for key in state if not key.startswith("fc.")}


@pytest.mark.parametrize(
    "files, missing",
    [
        ((), "'config.json', 'model.safetensors'"),
        (("config.json",), "'model.safetensors'"),
    ],
    ids=["empty-cache", "no-weights"],
)
def test_offline_without_the_files_names_them_and_the_folder(hub_cache, files, missing):
    if files:
        cache_repository(hub_cache, files=files)
    X, y = make_images(n=4)
    with pytest.raises(FileNotFoundError) as info:
        CNNImageClassifier(backbone="hf-hub:" + REPO, weights="DEFAULT", epochs=1).fit(
            X, y
        )
    message = str(info.value)
    assert f"The Hugging Face Hub files of {REPO} are not in the cache" in message
    assert "HF_HUB_OFFLINE is set" in message
    assert f"Missing: {missing}," in message
    folder = hub_cache / "models--sklearn-cnn--tiny-resnet" / "snapshots"
    assert str(folder) in message


def test_weights_the_hub_cannot_load_are_refused(hub_cache):
    cache_repository(hub_cache)
    X, _ = make_images(n=2)
    with pytest.raises(ValueError, match="weights='IMAGENET1K_V1' is not something"):
        CNNFeatureExtractor("hf-hub:" + REPO, weights="IMAGENET1K_V1").fit(X)
