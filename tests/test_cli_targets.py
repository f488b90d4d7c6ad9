"""``sklearn-cnn train --targets FILE.csv``: regression and multi-label from a CSV."""

import json

import numpy as np
import pytest
from PIL import Image

from sklearn_cnn import CNNImageClassifier, CNNImageRegressor, load_model
from sklearn_cnn.cli import main

TINY = [
    "--epochs", "1", "--image-size", "12", "--filters", "4", "--dense-units", "8",
    "--seed", "0", "--augment", "none",
]  # fmt: skip


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """40 PNG files of 12x12: a brightness, and a square and/or a bar or neither."""
    root = tmp_path_factory.mktemp("targets")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        brightness = rng.uniform(0.1, 0.9)
        image = np.full((12, 12, 3), int(brightness * 255), np.uint8)
        square, bar = bool(i % 2), bool(i % 3 == 0)
        if square:
            image[1:5, 1:5] = 255
        if bar:
            image[8:10, :] = 0
        name = f"img/{i:03d}.png"
        (root / "img").mkdir(exist_ok=True)
        Image.fromarray(image).save(root / name)
        labels = [label for label, on in (("square", square), ("bar", bar)) if on]
        rows.append((name, brightness, labels))
    return root, rows


def write_csv(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def train(tmp_path, csv_path, *extra):
    model = tmp_path / "model.safetensors"
    report = tmp_path / "report"
    args = ["train", "--targets", str(csv_path), *TINY, *extra]
    code = main([*args, "--output", str(model), "--report", str(report)])
    assert code == 0
    return model, report


def test_numbers_train_a_regressor_with_a_scatter_report(images, tmp_path, capsys):
    root, rows = images
    lines = ["path,target"] + [f"{name},{value:.4f}" for name, value, _ in rows]
    model_path, report = train(tmp_path, write_csv(root / "reg.csv", lines))
    out = capsys.readouterr().out
    assert "targets of 1 number per image" in out
    assert "linear output of 1 number(s)" in out and "train_r2" in out
    assert "R² " in out and "mean absolute error" in out
    assert "(true target: " in out and "Predicted: " in out
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["n_images"] == 8 and len(metrics["predictions"]) == 8
    assert {"r2", "mean_absolute_error", "root_mean_squared_error"} <= set(metrics)
    names = sorted(path.name for path in report.iterdir())
    assert "predicted_vs_true.png" in names and "confusion_matrix.png" not in names
    with Image.open(report / "predicted_vs_true.png") as plot:
        assert plot.size[0] > 100

    model = load_model(model_path)
    assert isinstance(
        model[-1] if hasattr(model, "steps") else model, CNNImageRegressor
    )
    files = [str(root / rows[0][0]), str(root / rows[1][0])]
    assert main(["predict", str(model_path), *files, "--output-format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(
        [row["prediction"] for row in printed], model.predict(files), rtol=1e-5
    )
    # evaluate reads classes from folder names: a regressor is refused clearly.
    assert main(["evaluate", str(model_path), str(root)]) == 1
    assert "is a regression model" in capsys.readouterr().err


def test_label_sets_train_a_multilabel_classifier(images, tmp_path, capsys):
    root, rows = images
    # No header; an image without labels has an empty target.
    lines = [f"{name},{';'.join(labels)}" for name, _, labels in rows]
    model_path, report = train(tmp_path, write_csv(root / "tags.csv", lines))
    out = capsys.readouterr().out
    assert "2 labels, numbered as the model's columns (0 bar: 14, 1 square: 20" in out
    assert "sigmoid over 2 labels" in out and "train_f1_samples" in out
    assert "sample F1 " in out and "subset accuracy" in out
    assert "(true labels: {" in out
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["labels"] == ["bar", "square"]
    assert set(metrics["per_label"]["bar"]) == {"precision", "recall", "support"}
    assert sum(metrics["per_label"][label]["support"] for label in ("bar", "square"))
    assert "per_label_scores.png" in {path.name for path in report.iterdir()}

    model = load_model(model_path)
    classifier = model[-1] if hasattr(model, "steps") else model
    assert isinstance(classifier, CNNImageClassifier) and classifier.multilabel_
    files = [str(root / name) for name, _, _ in rows[:3]]
    assert main(["predict", str(model_path), *files, "--output-format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = model.predict_proba(files) > 0.5
    assert [row["labels"] for row in printed] == [
        list(np.flatnonzero(row)) for row in expected
    ]


def test_names_train_a_classifier_and_data_dir_anchors_paths(images, tmp_path, capsys):
    root, rows = images
    lines = [f"{name[4:]},{'bright' if v > 0.5 else 'dark'}" for name, v, _ in rows]
    csv_path = write_csv(tmp_path / "classes.csv", lines)
    args = ["train", "--targets", str(csv_path), str(root / "img"), *TINY]
    assert main([*args, "--output", str(tmp_path / "m.pkl"), "--report", ""]) == 0
    out = capsys.readouterr().out
    assert "2 classes (bright" in out and "softmax over 2 classes" in out
    assert "(stratified, seed 0)" in out


@pytest.mark.parametrize(
    "lines, match",
    [
        (["img/000.png,1", "img/001.png"], "line 2: expected two fields"),
        (["img/000.png,1;2", "img/001.png,3"], "same number of numbers"),
        (["img/000.png,1", "img/nope.png,2"], "1 of the 2 listed files do not exist"),
        (["path,target"], "lists no images"),
        (["img/000.png,1", "img/001.png,1"], "do not vary"),
    ],
)
def test_bad_targets_files_are_one_line_errors(
    images, tmp_path, capsys, monkeypatch, lines, match
):
    root, _ = images
    monkeypatch.chdir(tmp_path)
    csv_path = write_csv(root / "bad.csv", lines)
    code = main(["train", "--targets", str(csv_path), *TINY, "--report", ""])
    assert code == 1
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_missing_targets_file(tmp_path, capsys):
    missing = str(tmp_path / "none.csv")
    assert main(["train", "--targets", missing, *TINY, "--report", ""]) == 1
    assert "no such file" in capsys.readouterr().err
