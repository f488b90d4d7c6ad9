"""sklearn-cnn: convolutional image classifiers with scikit-learn's manners."""

from ._accelerate import AcceleratedCNNImageClassifier
from ._classifier import CNNImageClassifier
from ._features import CNNFeatureExtractor
from ._persistence import load_model, save_model

__version__ = "0.1.0"

__all__ = [
    "AcceleratedCNNImageClassifier",
    "CNNFeatureExtractor",
    "CNNImageClassifier",
    "__version__",
    "load_model",
    "save_model",
]
