"""The evaluation stage, shared by ``train`` and ``evaluate``, and the report folder."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

from ..utils._io import write_atomically
from .common import CommandError, indent

# How many test images the prediction grid shows.
GRID_SIZE = 16
# How many of the images the model is most wrong about the report shows.
TOP_LOSSES = 9
PLOTS_SKIPPED = (
    "Plots skipped: matplotlib is not installed. Install it with "
    "'pip install matplotlib' and run the command again to get the plots."
)


def finish(started: float, *, plotted: bool = True) -> int:
    """The last lines: the time of the whole run, then what is left to fix."""
    print(f"Wall time: {time.perf_counter() - started:.1f} s")
    if not plotted:
        print(PLOTS_SKIPPED)
    return 0


def evaluate(model, X, y, *, what: str) -> dict:
    """Print the evaluation stage's results; return them as a dict."""
    import numpy as np
    from sklearn.metrics import accuracy_score, log_loss

    classes = model.classes_
    _check_known_classes(classes, y, what)
    probabilities = model.predict_proba(X)
    predicted = classes[np.argmax(probabilities, axis=1)]
    accuracy = accuracy_score(y, predicted)
    loss = log_loss(y, probabilities, labels=classes)
    n_correct = int(np.sum(predicted == y))
    print(f"      accuracy {accuracy:.3f}, loss {loss:.4f}")
    print(f"      predicted {n_correct} of {len(y)} {what} correctly")
    return {
        "n_images": len(y),
        "n_correct": n_correct,
        "accuracy": float(accuracy),
        "log_loss": float(loss),
        **_per_class(classes, y, predicted),
    }


def _check_known_classes(classes, y, what: str) -> None:
    import numpy as np

    unknown = sorted(set(np.unique(y).tolist()) - set(classes.tolist()))
    if unknown:
        raise CommandError(
            f"the {what} have class(es) {', '.join(map(repr, unknown))} that the "
            "model was not trained on; it knows "
            f"{', '.join(map(repr, classes.tolist()))}"
        )


def _per_class(classes, y, predicted) -> dict:
    """Print precision, recall and the confusion matrix; return them."""
    from sklearn.metrics import (
        classification_report,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    report = classification_report(
        y, predicted, labels=classes, digits=3, zero_division=0
    )
    print(indent(report.rstrip()))
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
        "per_class": {
            str(label): {"precision": float(p), "recall": float(r), "support": int(s)}
            for label, p, r, s in zip(classes, precision, recall, support)
        },
        "confusion_matrix": matrix.tolist(),
        "classes": [str(label) for label in classes],
    }


