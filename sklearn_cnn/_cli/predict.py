"""``sklearn-cnn predict``: the label and its probability for each image.

A model trained on files (see :func:`.images.reads_files`) is handed the file
paths and decodes them batch by batch; a model whose first step needs pixels
(the ImageScaler of one trained on the embedded data) gets them decoded here.
"""

from __future__ import annotations

import os

from . import parsing
from .common import CommandError
from .models import input_size, load_model, to_channels

OUTPUT_FORMATS = ("table", "csv", "json")


def add_parser(commands) -> None:
    """Add ``predict`` to the sub-commands ``commands``."""
    parser = commands.add_parser(
        "predict",
        help="label images with a trained model",
        description="Print the predicted label and its probability for each image.",
    )
    parser.add_argument("model", metavar="MODEL", help="a model saved by 'train'")
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE_OR_FOLDER",
        help="image files, or folders searched for images",
    )
    parser.add_argument(
        "--output-format",
        choices=OUTPUT_FORMATS,
        default=OUTPUT_FORMATS[0],
        help="how to print the predictions (default: table)",
    )
    parsing.add_image_size_option(parser)
    parser.set_defaults(run=run)


def run(args, started: float) -> int:
    """Run ``sklearn-cnn predict``; nothing but the predictions goes to stdout."""
    missing = [path for path in args.images if not os.path.exists(path)]
    if missing:
        raise CommandError(f"no such image file or folder: {missing[0]!r}")
    model = load_model(args.model)
    rows = _predictions(model, args.images, args.image_size)
    printer = {"table": _print_table, "csv": _print_csv, "json": _print_json}
    printer[args.output_format](rows, model.classes_)
    return 0


def _predictions(model, paths, image_size) -> list[dict]:
    import numpy as np

    from sklearn_cnn.datasets import load_images

    from .images import decode_at_fitted_size, readable, reads_files

    if reads_files(model):
        filenames = readable(
            load_images(paths, paths_only=True).filenames, where="the given paths"
        )
        decode_at_fitted_size(model, image_size)
        probabilities = model.predict_proba(filenames)
    else:
        size, channels = input_size(model, image_size)
        images = load_images(paths, image_size=size)
        probabilities = model.predict_proba(to_channels(images.data, channels))
        filenames = images.filenames
    classes = model.classes_
    return [
        {
            "path": str(path),
            "label": classes[i].item() if hasattr(classes[i], "item") else classes[i],
            "probability": float(row[i]),
            "probabilities": {
                str(label): float(value) for label, value in zip(classes, row)
            },
        }
        for path, i, row in zip(
            filenames, np.argmax(probabilities, axis=1), probabilities
        )
    ]


def _print_json(rows, classes) -> None:
    import json

    print(json.dumps(rows, indent=2))


def _print_csv(rows, classes) -> None:
    import csv
    import sys

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(
        ["path", "label", "probability"] + [f"p_{label}" for label in classes]
    )
    for row in rows:
        writer.writerow(
            [row["path"], row["label"], f"{row['probability']:.4f}"]
            + [f"{value:.4f}" for value in row["probabilities"].values()]
        )


def _print_table(rows, classes) -> None:
    path_width = max(len("image"), *(len(row["path"]) for row in rows))
    label_width = max(len("label"), *(len(str(row["label"])) for row in rows))
    print(f"{'image':<{path_width}}  {'label':<{label_width}}  probability")
    for row in rows:
        print(
            f"{row['path']:<{path_width}}  {row['label']!s:<{label_width}}  "
            f"{row['probability']:11.3f}"
        )
