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
]
