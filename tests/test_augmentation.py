"""Tests of the random train-time augmenters in sklearn_cnn.augmentation."""

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags

from sklearn_cnn.augmentation import (
    AugmentationLostWarning,
    AugmentedImages,
    ColorJitter,
    GaussianNoise,
    RandomAugment,
    RandomCrop,
    RandomErasing,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRotation,
    RandomTranslation,
    RandomVerticalFlip,
)
from sklearn_cnn.preprocessing import ImageScaler
from sklearn_cnn.utils._sklearn_private import InvalidParameterError

# These tests look at one augmentation on purpose, with numpy: that turns it
# into a plain array, which warns (see test_augmentation_pipeline.py).
pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn_cnn.augmentation.AugmentationLostWarning"
)

RNG = np.random.default_rng(0)
IMAGES_NHWC = RNG.integers(0, 256, size=(8, 8, 8, 3), dtype=np.uint8)

# Every augmenter, set up so that it changes every image it is given.
AUGMENTERS = [
    RandomHorizontalFlip(p=1.0),
    RandomVerticalFlip(p=1.0),
    RandomRotation(degrees=45),
    RandomTranslation(max_shift=0.3),
    RandomCrop(padding=2),
    RandomResizedCrop(scale=(0.3, 0.6)),
    ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5),
    GaussianNoise(std=0.1),
    RandomErasing(p=1.0),
    RandomAugment(),
]
# The same, with per-image randomness to observe.
RANDOM_AUGMENTERS = [
    RandomHorizontalFlip(),
    RandomVerticalFlip(),
    *AUGMENTERS[2:],
]


def _name(augmenter):
    return type(augmenter).__name__


def _in_layout(images_nhwc, layout):
    if layout == "nhwc":
        return images_nhwc
    if layout == "nchw":
        return images_nhwc.transpose(0, 3, 1, 2)
    grayscale = images_nhwc[..., 0]
    if layout == "nhw":
        return grayscale
    return grayscale.reshape(len(grayscale), -1)


# The scikit-learn contract -------------------------------------------------------


@pytest.mark.parametrize("augmenter", AUGMENTERS, ids=_name)
@pytest.mark.parametrize("layout", ["nhwc", "nchw", "nhw", "flat"])
def test_fit_transform_keeps_shape_dtype_and_layout(augmenter, layout):
    X = _in_layout(IMAGES_NHWC, layout)
    X_augmented = clone(augmenter).set_params(random_state=0).fit_transform(X)
    assert X_augmented.shape == X.shape
    assert X_augmented.dtype == X.dtype
    assert not np.array_equal(X_augmented, X)


@pytest.mark.parametrize("augmenter", AUGMENTERS, ids=_name)
def test_fit_transform_returns_images_with_their_recipe(augmenter):
    augmenter = clone(augmenter)
    X_augmented = augmenter.fit_transform(IMAGES_NHWC)
    assert isinstance(X_augmented, AugmentedImages)
    assert X_augmented.has_recipe
    assert X_augmented.augmenters == (augmenter,)
    np.testing.assert_array_equal(X_augmented.source, IMAGES_NHWC)


@pytest.mark.parametrize("augmenter", AUGMENTERS, ids=_name)
def test_transform_is_the_identity(augmenter):
    augmenter = clone(augmenter).fit(IMAGES_NHWC)
    X_transformed = augmenter.transform(IMAGES_NHWC)
    np.testing.assert_array_equal(X_transformed, IMAGES_NHWC)
    assert X_transformed.dtype == IMAGES_NHWC.dtype


def test_chained_augmenters_all_run_every_epoch():
    flip, rotate = RandomHorizontalFlip(), RandomRotation()
    X_augmented = rotate.fit_transform(flip.fit_transform(IMAGES_NHWC))
    assert X_augmented.augmenters == (flip, rotate)
    np.testing.assert_array_equal(X_augmented.source, IMAGES_NHWC)