def check_report_folder(folder: str) -> None:
    """A folder the report can be written to, checked before any work."""
    path = Path(folder)
    blocking = next((part for part in (path, *path.parents) if part.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise CommandError(
            f"--report {folder!r} cannot be written: {str(blocking)!r} is a file, "
            "not a folder"
        )


def write_report(
    folder, model, shown, metrics: dict, *, history: bool, evaluated=None, task=None
) -> bool:
    """Metrics and plots in ``folder``; False when the plots had to be skipped.

    ``shown`` is ``(estimator, images, labels)``: the few decoded images of the
    prediction grid, and what predicts them. The confusion matrix is the one in
    ``metrics``, so that no image is predicted twice. ``evaluated`` is
    ``(images, labels)`` of the whole evaluation: the top losses and the most
    confused classes are found among them. ``task`` (default: the model's) says
    which plots apply: the confusion matrix, activation maps and top losses for
    classes, per-label precision and recall for multi-label, predicted against
    true values for regression.
    """
    from .tasks import task_of

    task = task or task_of(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if evaluated is not None and task.name == "classification":
        from sklearn_cnn.inspection import most_confused

        metrics["most_confused"] = [
            {"true": str(true), "predicted": str(predicted), "count": count}
            for true, predicted, count in most_confused(model, *evaluated)
        ]
    metrics_path = folder / "metrics.json"
    write_atomically(metrics_path, (json.dumps(metrics, indent=2) + "\n").encode())
    written = [metrics_path]
    try:
        written += _write_plots(
            folder,
            model,
            shown,
            metrics,
            history=history,
            evaluated=evaluated,
            task=task.name,
        )
    except ImportError as error:
        if error.name is None or not error.name.startswith("matplotlib"):
            raise
        plotted = False
    else:
        plotted = True
    print("Report: " + ", ".join(str(path) for path in written))
    return plotted


def _save_png(figure, stream) -> None:
    figure.savefig(stream, format="png", dpi=100)


def _write_plots(
    folder: Path, model, shown, metrics: dict, *, history: bool, evaluated, task: str
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    from sklearn_cnn.inspection import (
        plot_class_activation_maps,
        plot_history,
        plot_predictions,
        plot_top_losses,
    )

    figures = {}
    if history:
        figures["training_curves.png"] = plot_history(model)[0].figure
    if task == "classification":
        display = ConfusionMatrixDisplay(
            np.asarray(metrics["confusion_matrix"]), display_labels=model.classes_
        ).plot(cmap="Blues")
        display.ax_.set_title("Confusion matrix")
        figures["confusion_matrix.png"] = display.figure_
    elif task == "multi-label":
        figures["per_label_scores.png"] = _per_label_figure(plt, metrics)
    else:
        figures["predicted_vs_true.png"] = _scatter_figure(plt, metrics)
    estimator, images, labels = shown
    figures["predictions.png"] = plot_predictions(
        estimator, images, labels, n=GRID_SIZE
    )
    if task == "classification":
        # Where the network looked for the predictions of the grid.
        figures["activation_maps.png"] = plot_class_activation_maps(
            estimator, images, labels, n=GRID_SIZE
        )
    if evaluated is not None and task == "classification":
        figures["top_losses.png"] = plot_top_losses(
            model, *evaluated, n=TOP_LOSSES, heatmap=True
        )
    written = []
    for name, figure in figures.items():
        write_atomically(folder / name, functools.partial(_save_png, figure))
        plt.close(figure)
        written.append(folder / name)
    return written


def _per_label_figure(plt, metrics: dict):
    """Precision and recall of each label, side by side, with the support."""
    import numpy as np

    names = metrics["labels"]
    scores = metrics["per_label"]
    positions = np.arange(len(names))
    figure, axis = plt.subplots(
        figsize=(max(5.0, 0.9 * len(names) + 2), 4), layout="constrained"
    )
    for offset, measure in ((-0.2, "precision"), (0.2, "recall")):
        values = [scores[name][measure] for name in names]
        axis.bar(positions + offset, values, width=0.4, label=measure)
    axis.set_xticks(
        positions, [f"{name}\n({scores[name]['support']})" for name in names]
    )
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("score on the test images")
    axis.set_title(
        f"Per-label precision and recall (sample F1 {metrics['f1_samples']:.3f})"
    )
    axis.legend()
    return figure


def _scatter_figure(plt, metrics: dict):
    """Predicted against true values, one panel per output, with the diagonal."""
    import numpy as np

    true = np.asarray([row["true"] for row in metrics["predictions"]], dtype=float)
    predicted = np.asarray(
        [row["predicted"] for row in metrics["predictions"]], dtype=float
    )
    true, predicted = true.reshape(len(true), -1), predicted.reshape(len(true), -1)
    n_outputs = true.shape[1]
    figure, axes = plt.subplots(
        1,
        n_outputs,
        figsize=(4.5 * n_outputs, 4.2),
        squeeze=False,
        layout="constrained",
    )
    for output, axis in enumerate(axes[0]):
        axis.scatter(true[:, output], predicted[:, output], s=12, alpha=0.7)
        low = min(true[:, output].min(), predicted[:, output].min())
        high = max(true[:, output].max(), predicted[:, output].max())
        axis.plot(
            [low, high], [low, high], "k--", linewidth=1, label="predicted = true"
        )
        axis.set_xlabel("true value")
        axis.set_ylabel("predicted value")
        title = f"output {output}" if n_outputs > 1 else "Predicted against true"
        axis.set_title(f"{title} (R² {metrics['r2']:.3f} overall)")
        axis.legend(loc="upper left")
        axis.grid(True, alpha=0.3)
    return figure
