"""``sklearn-cnn evaluate``: the evaluation stage of ``train`` on a labelled folder.

A model trained on files is handed the folder's file paths and decodes them
batch by batch; only the images of the report's prediction grid are decoded
here. A model whose first step needs pixels gets the folder decoded.
"""

from __future__ import annotations

from . import parsing
from .common import PROGRAM, CommandError, class_counts, stage
from .models import input_size, load_model, to_channels
from .report import GRID_SIZE, check_report_folder, evaluate, finish, write_report


def add_parser(commands) -> None:
    """Add ``evaluate`` to the sub-commands ``commands``."""
    parser = commands.add_parser(
        "evaluate",
        help="evaluate a trained model on a labelled image folder",
        description=(
            "Accuracy, loss, per-class precision and recall and the confusion matrix "
            "of a trained model on a folder with one sub-folder of images per class."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="a model saved by 'train'")
    parser.add_argument(
        "data_dir", metavar="DATA_DIR", help="folder with one sub-folder per class"
    )
    parsing.add_image_size_option(parser)
    parser.add_argument(
        "--report",
        metavar="DIR",
        default=None,
        help=(
            "also write the confusion matrix, a prediction grid, activation maps, "
            "the top losses and metrics to DIR"
        ),
    )
    parser.set_defaults(run=run)


def run(args, started: float) -> int:
    """Run ``sklearn-cnn evaluate``; ``started`` is the run's ``perf_counter`` start."""
    import numpy as np

    from sklearn_cnn.datasets import load_image_folder

    from .images import decode_at_fitted_size, readable, reads_files, shown_images
    from .tasks import task_of

    if args.report:
        check_report_folder(args.report)
    model = load_model(args.model)
    task = task_of(model)
    if task.name != "classification":
        raise CommandError(
            f"model {args.model!r} is a {task.name} model, and 'evaluate' reads "
            "classes from the sub-folder names of DATA_DIR; its evaluation on the "
            f"held-out images is in the report of '{PROGRAM} train --targets'"
        )
    if np.issubdtype(np.asarray(model.classes_).dtype, np.number):
        raise CommandError(
            "the model's classes are numbers, but folder labels are folder names; "
            f"'{PROGRAM} evaluate' needs a model trained on named classes"
        )
    stage(
        1,
        f"Model {args.model}",
        f"{type(model).__name__} of {len(model.classes_)} classes "
        f"({', '.join(map(str, model.classes_))})",
        total=2,
    )
    size, channels = input_size(model, args.image_size)
    files = reads_files(model)
    if files:
        # Streamed: the classifier decodes the files batch by batch.
        X, y = load_image_folder(args.data_dir, paths_only=True, return_X_y=True)
        X, y = readable(X, y, where=repr(args.data_dir))
        decode_at_fitted_size(model, args.image_size)
        how = ", decoded batch by batch"
    else:
        data = load_image_folder(args.data_dir, image_size=size, verbose="auto")
        X, y = to_channels(data.data, channels), data.target
        size, channels, how = X.shape[1:3], X.shape[3], ""
    height, width = size
    stage(
        2,
        f"Evaluation on the {len(X)} images of {args.data_dir}",
        f"{len(X)} images x {height}x{width} pixels x {channels} color channels"
        f"{how}, {len(np.unique(y))} classes ({class_counts(y)})",
        total=2,
    )
    metrics = evaluate(model, X, y, what="images")
    plotted = True
    if args.report:
        # Spread over the folder, which is sorted by class: every class shows.
        picked = np.unique(np.linspace(0, len(X) - 1, GRID_SIZE).round().astype(int))
        shown = shown_images(model, X[picked], y[picked], files=files)
        plotted = write_report(
            args.report, model, shown, metrics, history=False, evaluated=(X, y)
        )
    return finish(started, plotted=plotted)
