"""sklearn_cnn.inspection.plot_top_losses and most_confused."""

import numpy as np
import pytest
from conftest import FAST, make_images
from PIL import Image
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import make_pipeline

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn.inspection import most_confused, plot_top_losses
from sklearn_cnn.preprocessing import ImageScaler

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


class FixedProbabilities(ClassifierMixin, BaseEstimator):
    """A classifier whose probabilities are given: the top losses are known."""

    def __init__(self, probabilities=None):
        self.probabilities = probabilities

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return np.asarray(self.probabilities)[: len(X)]

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def fixed():
    X = np.zeros((5, 4, 4, 3), dtype=np.uint8)
    y = np.array(["cat", "dog", "cat", "bird", "dog"])
    probabilities = [
        [0.1, 0.8, 0.1],  # cat taken for a cat: loss -log 0.8
        [0.1, 0.1, 0.8],  # dog taken for a dog
        [0.7, 0.2, 0.1],  # cat taken for a bird: loss -log 0.2
        [0.01, 0.98, 0.01],  # bird taken for a cat: the worst
        [0.2, 0.7, 0.1],  # dog taken for a cat: loss -log 0.1
    ]
    return X, y, FixedProbabilities(probabilities).fit(X, y)


def test_top_losses_are_shown_worst_first_with_predicted_true_and_probabilities():
    X, y, model = fixed()
    figure = plot_top_losses(model, X, y, n=3)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert len(titles) == 3
    assert titles[0] == "pred: cat (0.98)\ntrue: bird (0.01), loss 4.61"
    assert titles[1] == "pred: cat (0.70)\ntrue: dog (0.10), loss 2.30"
    assert titles[2] == "pred: bird (0.70)\ntrue: cat (0.20), loss 1.61"
    wrong = [ax for ax in figure.axes if ax.get_title()][0]
    assert wrong.title.get_color() == "tab:red"


def test_most_confused_counts_pairs_of_distinct_classes():
    X, y, model = fixed()
    assert most_confused(model, X, y) == [
        ("bird", "cat", 1),
        ("cat", "bird", 1),
        ("dog", "cat", 1),
    ]
    assert most_confused(model, X, y, min_count=2) == []


def test_with_a_fitted_pipeline_files_and_heatmaps(tmp_path):
    X, y = make_images(n_samples=24, size=8)
    classifier = CNNImageClassifier(**FAST).fit(X, y)
    paths = []
    for i, image in enumerate(X):
        path = tmp_path / f"{i}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    figure = plot_top_losses(classifier, paths, y, n=4, heatmap=True)
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert len(panels) == 4 and all(len(ax.get_images()) == 2 for ax in panels)
    pipeline = make_pipeline(ImageScaler(), CNNImageClassifier(**FAST)).fit(X, y)
    predicted = pipeline.predict(X)
    pairs = most_confused(pipeline, X, y)
    assert sum(count for _, _, count in pairs) == int((predicted != y).sum())


@pytest.mark.parametrize(
    "y, match",
    [
        (["cat", "dog"], r"X has 5 images but y has shape \(2,\)"),
        (["cat", "dog", "cat", "bird", "fish"], r"label\(s\) \['fish'\]"),
    ],
)
def test_labels_that_do_not_fit_are_refused(y, match):
    X, _, model = fixed()
    with pytest.raises(ValueError, match=match):
        most_confused(model, X, y)
    with pytest.raises(ValueError, match=match):
        plot_top_losses(model, X, y)


def test_a_model_without_probabilities_is_refused():
    X, y, _ = fixed()
    with pytest.raises(TypeError, match="Expected a fitted classifier"):
        plot_top_losses(ImageScaler().fit(X), X, y)
