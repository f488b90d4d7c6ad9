"""sklearn-cnn: convolutional image classifiers with scikit-learn's manners."""

from . import _lazy

__version__ = "0.1.0"

__all__ = [
    "AcceleratedCNNImageClassifier",
    "CNNImageClassifier",
    "__version__",
    "load_model",
    "save_model",
]

# Imported on first use, so that ``import sklearn_cnn`` does not import torch.
__getattr__, __dir__ = _lazy.attach(
    __name__,
    submodules=["augmentation", "datasets", "inspection", "preprocessing", "utils"],
    attributes={
        "_accelerate": ["AcceleratedCNNImageClassifier"],
        "_classifier": ["CNNImageClassifier"],
        "_persistence": ["load_model", "save_model"],
    },
)
