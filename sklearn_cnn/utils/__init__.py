"""Helpers shared by the estimators: image validation, devices and seeds."""

from .. import _lazy

__all__ = ["ImageLayout", "validate_images"]

__getattr__, __dir__ = _lazy.attach(
    __name__,
    attributes={
        "_validation": ["ImageLayout", "validate_images"],
    },
)
