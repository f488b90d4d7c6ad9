"""Image data sets: your own image folders and the embedded cats and dogs.

- :func:`load_image_folder` reads labelled images from a folder with one
  sub-folder per class.
- :func:`load_images` reads unlabelled images from files and folders, to
  predict their classes.
- :func:`load_cats_dogs` returns the cats and dogs silhouettes shipped with the
  package, in the shape of the project's brief (1000 images of 64x64x3).
"""

from ._cats_dogs import load_cats_dogs
from ._folder import load_image_folder, load_images

__all__ = ["load_cats_dogs", "load_image_folder", "load_images"]
