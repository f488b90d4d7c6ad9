"""``sklearn-cnn export``, and the top losses and activation maps of the report."""

import json

import joblib
import matplotlib
import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression

from sklearn_cnn import load_model
from sklearn_cnn.cli import main
from sklearn_cnn.datasets import load_cats_dogs

matplotlib.use("Agg")
onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

TINY = [
    "--epochs", "1", "--image-size", "16", "--n-samples", "60",
    "--filters", "4", "--dense-units", "8", "--seed", "0", "--precision", "float32",
]  # fmt: skip
REPORT_PLOTS = ("top_losses.png", "activation_maps.png", "predictions.png")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    model, report = folder / "model.safetensors", folder / "report"
    status = main(["train", *TINY, "--output", str(model), "--report", str(report)])
    assert status == 0
    return model, report


def test_the_report_shows_top_losses_confusions_and_activation_maps(trained):
    _, report = trained
    for plot in REPORT_PLOTS:
        with Image.open(report / plot) as image:
            assert image.size[0] > 100
    metrics = json.loads((report / "metrics.json").read_text())
    confusions = metrics["most_confused"]
    n_wrong = metrics["n_images"] - metrics["n_correct"]
    assert sum(pair["count"] for pair in confusions) == n_wrong
    assert all(pair["true"] != pair["predicted"] for pair in confusions)


def test_report_of_a_model_trained_on_files(tmp_path):
    X, y = load_cats_dogs(image_size=10, n_samples=24, return_X_y=True)
    for i, (image, label) in enumerate(zip(X, y)):
        path = tmp_path / "data" / label / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    model, report = tmp_path / "model.safetensors", tmp_path / "report"
    status = main(
        ["train", str(tmp_path / "data"), "--epochs", "1", "--image-size", "10"]
        + ["--filters", "4", "--dense-units", "8", "--test-size", "8"]
        + ["--output", str(model), "--report", str(report)]
    )
    assert status == 0
    for plot in REPORT_PLOTS:
        assert (report / plot).is_file()
    evaluation = tmp_path / "evaluation"
    status = main(
        ["evaluate", str(model), str(tmp_path / "data"), "--report", str(evaluation)]
    )
    assert status == 0
    assert (evaluation / "top_losses.png").is_file()
    assert "most_confused" in json.loads((evaluation / "metrics.json").read_text())


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_export_writes_a_graph_with_the_model_probabilities(
    trained, tmp_path, capsys, layout
):
    model_path, _ = trained
    out = tmp_path / "model.onnx"
    assert main(["export", str(model_path), str(out), "--layout", layout]) == 0
    printed = capsys.readouterr().out
    assert f"Exported {model_path} to {out}" in printed
    assert "checked with onnxruntime on 4 random images" in printed
    model = load_model(model_path)
    X, _ = load_cats_dogs(image_size=16, n_samples=12, return_X_y=True)
    session = onnxruntime.InferenceSession(str(out))
    for n in (1, 12):
        images = X[:n] if layout == "nhwc" else X[:n].transpose(0, 3, 1, 2)
        (probabilities,) = session.run(None, {"images": np.ascontiguousarray(images)})
        np.testing.assert_allclose(probabilities, model.predict_proba(X[:n]), atol=1e-4)
    properties = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(properties["classes"]) == ["cat", "dog"]


def test_export_refuses_a_model_it_cannot_export(tmp_path, capsys):
    X, y = load_cats_dogs(image_size=8, n_samples=20, return_X_y=True)
    model = tmp_path / "logistic.pkl"
    joblib.dump(LogisticRegression().fit(X.reshape(20, -1), y), model)
    out = tmp_path / "logistic.onnx"
    assert main(["export", str(model), str(out)]) == 1
    error = capsys.readouterr().err
    assert (
        "sklearn-cnn: error: export_onnx exports a fitted CNNImageClassifier" in error
    )
    assert "got LogisticRegression" in error
    assert not out.exists()
