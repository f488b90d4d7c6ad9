"""``sklearn-cnn predict``: the label and its probability for each image.

A regressor prints its values; a multi-label model the numbers of the labels
over probability 0.5 (the columns of its indicator matrix, in the order of the
label names that ``train --targets`` printed).

A model trained on files (see :func:`.images.reads_files`) is handed the file
paths and decodes them batch by batch; a model whose first step needs pixels
(the ImageScaler of one trained on the embedded data) gets them decoded here.
"""

from __future__ import annotations

import os

from . import parsing
from .common import CommandError
from .models import input_size, load_model, to_channels
from .tasks import task_of

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
    task = task_of(model).name
    outputs = _outputs(model, args.images, args.image_size)
    if task != "classification":
        _print_values(_value_rows(model, task, *outputs), args.output_format)
        return 0
    rows = _rows(model, *outputs)
    printer = {"table": _print_table, "csv": _print_csv, "json": _print_json}
    printer[args.output_format](rows, model.classes_)
    return 0


def _outputs(model, paths, image_size):
    """``(filenames, outputs)``: probabilities of a classifier, values of a
    regressor, for the readable images of ``paths``."""
    from sklearn_cnn.datasets import load_images

    from .images import decode_at_fitted_size, readable, reads_files

    if reads_files(model):
        filenames = readable(
            load_images(paths, paths_only=True).filenames, where="the given paths"
        )
        decode_at_fitted_size(model, image_size)
        images = filenames
    else:
        size, channels = input_size(model, image_size)
        loaded = load_images(paths, image_size=size)
        images, filenames = to_channels(loaded.data, channels), loaded.filenames
    predict = model.predict_proba if hasattr(model, "predict_proba") else model.predict
    return filenames, predict(images)


def _rows(model, filenames, probabilities) -> list[dict]:
    import numpy as np

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


def _value_rows(model, task: str, filenames, outputs) -> list[dict]:
    """Rows of a regressor (its values) or a multi-label model (labels over 0.5)."""
    import numpy as np

    rows = []
    for path, row in zip(filenames, np.asarray(outputs)):
        if task == "regression":
            rows.append({"path": str(path), "prediction": row.tolist()})
            continue
        classes = [int(label) for label in model.classes_]
        rows.append(
            {
                "path": str(path),
                "labels": [label for label, p in zip(classes, row) if p > 0.5],
                "probabilities": {str(c): float(p) for c, p in zip(classes, row)},
            }
        )
    return rows


def _print_values(rows, output_format: str) -> None:
    """The rows of :func:`_value_rows`: numbers, or label columns of the indicator."""
    if output_format == "json":
        _print_json(rows, None)
        return

    def cell(value) -> str:
        if isinstance(value, list):
            return ";".join(
                f"{item:.6g}" if isinstance(item, float) else str(item)
                for item in value
            )
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    key = "prediction" if "prediction" in rows[0] else "labels"
    if output_format == "csv":
        import csv
        import sys

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["path", key])
        for row in rows:
            writer.writerow([row["path"], cell(row[key])])
        return
    path_width = max(len("image"), *(len(row["path"]) for row in rows))
    print(f"{'image':<{path_width}}  {key}")
    for row in rows:
        print(f"{row['path']:<{path_width}}  {cell(row[key])}")


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
