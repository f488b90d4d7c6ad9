"""``sklearn-cnn train``: the six stages, a prediction trace, the model file, a report.

The embedded data set is trained on in memory, as an array of pixels scaled by
an ImageScaler. A folder is trained on as file paths, which the classifier
decodes batch by batch (see :ref:`large_data`): memory holds a few decoded
batches whatever the size of the folder, and only the images that the trace and
the prediction grid show are decoded here.

Every stage is a function of its own, called in order by :func:`run`. A flag that
sets a parameter of the classifier stores its value under ``cnn__<parameter>``
(see :func:`_add_classifier_options`), and :func:`_training_stage` hands every
such value to the pipeline's ``set_params``: a new classifier flag is one
``add_argument`` call and nothing else.
"""

from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path

from . import parsing
from .common import CommandError, indent, shape, stage
from .images import shown_images
from .models import FORMATS, SUFFIXES, check_output_path, save_model
from .report import GRID_SIZE, check_report_folder, finish, write_report

DEFAULT_REPORT_DIR = "sklearn_cnn_report"
DEFAULT_MODEL_STEM = "sklearn_cnn_model"
EMBEDDED_IMAGES = 2000
# The classifier's name in the pipeline, and so the prefix of its parameters.
CLASSIFIER = "cnn"


# -- the parser ----------------------------------------------------------------------
def add_parser(commands) -> None:
    """Add ``train`` to the sub-commands ``commands``."""
    parser = commands.add_parser(
        "train",
        help="train a classifier and report on it",
        description=textwrap.fill(
            "Train an image classifier in six stages: load the images, scale their "
            "pixels, hold out test images, set up random augmentation, train a "
            "convolutional network and evaluate it on the test images. Then trace "
            "one prediction layer by layer, save the fitted pipeline and write "
            "plots to a report folder. The images of a folder are read from their "
            "files batch by batch as the network trains, so a folder larger than "
            "memory trains too. Unlike CNNImageClassifier() with its defaults, "
            "the command augments the training images (flip and rotation; "
            "--augment none trains on them as they are), which changes the "
            "scores: give the estimator augment=RandomAugment(...) to match.",
            width=79,
        ),
        epilog=_EXAMPLES,
        # The description is wrapped above; the examples keep their lines.
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_data_options(parser)
    _add_augmentation_options(parser)
    _add_classifier_options(parser)
    _add_recipe_options(parser)
    _add_output_options(parser)
    parser.set_defaults(run=run)


def _add_data_options(parser) -> None:
    parser.add_argument(
        "data_dir",
        nargs="?",
        metavar="DATA_DIR",
        help=(
            "folder with one sub-folder of images per class, read batch by batch; "
            "default: the embedded cats and dogs silhouettes, held in memory"
        ),
    )
    group = parser.add_argument_group("data")
    group.add_argument(
        "--targets",
        metavar="FILE.csv",
        default=None,
        help="learn the targets of a CSV of path,target rows instead of class "
        "sub-folders: numbers (path,0.75, or path,0.2;1.5 for several) train a "
        "regressor, label sets (path,cat;outdoor) a multi-label classifier, one "
        "name per row a classifier; relative paths are read from DATA_DIR if "
        "given, else from the CSV's folder",
    )
    group.add_argument(
        "--image-size",
        type=parsing.image_size,
        default=(64, 64),
        metavar="SIZE",
        help="resize images to SIZE, such as 64 or 64x48 (default: 64)",
    )
    group.add_argument(
        "--n-samples",
        type=parsing.positive_int,
        default=None,
        metavar="N",
        help=(
            "use N images, a stratified random subset (default: 1000 of the embedded "
            "data, all images of a folder)"
        ),
    )
    group.add_argument(
        "--test-size",
        type=parsing.share_or_count,
        default=0.2,
        metavar="SHARE",
        help="share (0.2) or number (200) of images held out for testing "
        "(default: 0.2)",
    )
    group.add_argument(
        "--validation",
        type=parsing.share,
        default=None,
        metavar="SHARE",
        help="hold out this share (0.1) of the training images and score every "
        "epoch on them: the epoch table and the training curves then show the "
        "validation loss beside the training loss, so overfitting shows; the "
        "weights of the epoch with the lowest validation loss are kept "
        "(default: none held out)",
    )
    group.add_argument(
        "--seed",
        type=parsing.seed,
        default=0,
        help="random seed of every stage (default: 0)",
    )


def _add_augmentation_options(parser) -> None:
    group = parser.add_argument_group("augmentation")
    group.add_argument(
        "--augment",
        type=parsing.augmentations,
        default=parsing.AUGMENTATIONS,
        metavar="LIST",
        help="train-time augmentations: flip, rotate, both (flip,rotate; the default) "
        "or none",
    )
    group.add_argument(
        "--rotation",
        type=parsing.degrees,
        default=15.0,
        metavar="DEGREES",
        help="largest random rotation either way (default: 15)",
    )


# Classifier flags of one value each: flag, parameter, parser, metavar, help.
_EXAMPLES = """\
examples:
  sklearn-cnn train
      the embedded cats and dogs, 64x64 pixels
  sklearn-cnn train photos/ --image-size 128 --epochs 10
      a folder with one sub-folder per class, read batch by batch
  sklearn-cnn train --epochs 20 --validation 0.1
      a tenth of the training images scores every epoch: overfitting shows
  sklearn-cnn train --targets ages.csv --image-size 96
      a regressor of the numbers in ages.csv, rows such as faces/001.jpg,34
  sklearn-cnn train --targets tags.csv
      multi-label: rows such as photos/001.jpg,beach;sunset
  sklearn-cnn train photos/ --backbone resnet18 --weights DEFAULT --image-size 224
      fine-tune a pretrained network (weights from the torch cache)
  sklearn-cnn train --augment none --output model.safetensors --report ""
      no augmentation, the model saved there, no report folder"""

# The classifier's defaults, shown in --help without importing torch; a test
# checks them against CNNImageClassifier().get_params().
CLASSIFIER_DEFAULTS = {
    "filters": "16,32,64,128",
    "dense_units": "64",
    "epochs": "5",
    "batch_size": "16",
    "lr": "0.001",
}

_TRAINING_FLAGS = (
    (
        "--filters",
        "filters",
        parsing.filters,
        "LIST",
        "convolution filters per block, such as 16,32,64",
    ),
    (
        "--dense-units",
        "dense_units",
        parsing.positive_int,
        "N",
        "units of the hidden dense layer",
    ),
    ("--epochs", "epochs", parsing.positive_int, "N", "training epochs"),
    (
        "--batch-size",
        "batch_size",
        parsing.positive_int,
        "N",
        "images per training step",
    ),
    (
        "--lr",
        "lr",
        parsing.rate,
        "RATE",
        "learning rate, or auto: the rate a range test on the training images suggests",
    ),
)


def _add_classifier_options(parser) -> None:
    """Flags passed to the classifier: ``dest`` is ``cnn__`` + its parameter.

    A flag not given is absent (``argparse.SUPPRESS``), so the classifier's own
    default applies: the command and ``CNNImageClassifier()`` train alike.
    """
    group = parser.add_argument_group(
        "network and training", argument_default=argparse.SUPPRESS
    )
    group.add_argument(
        "--backbone",
        dest=f"{CLASSIFIER}__backbone",
        metavar="NAME",
        help="fine-tune a torchvision network, such as resnet18 or "
        "mobilenet_v3_small, or timm/NAME for a timm one, instead of the built-in "
        "CNN; --filters and --dense-units then do not apply (default: the "
        "built-in CNN)",
    )
    group.add_argument(
        "--weights",
        dest=f"{CLASSIFIER}__weights",
        metavar="WEIGHTS",
        help="starting weights of the --backbone: DEFAULT or a torchvision weights "
        "name such as IMAGENET1K_V1 (from the torch cache, downloaded when online), "
        "or a .safetensors, .pt or .pth state-dict file (default: random)",
    )
    for flag, parameter, parse, metavar, text in _TRAINING_FLAGS:
        group.add_argument(
            flag,
            dest=f"{CLASSIFIER}__{parameter}",
            type=parse,
            metavar=metavar,
            help=f"{text} (default: {CLASSIFIER_DEFAULTS[parameter]})",
        )
    group.add_argument(
        "--device",
        dest=f"{CLASSIFIER}__device",
        default="auto",
        metavar="DEVICE",
        help="cpu, cuda, cuda:1... or auto: CUDA when available (default: auto)",
    )
    group.add_argument(
        "--precision",
        dest=f"{CLASSIFIER}__precision",
        choices=("auto", "float32", "bfloat16"),
        help="the arithmetic of training and prediction: auto is bfloat16 where "
        "the hardware runs it natively; float32 gives a model whose 'export' "
        "graph matches it exactly (default: auto)",
    )


# Recipe flags of classifiers only: a regressor refuses them with this note.
_CLASSIFICATION_ONLY = {
    "label_smoothing": "--label-smoothing",
    "mixup_alpha": "--mixup",
    "cutmix_alpha": "--cutmix",
}


def _add_recipe_options(parser) -> None:
    """The training recipe: each flag one parameter, absent unless given."""
    group = parser.add_argument_group(
        "training recipe (each off by default)", argument_default=argparse.SUPPRESS
    )
    group.add_argument(
        "--tta",
        dest=f"{CLASSIFIER}__test_time_augmentation",
        choices=("none", "flip"),
        help="test-time augmentation: flip averages the prediction of each image "
        "and its mirror, in the evaluation and in the saved model (default: none)",
    )
    group.add_argument(
        "--label-smoothing",
        dest=f"{CLASSIFIER}__label_smoothing",
        type=parsing.smoothing,
        metavar="EPS",
        help="spread EPS (such as 0.1) of each training target over all the "
        "classes (default: 0)",
    )
    group.add_argument(
        "--mixup",
        dest=f"{CLASSIFIER}__mixup_alpha",
        type=parsing.alpha,
        metavar="ALPHA",
        help="blend training batches with mixup, Beta(ALPHA, ALPHA) shares, such "
        "as 0.2 (default: 0, off)",
    )
    group.add_argument(
        "--cutmix",
        dest=f"{CLASSIFIER}__cutmix_alpha",
        type=parsing.alpha,
        metavar="ALPHA",
        help="paste boxes between training images with cutmix, such as 1.0; with "
        "--mixup, one of the two per batch (default: 0, off)",
    )
    group.add_argument(
        "--ema",
        dest=f"{CLASSIFIER}__ema_decay",
        type=parsing.decay,
        nargs="?",
        const=0.999,
        metavar="DECAY",
        help="keep a moving average of the weights (decay 0.999, or DECAY) and "
        "predict with it (default: off)",
    )


def _add_output_options(parser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument(
        "--output",
        "-o",
        metavar="PATH",
        default=None,
        help=(
            "where to save the fitted pipeline, exactly this path "
            f"(default: {DEFAULT_MODEL_STEM}{SUFFIXES[FORMATS[0]]})"
        ),
    )
    group.add_argument(
        "--format",
        choices=FORMATS,
        default=FORMATS[0],
        help=(
            f"how to save the model (default: {FORMATS[0]}); safetensors files load "
            "without running code, pickle files can run code when loaded: load "
            "them only from sources you trust"
        ),
    )
    group.add_argument(
        "--report",
        metavar="DIR",
        default=DEFAULT_REPORT_DIR,
        help=(
            "folder for the plots and metrics; an empty string writes none "
            f"(default: {DEFAULT_REPORT_DIR})"
        ),
    )


def _classifier_parameters(args) -> dict:
    """``{"cnn__epochs": 5, ...}``: the classifier flags, as Pipeline parameters."""
    prefix = f"{CLASSIFIER}__"
    parameters = {
        key: value for key, value in vars(args).items() if key.startswith(prefix)
    }
    if parameters.get(f"{prefix}test_time_augmentation") == "none":
        parameters[f"{prefix}test_time_augmentation"] = None
    if f"{prefix}ema_decay" in parameters:
        parameters[f"{prefix}weight_averaging"] = "ema"
    return parameters


# -- the command ---------------------------------------------------------------------
def run(args, started: float) -> int:
    """Run ``sklearn-cnn train``; ``started`` is the run's ``perf_counter`` start."""
    output = _check_options(args)
    X, y, origin, task = _load_data(args)
    # Split before anything is printed: a --test-size that does not fit the data
    # is an error in the options, reported before any stage.
    X_train, X_test, y_train, y_test = _split(X, y, args, task)
    files = args.data_dir is not None or args.targets is not None
    _data_stage(X, y, origin, task, image_size=args.image_size if files else None)
    _preprocessing_stage(None if files else X)
    _split_stage(X_train, X_test, args.seed, task, files=files)
    augmenter = _augmentation_stage(args)
    model = _training_stage(args, augmenter, X_train, y_train, task, files=files)
    metrics = _evaluation_stage(model, X_test, y_test, task)
    # The trace shows one test image, the report's grid a few more.
    n_shown = GRID_SIZE if args.report else 1
    shown = shown_images(model, X_test[:n_shown], y_test[:n_shown], files=files)
    _print_prediction_trace(shown, task)
    save_model(model, output, args.format)
    print(f"Saved the fitted pipeline to {output} ({args.format})")
    plotted = True
    if args.report:
        metrics["history"] = model[-1].history_
        plotted = write_report(
            args.report,
            model,
            shown,
            metrics,
            history=True,
            evaluated=(X_test, y_test),
            task=task,
        )
    return finish(started, plotted=plotted)


def _check_options(args) -> Path:
    """The errors that the options alone show, found before any work is done."""
    output = Path(args.output or DEFAULT_MODEL_STEM + SUFFIXES[args.format])
    check_output_path(output)
    if args.report:
        check_report_folder(args.report)
    if args.data_dir is None and (args.n_samples or 0) > EMBEDDED_IMAGES:
        raise CommandError(
            f"--n-samples {args.n_samples} is more than the {EMBEDDED_IMAGES} "
            "images of the embedded data set"
        )
    _check_device(vars(args)[f"{CLASSIFIER}__device"])
    return output


def _check_device(name: str) -> None:
    """A device that this machine has; a sentence saying what to use if not."""
    if name == "auto":
        return
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise CommandError(
            f"--device {name!r} is not a device name; use cpu, cuda, cuda:N (the "
            "N-th GPU), mps or auto"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise CommandError(
                f"--device {name}: PyTorch finds no CUDA GPU on this machine; use "
                "--device cpu, or --device auto to use a GPU when there is one"
            )
        if device.index is not None and device.index >= count:
            raise CommandError(
                f"--device {name}: this machine has {count} CUDA GPU(s), numbered "
                f"from 0 to {count - 1}"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CommandError(
            f"--device {name}: Apple's MPS is not available on this machine; use "
            "--device cpu or --device auto"
        )


def _load_data(args):
    """Images (pixels, or the paths of a folder's files), labels and where they
    came from; the stage is printed later.
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    from sklearn_cnn.datasets import load_cats_dogs, load_image_folder

    from .images import readable
    from .tasks import CLASSIFICATION, read_targets

    if args.targets is not None:
        X, y, task = read_targets(args.targets, args.data_dir)
        where, origin = repr(args.targets), f"the targets file {args.targets}"
    elif args.data_dir is None:
        data = load_cats_dogs(
            image_size=args.image_size,
            n_samples=args.n_samples or 1000,
            random_state=args.seed,
        )
        origin = "the embedded cats and dogs silhouettes (Animal-MNIST, MIT License)"
        return data.data, data.target, origin, CLASSIFICATION
    else:
        X, y = load_image_folder(args.data_dir, paths_only=True, return_X_y=True)
        task, where = CLASSIFICATION, repr(args.data_dir)
        origin = f"folder {args.data_dir}"
    if args.n_samples is not None and args.n_samples < len(X):
        X, _, y, _ = train_test_split(
            X,
            y,
            train_size=args.n_samples,
            stratify=task.stratify(y),
            random_state=args.seed,
        )
    X, y = readable(X, y, where=where)
    task.check(y, where)
    return X, np.asarray(y), origin, task


def _split(X, y, args, task):
    """``X_train, X_test, y_train, y_test``, stratified by class."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(
            X,
            y,
            test_size=args.test_size,
            stratify=task.stratify(y),
            random_state=args.seed,
        )
    except ValueError as error:
        raise CommandError(
            f"cannot hold out --test-size {args.test_size} of {len(X)} images: {error}"
        ) from None


def _data_stage(X, y, origin: str, task, *, image_size) -> None:
    """Images in memory; or, with ``image_size``, the files they are read from."""
    classes = task.describe(y)
    if image_size is not None:
        height, width = image_size
        stage(
            1,
            "Data loading",
            f"{len(X)} image files, {classes}",
            f"from {origin}",
            f"listed without decoding: the classifier decodes them to {height}x"
            f"{width} pixels batch by batch as it trains, so memory holds a few "
            "batches, not the folder",
            f"X {len(X)} file paths; y {shape(y)}",
        )
        return
    height, width, channels = X.shape[1:]
    stage(
        1,
        "Data loading",
        f"{len(X)} images x {height}x{width} pixels x {channels} color channels, "
        f"{classes}",
        f"from {origin}",
        f"X {shape(X)}, pixels {X.min()}-{X.max()}; y {shape(y)}",
    )


def _preprocessing_stage(X) -> None:
    """The pipeline's first step, shown on a few images; None for files."""
    if X is None:
        stage(
            2,
            "Preprocessing",
            "pixels 0-255 -> 0.0-1.0 by the classifier, batch by batch as the files "
            "are decoded: no ImageScaler step, which would need every image "
            "decoded in memory",
        )
        return
    from sklearn_cnn.preprocessing import ImageScaler

    sample = ImageScaler().fit_transform(X[:16])
    stage(
        2,
        "Preprocessing",
        "pixels 0-255 -> 0.0-1.0 (ImageScaler, the pipeline's first step): "
        f"{X.dtype} -> {sample.dtype}, "
        f"range {sample.min():.1f}-{sample.max():.1f}",
    )


def _split_stage(X_train, X_test, seed: int, task, *, files: bool) -> None:
    stratified = "stratified, " if task.name == "classification" else ""
    shapes = (
        f"X_train {len(X_train)} file paths, X_test {len(X_test)} file paths"
        if files
        else f"X_train {shape(X_train)}, X_test {shape(X_test)}"
    )
    stage(
        3,
        "Train/test split",
        f"{len(X_train)} training, {len(X_test)} testing ({stratified}seed {seed})",
        shapes,
    )


def _augmentation_stage(args):
    """The augmenter of the ``--augment`` list, or None."""
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
        stage(4, "Augmentation", "none")
        return None
    stage(
        4,
        "Augmentation",
        ", ".join(words) + ", drawn afresh for every training batch in every epoch",
    )
    return RandomAugment(steps=steps, random_state=args.seed)


def _training_stage(args, augmenter, X_train, y_train, task, *, files: bool):
    """The fitted pipeline: scaler, augmenter (if any) and classifier for pixels;
    the classifier alone, with the augmenter as its ``augment``, for files.

    Image files go to the classifier, which decodes them at ``--image-size``,
    scales their pixels and augments them batch by batch. An augmenter given as
    its parameter, rather than as a Pipeline step, sees no files at all: the
    saved model holds the classifier and its parameters only.
    """
    from sklearn.pipeline import Pipeline

    from sklearn_cnn.preprocessing import ImageScaler

    classifier = task.estimator(random_state=args.seed, verbose=1)
    if files:
        classifier.set_params(image_size=args.image_size, augment=augmenter)
        steps = [(CLASSIFIER, classifier)]
    else:
        steps = [("scale", ImageScaler()), ("augment", augmenter)]
        steps = [step for step in steps if step[1] is not None]
        steps.append((CLASSIFIER, classifier))
    model = Pipeline(steps)
    parameters = _classifier_parameters(args)
    if task.name == "regression":
        given = [
            flag
            for name, flag in _CLASSIFICATION_ONLY.items()
            if f"{CLASSIFIER}__{name}" in parameters
        ]
        if given:
            raise CommandError(
                f"{', '.join(given)} apply to classes and labels; the targets of "
                f"{args.targets!r} are numbers, which train a regressor"
            )
    model.set_params(**parameters)
    if args.validation is not None:
        # The estimator holds images out only to stop early; a patience of every
        # epoch never stops, so the split only adds the validation columns.
        classifier.set_params(
            early_stopping=True,
            validation_fraction=args.validation,
            n_iter_no_change=classifier.epochs,
        )
    stage(
        5,
        "Training",
        _describe_network(classifier, output=task.output_layer(y_train)),
        _describe_training(classifier),
    )
    start = time.perf_counter()
    try:
        model.fit(X_train, y_train)
    except FileNotFoundError as error:
        # The estimator's advice names its parameter; here the flag is the knob.
        raise CommandError(
            str(error).replace("pass weights=None", "drop --weights")
        ) from None
    print(
        f"      trained {classifier.n_iter_} epochs on {classifier.device_} in "
        f"{time.perf_counter() - start:.1f} s"
    )
    if files:
        height, width, channels = classifier.image_shape_
        print(
            f"      on images decoded to {height}x{width} pixels x {channels} color "
            "channels"
        )
    return model


def _describe_network(classifier, *, output: str) -> str:
    backbone = getattr(classifier, "backbone", None)
    if backbone is not None:
        weights = classifier.weights
        start = "random weights" if weights is None else f"weights {weights}"
        return f"{backbone} ({start}) -> linear head, {output}"
    layers = [f"conv {n}" for n in classifier.filters]
    if classifier.dense_units:
        layers.append(f"dense {classifier.dense_units}")
    layers.append(output)
    return "CNN: " + " -> ".join(layers)


def _describe_training(classifier) -> str:
    decay = " with cosine decay" if classifier.lr_schedule == "cosine" else ""
    frozen = ""
    if getattr(classifier, "weights", None) is not None and classifier.freeze_epochs:
        frozen = f", backbone frozen for the first {classifier.freeze_epochs} epoch(s)"
    held_out = ""
    if classifier.early_stopping:
        held_out = (
            f", {classifier.validation_fraction:.0%} of the training images held "
            "out to validate every epoch"
        )
    rate = classifier.lr
    rate = "found by a range test" if rate == "auto" else f"{rate:g}"
    recipe = _describe_recipe(classifier)
    return (
        f"{classifier.epochs} epochs, batch size {classifier.batch_size}, learning "
        f"rate {rate}{decay}{frozen}{held_out}{recipe}, device {classifier.device}"
    )


def _describe_recipe(classifier) -> str:
    """The recipe settings that are on, as ``, label smoothing 0.1, ...``."""
    params = classifier.get_params()
    words = []
    if params.get("label_smoothing"):
        words.append(f"label smoothing {params['label_smoothing']:g}")
    if params.get("mixup_alpha"):
        words.append(f"mixup alpha {params['mixup_alpha']:g}")
    if params.get("cutmix_alpha"):
        words.append(f"cutmix alpha {params['cutmix_alpha']:g}")
    if params.get("weight_averaging") == "ema":
        words.append(f"weights averaged (EMA, decay {params['ema_decay']:g})")
    if params.get("test_time_augmentation") == "flip":
        words.append("predictions averaged with the mirror image")
    return "".join(f", {word}" for word in words)


def _evaluation_stage(model, X_test, y_test, task) -> dict:
    stage(6, f"Evaluation on the {len(X_test)} test images")
    return task.evaluate(model, X_test, y_test, what="test images")


def _print_prediction_trace(shown, task) -> None:
    from sklearn_cnn.inspection import layer_trace

    estimator, images, labels = shown
    truth = task.label_text(labels[0])
    what = "true target" if task.name == "regression" else "true label"
    if task.name == "multi-label":
        what = "true labels"
    print(f"\nPrediction trace of test image 0 ({what}: {truth})")
    print(indent(str(layer_trace(estimator, images[0]))))
    print()
