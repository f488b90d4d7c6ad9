"""Image validation for code outside the package (the public ``utils`` names).

The package itself reads every input through ``sklearn_cnn._sources``, the one
place that knows input kinds and image layouts; these are its public faces.
"""

from .._sources import ImageLayout, validate_images

__all__ = ["ImageLayout", "validate_images"]
