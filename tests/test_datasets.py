"""sklearn_cnn.datasets: image folders, loose images and the embedded cats and dogs."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sklearn_cnn.datasets import load_cats_dogs, load_image_folder, load_images


def save(path, pixels, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    image.save(path, **kwargs)
    return path


def solid(value, size=(12, 10), channels=None):
    shape = size if channels is None else (*size, channels)
    return np.full(shape, value, dtype=np.uint8)


@pytest.fixture
def folder(tmp_path):
    """Two classes, two images each."""
    for label, value in (("dark", 20), ("light", 230)):
        for i in range(2):
            save(tmp_path / label / f"{i}.png", solid(value + i, channels=3))
    return tmp_path


# -- load_cats_dogs ----------------------------------------------------------------
def test_cats_dogs_has_the_brief_shape_balanced_and_reproducible():
    data = load_cats_dogs()
    assert data.data.shape == (1000, 64, 64, 3)
    assert data.data.dtype == np.uint8
    assert data.target.shape == (1000,)
    assert data.target_names.tolist() == ["cat", "dog"]
    labels, counts = np.unique(data.target, return_counts=True)
    assert labels.tolist() == ["cat", "dog"] and counts.tolist() == [500, 500]
    # Silhouettes are grey: the three channels are copies.
    assert np.array_equal(data.data[..., 0], data.data[..., 2])
    assert data.data.min() == 0 and data.data.max() == 255
    # Classes are mixed, so slicing gives both.
    assert set(data.target[:20]) == {"cat", "dog"}
    assert "MIT License" in data.DESCR and "Animal-MNIST" in data.DESCR
    X_again, y_again = load_cats_dogs(return_X_y=True)
    assert np.array_equal(X_again, data.data) and np.array_equal(y_again, data.target)


def test_cats_dogs_size_subset_and_seed():
    X, y = load_cats_dogs(
        image_size=(16, 20), n_samples=11, random_state=1, return_X_y=True
    )
    assert X.shape == (11, 16, 20, 3)
    assert (y == "cat").sum() == 6
    X_native, y_all = load_cats_dogs(
        image_size=None, n_samples=None, shuffle=False, return_X_y=True
    )
    assert X_native.shape == (2000, 28, 28, 3)
    assert y_all[:1000].tolist() == ["cat"] * 1000
    X_other, _ = load_cats_dogs(
        image_size=(16, 20), n_samples=11, random_state=2, return_X_y=True
    )
    assert not np.array_equal(X, X_other)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_samples": 1}, "n_samples must be an int from 2 to 2000"),
        ({"n_samples": 2001}, "n_samples must be an int from 2 to 2000"),
        ({"image_size": 0}, "image_size must be positive"),
        ({"image_size": "64"}, "image_size must be an int, a"),
        ({"image_size": (1, 2, 3)}, "image_size must be an int, a"),
    ],
)
def test_cats_dogs_rejects_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        load_cats_dogs(**params)


def test_folder_of_the_embedded_images_loads_as_load_cats_dogs(tmp_path):
    """The folder loader and the embedded data resize the same way."""
    native, labels = load_cats_dogs(image_size=None, n_samples=6, return_X_y=True)
    for i, (image, label) in enumerate(zip(native, labels)):
        save(tmp_path / label / f"{i:02d}.png", image[..., 0])
    folder = load_image_folder(tmp_path, image_size=32)
    resized, _ = load_cats_dogs(image_size=32, n_samples=6, return_X_y=True)
    order = np.argsort([f"{label}/{i:02d}" for i, label in enumerate(labels)])
    assert np.array_equal(folder.data, resized[order])
    assert np.array_equal(folder.target, labels[order])


# -- load_image_folder: formats and modes ---------------------------------------------
def test_reads_every_format_and_mode_as_rgb_uint8(tmp_path):
    gray = solid(100)
    rgb = solid(50, channels=3)
    save(tmp_path / "a" / "gray.png", gray)
    save(tmp_path / "a" / "photo.JPG", rgb, quality=95)
    save(tmp_path / "a" / "bitmap.bmp", rgb)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE)
    save(tmp_path / "b" / "anim.gif", palette)
    save(tmp_path / "b" / "web.webp", rgb, lossless=True)
    rgba = np.dstack([rgb, np.full(gray.shape, 255, np.uint8)])
    save(tmp_path / "b" / "alpha.png", rgba)
    save(tmp_path / "b" / "gray_alpha.png", Image.fromarray(gray).convert("LA"))
    save(tmp_path / "b" / "sixteen.png", np.full((12, 10), 32896, dtype=np.uint16))
    save(tmp_path / "b" / "notes.txt", Image.new("RGB", (1, 1)), format="PNG")
    save(tmp_path / "b" / ".hidden.png", rgb)
    save(tmp_path / "b" / "nested" / "deep.png", rgb)

    data = load_image_folder(tmp_path, image_size=(6, 5))
    assert data.data.shape == (9, 6, 5, 3)
    assert data.data.dtype == np.uint8
    names = [Path(name).relative_to(tmp_path).as_posix() for name in data.filenames]
    # Hidden and non-image files are left out; nested folders count.
    assert names == [
        "a/bitmap.bmp",
        "a/gray.png",
        "a/photo.JPG",
        "b/alpha.png",
        "b/anim.gif",
        "b/gray_alpha.png",
        "b/nested/deep.png",
        "b/sixteen.png",
        "b/web.webp",
    ]
    assert data.target.tolist() == ["a"] * 3 + ["b"] * 6
    by_name = dict(zip(names, data.data))
    assert np.all(by_name["a/gray.png"] == 100)
    assert np.all(by_name["b/gray_alpha.png"] == 100)
    assert np.all(by_name["b/alpha.png"] == 50)
    assert np.all(by_name["b/web.webp"] == 50)
    # 16-bit pixels are scaled to 8 bits, not clipped to white.
    assert np.all(by_name["b/sixteen.png"] == 128)
    assert np.abs(by_name["a/photo.JPG"].astype(int) - 50).max() <= 3


def test_transparent_pixels_become_black_without_pillow_warnings(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 200  # hidden colour of fully transparent pixels
    rgba[:4, :, 3] = 255  # top half opaque
    save(tmp_path / "a" / "half.png", rgba)
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([255, 255, 255] * 256)
    palette.info["transparency"] = 0
    save(tmp_path / "b" / "clear.gif", palette, transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_image_folder(tmp_path, image_size=None)
    half, clear = data.data
    assert np.all(half[:4] == 200) and np.all(half[4:] == 0)
    assert np.all(clear == 0)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(solid(90, size=(10, 20), channels=3))
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: rotate 90 degrees to display
    photo = save(tmp_path / "photo.jpg", image, exif=exif.tobytes())
    assert np.asarray(Image.open(photo)).shape == (10, 20, 3)
    assert load_images(photo, image_size=None).data.shape == (1, 20, 10, 3)


def test_image_size_none_keeps_sizes_or_says_they_differ(folder):
    assert load_image_folder(folder, image_size=None).data.shape == (4, 12, 10, 3)
    save(folder / "light" / "big.png", solid(5, size=(30, 30)))
    with pytest.raises(ValueError, match=r"2 different sizes.*image_size=\(height"):
        load_image_folder(folder, image_size=None)
    assert load_image_folder(folder, image_size=7).data.shape == (5, 7, 7, 3)


def test_downscaling_is_antialiased(tmp_path):
    # A one-pixel checkerboard averages to grey, not to one of its colours.
    board = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    save(tmp_path / "a" / "board.png", board)
    save(tmp_path / "b" / "board.png", board)
    X, _ = load_image_folder(tmp_path, image_size=8, return_X_y=True)
    assert np.all(np.abs(X.astype(int) - 128) <= 2)


def test_paths_only_lists_the_files_without_decoding_them(folder):
    (folder / "dark" / "broken.png").write_bytes(b"not an image")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is decoded, so nothing is skipped
        listed = load_image_folder(folder, paths_only=True)
    names = [str(Path(file).relative_to(folder)) for file in listed.filenames]
    assert names == ["dark/0.png", "dark/1.png", "dark/broken.png"] + [
        "light/0.png",
        "light/1.png",
    ]
    assert listed.target.tolist() == ["dark"] * 3 + ["light"] * 2
    assert listed.target_names.tolist() == ["dark", "light"]
    assert np.array_equal(listed.data, listed.filenames) and listed.skipped == []
    paths, y = load_image_folder(folder, paths_only=True, return_X_y=True)
    assert np.array_equal(paths, listed.filenames) and np.array_equal(y, listed.target)


def test_load_images_paths_only_lists_files_and_folders(folder, tmp_path):
    loose = save(tmp_path / "loose.png", solid(9, channels=3))
    listed = load_images([loose, folder / "light"], paths_only=True)
    assert [Path(file).name for file in listed.data] == ["loose.png", "0.png", "1.png"]
    assert np.array_equal(listed.filenames, listed.data) and listed.skipped == []


# -- load_image_folder: errors and unreadable files ---------------------------------
def test_corrupt_files_are_skipped_with_one_warning_listing_them(folder):
    (folder / "dark" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "light" / "empty.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match="Skipped 2 unreadable image file") as record:
        data = load_image_folder(folder, image_size=8)
    assert len(record) == 1
    message = str(record[0].message)
    assert "broken.png" in message and "empty.jpg" in message
    assert data.data.shape == (4, 8, 8, 3)
    assert sorted(name.split("/")[-1] for name in data.skipped) == [
        "broken.png",
        "empty.jpg",
    ]
    with pytest.raises(ValueError, match=r"Cannot read image .*broken.png.*1 more"):
        load_image_folder(folder, image_size=8, strict=True)


def test_missing_path_and_file_path(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="does not exist. Expected a folder"):
        load_image_folder(tmp_path / "nowhere")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        load_image_folder(folder / "dark" / "0.png")


def test_empty_folder_and_loose_images(tmp_path):
    with pytest.raises(ValueError, match="no class sub-folders: found no sub-folders"):
        load_image_folder(tmp_path)
    save(tmp_path / "a.png", solid(1))
    save(tmp_path / "b.png", solid(2))
    with pytest.raises(ValueError, match="found 2 image file.s. directly in it"):
        load_image_folder(tmp_path)


def test_class_folders_without_images(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"Found no images in the 2 sub-folder"):
        load_image_folder(tmp_path)
    save(tmp_path / "cat" / "0.png", solid(1))
    with pytest.raises(ValueError, match=r"Class folder.s. 'dog' .* contain no images"):
        load_image_folder(tmp_path)


def test_a_single_class_is_an_error(tmp_path):
    save(tmp_path / "cat" / "0.png", solid(1))
    with pytest.raises(ValueError, match="single class .*'cat' with 1 readable image"):
        load_image_folder(tmp_path)
    # Also when the other class has only unreadable files.
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "0.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="Skipped 1 unreadable"):
        with pytest.raises(ValueError, match="single class"):
            load_image_folder(tmp_path)


def test_parallel_decoding_matches_serial_and_shows_a_bar(tmp_path, capsys):
    rng = np.random.RandomState(0)
    for i in range(70):
        pixels = rng.randint(0, 256, size=(9, 7, 3), dtype=np.uint8)
        save(tmp_path / ("a" if i % 2 else "b") / f"{i:03d}.png", pixels)
    serial = load_image_folder(tmp_path, image_size=5, n_jobs=1, verbose=False)
    assert capsys.readouterr().err == ""
    threaded = load_image_folder(tmp_path, image_size=5, n_jobs=3, verbose=True)
    assert "Loading images" in capsys.readouterr().err
    assert np.array_equal(serial.data, threaded.data)
    assert np.array_equal(serial.filenames, threaded.filenames)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_jobs": 0}, "n_jobs must be None or a non-zero int"),
        ({"verbose": "loud"}, "verbose must be a bool or 'auto'"),
        ({"image_size": (4,)}, "image_size must be an int"),
    ],
)
def test_folder_rejects_bad_parameters(folder, params, match):
    with pytest.raises(ValueError, match=match):
        load_image_folder(folder, **params)


# -- load_images ---------------------------------------------------------------------
def test_load_images_from_files_and_folders(folder, tmp_path):
    loose = save(tmp_path / "loose.bmp", solid(7, channels=3))
    images = load_images([loose, folder / "light"], image_size=(3, 4))
    assert images.data.shape == (3, 3, 4, 3)
    assert images.filenames[0].endswith("loose.bmp")
    assert [name[-5:] for name in images.filenames[1:]] == ["0.png", "1.png"]
    assert np.all(images.data[0] == 7)
    assert load_images(str(loose), image_size=None).data.shape == (1, 12, 10, 3)


def test_load_images_errors_and_skipped_files(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="No image file or folder at"):
        load_images(tmp_path / "missing.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="Found no images in"):
        load_images(tmp_path / "empty")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    with pytest.warns(UserWarning, match=r"(?s)Skipped 1 unreadable.*bad.png"):
        images = load_images([bad, folder / "dark" / "0.png"], image_size=4)
    assert len(images.data) == 1 and images.skipped == [str(bad)]
    with pytest.raises(ValueError, match="None of the 1 image file"):
        with pytest.warns(UserWarning):
            load_images(bad)
    with pytest.raises(ValueError, match="Cannot read image"):
        load_images(bad, strict=True)
