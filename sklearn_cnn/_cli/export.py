"""``sklearn-cnn export``: a model as one ONNX file, checked with onnxruntime."""

from __future__ import annotations

from pathlib import Path

from .common import CommandError
from .models import load_model

LAYOUTS = ("nhwc", "nchw")
# Random images the exported graph is checked on, when onnxruntime is installed.
_N_CHECKED = 4


def add_parser(commands) -> None:
    """Add ``export`` to the sub-commands ``commands``."""
    parser = commands.add_parser(
        "export",
        help="export a trained model to ONNX",
        description=(
            "Write a trained model as one ONNX graph that takes uint8 images and "
            "returns the class probabilities, the preprocessing included; the "
            "class labels are in its metadata. With onnxruntime installed, the "
            "graph is checked against the model on a few random images."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="a model saved by 'train'")
    parser.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default=LAYOUTS[0],
        help=(
            "the graph's input: nhwc is (batch, height, width, channels), nchw "
            "(batch, channels, height, width) (default: nhwc)"
        ),
    )
    parser.set_defaults(run=run)


def run(args, started: float) -> int:
    """Run ``sklearn-cnn export``."""
    output = Path(args.output)
    if output.is_dir():
        raise CommandError(
            f"{str(output)!r} is a folder; give the path of the .onnx file to write"
        )
    model = load_model(args.model)
    from sklearn_cnn import export_onnx

    try:
        export_onnx(model, output, layout=args.layout)
    except TypeError as error:
        raise CommandError(str(error)) from None
    from .models import model_image_shape

    height, width, channels = model_image_shape(model)
    shape = (
        f"(batch, {height}, {width}, {channels})"
        if args.layout == "nhwc"
        else f"(batch, {channels}, {height}, {width})"
    )
    print(f"Exported {args.model} to {output}")
    print(f"      input 'images': uint8 {shape}")
    if hasattr(model, "predict_proba"):
        classes = ", ".join(map(str, model.classes_))
        what = (
            "label"
            if getattr(
                model[-1] if hasattr(model, "steps") else model, "multilabel_", False
            )
            else "class"
        )
        print(f"      output 'probabilities': one column per {what} ({classes})")
    else:
        print("      output 'predictions': the regressor's values, on their own scale")
    _check(model, output, args.layout, (height, width, channels))
    return 0


def _check(model, path: Path, layout: str, image_shape) -> None:
    """Compare the graph with the model on random images, if onnxruntime is here."""
    try:
        import onnxruntime
    except ImportError:
        print("      not checked: onnxruntime is not installed")
        return
    import numpy as np

    images = np.random.default_rng(0).integers(
        0, 256, size=(_N_CHECKED, *image_shape), dtype=np.uint8
    )
    graph_input = images if layout == "nhwc" else images.transpose(0, 3, 1, 2)
    session = onnxruntime.InferenceSession(str(path))
    (outputs,) = session.run(None, {"images": np.ascontiguousarray(graph_input)})
    method = "predict_proba" if hasattr(model, "predict_proba") else "predict"
    expected = np.asarray(getattr(model, method)(images), dtype=np.float64)
    difference = float(np.abs(outputs.reshape(expected.shape) - expected).max())
    print(
        f"      checked with onnxruntime on {_N_CHECKED} random images: largest "
        f"difference from {method} {difference:.1e}"
    )