@pytest.mark.parametrize("augmenter", RANDOM_AUGMENTERS, ids=_name)
def test_each_image_gets_its_own_random_draw(augmenter):
    # One batch of identical images must not come out identical.
    X = np.repeat(IMAGES_NHWC[:1], 32, axis=0)
    X_augmented = clone(augmenter).set_params(random_state=0).fit_transform(X)
    n_distinct = len(np.unique(X_augmented.reshape(len(X), -1), axis=0))
    assert n_distinct > 1


def test_flip_with_half_probability_flips_some_images_and_not_others():
    X = np.repeat(IMAGES_NHWC[:1], 32, axis=0)
    X_augmented = RandomHorizontalFlip(p=0.5, random_state=0).fit_transform(X)
    flipped = (X_augmented == X[:, :, ::-1]).all(axis=(1, 2, 3))
    kept = (X_augmented == X).all(axis=(1, 2, 3))
    assert (flipped | kept).all()
    assert 0 < flipped.sum() < len(X)


@pytest.mark.parametrize("augmenter", RANDOM_AUGMENTERS, ids=_name)
def test_random_state_makes_the_draw_reproducible(augmenter):
    first = clone(augmenter).set_params(random_state=42).fit_transform(IMAGES_NHWC)
    second = clone(augmenter).set_params(random_state=42).fit_transform(IMAGES_NHWC)
    other = clone(augmenter).set_params(random_state=7).fit_transform(IMAGES_NHWC)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("augmenter", AUGMENTERS, ids=_name)
def test_input_is_not_modified_and_read_only_input_works(augmenter):
    X = IMAGES_NHWC.astype(np.float32) / 255
    X.setflags(write=False)
    X_before = X.copy()
    X_augmented = clone(augmenter).fit_transform(X)
    np.testing.assert_array_equal(X, X_before)
    assert not np.shares_memory(X_augmented, X)


@pytest.mark.parametrize("augmenter", AUGMENTERS, ids=_name)
def test_global_random_state_is_untouched(augmenter):
    torch_state = torch.random.get_rng_state()
    numpy_state = np.random.get_state()  # noqa: NPY002
    clone(augmenter).fit_transform(IMAGES_NHWC)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(np.random.get_state(), numpy_state)  # noqa: NPY002
    )


# augment_batch: the per-epoch path of the classifier -----------------------------


@pytest.mark.parametrize("augmenter", AUGMENTERS, ids=_name)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16]
)
def test_augment_batch_is_out_of_place_for_any_float_dtype(augmenter, channels, dtype):
    images = torch.rand(4, channels, 8, 8, generator=torch.Generator().manual_seed(0))
    images = images.to(dtype)
    before = images.clone()
    augmented = augmenter.augment_batch(
        images, generator=torch.Generator().manual_seed(0), value_range=1.0
    )
    assert torch.equal(images, before)
    assert augmented.shape == images.shape
    assert augmented.dtype == dtype
    assert augmented.data_ptr() != images.data_ptr()
    assert torch.isfinite(augmented.float()).all()


@pytest.mark.parametrize("augmenter", AUGMENTERS, ids=_name)
def test_augment_batch_handles_one_pixel_images(augmenter):
    images = torch.rand(3, 3, 1, 1)
    augmented = augmenter.augment_batch(
        images, generator=torch.Generator().manual_seed(0), value_range=1.0
    )
    assert augmented.shape == (3, 3, 1, 1)


# What each augmenter does ----------------------------------------------------------


