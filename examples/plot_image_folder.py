"""
=================================
Training on your own image folder
=================================

:func:`~sklearn_cnn.datasets.load_image_folder` reads a folder with one
sub-folder of images per class, the layout of torchvision's ``ImageFolder``
and Keras's ``image_dataset_from_directory``::

    pets/
        cat/0001.png
        cat/0002.jpg
        dog/0001.png
        ...

It converts every image to RGB and resizes it, so folders of mixed formats and
sizes load into one uint8 array. Here we first write such a folder of PNG files
from the embedded silhouettes, to have something to load; point it at your own
folder instead. The same folder trains from the command line with
``sklearn-cnn train pets/``.
"""

# %%
import tempfile
from pathlib import Path

from PIL import Image

from sklearn_cnn.datasets import load_cats_dogs

root = Path(tempfile.mkdtemp()) / "pets"
images, labels = load_cats_dogs(image_size=None, n_samples=300, return_X_y=True)
for i, (image, label) in enumerate(zip(images, labels)):
    (root / label).mkdir(parents=True, exist_ok=True)
    Image.fromarray(image[..., 0]).save(root / label / f"{i:04d}.png")
print(sorted(path.name for path in root.iterdir()))

# %%
# Load it at the size the network should see:
from sklearn_cnn.datasets import load_image_folder

data = load_image_folder(root, image_size=(24, 24))
print(data.data.shape, data.data.dtype, data.target_names)
print(data.filenames[0])

# %%
# Train and evaluate as with any array of images:
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn.preprocessing import ImageScaler

X_train, X_test, y_train, y_test = train_test_split(
    data.data, data.target, test_size=0.25, stratify=data.target, random_state=0
)
model = make_pipeline(
    ImageScaler(),
    CNNImageClassifier(filters=(16, 32), epochs=4, batch_size=16, random_state=0),
)
model.fit(X_train, y_train)
print(f"test accuracy: {model.score(X_test, y_test):.3f}")

# %%
# Some test images as they were loaded from the folder, with their predicted
# and true labels:
from sklearn_cnn.inspection import plot_predictions

figure = plot_predictions(model, X_test, y_test, n=8, n_cols=4)

# %%
# New images, one per file, load with :func:`~sklearn_cnn.datasets.load_images`
# (files or folders, no labels needed):
from sklearn_cnn.datasets import load_images

new = load_images(sorted((root / "cat").iterdir())[:3], image_size=(24, 24))
print(model.predict(new.data))
