"""sklearn_cnn.inspection.class_activation_map and plot_class_activation_maps."""

import threading

import numpy as np
import pytest
import torch
from conftest import FAST, make_images
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

from sklearn_cnn import CNNFeatureExtractor, CNNImageClassifier
from sklearn_cnn.inspection import class_activation_map, plot_class_activation_maps
from sklearn_cnn.preprocessing import ImageResizer, ImageScaler

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SIDE = 5  # side of the shape that decides the class
SIZE = 24


def make_shapes(n, seed):
    """Blank images with one small shape at a random place: its kind is the class.

    A filled square is "square", a plus sign is "cross"; ``boxes`` holds the
    (row, column) of each shape's top-left corner.
    """
    rng = np.random.default_rng(seed)
    X = np.zeros((n, SIZE, SIZE, 1), dtype=np.uint8)
    boxes = rng.integers(0, SIZE - SIDE + 1, size=(n, 2))
    y = np.where(np.arange(n) % 2 == 0, "square", "cross")
    square = np.full((SIDE, SIDE), 255, dtype=np.uint8)
    cross = np.zeros((SIDE, SIDE), dtype=np.uint8)
    cross[SIDE // 2, :] = cross[:, SIDE // 2] = 255
    for i, (row, column) in enumerate(boxes):
        X[i, row : row + SIDE, column : column + SIDE, 0] = (
            square if y[i] == "square" else cross
        )
    return X, y, boxes


def hit_rate(maps, boxes):
    """Share of maps whose maximum falls inside the image's shape."""
    flat = maps.reshape(len(maps), -1).argmax(axis=1)
    rows, columns = np.unravel_index(flat, maps.shape[1:])
    inside = (
        (rows >= boxes[:, 0])
        & (rows < boxes[:, 0] + SIDE)
        & (columns >= boxes[:, 1])
        & (columns < boxes[:, 1] + SIDE)
    )
    return inside.mean()


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(240, seed=0), make_shapes(60, seed=1)


@pytest.fixture(scope="module")
def shape_classifier(shapes):
    (X, y, _), _ = shapes
    return CNNImageClassifier(
        filters=(8, 16), epochs=6, batch_size=32, random_state=0
    ).fit(X, y)


@pytest.fixture(scope="module")
def small():
    X, y = make_images(n_samples=24, size=8)
    return X, y, CNNImageClassifier(**FAST).fit(X, y)


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_maps_peak_on_the_shape_that_decides_the_class(
    shapes, shape_classifier, method
):
    _, (X_test, y_test, boxes) = shapes
    assert (shape_classifier.predict(X_test) == y_test).mean() >= 0.9
    maps = class_activation_map(shape_classifier, X_test, method=method)
    chance = SIDE * SIDE / SIZE**2  # 0.04: the shape's share of the image
    assert maps.shape == (len(X_test), SIZE, SIZE)
    assert maps.dtype == np.float32
    assert hit_rate(maps, boxes) >= 0.8 > 10 * chance


def test_gradcam_plus_plus_maps_are_in_unit_range_and_near_the_shape(
    shapes, shape_classifier
):
    _, (X_test, _, boxes) = shapes
    maps = class_activation_map(shape_classifier, X_test, method="gradcam++")
    assert maps.min() >= 0 and maps.max() <= 1
    assert np.allclose(maps.reshape(len(maps), -1).max(axis=1), 1)
    # Within a pixel of the shape: Grad-CAM++ spreads the weight more.
    grown = boxes - 1
    assert hit_rate(maps[:, 1:, 1:], np.clip(grown, 0, None)) >= 0.5


def test_matches_the_grad_cam_package(shapes, shape_classifier):
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    _, (X_test, _, _) = shapes
    X = X_test[:8]
    ours = class_activation_map(shape_classifier, X, target="cross")
    import copy

    network = copy.deepcopy(shape_classifier.net_.module_).eval()
    for module in network.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
    images = torch.from_numpy(X.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    cross = list(shape_classifier.classes_).index("cross")
    with pytorch_grad_cam.GradCAM(network, [network.features[4]]) as cam:
        theirs = cam(images, targets=[ClassifierOutputTarget(cross)] * len(X))
    # The package scales before resizing with OpenCV; the maps agree closely.
    for mine, other in zip(ours, theirs):
        assert np.corrcoef(mine.ravel(), other.ravel())[0, 1] > 0.95


def test_target_chooses_the_class_mapped(shapes, shape_classifier):
    _, (X_test, _, _) = shapes
    X = X_test[:6]
    predicted = shape_classifier.predict(X)
    default = class_activation_map(shape_classifier, X)
    np.testing.assert_array_equal(
        default, class_activation_map(shape_classifier, X, target=predicted)
    )
    other = np.where(predicted == "square", "cross", "square")
    assert not np.allclose(
        default, class_activation_map(shape_classifier, X, target=other)
    )
    one_label = class_activation_map(shape_classifier, X, target="square")
    assert one_label.shape == default.shape


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(target="circle"), "'circle' is not a class of this model"),
        (dict(target=["square"] * 2), "one label per image; got 2 labels for 6"),
        (dict(method="cam"), "method must be one of"),
        (dict(layer="features.9"), "not a layer of the network"),
        (dict(layer="classifier.0"), "chosen layer gave"),
        (dict(batch_size=0), "batch_size must be a positive int"),
    ],
)
def test_wrong_arguments_say_what_was_expected(shapes, shape_classifier, kwargs, match):
    _, (X_test, _, _) = shapes
    with pytest.raises((ValueError, TypeError), match=match):
        class_activation_map(shape_classifier, X_test[:6], **kwargs)


