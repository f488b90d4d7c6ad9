"""sklearn-cnn: convolutional image classifiers with scikit-learn's manners."""

from ._accelerate import AcceleratedCNNImageClassifier
from ._classifier import CNNImageClassifier
from ._persistence import load_model, save_model

__version__ = "0.1.0"

__all__ = [
    "AcceleratedCNNImageClassifier",
    "CNNImageClassifier",
    "__version__",
    "load_model",
    "save_model",
]
