"""The ``sklearn-cnn`` command: train, predict and evaluate image classifiers.

A thin layer over the public API: data from :mod:`sklearn_cnn.datasets`, a
Pipeline of :class:`~sklearn_cnn.preprocessing.ImageScaler`,
:class:`~sklearn_cnn.augmentation.RandomAugment` and
:class:`~sklearn_cnn.CNNImageClassifier`, traces and plots from
:mod:`sklearn_cnn.inspection`. Nothing in the package imports this module.

Run ``sklearn-cnn --help`` (or ``python -m sklearn_cnn --help``) for the usage.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PROGRAM = "sklearn-cnn"
DEFAULT_REPORT_DIR = "sklearn_cnn_report"
DEFAULT_MODEL_STEM = "sklearn_cnn_model"
_MODEL_SUFFIXES = {"pickle": ".pkl", "safetensors": ".safetensors"}
_AUGMENTATIONS = ("flip", "rotate")


class CommandError(Exception):
    """A problem with the user's input: reported as one line, no traceback."""


# -- argument parsing ------------------------------------------------------------
def _image_size(text: str) -> tuple[int, int]:
    """``64`` or ``64x48`` (height x width)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        sides = [int(part) for part in parts]
    except ValueError:
        sides = []
    if len(sides) == 1:
        sides *= 2
    if len(sides) != 2 or min(sides) < 1:
        raise argparse.ArgumentTypeError(
            "expected a positive size such as 64 or 64x48 (height x width), "
            f"got {text!r}"
        )
    return sides[0], sides[1]


def _test_size(text: str) -> float | int:
    """A share of the data (0.2) or a number of images (200)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if 0 < value < 1:
        return value
    if value >= 1 and value.is_integer():
        return int(value)
    raise argparse.ArgumentTypeError(
        f"expected a share between 0 and 1 (such as 0.2) or a number of test "
        f"images (such as 200), got {text!r}"
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _filters(text: str) -> tuple[int, ...]:
    try:
        filters = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        filters = ()
    if not filters or min(filters) < 1:
        raise argparse.ArgumentTypeError(
            "expected filters per block separated by commas, such as 32,64, "
            f"got {text!r}"
        )
    return filters


def _augmentations(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.lower().split(",") if part.strip())
    if names in ((), ("none",)):
        return ()
    unknown = [name for name in names if name not in _AUGMENTATIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown augmentation {unknown[0]!r}: expected 'none' or a "
            f"comma-separated list of {', '.join(_AUGMENTATIONS)}"
        )
    return tuple(dict.fromkeys(names))


def _version() -> str:
    """The installed version, read without importing torch."""
    from importlib import metadata

    try:
        return metadata.version("sklearn-cnn")
    except metadata.PackageNotFoundError:
        from sklearn_cnn import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sklearn-cnn`` command."""
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description=(
            "Train, apply and evaluate convolutional image classifiers. With no data "
            "folder, 'train' learns to tell cats from dogs on the embedded data set."
        ),
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of errors instead of a one-line message",
    )
    from sklearn_cnn import __version__

    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # train
    train = commands.add_parser(
        "train",
        help="train a classifier and report on it",
        description=(
            "Train an image classifier in the six stages of the brief: data loading, "
            "preprocessing, train/test split, augmentation, training and evaluation; "
            "then trace one prediction layer by layer, save the fitted pipeline and "
            "write plots to a report folder."
        ),
    )
    train.add_argument(
        "data_dir",
        nargs="?",
        metavar="DATA_DIR",
        help=(
            "folder with one sub-folder of images per class; default: the embedded "
            "cats and dogs silhouettes"
        ),
    )
    train.add_argument(
        "--epochs", type=_positive_int, default=5, help="training epochs (default: 5)"
    )
    train.add_argument(
        "--image-size",
        type=_image_size,
        default=(64, 64),
        metavar="SIZE",
        help="resize images to SIZE, such as 64 or 64x48 (default: 64)",
    )
    train.add_argument(
        "--test-size",
        type=_test_size,
        default=0.2,
        metavar="SHARE",
        help="share (0.2) or number (200) of images held out for testing "
        "(default: 0.2)",
    )
    train.add_argument(
        "--n-samples",
        type=_positive_int,
        default=None,
        metavar="N",
        help=(
            "use N images, a stratified random subset (default: 1000 of the embedded "
            "data, all images of a folder)"
        ),
    )
    train.add_argument(
        "--augment",
        type=_augmentations,
        default=_AUGMENTATIONS,
        metavar="LIST",
        help="train-time augmentations: flip, rotate, both (flip,rotate; the default) "
        "or none",
    )
    train.add_argument(
        "--rotation",
        type=float,
        default=15.0,
        metavar="DEGREES",
        help="largest random rotation either way (default: 15)",
    )
    train.add_argument(
        "--filters",
        type=_filters,
        # Four small blocks (with the cosine learning-rate decay below): 0.945-0.965
        # test accuracy in 5 epochs on the embedded data (seeds 0-3), against
        # 0.86-0.9 for the classifier's (32, 64), and faster, since the wide
        # layers run on smaller maps.
        default=(16, 32, 64, 128),
        metavar="LIST",
        help="convolution filters per block (default: 16,32,64,128)",
    )
    train.add_argument(
        "--dense-units",
        type=_positive_int,
        default=64,
        metavar="N",
        help="units of the hidden dense layer (default: 64)",
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        default=16,
        metavar="N",
        help="images per training step (default: 16)",
    )
    train.add_argument(
        "--lr",
        type=_positive_float,
        default=1e-3,
        help="learning rate (default: 0.001)",
    )
    train.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda, cuda:1... or auto: CUDA when available (default: auto)",
    )
    train.add_argument(
        "--seed", type=int, default=0, help="random seed of every stage (default: 0)"
    )
    formats = ["safetensors", "pickle"]
    train.add_argument(
        "--output",
        "-o",
        metavar="PATH",
        default=None,
        help=(
            "where to save the fitted pipeline, exactly this path "
            f"(default: {DEFAULT_MODEL_STEM}{_MODEL_SUFFIXES[formats[0]]})"
        ),
    )
    train.add_argument(
        "--format",
        choices=formats,
        default=formats[0],
        help=(
            f"how to save the model (default: {formats[0]}); safetensors files load "
            "without running code, pickle files can run code when loaded: load "
            "them only from sources you trust"
        ),
    )
    train.add_argument(
        "--report",
        metavar="DIR",
        default=DEFAULT_REPORT_DIR,
        help=(
            "folder for the plots and metrics; an empty string writes none "
            f"(default: {DEFAULT_REPORT_DIR})"
        ),
    )
    train.set_defaults(run=_run_train)

    # predict
    predict = commands.add_parser(
        "predict",
        help="label images with a trained model",
        description="Print the predicted label and its probability for each image.",
    )
    predict.add_argument("model", metavar="MODEL", help="a model saved by 'train'")
    predict.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE_OR_FOLDER",
        help="image files, or folders searched for images",
    )
    predict.add_argument(
        "--output-format",
        choices=["table", "csv", "json"],
        default="table",
        help="how to print the predictions (default: table)",
    )
    predict.add_argument(
        "--image-size",
        type=_image_size,
        default=None,
        metavar="SIZE",
        help="resize images to SIZE (default: the size the model was trained on)",
    )
    predict.set_defaults(run=_run_predict)

    # evaluate
    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a trained model on a labelled image folder",
        description=(
            "Accuracy, loss, per-class precision and recall and the confusion matrix "
            "of a trained model on a folder with one sub-folder of images per class."
        ),
    )
    evaluate.add_argument("model", metavar="MODEL", help="a model saved by 'train'")
    evaluate.add_argument(
        "data_dir", metavar="DATA_DIR", help="folder with one sub-folder per class"
    )
    evaluate.add_argument(
        "--image-size",
        type=_image_size,
        default=None,
        metavar="SIZE",
        help="resize images to SIZE (default: the size the model was trained on)",
    )
    evaluate.add_argument(
        "--report",
        metavar="DIR",
        default=None,
        help="also write the confusion matrix, a prediction grid and metrics to DIR",
    )
    evaluate.set_defaults(run=_run_evaluate)
    return parser


# -- saving and loading models -------------------------------------------------------
def _save_model(model, path: Path, model_format: str) -> None:
    """Write ``model`` to exactly ``path``, replacing it only once complete."""
    if path.is_dir():
        raise CommandError(
            f"--output {str(path)!r} is a folder, but a model is saved as one file; "
            "give a file path such as model.safetensors"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if model_format == "safetensors":
        from sklearn_cnn import save_model

        save_model(model, path)
        return
    import joblib

    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    try:
        joblib.dump(model, partial)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _is_safetensors(path: Path) -> bool:
    """True for a safetensors file: 8 bytes of header length, then a JSON object."""
    with open(path, "rb") as file:
        start = file.read(9)
    return len(start) == 9 and start[8:9] == b"{"


def _load_model(path: str):
    """A fitted model saved by ``train``, or a one-line error saying why not."""
    model_path = Path(path)
    if not model_path.exists():
        raise CommandError(f"model {path!r} does not exist")
    if model_path.is_dir():
        raise CommandError(
            f"model {path!r} is a folder; expected a model file saved by "
            f"'{PROGRAM} train'"
        )
    from sklearn_cnn import load_model

    try:
        if _is_safetensors(model_path):
            model = load_model(model_path)
        else:
            import joblib

            model = joblib.load(model_path)
    except Exception as error:
        raise CommandError(
            f"cannot read model {path!r}: it is not a model saved by "
            f"'{PROGRAM} train' ({type(error).__name__}: {_one_line(error)})"
        ) from error
    if not (hasattr(model, "predict") and hasattr(model, "classes_")):
        raise CommandError(
            f"model {path!r} holds a {type(model).__name__}, not a fitted classifier "
            f"saved by '{PROGRAM} train'"
        )
    return model


def _model_image_shape(model) -> tuple[int, int, int] | None:
    """``(height, width, channels)`` of the images the model takes, if it says."""
    steps = [step for _, step in model.steps] if hasattr(model, "steps") else [model]
    for step in steps:
        shape = getattr(step, "image_shape_", None)
        if shape is not None:
            return tuple(shape)
    return None


# -- printing -------------------------------------------------------------------------
def _stage(number: int, title: str, *details: str) -> None:
    print(f"[{number}/6] {title}")
    for detail in details:
        print(f"      {detail}")


def _indent(text: str, prefix: str = "      ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def _counts(y: np.ndarray) -> str:
    labels, counts = np.unique(y, return_counts=True)
    return ", ".join(f"{label} {count}" for label, count in zip(labels, counts))


def _shape(array: np.ndarray) -> str:
    return f"{tuple(array.shape)} {array.dtype}"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, KeyError) and len(error.args) == 1:
        text = str(error.args[0])
    if isinstance(error, (CommandError, ValueError, OSError, ImportError)):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextlib.contextmanager
def _short_warnings():
    """Warnings as ``sklearn-cnn: warning: ...``, without Python's source lines."""
    original = warnings.formatwarning

    def format_warning(message, category, filename, lineno, line=None):
        return f"{PROGRAM}: warning: {message}\n"

    warnings.formatwarning = format_warning
    try:
        yield
    finally:
        warnings.formatwarning = original


# -- the stages -----------------------------------------------------------------------
def _load_training_data(args):
    from sklearn.model_selection import train_test_split

    from sklearn_cnn.datasets import load_cats_dogs, load_image_folder

    if args.data_dir is None:
        n_samples = args.n_samples or 1000
        if n_samples > 2000:
            raise CommandError(
                f"--n-samples {n_samples} is more than the 2000 images of the "
                "embedded data set"
            )
        data = load_cats_dogs(
            image_size=args.image_size, n_samples=n_samples, random_state=args.seed
        )
        origin = "the embedded cats and dogs silhouettes (Animal-MNIST, MIT License)"
        return data.data, data.target, origin
    data = load_image_folder(args.data_dir, image_size=args.image_size, verbose="auto")
    X, y = data.data, data.target
    origin = f"folder {args.data_dir}"
    if args.n_samples is not None and args.n_samples < len(X):
        X, _, y, _ = train_test_split(
            X, y, train_size=args.n_samples, stratify=y, random_state=args.seed
        )
    return X, y, origin


def _augmenter(args):
    from sklearn_cnn.augmentation import (
        RandomAugment,
        RandomHorizontalFlip,
        RandomRotation,
    )

    steps, words = [], []
    if "flip" in args.augment:
        steps.append(("flip", RandomHorizontalFlip()))
        words.append("random horizontal flip")
    if "rotate" in args.augment and args.rotation > 0:
        steps.append(("rotate", RandomRotation(degrees=args.rotation)))
        words.append(f"random rotation up to {args.rotation:g} degrees either way")
    if not steps:
        return None, "none"
    return RandomAugment(steps=steps, random_state=args.seed), ", ".join(words)


def _evaluate(model, X, y, *, what: str) -> dict:
    """Print the evaluation stage's results; return them as a dict."""
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        log_loss,
        precision_recall_fscore_support,
    )

    classes = model.classes_
    unknown = sorted(set(np.unique(y).tolist()) - set(classes.tolist()))
    if unknown:
        raise CommandError(
            f"the {what} have class(es) {', '.join(map(repr, unknown))} that the "
            f"model was not trained on; it knows {', '.join(map(repr, classes))}"
        )
    probabilities = model.predict_proba(X)
    predicted = classes[np.argmax(probabilities, axis=1)]
    accuracy = accuracy_score(y, predicted)
    loss = log_loss(y, probabilities, labels=classes)
    n_correct = int(np.sum(predicted == y))
    print(f"      accuracy {accuracy:.3f}, loss {loss:.4f}")
    print(f"      predicted {n_correct} of {len(y)} {what} correctly")
    report = classification_report(
        y, predicted, labels=classes, digits=3, zero_division=0
    )
    print(_indent(report.rstrip()))
    matrix = confusion_matrix(y, predicted, labels=classes)
    width = max(len(str(label)) for label in classes) + 2
    print("      confusion matrix (rows: true class, columns: predicted class)")
    print("      " + " " * width + "".join(f"{label!s:>{width}}" for label in classes))
    for label, row in zip(classes, matrix):
        cells = "".join(f"{count:>{width}}" for count in row)
        print(f"      {label!s:>{width}}{cells}")
    precision, recall, _, support = precision_recall_fscore_support(
        y, predicted, labels=classes, zero_division=0
    )
    return {
        "n_images": len(y),
        "n_correct": n_correct,
        "accuracy": float(accuracy),
        "log_loss": float(loss),
        "per_class": {
            str(label): {
                "precision": float(p),
                "recall": float(r),
                "support": int(s),
            }
            for label, p, r, s in zip(classes, precision, recall, support)
        },
        "confusion_matrix": matrix.tolist(),
        "classes": [str(label) for label in classes],
    }


