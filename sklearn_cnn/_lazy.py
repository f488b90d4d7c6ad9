"""Lazy public names for the package's ``__init__`` modules (PEP 562).

``import sklearn_cnn`` stays cheap (no torch, no scikit-learn), so that the
``sklearn-cnn`` command answers ``--help`` at once: a submodule or a public name
is imported the first time it is used, as scikit-learn and SciPy do for their
submodules.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping


def attach(
    package: str,
    *,
    submodules: Iterable[str] = (),
    attributes: Mapping[str, Iterable[str]],
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    submodules : iterable of str, default=()
        Subpackages reachable as attributes, such as ``"datasets"``.
    attributes : mapping of str to iterable of str
        For each private module of the package, the public names it defines,
        such as ``{"_classifier": ["CNNImageClassifier"]}``.

    Returns
    -------
    __getattr__, __dir__ : callable
        Assign them to the package's own ``__getattr__`` and ``__dir__``.
    """
    submodules = frozenset(submodules)
    module_of = {name: module for module, names in attributes.items() for name in names}

    def __getattr__(name: str) -> object:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        if name in module_of:
            value = getattr(
                importlib.import_module(f"{package}.{module_of[name]}"), name
            )
            # Later look-ups find the name directly, without calling this again.
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        loaded = vars(sys.modules[package])
        return sorted(set(loaded) | submodules | set(module_of))

    return __getattr__, __dir__
