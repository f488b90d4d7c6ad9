"""What an estimator writes into a model file, and how it takes it back.

:func:`sklearn_cnn.save_model` asks each estimator for its state and
:func:`sklearn_cnn.load_model` hands it back, so that the file format knows no
estimator by name. An estimator may define

``_saved_state(self) -> (params, fitted)``
    Its constructor parameters and its fitted state, as dicts of numbers,
    strings, tuples, lists, dicts, numpy arrays, tensors and estimators.
``_load_saved_state(self, fitted, device)``
    Called on the estimator built from the saved parameters, with the fitted
    state read back (tensors as tensors, arrays as arrays) and the ``device``
    given to ``load_model``; raises ``ValueError`` when the state does not fit.

Without them, :func:`saved_state` and :func:`load_saved_state` save the
parameters and the fitted attributes, and set the attributes back.
"""

from __future__ import annotations

import re

import torch

FITTED_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*_\Z")

PICKLE_HINT = (
    "Save this model with pickle or joblib instead, and load such files only from "
    "sources you trust: unlike save_model files, they can run code when loaded."
)


def fitted_attributes(estimator) -> dict:
    """The fitted attributes of ``estimator``: public names ending in ``_``."""
    return {k: v for k, v in vars(estimator).items() if FITTED_NAME.match(k)}


def saved_state(estimator) -> tuple[dict, dict]:
    """The parameters and the fitted state that a model file holds for ``estimator``."""
    if hasattr(estimator, "_saved_state"):
        return estimator._saved_state()
    return estimator.get_params(deep=False), fitted_attributes(estimator)


def load_saved_state(estimator, fitted: dict, device) -> None:
    """Give ``estimator``, built from saved parameters, its saved fitted state."""
    if hasattr(estimator, "_load_saved_state"):
        estimator._load_saved_state(fitted, device)
    else:
        vars(estimator).update(fitted)


def load_module_state(module: torch.nn.Module, state, what: str) -> None:
    """Load a saved ``state_dict`` once its names, shapes and dtypes fit ``module``.

    Nothing is copied into ``module`` unless every tensor fits.
    """
    if not isinstance(state, dict):
        raise ValueError(f"the saved {what} state is {state!r}, not named tensors.")
    expected = {k: (v.dtype, v.shape) for k, v in module.state_dict().items()}
    found = {
        k: (getattr(v, "dtype", v), getattr(v, "shape", v)) for k, v in state.items()
    }
    differing = sorted(
        k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k)
    )
    if differing:
        shown = ", ".join(repr(name) for name in differing[:5])
        raise ValueError(
            f"the saved {what} tensors do not fit the network that the parameters "
            f"build: {shown}{' and more' if len(differing) > 5 else ''} differ in "
            "name, shape or dtype."
        )
    module.load_state_dict(state, strict=True)