def test_flips_mirror_the_images():
    X = IMAGES_NHWC
    horizontal = RandomHorizontalFlip(p=1.0).fit_transform(X)
    vertical = RandomVerticalFlip(p=1.0).fit_transform(X)
    np.testing.assert_array_equal(horizontal, X[:, :, ::-1])
    np.testing.assert_array_equal(vertical, X[:, ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(p=0.0).fit_transform(X), X)


def test_rotation_by_zero_degrees_or_with_p_zero_changes_nothing():
    X = IMAGES_NHWC
    np.testing.assert_array_equal(RandomRotation(degrees=0).fit_transform(X), X)
    np.testing.assert_array_equal(RandomRotation(p=0.0).fit_transform(X), X)


def test_rotation_of_a_non_square_image_keeps_its_centre():
    X = np.zeros((1, 9, 15), dtype=np.float32)
    X[0, 4, 7] = 1.0
    rotated = RandomRotation(degrees=90, random_state=0).fit_transform(X)
    assert rotated[0, 4, 7] == pytest.approx(1.0, abs=1e-5)


def test_rotation_fill_is_a_fraction_of_the_value_range():
    X = np.zeros((4, 8, 8), dtype=np.uint8)
    rotated = RandomRotation(degrees=45, fill=1.0, random_state=0).fit_transform(X)
    assert rotated.max() == 255  # white corners in uint8


@pytest.mark.parametrize("augmenter", [RandomTranslation(), RandomCrop()], ids=_name)
def test_shifts_copy_whole_pixels(augmenter):
    X = IMAGES_NHWC.astype(np.float32) + 1  # so that the zero fill is distinct
    shifted = clone(augmenter).set_params(random_state=0).fit_transform(X)
    new_values = set(np.unique(shifted)) - set(np.unique(X))
    assert new_values <= {0.0}


def test_crop_shifts_by_at_most_the_padding():
    X = np.zeros((16, 9, 9), dtype=np.float32)
    X[:, 4, 4] = 1.0
    cropped = RandomCrop(padding=2, random_state=0).fit_transform(X)
    rows, columns = np.nonzero(cropped.max(axis=0))
    assert rows.min() >= 2 and rows.max() <= 6
    assert columns.min() >= 2 and columns.max() <= 6
    np.testing.assert_array_equal(RandomCrop(padding=0).fit_transform(X), X)


def test_resized_crop_of_the_whole_image_changes_nothing():
    X = IMAGES_NHWC.astype(np.float32)
    crop = RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0), random_state=0)
    np.testing.assert_allclose(crop.fit_transform(X), X, atol=1e-3)


@pytest.mark.parametrize(
    "X, value_range",
    [
        (IMAGES_NHWC, 255),
        (IMAGES_NHWC.astype(np.float32) / 255, 1.0),
        (IMAGES_NHWC[..., :1].astype(np.float32) / 255, 1.0),
    ],
    ids=["uint8", "float", "grayscale"],
)
def test_color_jitter_stays_in_the_value_range(X, value_range):
    jitter = ColorJitter(brightness=2.0, contrast=2.0, saturation=2.0, random_state=0)
    X_jittered = jitter.fit_transform(X)
    assert X_jittered.min() >= 0 and X_jittered.max() <= value_range
    assert not np.array_equal(X_jittered, X)


def test_color_jitter_saturation_only_touches_colour_images():
    gray = IMAGES_NHWC[..., :1].astype(np.float32) / 255
    saturation_only = ColorJitter(brightness=0, contrast=0, saturation=0.9)
    np.testing.assert_array_equal(saturation_only.fit_transform(gray), gray)
    colour = IMAGES_NHWC.astype(np.float32) / 255
    assert not np.array_equal(saturation_only.fit_transform(colour), colour)


def test_gaussian_noise_scales_with_the_value_range():
    X = np.full((8, 8, 8), 128, dtype=np.uint8)
    noisy = GaussianNoise(std=0.05, random_state=0).fit_transform(X)
    assert noisy.astype(float).std() == pytest.approx(0.05 * 255, rel=0.15)
    X_float = np.full((8, 8, 8), 0.5)
    noisy_float = GaussianNoise(std=0.05, random_state=0).fit_transform(X_float)
    assert noisy_float.std() == pytest.approx(0.05, rel=0.15)