def _write_report(report_dir, model, X, y, metrics: dict, *, history: bool) -> None:
    """Plots and metrics in ``report_dir``; plots are skipped without matplotlib."""
    folder = Path(report_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    metrics_path = folder / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    written.append(metrics_path)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "      plots skipped: matplotlib is not installed "
            "(pip install 'sklearn-cnn[plot]')"
        )
    else:
        from sklearn.metrics import ConfusionMatrixDisplay

        from sklearn_cnn.inspection import plot_history, plot_predictions

        if history:
            axes = plot_history(model)
            path = folder / "training_curves.png"
            axes[0].figure.savefig(path, dpi=100)
            plt.close(axes[0].figure)
            written.append(path)
        display = ConfusionMatrixDisplay.from_estimator(model, X, y, cmap="Blues")
        display.ax_.set_title("Confusion matrix")
        path = folder / "confusion_matrix.png"
        display.figure_.savefig(path, dpi=100)
        plt.close(display.figure_)
        written.append(path)
        figure = plot_predictions(model, X, y, n=16)
        path = folder / "predictions.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    print("Report: " + ", ".join(str(path) for path in written))


def _run_train(args) -> int:
    start = time.perf_counter()
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline

    from sklearn_cnn import CNNImageClassifier
    from sklearn_cnn.inspection import layer_trace
    from sklearn_cnn.preprocessing import ImageScaler

    output = Path(args.output or DEFAULT_MODEL_STEM + _MODEL_SUFFIXES[args.format])
    if output.is_dir():
        # Found before training rather than after it.
        raise CommandError(
            f"--output {str(output)!r} is a folder, but a model is saved as one "
            "file; give a file path such as model.safetensors"
        )

    # 1. Data loading
    X, y, origin = _load_training_data(args)
    height, width, channels = X.shape[1:]
    n_classes = len(np.unique(y))
    _stage(
        1,
        "Data loading",
        f"{len(X)} images x {height}x{width} pixels x {channels} color channels, "
        f"{n_classes} classes ({_counts(y)})",
        f"from {origin}",
        f"X {_shape(X)}, pixels {X.min()}-{X.max()}; y {_shape(y)}",
    )

    # 2. Preprocessing: the pipeline's first step, shown on a few images.
    scaler = ImageScaler()
    sample = scaler.fit_transform(X[:16])
    _stage(
        2,
        "Preprocessing",
        "pixels 0-255 -> 0.0-1.0 (ImageScaler, the pipeline's first step): "
        f"{X.dtype} -> {sample.dtype}, "
        f"range {sample.min():.1f}-{sample.max():.1f}",
    )

    # 3. Train/test split
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=args.test_size, stratify=y, random_state=args.seed
        )
    except ValueError as error:
        raise CommandError(
            f"cannot split {len(X)} images for testing: {error}"
        ) from None
    _stage(
        3,
        "Train/test split",
        f"{len(X_train)} training, {len(X_test)} testing "
        f"(stratified, seed {args.seed})",
        f"X_train {_shape(X_train)}, X_test {_shape(X_test)}",
    )

    # 4. Augmentation
    augmenter, described = _augmenter(args)
    _stage(
        4,
        "Augmentation",
        described
        + (
            ", drawn afresh for every training batch in every epoch"
            if augmenter
            else ""
        ),
    )

    # 5. Training
    classifier = CNNImageClassifier(
        filters=args.filters,
        dense_units=args.dense_units,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_schedule="cosine",
        device=args.device,
        random_state=args.seed,
        verbose=1,
    )
    steps = [("scale", ImageScaler())]
    if augmenter is not None:
        steps.append(("augment", augmenter))
    steps.append(("cnn", classifier))
    model = Pipeline(steps)
    _stage(
        5,
        "Training",
        f"CNN: {' -> '.join(f'conv {n}' for n in args.filters)} -> dense "
        f"{args.dense_units} -> softmax over {n_classes} classes",
        f"{args.epochs} epochs, batch size {args.batch_size}, learning rate "
        f"{args.lr:g} with cosine decay, device {args.device}",
    )
    train_start = time.perf_counter()
    model.fit(X_train, y_train)
    fitted = model[-1]
    print(
        f"      trained {fitted.n_iter_} epochs on {fitted.device_} in "
        f"{time.perf_counter() - train_start:.1f} s"
    )

    # 6. Evaluation
    _stage(6, f"Evaluation on the {len(X_test)} test images")
    metrics = _evaluate(model, X_test, y_test, what="test images")

    trace = layer_trace(model, X_test[0])
    print(f"\nPrediction trace of test image 0 (true label: {y_test[0]})")
    print(_indent(str(trace)))
    print()

    _save_model(model, output, args.format)
    print(f"Saved the fitted pipeline to {output} ({args.format})")
    if args.report:
        metrics["history"] = fitted.history_
        _write_report(args.report, model, X_test, y_test, metrics, history=True)
    print(f"Wall time: {time.perf_counter() - start:.1f} s")
    return 0


