"""The sklearn-cnn command, run through its real entry point on tiny settings."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sklearn_cnn.cli import main
from sklearn_cnn.datasets import load_cats_dogs

ROOT = Path(__file__).resolve().parents[1]
# Tiny and quick: 100 images of 16x16, one epoch of a one-block network.
TINY = [
    "--epochs", "1", "--image-size", "16", "--n-samples", "100",
    "--filters", "4", "--dense-units", "8", "--seed", "0",
]  # fmt: skip


def run_cli(*args, cwd=None):
    """``python -m sklearn_cnn ARGS``, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "sklearn_cnn", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def write_folder(root, n_per_class=6, size=20):
    """Cat and dog silhouettes as PNG files, one sub-folder per class."""
    X, y = load_cats_dogs(image_size=size, n_samples=2 * n_per_class, return_X_y=True)
    for i, (image, label) in enumerate(zip(X, y)):
        path = root / label / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real ``train`` run on the embedded data, shared by the tests below."""
    folder = tmp_path_factory.mktemp("train")
    model = folder / "my model"  # no suffix: the exact path must be written
    report = folder / "report"
    result = run_cli("train", *TINY, "--output", model, "--report", report)
    assert result.returncode == 0, result.stderr
    return model, report, result


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("images"))


class LoadingSpy:
    """What the data set loaders and the classifier's ``fit`` were given."""

    def __init__(self):
        self.loads = []  # (function name, paths_only, number of files)
        self.fitted = []  # the X of each CNNImageClassifier.fit

    def folder_listings(self) -> list[bool]:
        """``paths_only`` of each call of load_image_folder."""
        return [listed for name, listed, _ in self.loads if name == "load_image_folder"]

    def decoded(self) -> int:
        """How many image files the loaders decoded, all calls together."""
        return sum(n_files for _, listed, n_files in self.loads if not listed)


@pytest.fixture
def loading_spy(monkeypatch):
    """Record the loaders' calls and the X of ``fit``, through the public names."""
    import sklearn_cnn.datasets as datasets
    from sklearn_cnn import CNNImageClassifier

    spy = LoadingSpy()
    for name in ("load_image_folder", "load_images"):
        loader = getattr(datasets, name)

        def spying(*args, name=name, loader=loader, **kwargs):
            result = loader(*args, **kwargs)
            filenames = result[0] if isinstance(result, tuple) else result.filenames
            spy.loads.append((name, kwargs.get("paths_only", False), len(filenames)))
            return result

        monkeypatch.setattr(datasets, name, spying)
    fit = CNNImageClassifier.fit

    def spying_fit(self, X, y, **kwargs):
        spy.fitted.append(X)
        return fit(self, X, y, **kwargs)

    monkeypatch.setattr(CNNImageClassifier, "fit", spying_fit)
    return spy


# -- train -------------------------------------------------------------------------
def test_train_prints_the_six_stages_with_shapes(trained):
    _, _, result = trained
    out = result.stdout
    for number, title in enumerate(
        [
            "Data loading",
            "Preprocessing",
            "Train/test split",
            "Augmentation",
            "Training",
            "Evaluation on the 20 test images",
        ],
        start=1,
    ):
        assert f"[{number}/6] {title}" in out
    assert "100 images x 16x16 pixels x 3 color channels, 2 classes" in out
    assert "X (100, 16, 16, 3) uint8" in out
    assert "pixels 0-255 -> 0.0-1.0" in out and "float32" in out
    assert "80 training, 20 testing" in out
    assert "random horizontal flip, random rotation up to 15 degrees" in out