def test_gaussian_noise_clip():
    X = np.zeros((4, 8, 8), dtype=np.float32)
    assert GaussianNoise(random_state=0).fit_transform(X).min() >= 0
    assert GaussianNoise(clip=False, random_state=0).fit_transform(X).min() < 0


def test_erasing_sets_one_rectangle_of_the_requested_area():
    X = np.ones((32, 10, 10), dtype=np.float32)
    erasing = RandomErasing(p=1.0, scale=(0.1, 0.2), value=0.5, random_state=0)
    X_erased = erasing.fit_transform(X)
    erased = X_erased == 0.5
    assert set(np.unique(X_erased)) == {0.5, 1.0}
    areas = erased.sum(axis=(1, 2)) / 100
    assert (areas > 0).all() and (areas <= 0.3).all()
    for mask in erased:  # a filled rectangle: its bounding box is all erased
        rows, columns = np.nonzero(mask)
        box = mask[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
        assert box.all()


def test_erasing_with_p_zero_changes_nothing():
    np.testing.assert_array_equal(
        RandomErasing(p=0.0).fit_transform(IMAGES_NHWC), IMAGES_NHWC
    )


# RandomAugment: composition and searchable parameters ------------------------------


def test_random_augment_defaults_are_a_flip_and_a_rotation():
    X = np.repeat(IMAGES_NHWC[:1].astype(np.float32), 32, axis=0)
    X_augmented = RandomAugment(random_state=0).fit_transform(X)
    assert len(np.unique(X_augmented.reshape(32, -1), axis=0)) > 2
    nothing = RandomAugment(horizontal_flip=0, degrees=0, random_state=0)
    np.testing.assert_array_equal(nothing.fit_transform(X), X)


def test_random_augment_steps_parameters_are_searchable():
    augment = RandomAugment(
        steps=[("flip", RandomHorizontalFlip()), ("rotate", RandomRotation(15))]
    )
    params = augment.get_params()
    assert params["flip__p"] == 0.5
    assert params["rotate__degrees"] == 15
    augment.set_params(rotate__degrees=30, flip=RandomVerticalFlip(p=1.0))
    assert augment.get_params()["rotate__degrees"] == 30
    assert isinstance(augment.steps[0][1], RandomVerticalFlip)
    cloned = clone(augment)
    assert cloned.get_params()["rotate__degrees"] == 30
    assert cloned.steps[1][1] is not augment.steps[1][1]


def test_random_augment_passthrough_step():
    augment = RandomAugment(
        steps=[("flip", RandomHorizontalFlip(p=1.0)), ("noise", GaussianNoise())]
    ).set_params(noise="passthrough")
    np.testing.assert_array_equal(
        augment.fit_transform(IMAGES_NHWC), IMAGES_NHWC[:, :, ::-1]
    )


def test_random_augment_degrees_are_searchable_in_a_pipeline():
    # The grid, with an augmenter in front of a plain scikit-learn model.
    X = RNG.integers(0, 256, size=(40, 8, 8), dtype=np.uint8).reshape(40, -1)
    y = np.arange(40) % 2
    pipeline = Pipeline(
        [
            ("scale", ImageScaler()),
            ("augment", RandomAugment(random_state=0)),
            ("model", LogisticRegression(max_iter=50)),
        ]
    )
    search = GridSearchCV(pipeline, {"augment__degrees": [0, 15]}, cv=2)
    # A model outside sklearn_cnn trains on one draw, and is told so.
    with pytest.warns(AugmentationLostWarning, match="check_array"):
        search.fit(X, y)
    assert search.best_params_["augment__degrees"] in (0, 15)


def test_random_augment_rejects_shortcuts_together_with_steps():
    augment = RandomAugment(steps=[("flip", RandomHorizontalFlip())], degrees=30)
    with pytest.raises(ValueError, match=r"degrees only apply when steps is None"):
        augment.fit(IMAGES_NHWC)


@pytest.mark.parametrize(
    "steps, error, message",
    [
        ([("scale", ImageScaler())], TypeError, "must be an augmenter"),
        (
            [("a", RandomHorizontalFlip()), ("a", RandomVerticalFlip())],
            ValueError,
            "Names provided are not unique",
        ),
        ([RandomHorizontalFlip()], ValueError, r"list of \(name, augmenter\)"),
        (
            [("rotate", RandomRotation(degrees=-5))],
            InvalidParameterError,
            "'degrees' parameter",
        ),
    ],
    ids=["not-an-augmenter", "duplicate-names", "no-names", "invalid-step"],
)
def test_random_augment_validates_its_steps(steps, error, message):
    with pytest.raises(error, match=message):
        RandomAugment(steps=steps).fit(IMAGES_NHWC)


# Errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "augmenter, parameter",
    [
        (RandomHorizontalFlip(p=1.5), "p"),
        (RandomRotation(degrees=-1), "degrees"),
        (RandomRotation(fill=2.0), "fill"),
        (RandomTranslation(max_shift=2), "max_shift"),
        (RandomCrop(padding=-1), "padding"),
        (ColorJitter(brightness=-0.1), "brightness"),
        (GaussianNoise(std=-1), "std"),
        (RandomErasing(value="random"), "value"),
        (RandomAugment(steps="flip"), "steps"),
        (RandomAugment(random_state="seed"), "random_state"),
    ],
)
def test_invalid_parameters_are_named(augmenter, parameter):
    with pytest.raises(InvalidParameterError, match=f"'{parameter}' parameter"):
        augmenter.fit(IMAGES_NHWC)


