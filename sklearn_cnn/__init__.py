"""sklearn-cnn: convolutional image classifiers with scikit-learn's manners."""

from ._classifier import CNNImageClassifier
from ._persistence import load_model, save_model

__version__ = "0.1.0"

__all__ = [
    "CNNImageClassifier",
    "__version__",
    "load_model",
    "save_model",
]


def __getattr__(name):
    if name == "AcceleratedCNNImageClassifier":
        import warnings

        warnings.warn(
            "AcceleratedCNNImageClassifier is now CNNImageClassifier(accelerator=...)"
            "; the old name will be removed in sklearn-cnn 0.3.",
            FutureWarning,
            stacklevel=2,
        )
        return CNNImageClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
