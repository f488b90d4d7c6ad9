"""sklearn-cnn: convolutional image classifiers with scikit-learn's manners."""

from . import _lazy

__version__ = "0.1.0"

__all__ = [
    "CNNFeatureExtractor",
    "CNNImageClassifier",
    "CNNImageRegressor",
    "__version__",
    "export_onnx",
    "load_model",
    "save_model",
]

# Imported on first use, so that ``import sklearn_cnn`` does not import torch.
_public_attribute, __dir__ = _lazy.attach(
    __name__,
    submodules=["augmentation", "datasets", "inspection", "preprocessing", "utils"],
    attributes={
        "_classifier": ["CNNImageClassifier"],
        "_export": ["export_onnx"],
        "_features": ["CNNFeatureExtractor"],
        "_regressor": ["CNNImageRegressor"],
        "_persistence": ["load_model", "save_model"],
    },
)


def __getattr__(name):
    if name == "AcceleratedCNNImageClassifier":
        import warnings

        warnings.warn(
            "AcceleratedCNNImageClassifier is now CNNImageClassifier(accelerator=...)"
            "; the old name will be removed in sklearn-cnn 0.3.",
            FutureWarning,
            stacklevel=2,
        )
        return _public_attribute("CNNImageClassifier")
    return _public_attribute(name)