def test_train_prints_the_epoch_trace_evaluation_and_layer_trace(trained):
    _, _, result = trained
    out = result.stdout
    assert "train_loss" in out and "train_accuracy" in out  # the epoch table
    assert "trained 1 epochs on cpu" in out
    assert "accuracy " in out and "loss " in out
    line = next(line for line in out.splitlines() if "test images correctly" in line)
    n_correct = int(line.split("predicted ")[1].split(" of ")[0])
    assert 0 <= n_correct <= 20 and "of 20 test images correctly" in line
    assert "precision" in out and "recall" in out
    assert "Prediction trace of test image 0 (true label:" in out
    assert "features.0 (Conv2d)" in out and "MaxPool2d" in out and "Linear" in out
    assert "Softmax output: cat: " in out
    assert "Wall time:" in out
    assert result.stderr.count("Traceback") == 0


def test_train_saves_exactly_the_output_path_and_the_report(trained):
    model, report, result = trained
    assert model.is_file()
    assert sorted(path.name for path in model.parent.iterdir()) == [
        "my model",
        "report",
    ]
    assert f"Saved the fitted pipeline to {model}" in result.stdout
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["n_images"] == 20
    assert metrics["classes"] == ["cat", "dog"]
    assert set(metrics["per_class"]["cat"]) == {"precision", "recall", "support"}
    assert len(metrics["history"]) == 1
    for plot in ("training_curves.png", "confusion_matrix.png", "predictions.png"):
        with Image.open(report / plot) as image:
            assert image.size[0] > 100


