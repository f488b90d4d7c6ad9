"""CNNFeatureExtractor and the backbones it loads, without any download."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from sklearn_cnn import CNNFeatureExtractor
from sklearn_cnn.preprocessing import ImageScaler, ImageStandardizer

RESNET18_FILE = "resnet18-f37072fd.pth"


def cache_resnet18(checkpoints: Path, seed=0) -> dict:
    """Save a recognizable resnet18 state dict where torchvision looks for it."""
    torch.manual_seed(seed)
    state = torchvision.models.resnet18().state_dict()
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.save(state, checkpoints / RESNET18_FILE)
    return state


def make_images(n=12, size=32, channels=3, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randint(0, 256, size=(n, size, size, channels), dtype=np.uint8)
    y = np.arange(n) % 2
    X[y == 1, : size // 2] //= 4  # a darker top half tells class 1
    return X, y


def test_pipeline_with_cached_default_weights(torch_cache):
    state = cache_resnet18(torch_cache)
    X, y = make_images()
    model = make_pipeline(
        CNNFeatureExtractor("resnet18", weights="DEFAULT", precision="float32"),
        LogisticRegression(max_iter=200),
    ).fit(X, y)
    extractor = model[0]
    # The weights in the cache file were really loaded.
    torch.testing.assert_close(
        extractor.network_.body.conv1.weight.cpu(), state["conv1.weight"]
    )
    features = extractor.transform(X)
    assert features.shape == (12, 512) and features.dtype == np.float32
    assert model.predict(X).shape == (12,)
    assert extractor.input_normalization_["mean"] == pytest.approx(
        (0.485, 0.456, 0.406)
    )


def test_feature_names_out():
    X, _ = make_images(n=2, size=16)
    extractor = CNNFeatureExtractor("mobilenet_v3_small", precision="float32")
    names = extractor.fit(X).get_feature_names_out()
    assert len(names) == 1024
    assert names[0] == "cnnfeatureextractor0"


def test_standardized_input_is_not_normalized_again(torch_cache):
    cache_resnet18(torch_cache)
    X, _ = make_images(n=4)
    inside = CNNFeatureExtractor("resnet18", weights="DEFAULT", precision="float32")
    features_inside = inside.fit_transform(X)
    outside = make_pipeline(
        ImageScaler(),
        ImageStandardizer(preset="imagenet"),
        CNNFeatureExtractor("resnet18", weights="DEFAULT", precision="float32"),
    )
    features_outside = outside.fit_transform(X)
    assert outside[-1].input_normalization_ is None
    np.testing.assert_allclose(features_outside, features_inside, rtol=1e-4, atol=1e-5)


def test_pixels_beyond_one_warn(torch_cache):
    cache_resnet18(torch_cache)
    X, _ = make_images(n=2)
    extractor = CNNFeatureExtractor("resnet18", weights="DEFAULT")
    with pytest.warns(UserWarning, match="ImageScaler"):
        extractor.fit(X.astype(np.float32))


def test_grayscale_images_are_repeated_to_rgb():
    X, _ = make_images(n=3, channels=1)
    extractor = CNNFeatureExtractor("resnet18", precision="float32", random_state=0)
    gray_features = extractor.fit_transform(X)
    rgb = np.repeat(X, 3, axis=-1)
    np.testing.assert_allclose(
        gray_features,
        extractor.fit_transform(rgb),
        rtol=1e-5,
        atol=1e-6,
    )


def test_offline_without_cache_names_the_file_and_folder(torch_cache):
    X, _ = make_images(n=2)
    extractor = CNNFeatureExtractor("resnet18", weights="DEFAULT")
    with pytest.raises(FileNotFoundError) as info:
        extractor.fit(X)
    message = str(info.value)
    assert RESNET18_FILE in message
    assert str(torch_cache) in message
    assert "weights=None" in message


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth"])
def test_state_dict_files(tmp_path, suffix):
    torch.manual_seed(3)
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)
    X, _ = make_images(n=2)
    extractor = CNNFeatureExtractor("resnet18", weights=str(path)).fit(X)
    torch.testing.assert_close(
        extractor.network_.body.layer4[1].conv2.weight.cpu(),
        state["layer4.1.conv2.weight"],
    )
    # The user's file: its statistics are unknown, nothing is assumed.
    assert extractor.input_normalization_ is None


def test_state_dict_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "mobilenet.pt"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
    X, _ = make_images(n=2)
    with pytest.raises(ValueError, match="do not fit the resnet18 network"):
        CNNFeatureExtractor("resnet18", weights=path).fit(X)


def test_module_backbone_feature_maps_are_pooled():
    body = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.ReLU())
    X, _ = make_images(n=3, size=8)
    extractor = CNNFeatureExtractor(body, precision="float32")
    features = extractor.fit_transform(X)
    assert features.shape == (3, 5)
    with torch.no_grad():
        expected = body(torch.from_numpy(X / 255.0).float().permute(0, 3, 1, 2))
    np.testing.assert_allclose(features, expected.mean(dim=(2, 3)), rtol=1e-5)


@pytest.mark.parametrize(
    "backbone, weights, match",
    [
        ("resnet81", None, "Did you mean 'resnet18'"),
        ("squeezenet1_0", None, "no final linear layer"),
        ("resnet18", "IMAGENET1K_V9", "IMAGENET1K_V1"),
        ("resnet18", "missing.pt", "does not exist"),
    ],
)
def test_bad_backbones_and_weights(backbone, weights, match):
    X, _ = make_images(n=2)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        CNNFeatureExtractor(backbone, weights=weights).fit(X)


def test_pickle_round_trip():
    X, _ = make_images(n=2, size=16)
    extractor = CNNFeatureExtractor("mobilenet_v3_small", precision="float32").fit(X)
    restored = pickle.loads(pickle.dumps(extractor))
    np.testing.assert_array_equal(restored.transform(X), extractor.transform(X))


def test_timm_backbone_and_file(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    state = timm.create_model("resnet18").state_dict()  # with its 1000-class fc
    path = tmp_path / "timm_resnet18.safetensors"
    save_file(state, path)
    X, _ = make_images(n=2)
    extractor = CNNFeatureExtractor("timm/resnet18", weights=path).fit(X)
    assert extractor.transform(X).shape == (2, 512)
    torch.testing.assert_close(
        extractor.network_.body.conv1.weight.cpu(), state["conv1.weight"]
    )


def test_timm_weights_offline_say_what_to_do(monkeypatch):
    pytest.importorskip("timm")
    import timm.models._builder as timm_builder

    def no_network(*args, **kwargs):
        raise OSError("no network in tests")

    # timm fetches pretrained weights from the Hugging Face hub or a URL.
    monkeypatch.setattr(timm_builder, "load_state_dict_from_hf", no_network)
    monkeypatch.setattr(timm_builder, "load_state_dict_from_url", no_network)
    X, _ = make_images(n=2)
    with pytest.raises(FileNotFoundError, match="weights=<that file>"):
        CNNFeatureExtractor("timm/resnet18", weights="DEFAULT").fit(X)
