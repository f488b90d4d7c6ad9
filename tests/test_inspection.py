"""sklearn_cnn.inspection: the layer trace, the plots, and scikit-learn's displays."""

import sys

import numpy as np
import pytest
import torch
from conftest import FAST, make_images
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import ConfusionMatrixDisplay
from sklearn.pipeline import Pipeline

from sklearn_cnn import CNNImageClassifier, CNNImageRegressor
from sklearn_cnn.augmentation import RandomAugment
from sklearn_cnn.inspection import (
    LayerTrace,
    layer_trace,
    plot_history,
    plot_predictions,
)
from sklearn_cnn.preprocessing import ImageResizer, ImageScaler

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def data():
    return make_images(n_samples=40, size=8)


@pytest.fixture(scope="module")
def classifier(data):
    X, y = data
    return CNNImageClassifier(**FAST).fit(X, y)


@pytest.fixture(scope="module")
def pipeline(data):
    X, y = data
    return Pipeline(
        [
            ("scale", ImageScaler()),
            ("resize", ImageResizer(size=(6, 6))),
            ("augment", RandomAugment(random_state=0)),
            ("cnn", CNNImageClassifier(**FAST)),
        ]
    ).fit(X, y)


# -- layer_trace ----------------------------------------------------------------
def test_trace_follows_the_network_layer_by_layer(classifier, data):
    X, _ = data
    trace = layer_trace(classifier, X[3])
    assert isinstance(trace, LayerTrace)
    assert [row.type for row in trace.rows] == [
        "Input",
        "Conv2d",
        "BatchNorm2d",
        "ReLU",
        "MaxPool2d",
        "AdaptiveAvgPool2d",
        "Flatten",
        "Linear",
        "ReLU",
        "Linear",
        "Softmax",
    ]
    shapes = {row.name: row.output_shape for row in trace.rows}
    assert shapes["input"] == (1, 3, 8, 8)
    assert shapes["features.0"] == (1, 8, 8, 8)  # 'same' convolution, 8 filters
    assert shapes["features.3"] == (1, 8, 4, 4)  # 2x2 max pool
    assert shapes["classifier.0"] == (1, 16)  # dense_units
    assert shapes["softmax"] == (1, 2)
    module = classifier.net_.module_
    n_parameters = sum(p.numel() for p in module.parameters())
    assert trace.n_parameters == trace.n_trainable_parameters == n_parameters
    assert sum(row.n_parameters for row in trace.rows) == n_parameters
    conv = module.features[0]
    assert trace.rows[1].n_parameters == conv.weight.numel()


def test_trace_probabilities_are_the_classifiers(classifier, data):
    X, _ = data
    trace = layer_trace(classifier, X, index=5)
    expected = classifier.predict_proba(X[5:6])[0]
    np.testing.assert_allclose(trace.probabilities, expected)
    assert trace.probabilities.sum() == pytest.approx(1.0)
    assert trace.predicted_class == classifier.predict(X[5:6])[0]
    assert trace.classes.tolist() == ["cat", "dog"]
    # A single image and the same image in a batch give the same trace.
    single = layer_trace(classifier, X[5])
    np.testing.assert_allclose(single.probabilities, trace.probabilities)
    assert layer_trace(classifier, X, index=-35).rows == trace.rows
    # The forward pass leaves the network as it was.
    assert not classifier.net_.module_.training


def test_trace_of_a_pipeline_applies_the_earlier_steps(pipeline, data):
    X, _ = data
    trace = layer_trace(pipeline, X[0])
    # The resizer ran before the network: 8x8 images reach it as 6x6.
    assert trace.rows[0].output_shape == (1, 3, 6, 6)
    np.testing.assert_allclose(trace.probabilities, pipeline.predict_proba(X[:1])[0])


def test_trace_prints_like_a_keras_summary(classifier, data):
    X, _ = data
    text = str(layer_trace(classifier, X[0]))
    lines = text.splitlines()
    assert lines[0].split() == ["Layer", "(type)", "Output", "shape", "Param", "#"]
    assert "features.0 (Conv2d)" in text and "(1, 8, 8, 8)" in text
    assert "softmax (Softmax)" in text
    n_parameters = sum(p.numel() for p in classifier.net_.module_.parameters())
    assert f"Total params: {n_parameters:,}" in text
    assert lines[-1].startswith("Softmax output: cat: 0.")
    assert lines[-1].endswith(("'cat'", "'dog'"))
    assert "LayerTrace(11 rows" in repr(layer_trace(classifier, X[0]))


def test_trace_of_a_custom_module(data):
    X, y = data

    class Tiny(torch.nn.Module):
        def __init__(self, in_channels, n_classes, image_size):
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Flatten(),
                torch.nn.Linear(in_channels * image_size[0] * image_size[1], n_classes),
            )

        def forward(self, x):
            return self.body(x)

    clf = CNNImageClassifier(module=Tiny, epochs=1, random_state=0).fit(X, y)
    trace = layer_trace(clf, X[0])
    assert [row.name for row in trace.rows] == ["input", "body.0", "body.1", "softmax"]
    assert trace.rows[2].n_parameters == 8 * 8 * 3 * 2 + 2


