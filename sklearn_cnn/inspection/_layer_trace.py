"""A layer-by-layer trace of one image through a fitted network."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import expit, softmax
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from .._backbones import BackboneNetwork
from .._inference import network_outputs
from .._sources import select_image

# A backbone body with fewer top-level blocks than this is shown one level deeper.
_MIN_BACKBONE_ROWS = 4


@dataclass(frozen=True)
class LayerRow:
    """One layer's place in a :class:`LayerTrace`.

    Attributes
    ----------
    name : str
        The layer's qualified name in the network (``"features.0"``), or
        ``"input"`` for the first row and ``"softmax"`` (``"sigmoid"`` for a
        multi-label classifier) for the last; a regressor has no such row.
    type : str
        The layer's class name (``"Conv2d"``, ``"MaxPool2d"``, ``"Linear"``...).
    output_shape : tuple of int
        Shape of the layer's output for one image, batch axis first.
    n_parameters : int
        Number of parameters the layer owns (weights and biases).
    """

    name: str
    type: str
    output_shape: tuple[int, ...]
    n_parameters: int


@dataclass(frozen=True, repr=False)
class LayerTrace:
    """The result of :func:`layer_trace`: layers, shapes and the prediction.

    ``print(trace)`` shows a table like Keras's ``model.summary()``.

    Attributes
    ----------
    rows : tuple of LayerRow
        The input, every layer in the order it ran, then the softmax (the
        sigmoid of a multi-label classifier; nothing more for a regressor).
    classes : ndarray of shape (n_classes,) or None
        The classifier's ``classes_``; None for a regressor.
    probabilities : ndarray of shape (n_classes,) or None
        The probabilities of the traced image, as ``predict_proba`` gives
        them; None for a regressor.
    n_parameters : int
        Number of parameters of the whole network.
    n_trainable_parameters : int
        Number of those that training updates.
    task : {"classification", "multi-label", "regression"}, default="classification"
        What the traced model predicts.
    predictions : ndarray of shape (n_outputs,) or None, default=None
        A regressor's prediction for the traced image, as ``predict`` gives it;
        None for a classifier.
    """

    rows: tuple[LayerRow, ...]
    classes: np.ndarray | None
    probabilities: np.ndarray | None
    n_parameters: int
    n_trainable_parameters: int
    task: str = "classification"
    predictions: np.ndarray | None = None

    @property
    def predicted_class(self):
        """The class with the highest probability (classification)."""
        if self.task != "classification":
            read = "predicted_labels" if self.task == "multi-label" else "predictions"
            raise AttributeError(
                f"a {self.task} trace has no single predicted class; read {read}."
            )
        return self.classes[int(np.argmax(self.probabilities))]

    @property
    def predicted_labels(self) -> list:
        """The labels of probability above 0.5 (multi-label)."""
        if self.task != "multi-label":
            read = "predicted_class" if self.task == "classification" else "predictions"
            raise AttributeError(f"a {self.task} trace has no label set; read {read}.")
        return [_plain(c) for c, p in zip(self.classes, self.probabilities) if p > 0.5]

    def _prediction_line(self) -> str:
        if self.task == "regression":
            values = ", ".join(f"{value:.4g}" for value in self.predictions)
            return f"Predicted: {values}"
        probabilities = ", ".join(
            f"{label}: {probability:.3f}"
            for label, probability in zip(self.classes, self.probabilities)
        )
        if self.task == "multi-label":
            return (
                f"Sigmoid output: {probabilities} -> predicted labels "
                f"{self.predicted_labels}"
            )
        return (
            f"Softmax output: {probabilities} -> predicted "
            f"{_plain(self.predicted_class)!r}"
        )

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __repr__(self) -> str:
        if self.task == "classification":
            shown = f"predicted_class={self.predicted_class!r}"
        elif self.task == "multi-label":
            shown = f"predicted_labels={self.predicted_labels!r}"
        else:
            shown = f"predictions={self.predictions.tolist()!r}"
        return (
            f"LayerTrace({len(self.rows)} rows, {self.n_parameters:,} parameters, "
            f"{shown})"
        )

    def __str__(self) -> str:
        names = [f"{row.name} ({row.type})" for row in self.rows]
        shapes = [str(tuple(row.output_shape)) for row in self.rows]
        params = [f"{row.n_parameters:,}" for row in self.rows]
        name_width = max(len("Layer (type)"), *map(len, names))
        shape_width = max(len("Output shape"), *map(len, shapes))
        param_width = max(len("Param #"), *map(len, params))
        width = name_width + shape_width + param_width + 4
        lines = [
            f"{'Layer (type)':<{name_width}}  {'Output shape':<{shape_width}}  "
            f"{'Param #':>{param_width}}",
            "=" * width,
        ]
        lines += [
            f"{name:<{name_width}}  {shape:<{shape_width}}  {param:>{param_width}}"
            for name, shape, param in zip(names, shapes, params)
        ]
        n_frozen = self.n_parameters - self.n_trainable_parameters
        lines += [
            "=" * width,
            f"Total params: {self.n_parameters:,} (trainable: "
            f"{self.n_trainable_parameters:,}, non-trainable: {n_frozen:,})",
            self._prediction_line(),
        ]
        return "\n".join(lines)


def _plain(value):
    """NumPy scalars as Python ones: ``'cat'`` prints better than ``np.str_``."""
    return value.item() if isinstance(value, np.generic) else value


def _split_estimator(estimator):
    """(steps before the classifier or None, the fitted classifier)."""
    if isinstance(estimator, Pipeline):
        preprocessing, classifier = estimator[:-1], estimator[-1]
        if len(preprocessing) == 0:
            preprocessing = None
    else:
        preprocessing, classifier = None, estimator
    net = getattr(classifier, "net_", None)
    if net is None or not hasattr(net, "module_"):
        check_is_fitted(classifier)
        raise TypeError(
            "layer_trace needs a fitted CNNImageClassifier or CNNImageRegressor, "
            f"or a Pipeline ending in one; got {type(estimator).__name__} ending in "
            f"{type(classifier).__name__}, which has no trained network (net_)."
        )
    return preprocessing, classifier


def _layer_type(layer: torch.nn.Module) -> str:
    """The layer's class name; a private subclass shows as its public base."""
    for cls in type(layer).__mro__:
        if not cls.__name__.startswith("_"):
            return cls.__name__
    return type(layer).__name__


