"""What ``train --targets`` learns: a CSV of targets, and the three tasks.

A targets file has one row per image, ``path,target``: the path of an image
file (relative to the CSV's folder, or to DATA_DIR when one is given) and its
target. The targets decide the task:

* every target is a number, or several numbers joined by ``;`` (the same count
  on every row): regression, with a :class:`~sklearn_cnn.CNNImageRegressor`;
* some target holds ``;`` (``cat;outdoor``), or is empty: multi-label, with a
  :class:`~sklearn_cnn.CNNImageClassifier` fitted on the indicator matrix of
  :class:`~sklearn.preprocessing.MultiLabelBinarizer`;
* otherwise one class name per image, as the sub-folders of a folder give.

A first row whose path is ``path`` (or ``file``, ``filename``, ``image``) is
a header and is skipped. Each task knows what the command prints and plots for
it: :func:`task_of` returns the one of a fitted model.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .common import CommandError, class_counts, indent

HEADER_NAMES = {"path", "file", "filename", "image", "image_path"}


# -- the targets file ------------------------------------------------------------------
def read_targets(csv_path: str, root: str | None):
    """``(paths, y, task)`` of a targets CSV; ``root`` anchors relative paths."""
    import numpy as np

    csv_file = Path(csv_path)
    if not csv_file.is_file():
        raise CommandError(f"--targets {csv_path!r}: no such file")
    base = Path(root) if root is not None else csv_file.parent
    paths, targets = [], []
    with csv_file.open(newline="", encoding="utf-8-sig") as stream:
        for number, row in enumerate(csv.reader(stream), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2:
                raise CommandError(
                    f"--targets {csv_path!r}, line {number}: expected two fields, "
                    f"path,target, got {len(row)}: {','.join(row)!r}"
                )
            path, target = row[0].strip(), row[1].strip()
            if not paths and path.lower() in HEADER_NAMES:
                continue
            paths.append(str(base / path))
            targets.append(target)
    if not paths:
        raise CommandError(f"--targets {csv_path!r} lists no images")
    missing = [path for path in paths if not Path(path).is_file()]
    if missing:
        raise CommandError(
            f"--targets {csv_path!r}: {len(missing)} of the {len(paths)} listed "
            f"files do not exist, the first one {missing[0]!r} (relative paths are "
            f"read from {str(base)!r})"
        )
    task = _task_of_targets(targets, csv_path)
    y = task.parse(targets, csv_path)
    return np.asarray(paths, dtype=object), y, task


def _task_of_targets(targets: list[str], csv_path: str):
    if all(_numbers(target) is not None for target in targets):
        return REGRESSION
    if any(";" in target or not target for target in targets):
        return MultiLabel()
    return CLASSIFICATION


def _numbers(target: str) -> list[float] | None:
    """The numbers of a ``1.5`` or ``1.5;2`` target; None if it is not numbers."""
    try:
        return [float(part) for part in target.split(";")]
    except ValueError:
        return None


# -- the tasks ----------------------------------------------------------------------
class Classification:
    """One class per image: a CNNImageClassifier, accuracy and per-class scores."""

    name = "classification"

    def parse(self, targets, csv_path):
        import numpy as np

        return np.asarray(targets, dtype=object)

    def stratify(self, y):
        return y

    def describe(self, y) -> str:
        import numpy as np

        return f"{len(np.unique(y))} classes ({class_counts(y)})"

    def check(self, y, where: str) -> None:
        import numpy as np

        classes = np.unique(y)
        if len(classes) < 2:
            raise CommandError(
                f"found a single class in {where} with readable images: "
                f"{classes[0].item()!r}. A classifier needs at least two classes: "
                "add one sub-folder of images per class"
            )

    def estimator(self, **params):
        from sklearn_cnn import CNNImageClassifier

        return CNNImageClassifier(**params)

    def output_layer(self, y) -> str:
        import numpy as np

        return f"softmax over {len(np.unique(y))} classes"

    def label_text(self, label) -> str:
        return str(label)

    def evaluate(self, model, X, y, *, what: str) -> dict:
        from .report import evaluate

        return evaluate(model, X, y, what=what)


class MultiLabel(Classification):
    """Any number of labels per image: sigmoid outputs, per-label scores."""

    name = "multi-label"

    def __init__(self, names=()):
        # The label of each column of y, set by parse.
        self.names = list(names)

    def parse(self, targets, csv_path):
        from sklearn.preprocessing import MultiLabelBinarizer

        sets = [
            sorted({label.strip() for label in target.split(";") if label.strip()})
            for target in targets
        ]
        binarizer = MultiLabelBinarizer()
        indicator = binarizer.fit_transform(sets)
        self.names = [str(name) for name in binarizer.classes_]
        return indicator

    def stratify(self, y):
        return None

    def describe(self, y) -> str:
        counts = ", ".join(
            f"{number} {name}: {count}"
            for number, (name, count) in enumerate(zip(self.names, y.sum(axis=0)))
        )
        return (
            f"{len(self.names)} labels, numbered as the model's columns ({counts} "
            f"images), {y.sum(axis=1).mean():.2f} per image on average"
        )

    def check(self, y, where: str) -> None:
        if not self.names:
            raise CommandError(f"the targets in {where} name no label at all")

    def output_layer(self, y) -> str:
        return f"sigmoid over {len(self.names)} labels"

    def label_text(self, label) -> str:
        import numpy as np

        chosen = [name for name, on in zip(self.names, np.ravel(label)) if on]
        return "{" + ", ".join(chosen) + "}"

    def evaluate(self, model, X, y, *, what: str) -> dict:
        import numpy as np
        from sklearn.metrics import (
            accuracy_score,
            classification_report,
            f1_score,
            hamming_loss,
            precision_recall_fscore_support,
        )

        names = self.names
        y = np.asarray(y)
        probabilities = model.predict_proba(X)
        predicted = (probabilities > 0.5).astype(int)
        subset = accuracy_score(y, predicted)
        f1 = f1_score(y, predicted, average="samples", zero_division=1.0)
        hamming = hamming_loss(y, predicted)
        n_correct = int(np.all(predicted == y, axis=1).sum())
        print(
            f"      sample F1 {f1:.3f}, subset accuracy {subset:.3f}, "
            f"hamming loss {hamming:.4f}"
        )
        print(f"      every label right on {n_correct} of {len(y)} {what}")
        report = classification_report(
            y, predicted, target_names=names, digits=3, zero_division=0
        )
        print(indent(report.rstrip()))
        precision, recall, _, support = precision_recall_fscore_support(
            y, predicted, zero_division=0
        )
        return {
            "n_images": len(y),
            "n_correct": n_correct,
            "f1_samples": float(f1),
            "subset_accuracy": float(subset),
            "hamming_loss": float(hamming),
            "labels": names,
            "per_label": {
                name: {"precision": float(p), "recall": float(r), "support": int(s)}
                for name, p, r, s in zip(names, precision, recall, support)
            },
        }


class Regression:
    """One or several numbers per image: a CNNImageRegressor, R² and errors."""

    name = "regression"

    def parse(self, targets, csv_path):
        import numpy as np

        rows = [_numbers(target) for target in targets]
        counts = {len(row) for row in rows}
        if len(counts) > 1:
            raise CommandError(
                f"--targets {csv_path!r}: every row must hold the same number of "
                f"numbers; found rows of {', '.join(map(str, sorted(counts)))}"
            )
        y = np.asarray(rows, dtype=np.float64)
        return y[:, 0] if y.shape[1] == 1 else y

    def stratify(self, y):
        return None

    def describe(self, y) -> str:
        import numpy as np

        y = np.asarray(y)
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        numbers = "1 number" if n_outputs == 1 else f"{n_outputs} numbers"
        return (
            f"targets of {numbers} per image, from {y.min():g} to {y.max():g} "
            f"(mean {y.mean():g})"
        )

    def check(self, y, where: str) -> None:
        import numpy as np

        if np.ptp(np.asarray(y), axis=0).min() == 0:
            raise CommandError(
                f"the targets in {where} do not vary: a regressor needs different "
                "values to learn from"
            )

    def estimator(self, **params):
        from sklearn_cnn import CNNImageRegressor

        return CNNImageRegressor(**params)

    def output_layer(self, y) -> str:
        import numpy as np

        n_outputs = 1 if np.ndim(y) == 1 else np.shape(y)[1]
        return f"linear output of {n_outputs} number(s)"

    def label_text(self, label) -> str:
        import numpy as np

        return ", ".join(f"{value:.4g}" for value in np.ravel(label))

    def evaluate(self, model, X, y, *, what: str) -> dict:
        import numpy as np
        from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

        y = np.asarray(y, dtype=np.float64)
        predicted = np.asarray(model.predict(X), dtype=np.float64)
        r2 = r2_score(y, predicted)
        mae = mean_absolute_error(y, predicted)
        rmse = float(np.sqrt(mean_squared_error(y, predicted)))
        print(
            f"      R² {r2:.3f}, mean absolute error {mae:.4g}, root mean squared "
            f"error {rmse:.4g} on the {len(y)} {what}"
        )
        return {
            "n_images": len(y),
            "r2": float(r2),
            "mean_absolute_error": float(mae),
            "root_mean_squared_error": rmse,
            "predictions": [
                {"true": true.tolist(), "predicted": pred.tolist()}
                for true, pred in zip(y, predicted)
            ],
        }


CLASSIFICATION = Classification()
REGRESSION = Regression()


def task_of(model):
    """The task of a fitted model (a Pipeline or an estimator)."""
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    if not hasattr(final, "classes_"):
        return REGRESSION
    if getattr(final, "multilabel_", False):
        return MultiLabel([str(label) for label in final.classes_])
    return CLASSIFICATION
