"""scikit-learn's estimator checks over every public estimator of the package.

Estimators are found from the public ``__all__`` lists, so a new estimator is
checked the day it is exported. Constructor parameters that keep the checks
fast live in ``FAST_PARAMS``; checks an estimator is known to fail, with the
reason, in ``EXPECTED_FAILED_CHECKS``.
"""

from __future__ import annotations

import importlib
import inspect

from sklearn.base import BaseEstimator
from sklearn.utils.estimator_checks import parametrize_with_checks

PUBLIC_MODULES = (
    "sklearn_cnn",
    "sklearn_cnn.preprocessing",
    "sklearn_cnn.augmentation",
)

# Parameters that make each estimator quick on the checks' small data.
FAST_PARAMS = {
    # Enough training for check_classifiers_train's accuracy bar on its blobs.
    "CNNImageClassifier": dict(
        epochs=10, filters=(8,), dense_units=16, batch_size=32, lr=0.01, random_state=0
    ),
    "ImageResizer": dict(size=(4, 4)),
    # A small, quickly built torchvision network (random weights: no download).
    "CNNFeatureExtractor": dict(backbone="mobilenet_v3_small", precision="float32"),
}

# Augmenters: ``fit_transform`` draws a random augmentation while ``transform``
# is the identity, by design (documented like TargetEncoder's fit_transform).
# The ``non_deterministic`` tag makes scikit-learn skip the checks that compare
# the two, so nothing is left to list here.
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {
    "CNNImageClassifier": {
        "check_sample_weight_equivalence_on_dense_data": (
            "Minibatch training: a weight of 2 is not a repeated image, which "
            "lands in another shuffled batch and in other batch-norm statistics; "
            "scikit-learn expects the same of SGDClassifier and MLPClassifier."
        ),
    },
}


def _public_estimator_classes():
    classes = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            candidate = getattr(module, name)
            if (
                inspect.isclass(candidate)
                and issubclass(candidate, BaseEstimator)
                and not name.startswith("Base")
            ):
                classes[name] = candidate
    return [classes[name] for name in sorted(classes)]


ESTIMATORS = [
    cls(**FAST_PARAMS.get(cls.__name__, {})) for cls in _public_estimator_classes()
]


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


def test_every_public_estimator_is_checked():
    names = {type(estimator).__name__ for estimator in ESTIMATORS}
    assert {"ImageScaler", "ImageStandardizer", "ImageResizer"} <= names
    assert {"RandomAugment", "RandomRotation", "RandomErasing"} <= names


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
