"""The one module that imports scikit-learn's private helpers.

Everything here is used by scikit-learn's own estimators and has been stable
since the release named in ``pyproject.toml``; if it moves, only this file changes.
"""

from sklearn.base import _fit_context
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    InvalidParameterError,
    StrOptions,
)
from sklearn.utils._set_output import ADAPTERS_MANAGER, _get_output_config
from sklearn.utils.metaestimators import _BaseComposition
from sklearn.utils.validation import _check_sample_weight

__all__ = [
    "HasMethods",
    "Interval",
    "InvalidParameterError",
    "StrOptions",
    "_BaseComposition",
    "_check_sample_weight",
    "_fit_context",
    "output_container",
    "wrap_in_container",
]


def output_container(estimator) -> str:
    """What ``set_output`` (or the global configuration) asks ``transform`` for."""
    return _get_output_config("transform", estimator)["dense"]


def wrap_in_container(estimator, data, original_input):
    """``data`` as a DataFrame of that container, as scikit-learn's wrapping does."""
    adapter = ADAPTERS_MANAGER.adapters[output_container(estimator)]
    return adapter.create_container(
        data, original_input, columns=estimator.get_feature_names_out
    )
