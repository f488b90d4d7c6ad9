"""sklearn_cnn.export_onnx, checked with onnxruntime against predict_proba."""

import json
import warnings

import numpy as np
import pytest
import torch
import torchvision
from conftest import make_images
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from sklearn_cnn import CNNFeatureExtractor, CNNImageClassifier, export_onnx
from sklearn_cnn.augmentation import RandomHorizontalFlip
from sklearn_cnn.preprocessing import ImageResizer, ImageScaler, ImageStandardizer

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

RESNET18_FILE = "resnet18-f37072fd.pth"
# float32 prediction, so that the float32 graph gives the same probabilities.
FAST = dict(
    filters=(4, 8),
    dense_units=8,
    epochs=1,
    batch_size=16,
    random_state=0,
    precision="float32",
)
BATCH_SIZES = (1, 5, 17)


def run(path, images):
    session = onnxruntime.InferenceSession(str(path))
    (output,) = session.run(None, {"images": images})
    return session, output


def metadata(path):
    return {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module")
def data():
    return make_images(n_samples=30, size=10, labels=("cat", "dog", "bird"))


def check_same_probabilities(model, path, X):
    for n in BATCH_SIZES:
        _, probabilities = run(path, X[:n])
        assert probabilities.shape == (len(X[:n]), len(model.classes_))
        np.testing.assert_allclose(
            probabilities, model.predict_proba(X[:n]), rtol=0, atol=1e-4
        )


def test_built_in_network(data, tmp_path):
    X, y = data
    classifier = CNNImageClassifier(**FAST).fit(X, y)
    module = classifier.net_.module_
    state = {key: value.clone() for key, value in module.state_dict().items()}
    before = classifier.predict_proba(X)
    path = export_onnx(classifier, tmp_path / "classifier.onnx")
    onnx.checker.check_model(path)
    check_same_probabilities(classifier, path, X)
    assert json.loads(metadata(path)["classes"]) == ["bird", "cat", "dog"]
    assert metadata(path)["input_layout"] == "nhwc"
    assert json.loads(metadata(path)["image_shape"]) == [10, 10, 3]
    # The fitted model is as it was: weights, mode, hooks, predictions.
    assert not module.training
    assert all(not m._forward_hooks for m in module.modules())
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    np.testing.assert_array_equal(classifier.predict_proba(X), before)


def test_channels_first_layout_and_integer_classes(data, tmp_path):
    X, y = data
    y = np.searchsorted(["bird", "cat", "dog"], y) * 10
    classifier = CNNImageClassifier(**FAST).fit(X, y)
    path = export_onnx(classifier, tmp_path / "nchw.onnx", layout="nchw")
    _, probabilities = run(path, np.ascontiguousarray(X.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(probabilities, classifier.predict_proba(X), atol=1e-4)
    assert json.loads(metadata(path)["classes"]) == [0, 10, 20]


@pytest.mark.parametrize("layout", ["nhwc", "nchw", "nhw", "flat"])
def test_the_graph_takes_the_layout_the_model_was_fitted_on(tmp_path, layout):
    X, y = make_images(n_samples=24, size=8, channels=1)
    given = {
        "nhwc": X,
        "nchw": np.ascontiguousarray(X.transpose(0, 3, 1, 2)),
        "nhw": X[..., 0],
        "flat": X.reshape(len(X), -1),
    }[layout]
    shape = (8, 8, 1) if layout == "flat" else None
    classifier = CNNImageClassifier(**FAST, image_shape=shape).fit(given, y)
    assert classifier.input_layout_ == layout
    path = export_onnx(classifier, tmp_path / f"{layout}.onnx")
    assert metadata(path)["input_layout"] == layout
    _, probabilities = run(path, given)
    np.testing.assert_allclose(
        probabilities, classifier.predict_proba(given), atol=1e-4
    )


def test_regressor_predictions_on_their_own_scale(tmp_path):
    from sklearn_cnn import CNNImageRegressor

    X, _ = make_images(n_samples=24, size=8)
    y = np.c_[X.mean(axis=(1, 2, 3)) * 10, X[..., 0].mean(axis=(1, 2))]
    params = {key: value for key, value in FAST.items() if key != "class_weight"}
    regressor = CNNImageRegressor(**params).fit(X, y)
    path = export_onnx(regressor, tmp_path / "regressor.onnx")
    _, predictions = run(path, X)
    np.testing.assert_allclose(predictions, regressor.predict(X), rtol=1e-4)


def test_backbone_with_its_normalization_in_the_graph(torch_cache, tmp_path):
    torch.manual_seed(0)
    torch_cache.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.resnet18().state_dict(), torch_cache / RESNET18_FILE)
    X, y = make_images(n_samples=16, size=32)
    classifier = CNNImageClassifier(
        backbone="resnet18",
        weights="DEFAULT",
        epochs=1,
        batch_size=8,
        random_state=0,
        precision="float32",
    ).fit(X, y)
    assert classifier.net_.module_.input_mean is not None  # ImageNet's, in the net
    path = export_onnx(classifier, tmp_path / "resnet18.onnx")
    check_same_probabilities(classifier, path, X)


def test_pipeline_of_image_steps(data, tmp_path):
    X, y = data
    pipeline = make_pipeline(
        ImageScaler(),
        RandomHorizontalFlip(random_state=0),
        ImageResizer(size=(12, 9)),
        ImageStandardizer(),
        CNNImageClassifier(**FAST),
    ).fit(X, y)
    path = export_onnx(pipeline, tmp_path / "pipeline.onnx")
    check_same_probabilities(pipeline, path, X)


def test_resizing_uint8_images_rounds_as_the_step_does(data, tmp_path):
    X, y = data
    pipeline = make_pipeline(ImageResizer(size=13), CNNImageClassifier(**FAST))
    pipeline.fit(X, y)
    path = export_onnx(pipeline, tmp_path / "resized.onnx")
    _, probabilities = run(path, X)
    # Pixels halfway between two values may round the other way: 1 in 255.
    np.testing.assert_allclose(probabilities, pipeline.predict_proba(X), atol=1e-3)


def test_feature_extractor(tmp_path):
    X, _ = make_images(n_samples=6, size=16)
    extractor = CNNFeatureExtractor("resnet18", precision="float32")
    pipeline = make_pipeline(ImageScaler(), extractor).fit(X)
    path = export_onnx(pipeline, tmp_path / "f.onnx")
    _, features = run(path, X)
    assert features.shape == (6, 512)
    np.testing.assert_allclose(features, pipeline.transform(X), atol=1e-4)
    assert "classes" not in metadata(path)
    assert metadata(path)["output"] == "features"


@pytest.mark.parametrize(
    "make_model, match",
    [
        (
            lambda X, y: make_pipeline(ImageScaler(), LogisticRegression()).fit(
                X.reshape(len(X), -1), y
            ),
            "export_onnx exports a fitted CNNImageClassifier, CNNImageRegressor or "
            "CNNFeatureExtractor"
            ".* got Pipeline ending in LogisticRegression",
        ),
        (
            lambda X, y: LogisticRegression().fit(X.reshape(len(X), -1), y),
            "got LogisticRegression",
        ),
        (
            lambda X, y: make_pipeline(
                FunctionTransformer(), CNNImageClassifier(**FAST)
            ).fit(X, y),
            "cannot put the step FunctionTransformer in the graph",
        ),
    ],
    ids=["pipeline-of-another-estimator", "another-estimator", "foreign-step"],
)
def test_unsupported_models_are_refused_clearly(data, tmp_path, make_model, match):
    X, y = data
    path = tmp_path / "refused.onnx"
    with pytest.raises(TypeError, match=match):
        export_onnx(make_model(X, y), path)
    assert not path.exists()


def test_unfitted_model_and_unknown_layout(data, tmp_path):
    with pytest.raises(NotFittedError):
        export_onnx(CNNImageClassifier(), tmp_path / "m.onnx")
    X, y = data
    with pytest.raises(
        ValueError, match=r"layout must be one of \['nhwc', 'nchw', 'nhw', 'flat'\]"
    ):
        export_onnx(
            CNNImageClassifier(**FAST).fit(X, y), tmp_path / "m.onnx", layout="nwhc"
        )


def test_reduced_precision_models_are_exported_with_a_warning(data, tmp_path):
    X, y = data
    classifier = CNNImageClassifier(**{**FAST, "precision": "bfloat16"}).fit(X, y)
    with pytest.warns(UserWarning, match="predicts in bfloat16; the ONNX graph"):
        path = export_onnx(classifier, tmp_path / "bf16.onnx")
    _, probabilities = run(path, X)
    np.testing.assert_allclose(probabilities, classifier.predict_proba(X), atol=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export_onnx(CNNImageClassifier(**FAST).fit(X, y), tmp_path / "f32.onnx")
