"""Helpers shared by the estimators: image validation, devices and seeds."""

from ._validation import ImageLayout, validate_images

__all__ = ["ImageLayout", "validate_images"]
