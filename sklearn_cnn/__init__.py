"""sklearn-cnn: convolutional image classifiers with scikit-learn's manners."""

from ._classifier import CNNImageClassifier

__version__ = "0.1.0"

__all__ = ["CNNImageClassifier", "__version__"]