def test_train_on_an_image_folder_in_process(tmp_path, capsys, loading_spy):
    folder = write_folder(tmp_path / "data", n_per_class=8, size=12)
    model = tmp_path / "model.pkl"
    status = main(
        ["train", str(folder), "--epochs", "1", "--image-size", "16"]
        + ["--filters", "4", "--dense-units", "8", "--test-size", "4"]
        + ["--n-samples", "14", "--augment", "none", "--format", "pickle"]
        + ["--output", str(model)]
        + ["--report", ""]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "14 image files, 2 classes (cat 7, dog 7)" in out
    assert f"from folder {folder}" in out
    assert "decodes them to 16x16 pixels batch by batch" in out
    assert "10 training, 4 testing" in out
    assert "[4/6] Augmentation\n      none" in out
    assert "on images decoded to 16x16 pixels x 3 color channels" in out
    assert model.is_file() and "Report:" not in out
    assert f"Saved the fitted pipeline to {model} (pickle)" in out
    # The classifier got the paths of the training files, not their pixels, and
    # only the image of the layer trace was decoded.
    (X_fit,) = loading_spy.fitted
    assert X_fit.shape == (10,) and str(X_fit[0]).endswith(".png")
    assert loading_spy.folder_listings() == [True]
    assert loading_spy.decoded() == 1
    # The pickled model loads back for prediction.
    assert (
        main(["predict", str(model), str(folder / "cat"), "--output-format", "json"])
        == 0
    )
    assert len(json.loads(capsys.readouterr().out)) == 8
    assert loading_spy.decoded() == 1


# -- predict and evaluate -------------------------------------------------------------
def test_predict_json(trained, images):
    model, _, _ = trained
    one = next((images / "cat").iterdir())
    result = run_cli("predict", model, one, images / "dog", "--output-format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 7 and rows[0]["path"] == str(one)
    for row in rows:
        assert row["label"] in ("cat", "dog")
        assert sum(row["probabilities"].values()) == pytest.approx(1.0)
        assert row["probability"] == max(row["probabilities"].values())


def test_predict_csv_and_table(trained, images, capsys):
    model, _, _ = trained
    assert main(["predict", str(model), str(images), "--output-format", "csv"]) == 0
    table = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert table[0] == ["path", "label", "probability", "p_cat", "p_dog"]
    assert len(table) == 13
    assert main(["predict", str(model), str(images)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["image", "label", "probability"]
    assert len(lines) == 13 and lines[1].split()[-2] in ("cat", "dog")


def test_evaluate_prints_the_evaluation_stage(trained, images, tmp_path, capsys):
    model, _, _ = trained
    report = tmp_path / "evaluation"
    assert main(["evaluate", str(model), str(images), "--report", str(report)]) == 0
    out = capsys.readouterr().out
    # evaluate's own stages, numbered among themselves.
    assert "[1/2] Model" in out and "[6/6]" not in out
    assert "[2/2] Evaluation on the 12 images of" in out
    assert "of 12 images correctly" in out
    assert "precision" in out and "recall" in out
    assert (report / "confusion_matrix.png").is_file()
    assert not (report / "training_curves.png").exists()


# -- folders: the classifier reads the files batch by batch ---------------------------
@pytest.fixture(scope="module")
def folder_with_a_broken_file(tmp_path_factory):
    """32 PNG files of 8x8 pixels, two classes, and one file that is no image."""
    root = write_folder(tmp_path_factory.mktemp("files") / "data", 16, size=8)
    (root / "cat" / "broken.png").write_bytes(b"not an image")
    return root


@pytest.fixture(scope="module")
def trained_on_files(folder_with_a_broken_file, tmp_path_factory):
    """One real ``train FOLDER`` run, shared by the tests below."""
    out = tmp_path_factory.mktemp("trained_on_files")
    model, report = out / "model.safetensors", out / "report"
    result = run_cli(
        "train", folder_with_a_broken_file, "--epochs", "1", "--image-size", "8",
        "--filters", "4", "--dense-units", "8", "--test-size", "8",
        "--output", model, "--report", report,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return model, report, result


def test_train_folder_prints_the_stages_of_streamed_files(trained_on_files):
    model, report, result = trained_on_files
    out = result.stdout
    assert "[1/6] Data loading\n      32 image files, 2 classes (cat 16, dog 16)" in out
    assert "listed without decoding: the classifier decodes them to 8x8 pixels" in out
    assert "X 32 file paths; y (32,) <U3" in out
    assert "0.0-1.0 by the classifier, batch by batch" in out
    assert "no ImageScaler step" in out
    assert "24 training, 8 testing" in out
    assert "X_train 24 file paths, X_test 8 file paths" in out
    assert "random horizontal flip, random rotation up to 15 degrees" in out
    assert "train_loss" in out and "trained 1 epochs on cpu" in out
    assert "on images decoded to 8x8 pixels x 3 color channels" in out
    assert "[6/6] Evaluation on the 8 test images" in out
    assert "of 8 test images correctly" in out
    assert "Prediction trace of test image 0 (true label:" in out
    assert "input (Input)             (1, 3, 8, 8)" in out
    assert f"Saved the fitted pipeline to {model} (safetensors)" in out
    # The file that is no image is skipped with one warning naming it.
    assert result.stderr.count("warning: Skipped 1 unreadable image file(s) of 33") == 1
    assert "broken.png" in result.stderr and "Traceback" not in result.stderr
    assert model.is_file()
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["n_images"] == 8 and len(metrics["history"]) == 1
    for plot in ("training_curves.png", "confusion_matrix.png", "predictions.png"):
        with Image.open(report / plot) as image:
            assert image.size[0] > 100


def test_predict_streams_the_files_of_a_model_trained_on_files(
    trained_on_files, folder_with_a_broken_file, capsys, loading_spy
):
    model, _, _ = trained_on_files
    folder = folder_with_a_broken_file
    with pytest.warns(UserWarning, match=r"(?s)Skipped 1 unreadable.*broken\.png"):
        status = main(["predict", str(model), str(folder), "--output-format", "json"])
    assert status == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 32 and {row["label"] for row in rows} <= {"cat", "dog"}
    assert loading_spy.decoded() == 0  # the classifier read the files itself


def test_evaluate_streams_the_folder_and_decodes_only_the_grid(
    trained_on_files, folder_with_a_broken_file, tmp_path, capsys, loading_spy
):
    model, _, _ = trained_on_files
    report = tmp_path / "evaluation"
    with pytest.warns(UserWarning, match="broken.png"):
        status = main(
            ["evaluate", str(model), str(folder_with_a_broken_file)]
            + ["--report", str(report)]
        )
    assert status == 0
    out = capsys.readouterr().out
    assert "[2/2] Evaluation on the 32 images of" in out
    assert "32 images x 8x8 pixels x 3 color channels, decoded batch by batch" in out
    assert "of 32 images correctly" in out
    assert json.loads((report / "metrics.json").read_text())["n_images"] == 32
    with Image.open(report / "predictions.png") as image:
        assert image.size[0] > 100
    assert (report / "confusion_matrix.png").is_file()
    assert loading_spy.folder_listings() == [True]
    assert loading_spy.decoded() == 16  # the prediction grid only


def test_predict_and_evaluate_a_pipeline_of_augmenters_fitted_on_files(
    folder_with_a_broken_file, tmp_path, capsys, loading_spy
):
    """A model fitted on paths in Python at their own size, read by the command."""
    import joblib
    from sklearn.pipeline import Pipeline

    from sklearn_cnn import CNNImageClassifier
    from sklearn_cnn.augmentation import RandomHorizontalFlip
    from sklearn_cnn.datasets import load_image_folder

    paths, y = load_image_folder(
        folder_with_a_broken_file, paths_only=True, return_X_y=True
    )
    readable = [not path.endswith("broken.png") for path in paths]
    model = Pipeline(
        [
            ("flip", RandomHorizontalFlip(random_state=0)),
            ("cnn", CNNImageClassifier(filters=(4,), dense_units=8, epochs=1)),
        ]
    ).fit(paths[readable], y[readable])
    joblib.dump(model, tmp_path / "model.pkl")
    # Larger than the 8x8 files it was fitted on: resized to the fitted size.
    large = tmp_path / "large.png"
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(large)
    status = main(["predict", str(tmp_path / "model.pkl"), str(large)])
    assert status == 0
    assert capsys.readouterr().out.splitlines()[1].startswith(str(large))
    with pytest.warns(UserWarning, match="broken.png"):
        status = main(
            ["evaluate", str(tmp_path / "model.pkl"), str(folder_with_a_broken_file)]
        )
    assert status == 0 and "of 32 images correctly" in capsys.readouterr().out
    assert loading_spy.decoded() == 0


def test_train_fine_tunes_a_backbone_from_a_state_dict_file(
    tmp_path, capsys, monkeypatch
):
    """--backbone and --weights, offline: the weights come from a file."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty torch cache"))

    def no_network(url, *args, **kwargs):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    folder = write_folder(tmp_path / "data", n_per_class=6, size=8)
    model = tmp_path / "model.safetensors"
    status = main(
        ["train", str(folder), "--backbone", "resnet18", "--weights", str(weights)]
        + ["--image-size", "32", "--epochs", "1", "--test-size", "4"]
        + ["--output", str(model), "--report", ""]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert f"resnet18 (weights {weights}) -> linear head, softmax over 2 classes" in out
    assert "backbone frozen for the first 1 epoch(s)" in out
    assert "on images decoded to 32x32 pixels x 3 color channels" in out
    assert "of 4 test images correctly" in out
    assert "body.layer4" in out  # the trace goes through the backbone
    assert model.is_file()


# -- bad input: one line on stderr, non-zero exit, no traceback -----------------------
def assert_one_line_error(status, capsys, match):
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("sklearn-cnn: error: ") and err.count("\n") == 1, err
    assert match in err
    assert "Traceback" not in err


def test_offline_weights_error_names_the_flag(tmp_path, capsys, torch_cache):
    folder = write_folder(tmp_path / "data", n_per_class=6, size=8)
    status = main(
        ["train", str(folder), "--backbone", "resnet18", "--weights", "DEFAULT"]
        + ["--image-size", "32", "--epochs", "1", "--test-size", "4"]
        + ["--output", str(tmp_path / "model.safetensors"), "--report", ""]
    )
    err = capsys.readouterr().err
    assert status == 1
    assert "drop --weights for random weights" in err, err
    assert "weights=None" not in err


def test_bad_input_through_the_real_entry_point(tmp_path):
    result = run_cli("train", tmp_path / "missing", *TINY)
    assert result.returncode == 1
    assert result.stderr.startswith("sklearn-cnn: error: Image folder")
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1


def test_train_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(
        main(["train", str(tmp_path / "empty")]), capsys, "no class sub-folders"
    )
    one_class = tmp_path / "one"
    write_folder(one_class, n_per_class=2)
    shutil.rmtree(one_class / "dog")
    assert_one_line_error(main(["train", str(one_class)]), capsys, "single class in")
    no_images = tmp_path / "no_images"
    (no_images / "cat").mkdir(parents=True)
    (no_images / "dog").mkdir()
    assert_one_line_error(main(["train", str(no_images)]), capsys, "Found no images")
    assert_one_line_error(
        main(["train", "--n-samples", "3000"]), capsys, "more than the 2000 images"
    )
    (tmp_path / "folder").mkdir()
    assert_one_line_error(
        main(["train", "--output", str(tmp_path / "folder")]),
        capsys,
        "is a folder, but a model is saved as one file",
    )


def test_model_errors(trained, images, tmp_path, capsys):
    model, _, _ = trained
    text_file = tmp_path / "notes.txt"
    text_file.write_text("this is not a model\n")
    assert_one_line_error(
        main(["predict", str(text_file), str(images)]),
        capsys,
        "is not a model file sklearn-cnn can read",
    )
    damaged = tmp_path / "damaged.pkl"
    damaged.write_bytes(b"\x80\x04garbage")
    status = main(["predict", str(damaged), str(images)])
    err = capsys.readouterr().err
    assert status == 1 and "cannot read model" in err and "a pickle file" in err
    assert err.count("Error") <= 1, err  # the exception's name at most once
    assert_one_line_error(
        main(["evaluate", str(tmp_path / "nope.pkl"), str(images)]),
        capsys,
        "does not exist",
    )
    assert_one_line_error(
        main(["evaluate", str(model), str(images), "--image-size", "8"]),
        capsys,
        "fitted on images of shape (height, width, channels) = (16, 16, 3)",
    )
    assert_one_line_error(
        main(["predict", str(model), str(tmp_path / "nothing.png")]),
        capsys,
        "no such image file or folder",
    )
    bird = write_folder(tmp_path / "birds", n_per_class=1)
    (bird / "dog").rename(bird / "bird")
    assert_one_line_error(
        main(["evaluate", str(model), str(bird)]),
        capsys,
        "'bird' that the model was not trained on; it knows 'cat', 'dog'",
    )


def test_train_help_says_the_command_augments_unlike_the_estimator(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Unlike CNNImageClassifier() with its defaults, the command augments" in (
        help_text
    )


def test_train_validation_share_draws_the_validation_curves(tmp_path, capsys):
    report = tmp_path / "report"
    args = ["train", *TINY, "--epochs", "2", "--validation", "0.25"]
    assert (
        main([*args, "--output", str(tmp_path / "m.pkl"), "--report", str(report)]) == 0
    )
    out = capsys.readouterr().out
    assert "25% of the training images held out to validate every epoch" in out
    assert "valid_loss" in out
    history = json.loads((report / "metrics.json").read_text())["history"]
    assert len(history) == 2 and all("valid_loss" in row for row in history)


@pytest.mark.parametrize(
    "args, match",
    [
        (["train", "--epochs", "0"], "expected a positive integer"),
        (["train", "--image-size", "big"], "expected a positive size"),
        (["train", "--test-size", "1.5"], "expected a share between 0 and 1"),
        (["train", "--validation", "1"], "expected a share between 0 and 1"),
        (["train", "--validation", "20"], "expected a share between 0 and 1"),
        (["train", "--augment", "zoom"], "unknown augmentation 'zoom'"),
        (["train", "--filters", "a,b"], "expected filters per block"),
        (["predict", "model.pkl"], "the following arguments are required"),
    ],
)
def test_usage_errors_exit_2(args, match, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert match in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("sklearn-cnn") is None, reason="not pip-installed")
def test_installed_console_script():
    result = subprocess.run(
        ["sklearn-cnn", "--version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    assert result.stdout.startswith("sklearn-cnn ")
    np.testing.assert_equal(result.stderr, "")


# -- flags: whole names only, each sub-command reports its own errors -----------------
@pytest.mark.parametrize(
    "args, usage, unknown",
    [
        (["train", "--epoch", "2"], "usage: sklearn-cnn train", "--epoch"),
        (
            ["predict", "m", "i", "--output-fmt", "csv"],
            "usage: sklearn-cnn predict",
            "--output-fmt",
        ),
        (
            ["evaluate", "m", "d", "--repor", "r"],
            "usage: sklearn-cnn evaluate",
            "--repor",
        ),
        (["--deb", "train"], "usage: sklearn-cnn [-h]", "--deb"),
    ],
)
def test_abbreviated_or_misspelled_flags_are_usage_errors(args, usage, unknown, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage), err
    assert unknown in err


# -- option errors: plain sentences, once, before any stage prints --------------------
def assert_error_before_any_work(args, capsys, match):
    status = main(args)
    out, err = capsys.readouterr()
    assert status == 1 and out == "", out
    assert err.startswith("sklearn-cnn: error: ") and err.count("\n") == 1, err
    assert match in err
    return err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_without_cuda_is_reported_before_any_work(capsys):
    err = assert_error_before_any_work(
        ["train", "--device", "cuda"], capsys, "PyTorch finds no CUDA GPU"
    )
    assert "device=" not in err and "--device cpu" in err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_missing_gpu_index_is_reported_before_any_work(capsys):
    assert_error_before_any_work(
        ["train", "--device", "cuda:99"], capsys, "numbered from 0 to"
    )


def test_option_errors_come_before_any_work(tmp_path, capsys):
    assert_error_before_any_work(
        ["train", "--device", "banana"], capsys, "'banana' is not a device name"
    )
    assert_error_before_any_work(
        ["train", *TINY, "--n-samples", "10", "--test-size", "10"],
        capsys,
        "cannot hold out --test-size 10 of 10 images",
    )
    blocker = tmp_path / "a file"
    blocker.write_text("")
    assert_error_before_any_work(
        ["train", "--report", str(blocker / "report")], capsys, "is a file"
    )
    assert_error_before_any_work(
        ["train", "--output", str(blocker / "model.safetensors")], capsys, "is a file"
    )
    with pytest.raises(SystemExit):
        main(["train", "--rotation", "-5"])
    assert "expected an angle from 0 to 180 degrees" in capsys.readouterr().err


# -- the end of the output: the whole run's time, and what to do about skipped plots ---
def test_last_lines_time_the_whole_run_and_say_how_to_get_plots(tmp_path):
    # A process that sleeps, then cannot import matplotlib, then runs the command:
    # the wall time counts from the process's start.
    code = (
        "import sys, time; sys.modules['matplotlib'] = None; time.sleep(2); "
        "from sklearn_cnn.cli import main; sys.exit(main())"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code, "train", *TINY, "--n-samples", "40"]
        + ["--image-size", "8", "--augment", "none"]
        + ["--output", str(tmp_path / "model"), "--report", str(tmp_path / "report")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    *_, wall_time, plots = result.stdout.splitlines()
    assert wall_time.startswith("Wall time: ")
    assert float(wall_time.split()[2]) >= 2.0
    assert "Plots skipped: matplotlib is not installed" in plots
    assert "pip install matplotlib" in plots
    assert (tmp_path / "report" / "metrics.json").is_file()


def test_matplotlib_is_installed_with_the_package():
    """``pip install . && sklearn-cnn train`` writes the plots: no extra needed."""
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = [
        requirement.split(">")[0].split("=")[0].split("[")[0].strip()
        for requirement in pyproject["project"]["dependencies"]
    ]
    assert "matplotlib" in names


# -- Ctrl-C: one line, status 130, no half-written model, at any moment -------------
# The command runs under a driver that stops it at a given moment (the start of
# an import, the opening of a file, a text on stdout, the renaming of a written
# file into place) and says so on stderr; the test then sends a real SIGINT.
PAUSING_DRIVER = r"""
import os, sys, time
from sklearn_cnn.cli import main

kind, target = os.environ["PAUSE_AT"].split(":", 1)
paused = False


def pause():
    global paused
    paused = True
    sys.stdout.flush()
    sys.stderr.write("PAUSED\n")
    sys.stderr.flush()
    while True:
        time.sleep(0.01)


def on_event(event, args):
    if paused:
        return
    if (
        (kind == "import" and event == "import" and args[0] == target)
        or (kind == "open" and event == "open" and str(args[0]).endswith(target))
        or (kind == "rename" and event == "os.rename" and str(args[1]) == target)
    ):
        pause()


class PausingStdout:
    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        written = self.stream.write(text)
        if not paused and target in text:
            pause()
        return written

    def __getattr__(self, name):
        return getattr(self.stream, name)


if kind == "stdout":
    sys.stdout = PausingStdout(sys.stdout)
else:
    sys.addaudithook(on_event)
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "moment, not_reached",
    [
        ("import:torch", "[2/6]"),  # importing (torch comes with stage 2)
        ("open:cat_dog_silhouettes.npz", "[1/6]"),  # loading the data
        ("stdout:train_loss", "trained"),  # training: inside skorch's fit
        ("stdout:[6/6]", "predicted"),  # evaluating
        ("rename:MODEL", "Saved"),  # writing: the model is whole, not yet in place
    ],
)
def test_ctrl_c_ends_with_one_line_and_status_130(moment, not_reached, tmp_path):
    import signal

    model = tmp_path / "out" / "model.safetensors"
    moment = moment.replace("MODEL", str(model))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PAUSE_AT": moment}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    args = ["train", *TINY, "--n-samples", "40", "--image-size", "8", "--epochs", "2"]
    args += ["--output", str(model), "--report", str(tmp_path / "report")]
    with open(tmp_path / "stdout", "w") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-c", PAUSING_DRIVER, *args],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        before = []
        for line in process.stderr:
            if line == "PAUSED\n":
                break
            before.append(line)
        else:
            process.wait(timeout=600)
            pytest.fail(f"never reached {moment}: {''.join(before)}")
        process.send_signal(signal.SIGINT)
        after = process.stderr.read()
        status = process.wait(timeout=600)
    assert status == 130
    assert after == "sklearn-cnn: interrupted\n", after
    assert "Traceback" not in "".join(before)
    assert not_reached not in (tmp_path / "stdout").read_text()
    # Nothing half-written: no model, no temporary file beside it.
    assert not model.parent.exists() or list(model.parent.iterdir()) == []


def test_train_help_shows_the_classifiers_defaults_and_examples(capsys):
    from sklearn_cnn import CNNImageClassifier
    from sklearn_cnn._cli.train import CLASSIFIER_DEFAULTS

    defaults = CNNImageClassifier().get_params()
    for parameter, shown in CLASSIFIER_DEFAULTS.items():
        value = defaults[parameter]
        expected = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        assert shown == expected, parameter
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "the classifier's" not in out
    assert "(default: 16,32,64,128)" in out and "(default: 0.001)" in out
    assert "examples:" in out and "--backbone resnet18 --weights DEFAULT" in out
