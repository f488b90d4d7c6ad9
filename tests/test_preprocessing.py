"""Tests of the deterministic image transformers in sklearn_cnn.preprocessing."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn.augmentation import (
    AugmentedImages,
    RandomAugment,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRotation,
)
from sklearn_cnn.preprocessing import ImageResizer, ImageScaler, ImageStandardizer
from sklearn_cnn.utils._sklearn_private import InvalidParameterError

RNG = np.random.default_rng(0)
# Eight RGB images of 8x8 pixels, channels last: the reference layout.
IMAGES_NHWC = RNG.integers(0, 256, size=(8, 8, 8, 3), dtype=np.uint8)


def _in_layout(images_nhwc, layout):
    """The same images as the caller would pass them in ``layout``."""
    if layout == "nhwc":
        return images_nhwc
    if layout == "nchw":
        return images_nhwc.transpose(0, 3, 1, 2)
    grayscale = images_nhwc[..., 0]
    if layout == "nhw":
        return grayscale
    return grayscale.reshape(len(grayscale), -1)  # flat, square grayscale


LAYOUTS = ["nhwc", "nchw", "nhw", "flat"]


# ImageScaler ----------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_scaler_keeps_layout_and_divides_by_255(layout):
    X = _in_layout(IMAGES_NHWC, layout)
    X_scaled = ImageScaler().fit_transform(X)
    assert X_scaled.shape == X.shape
    assert X_scaled.dtype == np.float32
    np.testing.assert_allclose(X_scaled, X / 255.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float32, np.float64])
def test_scaler_always_returns_float32(dtype):
    X = IMAGES_NHWC.astype(dtype)
    X_scaled = ImageScaler().fit(X).transform(X)
    assert X_scaled.dtype == np.float32
    assert 0.0 <= X_scaled.min() and X_scaled.max() <= 1.0


def test_scaler_max_value_for_16_bit_images():
    X = np.full((2, 8, 8), 65535, dtype=np.uint16)
    assert ImageScaler(max_value=65535).fit_transform(X).max() == pytest.approx(1.0)


def test_scaler_checks_image_shape_in_transform():
    scaler = ImageScaler().fit(IMAGES_NHWC)
    with pytest.raises(ValueError, match=r"fitted on images of shape"):
        scaler.transform(np.zeros((2, 10, 10, 3), dtype=np.uint8))


def test_scaler_needs_fit():
    with pytest.raises(NotFittedError):
        ImageScaler().transform(IMAGES_NHWC)


# ImageStandardizer ------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_standardizer_keeps_layout(layout):
    X = _in_layout(IMAGES_NHWC, layout)
    X_standard = ImageStandardizer().fit_transform(X)
    assert X_standard.shape == X.shape
    assert X_standard.dtype == np.float32


def test_standardizer_learns_per_channel_statistics_from_fit_data_only():
    X_train = IMAGES_NHWC.astype(np.float64)
    X_test = RNG.uniform(0, 50, size=(3, 8, 8, 3))
    standardizer = ImageStandardizer().fit(X_train)
    np.testing.assert_allclose(standardizer.mean_, X_train.mean(axis=(0, 1, 2)))
    np.testing.assert_allclose(standardizer.std_, X_train.std(axis=(0, 1, 2)))
    X_train_standard = standardizer.transform(X_train)
    np.testing.assert_allclose(X_train_standard.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(X_train_standard.std(axis=(0, 1, 2)), 1, atol=1e-5)
    # Test images are standardized with the training statistics, not their own.
    expected = (X_test - standardizer.mean_) / standardizer.std_
    np.testing.assert_allclose(standardizer.transform(X_test), expected, rtol=1e-5)


def test_standardizer_centres_constant_channels_without_dividing_by_zero():
    X = np.full((4, 8, 8, 3), 7.0)
    standardizer = ImageStandardizer().fit(X)
    np.testing.assert_array_equal(standardizer.std_, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(standardizer.transform(X), 0.0)


def test_standardizer_imagenet_preset():
    X = RNG.uniform(size=(4, 8, 8, 3)).astype(np.float32)
    standardizer = ImageStandardizer(preset="imagenet").fit(X)
    np.testing.assert_allclose(standardizer.mean_, [0.485, 0.456, 0.406])
    np.testing.assert_allclose(standardizer.std_, [0.229, 0.224, 0.225])
    expected = (X - standardizer.mean_) / standardizer.std_
    np.testing.assert_allclose(standardizer.transform(X), expected, rtol=1e-5)
    # uint8 images: the preset is brought to their 0-255 range.
    standardizer_uint8 = ImageStandardizer(preset="imagenet").fit(IMAGES_NHWC)
    np.testing.assert_allclose(
        standardizer_uint8.mean_, [0.485 * 255, 0.456 * 255, 0.406 * 255]
    )


def test_standardizer_imagenet_preset_needs_rgb():
    with pytest.raises(ValueError, match=r"preset='imagenet' needs images with 3"):
        ImageStandardizer(preset="imagenet").fit(IMAGES_NHWC[..., 0])


# ImageResizer ----------------------------------------------------------------


@pytest.mark.parametrize(
    "layout, expected_shape",
    [
        ("nhwc", (8, 4, 6, 3)),
        ("nchw", (8, 3, 4, 6)),
        ("nhw", (8, 4, 6)),
        ("flat", (8, 24)),
    ],
)
def test_resizer_keeps_layout_and_dtype(layout, expected_shape):
    X = _in_layout(IMAGES_NHWC, layout)
    X_resized = ImageResizer(size=(4, 6)).fit_transform(X)
    assert X_resized.shape == expected_shape
    assert X_resized.dtype == np.uint8


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resizer_keeps_float_dtypes(dtype):
    X = IMAGES_NHWC.astype(dtype) / 255
    X_resized = ImageResizer(size=16).fit_transform(X)
    assert X_resized.shape == (8, 16, 16, 3)
    assert X_resized.dtype == dtype


def test_resizer_is_antialiased():
    # Thin vertical lines every 8 pixels: shrinking by 8 without a low-pass
    # filter samples between them and loses them; antialiasing keeps their
    # average brightness (255 / 8).
    X = np.zeros((2, 32, 32), dtype=np.float32)
    X[:, :, ::8] = 255.0
    smooth = ImageResizer(size=4).fit_transform(X)
    assert smooth.min() > 15.0
    assert smooth.mean() == pytest.approx(255.0 / 8, rel=0.1)
    aliased = ImageResizer(size=4, antialias=False).fit_transform(X)
    assert aliased.max() < 1.0


def test_resizer_rounds_uint8_output():
    X = np.zeros((1, 2, 1), dtype=np.uint8)
    X[0, 1, 0] = 255
    X_resized = ImageResizer(size=(1, 1)).fit_transform(X)
    assert X_resized.dtype == np.uint8
    assert X_resized[0, 0, 0] in (127, 128)


def test_resizer_rejects_bad_size_tuple():
    with pytest.raises(ValueError, match=r"size must be an int or a \(height, width\)"):
        ImageResizer(size=(4, 0)).fit(IMAGES_NHWC)


# Shared behaviour ------------------------------------------------------------

TRANSFORMERS = [ImageScaler(), ImageStandardizer(), ImageResizer(size=(5, 6))]


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=lambda t: type(t).__name__)
def test_input_is_not_modified_and_read_only_input_works(transformer):
    X = IMAGES_NHWC.astype(np.float32)
    X.setflags(write=False)
    X_before = X.copy()
    X_out = clone(transformer).fit_transform(X)
    np.testing.assert_array_equal(X, X_before)
    assert not np.shares_memory(X_out, X)


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=lambda t: type(t).__name__)
def test_keeps_per_epoch_augmentation_recipe(transformer):
    X_augmented = RandomHorizontalFlip(random_state=0).fit_transform(IMAGES_NHWC)
    transformer = clone(transformer)
    X_out = transformer.fit_transform(X_augmented)
    assert isinstance(X_out, AugmentedImages)
    assert X_out.has_recipe
    assert X_out.post_steps == (transformer,)


@pytest.mark.parametrize(
    "transformer, parameter",
    [
        (ImageScaler(max_value=0), "max_value"),
        (ImageStandardizer(preset="cifar"), "preset"),
        (ImageResizer(size=0), "size"),
        (ImageResizer(interpolation="lanczos"), "interpolation"),
        (ImageResizer(antialias="yes"), "antialias"),
    ],
)
def test_invalid_parameters_are_named(transformer, parameter):
    with pytest.raises(InvalidParameterError, match=f"'{parameter}' parameter"):
        transformer.fit(IMAGES_NHWC)


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=lambda t: type(t).__name__)
@pytest.mark.parametrize(
    "X, message",
    [
        (np.zeros(10), "Expected images, got a 1D array"),
        (np.zeros((2, 3, 4, 5, 6)), "got a 5D array"),
        (np.full((2, 8, 8), np.nan), "NaN"),
    ],
    ids=["1d", "5d", "nan"],
)
def test_bad_input_gets_a_clear_error(transformer, X, message):
    with pytest.raises(ValueError, match=message):
        clone(transformer).fit(X)


# Property-based ---------------------------------------------------------------


@st.composite
def image_batches(draw):
    """Valid batches in any layout and dtype, with unambiguous channel axes."""
    dtype = draw(st.sampled_from([np.uint8, np.float32, np.float64]))
    layout = draw(st.sampled_from(LAYOUTS))
    n_samples = draw(st.integers(1, 4))
    if layout in ("nhwc", "nchw"):
        # Sides over 4 can't be mistaken for a channel axis.
        height, width = draw(st.integers(5, 8)), draw(st.integers(5, 8))
        channels = draw(st.sampled_from([1, 3]))
        shape = (
            (n_samples, height, width, channels)
            if layout == "nhwc"
            else (n_samples, channels, height, width)
        )
    elif layout == "nhw":
        shape = (n_samples, draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    else:
        shape = (n_samples, draw(st.integers(1, 8)) ** 2)
    if dtype == np.uint8:
        elements = st.integers(0, 255)
    else:
        elements = st.floats(0, 1, width=32 if dtype == np.float32 else 64)
    return draw(arrays(dtype, shape, elements=elements))


@settings(max_examples=25, deadline=None)
@given(X=image_batches())
def test_scaler_and_standardizer_contract(X):
    X_before = X.copy()
    for transformer in (ImageScaler(), ImageStandardizer()):
        X_out = transformer.fit_transform(X)
        assert X_out.shape == X.shape
        assert X_out.dtype == np.float32
        assert np.isfinite(X_out).all()
    np.testing.assert_array_equal(X, X_before)


@settings(max_examples=25, deadline=None)
@given(X=image_batches(), size=st.tuples(st.integers(1, 6), st.integers(1, 6)))
def test_resizer_contract(X, size):
    X_before = X.copy()
    resizer = ImageResizer(size=size).fit(X)
    X_out = resizer.transform(X)
    channels = resizer.image_shape_[2]
    assert X_out.dtype == X.dtype
    assert X_out.ndim == X.ndim
    assert X_out.size == len(X) * size[0] * size[1] * channels
    np.testing.assert_array_equal(X, X_before)


# The image-layout contract, the same for every estimator ----------------------

# (3, 5, 3): channels first or channels last? Only image_shape can say.
AMBIGUOUS = np.random.default_rng(0).random((4, 3, 5, 3)).astype(np.float32)
EVERY_ESTIMATOR = [
    *TRANSFORMERS,
    RandomHorizontalFlip(),
    RandomRotation(),
    RandomCrop(),
    RandomAugment(),
    CNNImageClassifier(epochs=1),
]


def _fit(estimator, X):
    if isinstance(estimator, CNNImageClassifier):
        return estimator.fit(X, np.arange(len(X)) % 2)
    return estimator.fit(X)


@pytest.mark.parametrize("estimator", EVERY_ESTIMATOR, ids=lambda e: type(e).__name__)
def test_ambiguous_channel_axis_gets_the_same_error_everywhere(estimator):
    name = type(estimator).__name__
    expected = (
        "Cannot tell which axis of images of shape (3, 5, 3) holds the channels. "
        f"State it with {name}(image_shape=(height, width, channels)), for example "
        "image_shape=(3, 5, 3) for channels-last images or image_shape=(5, 3, 3) "
        "for channels-first images."
    )
    with pytest.raises(ValueError) as error:
        _fit(clone(estimator), AMBIGUOUS)
    assert str(error.value) == expected


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=lambda t: type(t).__name__)
def test_image_shape_says_which_axis_holds_the_channels(transformer):
    channels_last = _fit(
        clone(transformer).set_params(image_shape=(3, 5, 3)), AMBIGUOUS
    )
    assert channels_last.image_shape_ == (3, 5, 3)
    channels_first = _fit(
        clone(transformer).set_params(image_shape=(5, 3, 3)), AMBIGUOUS
    )
    assert channels_first.image_shape_ == (5, 3, 3)


def test_standardizer_reads_channels_as_image_shape_says():
    X = AMBIGUOUS.copy()
    X[..., 1] += 10  # channel 1 of channels-last images
    standardizer = ImageStandardizer(image_shape=(3, 5, 3)).fit(X)
    assert standardizer.mean_[1] > 10 > standardizer.mean_[0]


def test_flattened_colour_images_keep_their_channels():
    X = IMAGES_NHWC.astype(np.float32)
    X_flat = X.reshape(len(X), -1)
    resizer = ImageResizer(size=(4, 6), image_shape=(8, 8, 3))
    X_resized = resizer.fit_transform(X_flat)
    assert X_resized.shape == (8, 4 * 6 * 3)
    expected = ImageResizer(size=(4, 6)).fit_transform(X)
    np.testing.assert_allclose(X_resized, expected.reshape(8, -1), rtol=1e-6)
    standardizer = ImageStandardizer(image_shape=(8, 8, 3)).fit(X_flat)
    np.testing.assert_allclose(standardizer.mean_, X.mean(axis=(0, 1, 2)))


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=lambda t: type(t).__name__)
def test_image_shape_must_match_flattened_rows(transformer):
    with pytest.raises(ValueError, match="Pass image_shape that matches"):
        clone(transformer).set_params(image_shape=(8, 8, 3)).fit(np.zeros((2, 64)))


# set_output -------------------------------------------------------------------


def _flat_frame():
    X = IMAGES_NHWC[..., 0].reshape(8, -1).astype(np.float32)
    return pd.DataFrame(X, columns=[f"pixel{i}" for i in range(X.shape[1])])


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=lambda t: type(t).__name__)
def test_set_output_pandas_gives_dataframes_of_flattened_images(transformer):
    X = _flat_frame()
    transformer = clone(transformer).set_output(transform="pandas")
    X_out = transformer.fit_transform(X)
    assert isinstance(X_out, pd.DataFrame)
    assert list(X_out.columns) == list(transformer.get_feature_names_out())
    if not isinstance(transformer, ImageResizer):
        assert list(X_out.columns) == list(X.columns)
    X_plain = transformer.fit_transform(X.to_numpy())
    assert isinstance(X_plain, pd.DataFrame)
    assert X_plain.columns[0] == (
        "imageresizer0" if isinstance(transformer, ImageResizer) else "x0"
    )


@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=lambda t: type(t).__name__)
def test_set_output_pandas_passes_image_batches_through(transformer):
    # A table holds two dimensions: batches of images stay arrays, as documented.
    transformer = clone(transformer).set_output(transform="pandas")
    X_out = transformer.fit_transform(IMAGES_NHWC)
    assert isinstance(X_out, np.ndarray) and X_out.ndim == 4


def test_resizer_feature_names_count_the_output_values():
    resizer = ImageResizer(size=(2, 3)).fit(IMAGES_NHWC)
    assert len(resizer.get_feature_names_out()) == 2 * 3 * 3
    with pytest.raises(NotFittedError):
        ImageResizer().get_feature_names_out()
