"""Image data sets: your own image folders and the embedded cats and dogs.

- :func:`load_image_folder` reads labelled images from a folder with one
  sub-folder per class.
- :func:`load_images` reads unlabelled images from files and folders, to
  predict their classes.
- :func:`load_cats_dogs` returns the cats and dogs silhouettes shipped with the
  package, by default 1000 colour images of 64x64 pixels (64x64x3).
"""

from .. import _lazy

__all__ = ["load_cats_dogs", "load_image_folder", "load_images"]

__getattr__, __dir__ = _lazy.attach(
    __name__,
    attributes={
        "_cats_dogs": ["load_cats_dogs"],
        "_folder": ["load_image_folder", "load_images"],
    },
)
