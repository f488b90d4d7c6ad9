"""A layer-by-layer trace of one image through a fitted network."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import softmax
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
        ``"input"`` and ``"softmax"`` for the first and the last row.
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
    """The result of :func:`layer_trace`: layers, shapes and class probabilities.

    ``print(trace)`` shows a table like Keras's ``model.summary()``.

    Attributes
    ----------
    rows : tuple of LayerRow
        The input, every layer in the order it ran, then the softmax.
    classes : ndarray of shape (n_classes,)
        The classifier's ``classes_``.
    probabilities : ndarray of shape (n_classes,)
        The softmax output for the traced image, as ``predict_proba`` gives it.
    n_parameters : int
        Number of parameters of the whole network.
    n_trainable_parameters : int
        Number of those that training updates.
    """

    rows: tuple[LayerRow, ...]
    classes: np.ndarray
    probabilities: np.ndarray
    n_parameters: int
    n_trainable_parameters: int

    @property
    def predicted_class(self):
        """The class with the highest probability."""
        return self.classes[int(np.argmax(self.probabilities))]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __repr__(self) -> str:
        return (
            f"LayerTrace({len(self.rows)} rows, {self.n_parameters:,} parameters, "
            f"predicted_class={self.predicted_class!r})"
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
        probabilities = ", ".join(
            f"{label}: {probability:.3f}"
            for label, probability in zip(self.classes, self.probabilities)
        )
        lines += [
            "=" * width,
            f"Total params: {self.n_parameters:,} (trainable: "
            f"{self.n_trainable_parameters:,}, non-trainable: {n_frozen:,})",
            f"Softmax output: {probabilities} -> predicted "
            f"{_plain(self.predicted_class)!r}",
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
            "layer_trace needs a fitted CNNImageClassifier or a Pipeline ending in "
            f"one; got {type(estimator).__name__} ending in "
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
    ``model.summary()``, together with the softmax probabilities of each class.
    A pretrained ``backbone`` is summarized by block (``body.layer1``, with
    the parameters of all its layers), then its new ``head``.
    With a Pipeline, the image first goes through the steps before the
    classifier (their ``transform``; augmenters leave images unchanged at this
    stage).

    Parameters
    ----------
    estimator : CNNImageClassifier or Pipeline
        A fitted :class:`~sklearn_cnn.CNNImageClassifier`, or a fitted Pipeline
        whose last step is one.
    X : array-like
        One image, ``(height, width, channels)`` as given to ``fit`` one at a
        time, or a batch of images, in any layout ``fit`` accepts.
    index : int, default=0
        Which image of a batch to trace.

    Returns
    -------
    trace : LayerTrace
        The rows (input, each layer, softmax), the class probabilities and the
        parameter counts. ``print(trace)`` shows them as a table.

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
    rows.append(LayerRow("softmax", "Softmax", tuple(logits.shape), 0))
    probabilities = softmax(logits.astype(np.float64), axis=1)[0]
    return LayerTrace(
        rows=tuple(rows),
        classes=classifier.classes_,
        probabilities=probabilities,
        n_parameters=sum(p.numel() for p in parameters),
        n_trainable_parameters=sum(p.numel() for p in parameters if p.requires_grad),
    )