@pytest.mark.parametrize(
    "augmenter, parameter",
    [
        (RandomResizedCrop(scale=(0.9, 0.5)), "scale"),
        (RandomResizedCrop(ratio=(0, 1)), "ratio"),
        (RandomErasing(scale=(0.1, 1.5)), "scale"),
    ],
)
def test_invalid_ranges_are_named(augmenter, parameter):
    with pytest.raises(ValueError, match=f"{parameter} must be a \\(min, max\\) pair"):
        augmenter.fit(IMAGES_NHWC)


@pytest.mark.parametrize(
    "X, message",
    [
        (np.zeros(10), "Expected images, got a 1D array"),
        (np.zeros((2, 3, 4, 5, 6)), "got a 5D array"),
        (np.full((2, 8, 8), np.inf), "infinity"),
    ],
    ids=["1d", "5d", "inf"],
)
def test_bad_input_gets_a_clear_error(X, message):
    with pytest.raises(ValueError, match=message):
        RandomAugment().fit_transform(X)


def test_transform_checks_the_image_shape():
    augment = RandomAugment().fit(IMAGES_NHWC)
    with pytest.raises(ValueError, match=r"fitted on images of shape"):
        augment.transform(np.zeros((2, 10, 10, 3), dtype=np.uint8))


# The image-layout contract and set_output ------------------------------------------


@pytest.mark.parametrize("augmenter", AUGMENTERS, ids=_name)
def test_flattened_colour_images_are_augmented_as_images(augmenter):
    n = len(IMAGES_NHWC)
    augmenter = clone(augmenter).set_params(random_state=0)
    expected = augmenter.fit_transform(IMAGES_NHWC).to_numpy().reshape(n, -1)
    flat = clone(augmenter).set_params(image_shape=(8, 8, 3))
    X_flat = flat.fit_transform(IMAGES_NHWC.reshape(n, -1))
    np.testing.assert_array_equal(X_flat.to_numpy(), expected)
    assert flat.image_shape_ == (8, 8, 3)