def _output_shape(output) -> tuple[int, ...]:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return tuple(item.shape)
    return ()


def _traced_layers(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The layers that get a row: every leaf, or a backbone's blocks.

    A pretrained backbone has dozens of layers (resnet18: 60): its rows are the
    body's top-level blocks (``body.layer1``), each with all the parameters
    inside it, then the head, so that the table stays readable.
    """
    if not isinstance(module, BackboneNetwork):
        return [
            (name, layer)
            for name, layer in module.named_modules()
            if next(layer.children(), None) is None
        ]
    blocks = list(module.body.named_children()) or [("", module.body)]
    if len(blocks) < _MIN_BACKBONE_ROWS:
        # Bodies such as MobileNet's keep their blocks in one Sequential.
        blocks = [
            (f"{name}.{inner}", layer)
            for name, block in blocks
            for inner, layer in (
                block.named_children()
                if isinstance(block, torch.nn.Sequential)
                else [("", block)]
            )
        ]
    rows = [
        ("body." + name.strip("."), layer)
        for name, layer in blocks
        if not isinstance(layer, torch.nn.Identity)  # the replaced final layer
    ]
    return [*rows, ("head", module.head)]


def layer_trace(estimator, X, *, index=0):
    """Trace one image through a fitted network, layer by layer.

    Runs a real forward pass of one image and records, for every layer in the
    order it runs, its output shape and number of parameters, like Keras's
    ``model.summary()``, together with the prediction: the softmax probability
    of each class, the sigmoid probability of each label for a multi-label
    classifier, the predicted values for a regressor.
    A pretrained ``backbone`` is summarized by block (``body.layer1``, with
    the parameters of all its layers), then its new ``head``.
    With a Pipeline, the image first goes through the steps before the
    classifier (their ``transform``; augmenters leave images unchanged at this
    stage).

    Parameters
    ----------
    estimator : CNNImageClassifier, CNNImageRegressor or Pipeline
        A fitted :class:`~sklearn_cnn.CNNImageClassifier` or
        :class:`~sklearn_cnn.CNNImageRegressor`, or a fitted Pipeline whose last
        step is one.
    X : array-like
        One image, ``(height, width, channels)`` as given to ``fit`` one at a
        time, or a batch of images, in any layout ``fit`` accepts.
    index : int, default=0
        Which image of a batch to trace.

    Returns
    -------
    trace : LayerTrace
        The rows (input, each layer, softmax or sigmoid), the probabilities
        (or a regressor's predictions) and the parameter counts.
        ``print(trace)`` shows them as a table.

    Raises
    ------
    TypeError
        If ``estimator`` is not a fitted classifier with a network.
    IndexError
        If ``index`` is outside the batch.

    Examples
    --------
    >>> from sklearn_cnn import CNNImageClassifier
    >>> from sklearn_cnn.datasets import load_cats_dogs
    >>> from sklearn_cnn.inspection import layer_trace
    >>> X, y = load_cats_dogs(image_size=8, n_samples=20, return_X_y=True)
    >>> clf = CNNImageClassifier(filters=(4,), dense_units=8, epochs=1,
    ...                          random_state=0).fit(X, y)
    >>> trace = layer_trace(clf, X[0])
    >>> [row.type for row in trace.rows]  # doctest: +NORMALIZE_WHITESPACE
    ['Input', 'Conv2d', 'BatchNorm2d', 'ReLU', 'MaxPool2d', 'AdaptiveAvgPool2d',
     'Flatten', 'Linear', 'ReLU', 'Linear', 'Softmax']
    >>> trace.rows[1].output_shape
    (1, 4, 8, 8)
    >>> print(trace)  # doctest: +ELLIPSIS
    Layer (type)              Output shape  Param #
    ===============================================
    input (Input)             (1, 3, 8, 8)        0
    features.0 (Conv2d)       (1, 4, 8, 8)      108
    features.1 (BatchNorm2d)  (1, 4, 8, 8)        8
    features.2 (ReLU)         (1, 4, 8, 8)        0
    features.3 (MaxPool2d)    (1, 4, 4, 4)        0
    pool (AdaptiveAvgPool2d)  (1, 4, 4, 4)        0
    flatten (Flatten)         (1, 64)             0
    classifier.0 (Linear)     (1, 8)            520
    classifier.1 (ReLU)       (1, 8)              0
    classifier.2 (Linear)     (1, 2)             18
    softmax (Softmax)         (1, 2)              0
    ===============================================
    Total params: 654 (trainable: 654, non-trainable: 0)
    Softmax output: cat: 0..., dog: 0... -> predicted '...'
    """
    check_is_fitted(estimator)
    preprocessing, classifier = _split_estimator(estimator)
    X_one = select_image(estimator, X, index)
    if preprocessing is not None:
        X_one = preprocessing.transform(X_one)
    source = classifier._prediction_source(X_one)
    height, width, channels = source.image_shape

    # The trace's own copy of the network: its hooks and its mode are this
    # call's, so threads predicting with the fitted model meanwhile are not
    # disturbed (nor recorded).
    module = copy.deepcopy(classifier.net_.module_).eval()
    parameters = list(module.parameters())
    leaves = _traced_layers(module)
    rows: list[LayerRow] = [LayerRow("input", "Input", (1, channels, height, width), 0)]

    def recorder(name, layer):
        # A leaf owns its parameters; a backbone's block counts all inside it.
        n_parameters = sum(p.numel() for p in layer.parameters())

        def hook(_, __, output):
            rows.append(
                LayerRow(
                    name or _layer_type(layer).lower(),
                    _layer_type(layer),
                    _output_shape(output),
                    n_parameters,
                )
            )

        return hook

    for name, layer in leaves:
        layer.register_forward_hook(recorder(name, layer))
    logits = network_outputs(
        module,
        source,
        classifier.prediction_settings_,
        device=torch.device(classifier.device_),
        batch_size=1,
    )
    counts = {
        "n_parameters": sum(p.numel() for p in parameters),
        "n_trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
    }
    outputs = logits.astype(np.float64)
    if not hasattr(classifier, "classes_"):
        # A regressor's network learns standardized targets: predict's values.
        predictions = outputs * classifier.target_scale_ + classifier.target_mean_
        return LayerTrace(
            rows=tuple(rows),
            classes=None,
            probabilities=None,
            task="regression",
            predictions=predictions[0],
            **counts,
        )
    if classifier._output_activation() == "sigmoid":
        rows.append(LayerRow("sigmoid", "Sigmoid", tuple(logits.shape), 0))
        task, probabilities = "multi-label", expit(outputs)[0]
    else:
        rows.append(LayerRow("softmax", "Softmax", tuple(logits.shape), 0))
        task, probabilities = "classification", softmax(outputs, axis=1)[0]
    return LayerTrace(
        rows=tuple(rows),
        classes=classifier.classes_,
        probabilities=probabilities,
        task=task,
        **counts,
    )