def _input_size(model, requested) -> tuple[tuple[int, int] | None, int]:
    """The size to load images at, and the model's number of channels."""
    shape = _model_image_shape(model)
    if shape is None:
        return requested, 3
    height, width, channels = shape
    return requested or (height, width), channels


def _to_channels(X: np.ndarray, channels: int) -> np.ndarray:
    """RGB images as the model's channels: grayscale models get luminance."""
    if channels == 1:
        gray = X @ np.array([0.299, 0.587, 0.114])
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8)[..., np.newaxis]
    return X


def _run_predict(args) -> int:
    from sklearn_cnn.datasets import load_images

    model = _load_model(args.model)
    size, channels = _input_size(model, args.image_size)
    missing = [path for path in args.images if not os.path.exists(path)]
    if missing:
        raise CommandError(f"no such image file or folder: {missing[0]!r}")
    images = load_images(args.images, image_size=size)
    X = _to_channels(images.data, channels)
    probabilities = model.predict_proba(X)
    classes = model.classes_
    best = np.argmax(probabilities, axis=1)
    rows = [
        {
            "path": str(path),
            "label": classes[i].item() if hasattr(classes[i], "item") else classes[i],
            "probability": float(row[i]),
            "probabilities": {
                str(label): float(value) for label, value in zip(classes, row)
            },
        }
        for path, i, row in zip(images.filenames, best, probabilities)
    ]
    if args.output_format == "json":
        print(json.dumps(rows, indent=2))
    elif args.output_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(
            ["path", "label", "probability"] + [f"p_{label}" for label in classes]
        )
        for row in rows:
            writer.writerow(
                [row["path"], row["label"], f"{row['probability']:.4f}"]
                + [f"{value:.4f}" for value in row["probabilities"].values()]
            )
        sys.stdout.write(buffer.getvalue())
    else:
        path_width = max(len("image"), *(len(row["path"]) for row in rows))
        label_width = max(len("label"), *(len(str(row["label"])) for row in rows))
        print(f"{'image':<{path_width}}  {'label':<{label_width}}  probability")
        for row in rows:
            print(
                f"{row['path']:<{path_width}}  {row['label']!s:<{label_width}}  "
                f"{row['probability']:11.3f}"
            )
    return 0