def test_horizontal_flip_of_flattened_rows_flips_pixels_not_channels():
    X_flat = IMAGES_NHWC.reshape(len(IMAGES_NHWC), -1)
    flip = RandomHorizontalFlip(p=1.0, image_shape=(8, 8, 3))
    np.testing.assert_array_equal(
        flip.fit_transform(X_flat).to_numpy(),
        IMAGES_NHWC[:, :, ::-1].reshape(len(X_flat), -1),
    )


@pytest.mark.parametrize("augmenter", AUGMENTERS, ids=_name)
def test_augmenters_are_not_tagged_non_deterministic(augmenter):
    # They are deterministic given random_state; tests/test_common.py lists the
    # checks they fail by design instead.
    assert get_tags(augmenter).non_deterministic is False


@pytest.mark.parametrize("augmenter", AUGMENTERS, ids=_name)
def test_set_output_pandas(augmenter):
    X = pd.DataFrame(
        IMAGES_NHWC[..., 0].reshape(8, -1),
        columns=[f"pixel{i}" for i in range(64)],
    )
    augmenter = clone(augmenter).set_output(transform="pandas")
    X_augmented = augmenter.fit_transform(X)
    # Still the container the classifier redraws from, with the column names.
    assert isinstance(X_augmented, AugmentedImages)
    assert list(X_augmented.feature_names) == list(X.columns)
    X_transformed = augmenter.transform(X)
    assert isinstance(X_transformed, pd.DataFrame)
    pd.testing.assert_frame_equal(X_transformed, X)
    # Batches of images stay arrays: a table holds two dimensions.
    images = IMAGES_NHWC[..., 0]
    assert isinstance(augmenter.fit(images).transform(images), np.ndarray)


def test_transform_keeps_augmented_images_as_they_are():
    X_augmented = RandomHorizontalFlip(random_state=0).fit_transform(IMAGES_NHWC)
    rotate = RandomRotation().fit(IMAGES_NHWC)
    assert rotate.transform(X_augmented) is X_augmented


def test_an_augmenter_after_a_transformer_after_an_augmenter_warns():
    X = RandomHorizontalFlip(random_state=0).fit_transform(IMAGES_NHWC)
    X = ImageScaler().fit_transform(X)
    with pytest.warns(AugmentationLostWarning, match="with ImageScaler in between"):
        X_augmented = RandomRotation(random_state=0).fit_transform(X)
    assert X_augmented.has_recipe and not X_augmented.post_steps


# Property-based ---------------------------------------------------------------


@st.composite
def image_batches(draw):
    """Valid batches in any layout and dtype, with unambiguous channel axes."""
    dtype = draw(st.sampled_from([np.uint8, np.float32, np.float64]))
    layout = draw(st.sampled_from(["nhwc", "nchw", "nhw"]))
    n_samples = draw(st.integers(1, 4))
    if layout == "nhw":
        shape = (n_samples, draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    else:
        height, width = draw(st.integers(5, 8)), draw(st.integers(5, 8))
        channels = draw(st.sampled_from([1, 3]))
        shape = (
            (n_samples, height, width, channels)
            if layout == "nhwc"
            else (n_samples, channels, height, width)
        )
    if dtype == np.uint8:
        elements = st.integers(0, 255)
    else:
        elements = st.floats(0, 1, width=32 if dtype == np.float32 else 64)
    return draw(arrays(dtype, shape, elements=elements))


@settings(max_examples=25, deadline=None)
@given(
    X=image_batches(),
    augmenter=st.sampled_from(RANDOM_AUGMENTERS),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_valid_batch_keeps_its_contract(X, augmenter, seed):
    X_before = X.copy()
    X_augmented = clone(augmenter).set_params(random_state=seed).fit_transform(X)
    assert X_augmented.shape == X.shape
    assert X_augmented.dtype == X.dtype
    if X.dtype == np.uint8 or isinstance(augmenter, ColorJitter | GaussianNoise):
        assert X_augmented.min() >= 0
    np.testing.assert_array_equal(X, X_before)