def test_trace_errors(classifier, data):
    X, y = data
    with pytest.raises(NotFittedError):
        layer_trace(CNNImageClassifier(), X[0])
    flat = X.reshape(len(X), -1)
    with pytest.raises(TypeError, match="needs a fitted CNNImageClassifier"):
        layer_trace(LogisticRegression().fit(flat, y), flat[0])
    with pytest.raises(IndexError, match="index=40 is out of range for a batch of 40"):
        layer_trace(classifier, X, index=40)
    with pytest.raises(ValueError, match="fitted on images of shape"):
        layer_trace(classifier, np.zeros((1, 5, 5, 3), np.uint8))


# -- plots ----------------------------------------------------------------------
def test_plot_history_draws_loss_and_accuracy_per_epoch(classifier):
    loss_ax, accuracy_ax = plot_history(classifier)
    assert loss_ax.get_ylabel() == "loss" and accuracy_ax.get_ylabel() == "accuracy"
    (line,) = loss_ax.lines
    assert line.get_label() == "training"
    np.testing.assert_allclose(line.get_ydata(), classifier.loss_curve_)
    np.testing.assert_array_equal(line.get_xdata(), [1, 2])
    accuracies = [row["train_accuracy"] for row in classifier.history_]
    np.testing.assert_allclose(accuracy_ax.lines[0].get_ydata(), accuracies)


def test_plot_history_with_validation_on_given_axes(data):
    X, y = data
    clf = CNNImageClassifier(
        **{**FAST, "early_stopping": True, "validation_fraction": 0.25}
    )
    pipe = Pipeline([("scale", ImageScaler()), ("cnn", clf)]).fit(X, y)
    figure, axes = plt.subplots(2, 1)
    returned = plot_history(pipe, ax=axes)
    assert list(returned) == list(axes)
    for axis in axes:
        assert [line.get_label() for line in axis.lines] == ["training", "validation"]
    valid_loss = [row["valid_loss"] for row in clf.history_]
    np.testing.assert_allclose(axes[0].lines[1].get_ydata(), valid_loss)
    with pytest.raises(ValueError, match="ax must hold two Axes"):
        plot_history(pipe, ax=axes[0])


def test_plot_history_of_a_regressor_draws_r2_beside_the_validation_loss(data):
    X, _ = data
    target = X.reshape(len(X), -1).mean(axis=1) / 255.0
    reg = CNNImageRegressor(
        **{**FAST, "early_stopping": True, "validation_fraction": 0.25}
    ).fit(X, target)
    loss_ax, score_ax = plot_history(reg)
    assert score_ax.get_ylabel() == "R²" and score_ax.get_title() == "R² per epoch"
    assert [line.get_label() for line in loss_ax.lines] == ["training", "validation"]
    np.testing.assert_allclose(
        score_ax.lines[1].get_ydata(), [row["valid_r2"] for row in reg.history_]
    )


def test_plot_predictions_titles_images_with_labels(classifier, data):
    X, y = data
    predicted = classifier.predict(X[:6])
    figure = plot_predictions(classifier, X, y, n=6, n_cols=4)
    titled = [axis for axis in figure.axes if axis.get_title()]
    assert len(figure.axes) == 8 and len(titled) == 6
    for axis, label, truth in zip(titled, predicted, y):
        assert axis.get_title().startswith(f"pred: {label} (")
        assert axis.get_title().endswith(f"true: {truth}")
        colour = "tab:green" if label == truth else "tab:red"
        assert matplotlib.colors.same_color(axis.title.get_color(), colour)
        assert axis.images[0].get_array().shape == (8, 8, 3)
    # Without labels; channels-first floats are shown channels last, in 0-1.
    X_first = X.transpose(0, 3, 1, 2).astype(np.float32)
    clf = CNNImageClassifier(**FAST).fit(X_first, y)
    figure = plot_predictions(clf, X_first, n=2)
    image = figure.axes[0].images[0].get_array()
    assert image.shape == (8, 8, 3) and 0 <= image.min() and image.max() <= 1
    assert "true" not in figure.axes[0].get_title()
    with pytest.raises(ValueError, match="X has 40 images but y has 3 labels"):
        plot_predictions(classifier, X, y[:3])


def test_plots_say_how_to_get_matplotlib(classifier, data, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install matplotlib"):
        plot_history(classifier)
    with pytest.raises(ImportError, match="plot_predictions needs matplotlib"):
        plot_predictions(classifier, *data)


def test_confusion_matrix_display_from_classifier_and_pipeline(
    classifier, pipeline, data
):
    X, y = data
    for estimator in (classifier, pipeline):
        display = ConfusionMatrixDisplay.from_estimator(estimator, X, y)
        assert display.confusion_matrix.sum() == len(y)
        assert list(display.display_labels) == ["cat", "dog"]
        predicted = estimator.predict(X)
        assert np.trace(display.confusion_matrix) == np.sum(predicted == y)
