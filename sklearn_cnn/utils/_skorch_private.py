"""The one place that uses skorch's private names, each where skorch has no public hook.

Like ``_sklearn_private.py`` for scikit-learn: when skorch renames one of these,
this file is the only one to change. The names, and why each is needed:

* ``NeuralNet._default_callbacks`` (a property): the callbacks every net has.
  skorch documents overriding it to change them; we add our metric and epoch
  table (``DefaultCallbacksHook``).
* ``PrintLog._sorted_keys``: the order of the epoch table's columns
  (``SortedColumnsHook``).
* ``AccelerateMixin._initialize_accelerator`` / ``_unwrap_accelerator`` and the
  ``_wrapped_with_accelerator`` flag: preparing the modules again when a
  fitted net trains on (``warm_start``, ``partial_fit``), and unwrapping after
  the callbacks' end of training (:func:`wrap_for_accelerator`,
  :func:`unwrap_from_accelerator`).
"""

from __future__ import annotations


class DefaultCallbacksHook:
    """Mixed into a skorch net: its default callbacks are ``default_callbacks()``."""

    @property
    def _default_callbacks(self):
        return self.default_callbacks()


class SortedColumnsHook:
    """Mixed into skorch's ``PrintLog``: columns in ``column_order(keys)``."""

    def _sorted_keys(self, keys):
        return self.column_order(list(super()._sorted_keys(keys)))


def wrap_for_accelerator(net) -> None:
    """Prepare the net's modules, optimizers and schedulers with its accelerator.

    The mixin does this once, at initialization; a fitted net that trains again
    after :func:`unwrap_from_accelerator` needs it again. A no-op when wrapped.
    """
    net._initialize_accelerator()


def unwrap_from_accelerator(net) -> None:
    """Undo :func:`wrap_for_accelerator` for the modules (the mixin's unwrapping)."""
    net._unwrap_accelerator()


def is_wrapped_for_accelerator(net) -> bool:
    return bool(getattr(net, "_wrapped_with_accelerator", False))