def test_the_fitted_model_is_unchanged(shapes, shape_classifier):
    _, (X_test, _, _) = shapes
    module = shape_classifier.net_.module_
    state = {key: value.clone() for key, value in module.state_dict().items()}
    requires_grad = [p.requires_grad for p in module.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in module.parameters()]
    before = shape_classifier.predict_proba(X_test)
    class_activation_map(shape_classifier, X_test, method="gradcam++")
    assert not module.training
    assert all(not m._forward_hooks and not m._backward_hooks for m in module.modules())
    assert [p.requires_grad for p in module.parameters()] == requires_grad
    for parameter, grad in zip(module.parameters(), grads):
        if grad is None:
            assert parameter.grad is None
        else:
            torch.testing.assert_close(parameter.grad, grad, rtol=0, atol=0)
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    np.testing.assert_array_equal(shape_classifier.predict_proba(X_test), before)


def test_threads_predicting_meanwhile_change_nothing(shapes, shape_classifier):
    _, (X_test, _, _) = shapes
    expected_maps = class_activation_map(shape_classifier, X_test)
    expected_proba = shape_classifier.predict_proba(X_test)
    results, errors = {"maps": [], "proba": []}, []

    def run(kind):
        try:
            for _ in range(3):
                if kind == "maps":
                    results[kind].append(class_activation_map(shape_classifier, X_test))
                else:
                    results[kind].append(shape_classifier.predict_proba(X_test))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(kind,)) for kind in ("maps", "proba")]
    threads += [threading.Thread(target=run, args=("maps",))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results["maps"]) == 6 and len(results["proba"]) == 3
    for maps in results["maps"]:
        np.testing.assert_allclose(maps, expected_maps, atol=1e-6)
    for proba in results["proba"]:
        np.testing.assert_allclose(proba, expected_proba, atol=1e-6)


def test_batches_give_the_maps_of_one_pass(shapes, shape_classifier):
    _, (X_test, _, _) = shapes
    np.testing.assert_allclose(
        class_activation_map(shape_classifier, X_test[:10], batch_size=3),
        class_activation_map(shape_classifier, X_test[:10], batch_size=10),
        atol=1e-5,
    )


