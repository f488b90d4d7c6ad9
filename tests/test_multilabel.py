"""Multi-label images: CNNImageClassifier on a 0/1 indicator y, a sigmoid per label."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline

from sklearn_cnn import (
    CNNFeatureExtractor,
    CNNImageClassifier,
    export_onnx,
    load_model,
    save_model,
)
from sklearn_cnn.inspection import (
    class_activation_map,
    layer_trace,
    plot_predictions,
    plot_top_losses,
)
from sklearn_cnn.preprocessing import ImageScaler

SHAPES = ("square", "plus", "bar", "ring")
FAST = dict(filters=(8, 16), dense_units=32, epochs=4, lr=0.01, random_state=0)


def fast(**params):
    return CNNImageClassifier(**{**FAST, **params})


def _draw(canvas, shape, top, left):
    patch = np.zeros((7, 7))
    if shape == "square":
        patch[1:6, 1:6] = 1
    elif shape == "plus":
        patch[3, :] = patch[:, 3] = 1
    elif shape == "bar":
        patch[2:5, :] = 1
    else:
        patch[0, :] = patch[-1, :] = patch[:, 0] = patch[:, -1] = 1
    region = canvas[top : top + 7, left : left + 7]
    np.maximum(region, patch, out=region)


def two_shapes(n_samples, seed, size=16):
    """Gray images holding two of four shapes each, in two of the four corners."""
    rng = np.random.RandomState(seed)
    X = np.zeros((n_samples, size, size))
    Y = np.zeros((n_samples, len(SHAPES)), dtype=np.int64)
    corners = [(0, 0), (0, 8), (8, 0), (8, 8)]
    for i in range(n_samples):
        kinds = rng.choice(len(SHAPES), 2, replace=False)
        places = rng.choice(len(corners), 2, replace=False)
        for kind, place in zip(kinds, places):
            top, left = corners[place]
            _draw(X[i], SHAPES[kind], top + rng.randint(2), left + rng.randint(2))
            Y[i, kind] = 1
    X = np.clip(X * 200 + rng.normal(30, 15, X.shape), 0, 255).astype(np.uint8)
    return X[..., None], Y


@pytest.fixture(scope="module")
def shapes():
    X, Y = two_shapes(300, seed=0)
    X_test, Y_test = two_shapes(100, seed=1)
    return X, Y, X_test, Y_test


@pytest.fixture(scope="module")
def fitted(shapes):
    X, Y, _, _ = shapes
    return fast().fit(X, Y)


def test_learns_two_shapes_per_image_to_a_high_sample_f1(shapes, fitted):
    _, _, X_test, Y_test = shapes
    predicted = fitted.predict(X_test)
    assert predicted.shape == Y_test.shape
    assert set(np.unique(predicted)) <= {0, 1}
    assert f1_score(Y_test, predicted, average="samples") >= 0.9
    assert fitted.multilabel_
    np.testing.assert_array_equal(fitted.classes_, np.arange(4))
    # The epoch table's metric is the sample-averaged F1.
    assert fitted.history_[-1]["train_f1_samples"] >= 0.9


def test_probabilities_are_per_label_and_predict_thresholds_them(shapes, fitted):
    _, _, X_test, Y_test = shapes
    proba = fitted.predict_proba(X_test)
    assert proba.shape == (100, 4)
    assert ((proba >= 0) & (proba <= 1)).all()
    # Independent labels: rows sum to about 2 here (two shapes), not 1.
    assert abs(proba.sum(axis=1).mean() - 2) < 0.3
    np.testing.assert_array_equal(fitted.predict(X_test), (proba > 0.5).astype(int))
    np.testing.assert_allclose(
        fitted.predict_log_proba(X_test), np.log(proba), rtol=1e-6, atol=1e-12
    )
    # score is scikit-learn's subset accuracy: every label of an image right.
    assert fitted.score(X_test, Y_test) == accuracy_score(
        Y_test, fitted.predict(X_test)
    )


def test_sample_f1_of_the_epoch_table_matches_scikit_learn():
    from sklearn_cnn._net import SampleF1, WeightedTarget

    rng = np.random.RandomState(0)
    targets = rng.randint(0, 2, (50, 5)).astype(np.float32)
    targets[:3] = 0  # images without labels, some predicted right
    logits = rng.normal(size=(50, 5)).astype(np.float32)
    logits[:2] = -1
    weights = rng.uniform(0, 2, 50).astype(np.float32)

    class History:
        def record(self, key, value):
            self.recorded = (key, value)

    class Net:
        history = History()

    metric = SampleF1()
    metric.on_epoch_begin(Net())
    for part in np.array_split(np.arange(50), 3):  # three batches
        batch = (
            None,
            WeightedTarget(torch.tensor(targets[part]), torch.tensor(weights[part])),
        )
        metric.on_batch_end(
            Net(), batch=batch, training=True, y_pred=torch.tensor(logits[part])
        )
    metric.on_epoch_end(Net())
    key, value = Net.history.recorded
    assert key == "train_f1_samples"
    expected = f1_score(
        targets, logits > 0, average="samples", sample_weight=weights, zero_division=1.0
    )
    assert value == pytest.approx(expected, rel=1e-6)


def test_image_files_train_and_predict_like_arrays(shapes, tmp_path):
    X, Y, X_test, Y_test = shapes
    paths = []
    for i, image in enumerate(np.concatenate([X, X_test])[..., 0]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(image, mode="L").save(path)
        paths.append(str(path))
    train, test = paths[: len(X)], paths[len(X) :]
    from_files = fast().fit(train, Y)
    assert from_files.image_shape_ == (16, 16, 1)
    assert f1_score(Y_test, from_files.predict(test), average="samples") >= 0.9
    from_arrays = fast().fit(X, Y)
    np.testing.assert_allclose(
        from_files.predict_proba(test), from_arrays.predict_proba(X_test), atol=1e-5
    )


def test_grid_search_and_cross_validation_score_f1_samples(shapes):
    X, Y, _, _ = shapes
    search = GridSearchCV(
        make_pipeline(ImageScaler(), fast(epochs=2)),
        {"cnnimageclassifier__epochs": [1, 4]},
        scoring="f1_samples",
        cv=2,
    ).fit(X, Y)
    assert search.best_params_ == {"cnnimageclassifier__epochs": 4}
    assert search.best_score_ >= 0.8
    scores = cross_val_score(
        fast(epochs=2), X[:200], Y[:200], cv=2, scoring="f1_samples"
    )
    assert scores.shape == (2,) and (scores > 0.5).all()


def test_balanced_class_weight_weighs_each_labels_positives_and_negatives():
    X, Y = two_shapes(60, seed=2)
    Y[:, 0] = np.arange(60) < 6  # a rare label: 6 of 60
    clf = fast(epochs=1, class_weight="balanced").fit(X, Y)
    loss = clf.net_.criterion_
    positives = Y.sum(axis=0)
    np.testing.assert_allclose(
        loss.positive_weight.numpy(), 60 / (2 * positives), rtol=1e-6
    )
    np.testing.assert_allclose(
        loss.negative_weight.numpy(), 60 / (2 * (60 - positives)), rtol=1e-6
    )
    # Sample weights count in the balance, as compute_class_weight counts them.
    weights = np.where(Y[:, 0] == 1, 9.0, 1.0)
    weighted = fast(epochs=1, class_weight="balanced").fit(X, Y, sample_weight=weights)
    assert weighted.net_.criterion_.positive_weight[0] == pytest.approx(
        weights.sum() / (2 * 54), rel=1e-6
    )
    by_label = fast(epochs=1, class_weight={0: 3.0}).fit(X, Y)
    np.testing.assert_allclose(
        by_label.net_.criterion_.positive_weight.numpy(), [3, 1, 1, 1]
    )
    with pytest.raises(ValueError, match="label indices 0 to 3"):
        fast(epochs=1, class_weight={"square": 2.0}).fit(X, Y)


def test_zero_sample_weight_is_training_without_those_images():
    X, Y = two_shapes(60, seed=3)
    weights = np.ones(60)
    weights[::4] = 0
    weighted = fast(epochs=2).fit(X, Y, sample_weight=weights)
    kept = weights > 0
    without = fast(epochs=2).fit(X[kept], Y[kept])
    np.testing.assert_allclose(
        weighted.predict_proba(X), without.predict_proba(X), rtol=1e-5, atol=1e-6
    )


def test_loss_is_the_binary_cross_entropy_of_each_label():
    from sklearn_cnn._net import LabelWeightedBCEWithLogitsLoss

    rng = np.random.RandomState(0)
    logits = torch.tensor(rng.normal(size=(6, 3)), dtype=torch.float32)
    targets = torch.tensor(rng.randint(0, 2, (6, 3)), dtype=torch.float32)
    loss = LabelWeightedBCEWithLogitsLoss(3, positive_weight=[2.0, 1.0, 0.5])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, targets, reduction="none"
    ) * torch.where(targets == 1, torch.tensor([2.0, 1.0, 0.5]), 1.0)
    torch.testing.assert_close(loss(logits, targets), expected)


@pytest.mark.parametrize(
    "y, match",
    [
        (np.full((30, 3), 2), "not all 0 or 1"),
        (np.random.RandomState(0).rand(30, 3), "not all 0 or 1"),
    ],
)
def test_two_dimensional_labels_other_than_0_and_1_are_refused(y, match):
    X, _ = two_shapes(30, seed=4)
    with pytest.raises(ValueError, match=match):
        fast(epochs=1).fit(X, y)


def test_continuing_needs_the_same_kind_and_number_of_labels():
    X, Y = two_shapes(40, seed=5)
    clf = fast(epochs=1, warm_start=True).fit(X, Y)
    before = clf.predict_proba(X)
    with pytest.raises(ValueError, match="fitted on a multi-label indicator"):
        clf.fit(X, Y.argmax(axis=1))
    with pytest.raises(ValueError, match="fitted on 4"):
        clf.fit(X, Y[:, :3])
    # Nothing half-changed by the refused fits.
    np.testing.assert_array_equal(clf.predict_proba(X), before)
    assert clf.fit(X, Y).n_iter_ == 2


def test_partial_fit_takes_the_label_indices_as_classes():
    X, Y = two_shapes(40, seed=6)
    clf = fast().partial_fit(X, Y, classes=np.arange(4))
    assert clf.n_iter_ == 1 and clf.multilabel_
    clf.partial_fit(X, Y)
    assert clf.n_iter_ == 2
    with pytest.raises(ValueError, match="classes must be 4 label indices"):
        fast().partial_fit(X, Y, classes=["a", "b"])


def test_model_files_and_pickles_keep_the_multi_label_model(shapes, fitted, tmp_path):
    _, _, X_test, _ = shapes
    path = save_model(fitted, tmp_path / "shapes.skcnn")
    loaded = load_model(path)
    assert loaded.multilabel_
    np.testing.assert_array_equal(loaded.predict(X_test), fitted.predict(X_test))
    np.testing.assert_allclose(
        loaded.predict_proba(X_test), fitted.predict_proba(X_test)
    )
    unpickled = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(unpickled.predict(X_test), fitted.predict(X_test))


def test_layer_trace_ends_in_a_sigmoid_row(shapes, fitted):
    _, _, X_test, _ = shapes
    trace = layer_trace(fitted, X_test, index=0)
    assert trace.rows[-1].type == "Sigmoid" and trace.task == "multi-label"
    np.testing.assert_allclose(trace.probabilities, fitted.predict_proba(X_test[:1])[0])
    expected = np.flatnonzero(fitted.predict(X_test[:1])[0]).tolist()
    assert trace.predicted_labels == expected
    assert "Sigmoid output" in str(trace)
    with pytest.raises(AttributeError, match="read predicted_labels"):
        _ = trace.predicted_class


def test_plots_and_maps_show_label_sets(shapes, fitted):
    _, _, X_test, Y_test = shapes
    figure = plot_predictions(fitted, X_test, Y_test, n=4)
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    first = ", ".join(map(str, np.flatnonzero(Y_test[0])))
    assert titles[0].endswith(f"true: {first}")
    maps = class_activation_map(fitted, X_test[:3], target=2)
    assert maps.shape == (3, 16, 16)
    with pytest.raises(TypeError, match="multilabel_confusion_matrix"):
        plot_top_losses(fitted, X_test, Y_test)


def test_onnx_graph_ends_in_the_sigmoid(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    X, Y = two_shapes(40, seed=7)
    clf = fast(epochs=1, precision="float32").fit(X, Y)
    path = export_onnx(clf, tmp_path / "shapes.onnx")
    session = onnxruntime.InferenceSession(str(path))
    (probabilities,) = session.run(None, {"images": X})
    np.testing.assert_allclose(probabilities, clf.predict_proba(X), atol=1e-5)
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata["multilabel"] == "true"


def test_feature_extractor_feeds_a_multi_label_and_a_regression_head(shapes):
    from sklearn.linear_model import Ridge
    from sklearn.neighbors import KNeighborsClassifier

    X, Y, X_test, Y_test = shapes
    body = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.Flatten())
    extractor = CNNFeatureExtractor(body, precision="float32", random_state=0)
    labels = make_pipeline(extractor, KNeighborsClassifier(3)).fit(X, Y)
    assert labels.predict(X_test).shape == Y_test.shape
    counts = make_pipeline(extractor, Ridge()).fit(X, Y.sum(axis=1) + Y[:, 0])
    assert counts.predict(X_test).shape == (100,)
