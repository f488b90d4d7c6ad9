"""scikit-learn's estimator checks over every public estimator of the package.

Estimators are found from the public ``__all__`` lists, so a new estimator is
checked the day it is exported. Constructor parameters that keep the checks
fast live in ``FAST_PARAMS``; checks an estimator is known to fail, with the
reason, in ``EXPECTED_FAILED_CHECKS``.
"""

from __future__ import annotations

import importlib
import inspect

import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.utils.estimator_checks import (
    check_global_output_transform_pandas,
    check_set_output_transform,
    check_set_output_transform_pandas,
    parametrize_with_checks,
)

from sklearn_cnn.augmentation import BaseAugmenter

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
    # Enough training for check_regressors_train's R² bar on its data.
    "CNNImageRegressor": dict(
        epochs=20, filters=(8,), dense_units=16, batch_size=32, lr=0.01, random_state=0
    ),
    "ImageResizer": dict(size=(4, 4)),
    # A small, quickly built torchvision network (random weights: no download).
    "CNNFeatureExtractor": dict(backbone="mobilenet_v3_small", precision="float32"),
}

# Augmenters: ``fit_transform`` draws one random augmentation while
# ``transform`` passes the images through, by design (nothing is augmented at
# test time; documented like TargetEncoder's fit_transform). The checks below
# compare the two. RandomTranslation and RandomVerticalFlip pass them only
# because the checks' tabular data are images one pixel high, which neither
# changes; any image data would fail them the same way.
_AUGMENTS_IN_FIT_TRANSFORM_ONLY = {
    check: (
        "fit_transform returns a random augmentation and transform returns the "
        "images unchanged, by design; the check compares the two"
    )
    for check in (
        "check_transformer_general",
        "check_transformer_general(readonly_memmap=True)",
        "check_transformer_data_not_an_array",
    )
}
# With set_output(transform="pandas"), an augmenter's fit_transform still
# returns AugmentedImages (with the column names), so that the classifier can
# redraw the augmentation in every epoch; transform returns a DataFrame.
_KEEPS_AUGMENTED_IMAGES = {
    "check_set_output_transform_pandas": (
        "fit_transform returns AugmentedImages, not a DataFrame, to keep "
        "per-epoch augmentation; transform follows set_output"
    ),
    "check_global_output_transform_pandas": (
        "fit_transform returns AugmentedImages, not a DataFrame, to keep "
        "per-epoch augmentation; transform follows the global set_output"
    ),
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

# Augmenters that leave the checks' tabular data (images one pixel high) as it is.
_UNCHANGED_BY_THE_CHECKS_DATA = {"RandomTranslation", "RandomVerticalFlip"}
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {
    "CNNImageRegressor": {
        "check_sample_weight_equivalence_on_dense_data": (
            "Minibatch training: a weight of 2 is not a repeated image, which "
            "lands in another shuffled batch and in other batch-norm statistics; "
            "scikit-learn expects the same of SGDRegressor and MLPRegressor."
        ),
    },
    "CNNImageClassifier": {
        "check_sample_weight_equivalence_on_dense_data": (
            "Minibatch training: a weight of 2 is not a repeated image, which "
            "lands in another shuffled batch and in other batch-norm statistics; "
            "scikit-learn expects the same of SGDClassifier and MLPClassifier."
        ),
    },
} | {
    type(estimator).__name__: (
        _KEEPS_AUGMENTED_IMAGES
        if type(estimator).__name__ in _UNCHANGED_BY_THE_CHECKS_DATA
        else {**_AUGMENTS_IN_FIT_TRANSFORM_ONLY, **_KEEPS_AUGMENTED_IMAGES}
    )
    for estimator in ESTIMATORS
    if isinstance(estimator, BaseAugmenter)
}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


def test_every_public_estimator_is_checked():
    names = {type(estimator).__name__ for estimator in ESTIMATORS}
    assert {"ImageScaler", "ImageStandardizer", "ImageResizer"} <= names
    assert {"RandomAugment", "RandomRotation", "RandomErasing"} <= names


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


# scikit-learn runs its set_output checks apart from parametrize_with_checks.
IMAGE_STEPS = [
    estimator for estimator in ESTIMATORS if hasattr(estimator, "get_feature_names_out")
]


def test_every_transformer_and_augmenter_has_set_output():
    names = {type(estimator).__name__ for estimator in IMAGE_STEPS}
    assert {"ImageScaler", "ImageStandardizer", "ImageResizer"} <= names
    assert all(
        type(estimator).__name__ in names
        for estimator in ESTIMATORS
        if isinstance(estimator, BaseAugmenter)
    )


@pytest.mark.parametrize("estimator", IMAGE_STEPS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize(
    "check",
    [
        check_set_output_transform,
        check_set_output_transform_pandas,
        check_global_output_transform_pandas,
    ],
    ids=lambda check: check.__name__,
)
def test_set_output(estimator, check, request):
    reason = _expected_failed_checks(estimator).get(check.__name__)
    if reason is not None:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))
    check(type(estimator).__name__, clone(estimator))