def _run_evaluate(args) -> int:
    from sklearn_cnn.datasets import load_image_folder

    start = time.perf_counter()
    model = _load_model(args.model)
    size, channels = _input_size(model, args.image_size)
    data = load_image_folder(args.data_dir, image_size=size, verbose="auto")
    X = _to_channels(data.data, channels)
    y = data.target
    if np.issubdtype(np.asarray(model.classes_).dtype, np.number):
        raise CommandError(
            "the model's classes are numbers, but folder labels are folder names; "
            f"'{PROGRAM} evaluate' needs a model trained on named classes"
        )
    height, width = X.shape[1:3]
    _stage(
        6,
        f"Evaluation on the {len(X)} images of {args.data_dir}",
        f"{len(X)} images x {height}x{width} pixels x {X.shape[3]} color channels, "
        f"{len(data.target_names)} classes ({_counts(y)})",
    )
    metrics = _evaluate(model, X, y, what="images")
    if args.report:
        _write_report(args.report, model, X, y, metrics, history=False)
    print(f"Wall time: {time.perf_counter() - start:.1f} s")
    return 0


# -- entry point -------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sklearn-cnn`` command; return its exit status.

    Parameters
    ----------
    argv : sequence of str, default=None
        The arguments, without the program name; None reads ``sys.argv``.

    Returns
    -------
    status : int
        0 on success, 1 on an error (reported on one line of stderr), 2 on a
        usage error, 130 when interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _short_warnings():
            return args.run(args)
    except KeyboardInterrupt:
        print(f"{PROGRAM}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        print(f"{PROGRAM}: error: {_one_line(error)}", file=sys.stderr)
        return 1