def test_pipeline_steps_are_applied_and_maps_come_at_the_input_size(small):
    X, y, _ = small
    pipeline = make_pipeline(
        ImageResizer(size=12), ImageScaler(), CNNImageClassifier(**FAST)
    ).fit(X, y)
    maps = class_activation_map(pipeline, X[:5])
    assert maps.shape == (5, 8, 8)
    # The classifier alone, on the images the steps make, maps the same evidence.
    resized = pipeline[:-1].transform(X[:5])
    alone = class_activation_map(pipeline[-1], resized)
    assert alone.shape == (5, 12, 12)
    upsampled = torch.nn.functional.interpolate(
        torch.from_numpy(alone)[:, None], size=(8, 8), mode="bilinear"
    )[:, 0].numpy()
    assert np.corrcoef(upsampled.ravel(), maps.ravel())[0, 1] > 0.9


def test_image_files_give_the_maps_of_the_arrays(small, tmp_path):
    X, _, classifier = small
    paths = []
    for i, image in enumerate(X[:4]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    np.testing.assert_allclose(
        class_activation_map(classifier, paths),
        class_activation_map(classifier, X[:4]),
        atol=1e-5,
    )


class TinyNet(torch.nn.Module):
    def __init__(self, in_channels, n_classes, image_size):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, 4, 3, padding=1)
        self.second = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, n_classes)

    def forward(self, x):
        x = torch.relu(self.second(torch.relu(self.conv(x))))
        return self.head(x.mean(dim=(2, 3)))


def test_module_network_uses_its_last_convolution_or_the_layer_named(small):
    X, y, _ = small
    classifier = CNNImageClassifier(**{**FAST, "filters": (4,)}, module=TinyNet)
    classifier.fit(X, y)
    last = class_activation_map(classifier, X[:4])
    np.testing.assert_array_equal(
        last, class_activation_map(classifier, X[:4], layer="second")
    )
    first = class_activation_map(classifier, X[:4], layer="conv")
    assert first.shape == last.shape == (4, 8, 8)
    assert not np.allclose(first, last)


def test_backbone_maps(small):
    X, y, _ = small
    X = np.repeat(np.repeat(X, 4, axis=1), 4, axis=2)  # 32 px
    classifier = CNNImageClassifier(
        backbone="resnet18", weights=None, epochs=1, batch_size=16, random_state=0
    ).fit(X, y)
    maps = class_activation_map(classifier, X[:3], layer="body.layer4")
    assert maps.shape == (3, 32, 32)
    assert maps.min() >= 0 and maps.max() <= 1
    assert class_activation_map(classifier, X[:3]).shape == (3, 32, 32)


@pytest.mark.parametrize(
    "estimator",
    [
        make_pipeline(ImageScaler(), LogisticRegression()),
        CNNFeatureExtractor("resnet18", precision="float32"),
    ],
    ids=["logistic-regression", "feature-extractor"],
)
def test_estimators_without_a_classifier_network_are_refused(estimator):
    X, y = make_images(n_samples=10, size=8)
    if isinstance(estimator, Pipeline):
        estimator.fit(X.reshape(10, -1), y)
        X = X.reshape(10, -1)
    else:
        estimator.fit(X)
    with pytest.raises(TypeError, match=r"needs a fitted estimator with .*net_"):
        class_activation_map(estimator, X)


def test_plot_overlays_one_map_per_image(small):
    X, y, classifier = small
    figure = plot_class_activation_maps(classifier, X, y, n=5)
    titled = [ax for ax in figure.axes if ax.get_title()]
    assert len(titled) == 5
    # Each panel holds the image, then the map over it.
    assert all(len(ax.get_images()) == 2 for ax in titled)
    assert "gradcam: " in titled[0].get_title()
    assert "true: " in titled[0].get_title()
