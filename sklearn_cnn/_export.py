"""export_onnx: a fitted model as one ONNX graph, from uint8 images to probabilities.

The graph holds everything ``predict_proba`` does after decoding: the Pipeline's
deterministic image steps (scaling, standardization, resizing), the 0-255 to
0-1 scaling of uint8 pixels, the backbone's input normalization (inside the
network already) and the softmax (the sigmoid of a multi-label classifier).
The class labels travel in the graph's metadata.

The graph is written with PyTorch's TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``). The newer exporter, torch's
default since 2.9, needs the ``onnxscript`` package, which neither torch nor
onnx installs; the TorchScript one needs nothing more and exports these
networks (convolutions, batch norm, pooling, linear layers) exactly.
"""

from __future__ import annotations

import io
import json
import os
import warnings

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .inspection import _fitted

# Opset 17 is read by every onnxruntime since 1.13 and has all the operators used.
OPSET_VERSION = 17
LAYOUTS = ("nhwc", "nchw", "nhw", "flat")
INPUT_NAME = "images"


class _Scale(nn.Module):
    def __init__(self, divisor: float):
        super().__init__()
        self.divisor = float(divisor)

    def forward(self, x):
        return x / self.divisor


class _Standardize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", _per_channel(mean))
        self.register_buffer("std", _per_channel(std))

    def forward(self, x):
        return (x - self.mean) / self.std


class _Resize(nn.Module):
    """A resizing step as two matrix products, rounded to uint8 when it kept uint8.

    Resizing is linear and separable: ``out = A_h @ image @ A_w.T``. The
    matrices are what the fitted step itself makes of unit images, so every
    interpolation and antialiasing mode is exported exactly, where the
    TorchScript exporter has no antialiased resize.
    """

    def __init__(self, step, in_size: tuple[int, int], round_to_uint8: bool):
        super().__init__()
        height, width = in_size
        with torch.inference_mode():
            rows = torch.eye(height).reshape(height, 1, height, 1)
            rows = step.transform_batch(rows.expand(height, 1, height, width))
            columns = torch.eye(width).reshape(width, 1, 1, width)
            columns = step.transform_batch(columns.expand(width, 1, height, width))
        self.register_buffer("rows", rows[:, 0, :, 0].T.contiguous().clone())
        self.register_buffer("columns", columns[:, 0, 0, :].contiguous().clone())
        self.round_to_uint8 = round_to_uint8

    def forward(self, x):
        x = torch.matmul(torch.matmul(self.rows, x), self.columns)
        if self.round_to_uint8:
            x = torch.clamp(torch.round(x), 0.0, 255.0)
        return x


class _AveragePool(nn.Module):
    """An adaptive average pool of a fixed input size, as two matrix products.

    The TorchScript exporter refuses adaptive pools whose output size does not
    divide the input size (the built-in network pools 10x10 maps to 8x8); such
    a pool averages overlapping windows, which is linear and separable.
    """

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int]):
        super().__init__()
        (height, width), (out_height, out_width) = in_size, out_size
        pool = nn.functional.adaptive_avg_pool1d
        rows = pool(torch.eye(height)[:, None, :], out_height)[:, 0, :].T
        columns = pool(torch.eye(width)[:, None, :], out_width)[:, 0, :]
        self.register_buffer("rows", rows.contiguous())
        self.register_buffer("columns", columns.contiguous())

    def forward(self, x):
        return torch.matmul(torch.matmul(self.rows, x), self.columns)


def _exportable_pools(network: nn.Module, example: torch.Tensor) -> None:
    """Replace, in ``network`` (a copy), the adaptive pools the exporter refuses."""
    sizes = {}
    pools = [
        (name, module)
        for name, module in network.named_modules()
        if isinstance(module, nn.AdaptiveAvgPool2d)
    ]

    def recorder(name):
        def hook(module, inputs, output):
            sizes[name] = (tuple(inputs[0].shape[-2:]), tuple(output.shape[-2:]))

        return hook

    handles = [module.register_forward_hook(recorder(name)) for name, module in pools]
    try:
        with torch.no_grad():
            network(example)
    finally:
        for handle in handles:
            handle.remove()
    for name, (in_size, out_size) in sizes.items():
        if all(side % out == 0 for side, out in zip(in_size, out_size)):
            continue
        parent, _, child = name.rpartition(".")
        setattr(network.get_submodule(parent), child, _AveragePool(in_size, out_size))


def _per_channel(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=torch.float32).view(1, -1, 1, 1)


class _ExportedModel(nn.Module):
    """uint8 images in the given layout -> probabilities (or features)."""

    def __init__(
        self, steps, network, *, scale_uint8, activation, layout, image_shape, targets
    ):
        super().__init__()
        # A regressor's (mean, scale): its network learns standardized targets.
        self.targets = targets
        self.image_shape = tuple(image_shape)
        self.steps = nn.Sequential(*steps)
        self.network = network
        self.scale_uint8 = scale_uint8
        self.activation = activation
        self.layout = layout

    def forward(self, images):
        x = images.to(torch.float32)
        if self.layout == "nhwc":
            x = x.permute(0, 3, 1, 2)
        elif self.layout == "nhw":
            x = x.unsqueeze(1)
        elif self.layout == "flat":
            height, width, channels = self.image_shape
            x = x.unflatten(1, (height, width, channels)).permute(0, 3, 1, 2)
        x = self.steps(x)
        if self.scale_uint8:
            x = x * (1.0 / 255.0)
        x = self.network(x)
        if self.targets is not None:
            mean, scale = self.targets
            return x * scale + mean
        if self.activation == "softmax":
            return torch.softmax(x, dim=1)
        if self.activation == "sigmoid":
            return torch.sigmoid(x)
        return x


def _unsupported(model, final) -> TypeError:
    got = type(model).__name__
    if final is not model:
        got += f" ending in {type(final).__name__}"
    return TypeError(
        "export_onnx exports a fitted CNNImageClassifier, CNNImageRegressor or "
        "CNNFeatureExtractor, "
        "or a fitted Pipeline of sklearn-cnn image steps (ImageScaler, "
        "ImageStandardizer, ImageResizer; augmenters, which leave images "
        f"unchanged at prediction, are left out) ending in one; got {got}."
    )


def _check_steps(steps) -> None:
    """Refuse the steps that the graph cannot hold."""
    from .augmentation import BaseAugmenter
    from .preprocessing import ImageResizer, ImageScaler, ImageStandardizer

    supported = (BaseAugmenter, ImageScaler, ImageStandardizer, ImageResizer)
    for step in steps:
        if not isinstance(step, supported):
            raise TypeError(
                f"export_onnx cannot put the step {type(step).__name__} in the "
                "graph: only sklearn-cnn's ImageScaler, ImageStandardizer and "
                "ImageResizer (and augmenters, left out) are exported. Apply "
                "other steps to the images before the exported model."
            )


def _exported_steps(model, steps, image_shape):
    """The torch modules of the Pipeline's steps, in order (augmenters left out)."""
    from .augmentation import BaseAugmenter
    from .preprocessing import ImageResizer, ImageScaler, ImageStandardizer

    modules = []
    height, width, _ = image_shape
    dtype = np.dtype(np.uint8)
    for step in steps:
        if isinstance(step, BaseAugmenter):
            continue
        if isinstance(step, ImageScaler):
            modules.append(_Scale(step.max_value))
        elif isinstance(step, ImageStandardizer):
            modules.append(_Standardize(step.mean_, step.std_))
        elif isinstance(step, ImageResizer):
            module = _Resize(step, (height, width), round_to_uint8=dtype == np.uint8)
            modules.append(module)
            height, width = module.rows.shape[0], module.columns.shape[1]
        dtype = np.dtype(step._output_dtype(dtype))
    return modules


def export_onnx(model, path, *, layout=None, opset_version=OPSET_VERSION):
    """Write a fitted model as one ONNX graph: uint8 images in, probabilities out.

    The graph takes a batch of uint8 images of the fitted height, width and
    channels, any number of them at once, and returns what ``predict_proba``
    returns for them (``transform`` for a
    :class:`~sklearn_cnn.CNNFeatureExtractor`): the Pipeline's image steps,
    the scaling of uint8 pixels, the backbone's input normalization and the
    softmax (a multi-label classifier's sigmoid) are all in the graph, so
    that a runtime such as onnxruntime needs nothing but the file. The fitted
    model is not changed.

    The graph computes in float32. A model that predicts in bfloat16
    (``precision="auto"`` on hardware with native bfloat16) gives probabilities
    that differ from the graph's by bfloat16 rounding; fit with
    ``precision="float32"`` for an exact match.

    Parameters
    ----------
    model : CNNImageClassifier, CNNImageRegressor, CNNFeatureExtractor or Pipeline
        A fitted estimator, or a fitted Pipeline of
        :class:`~sklearn_cnn.preprocessing.ImageScaler`,
        :class:`~sklearn_cnn.preprocessing.ImageStandardizer` and
        :class:`~sklearn_cnn.preprocessing.ImageResizer` steps (augmenters are
        left out: they change nothing at prediction) ending in one.
    path : str or path-like
        The ``.onnx`` file to write; replaced only once complete.
    layout : {"nhwc", "nchw", "nhw", "flat"} or None, default=None
        How the graph's input holds the images: ``(n, height, width,
        channels)``, as images are decoded, ``(n, channels, height, width)``,
        ``(n, height, width)`` (grayscale) or flattened ``(n, height * width *
        channels)``. None: the layout the model was fitted on
        (``input_layout_``; channels last for models fitted on image files or
        PIL images).
    opset_version : int, default=17
        The ONNX operator set of the graph.

    Returns
    -------
    path : str
        The path written.

    Raises
    ------
    TypeError
        If ``model`` is not one of the estimators above, or a Pipeline holds
        another kind of step.

    Notes
    -----
    The graph's input is named ``"images"`` and its output ``"probabilities"``
    (``"features"`` for an extractor; ``"predictions"`` for a
    :class:`~sklearn_cnn.CNNImageRegressor`, of shape ``(n, n_outputs)``, the
    targets on their own scale). Its metadata (``metadata_props``) holds
    ``classes`` (the JSON list of ``classes_``), ``multilabel`` (``"true"``
    for a multi-label classifier, whose probabilities are one per label,
    independent), ``input_layout``,
    ``image_shape`` (height, width, channels) and ``producer``.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import onnxruntime
    >>> from sklearn_cnn import CNNImageClassifier, export_onnx
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randint(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    >>> y = np.array(["cat", "dog"] * 10)
    >>> clf = CNNImageClassifier(filters=(4,), epochs=1, precision="float32",
    ...                          random_state=0).fit(X, y)
    >>> path = export_onnx(clf, os.path.join(tempfile.mkdtemp(), "clf.onnx"))
    >>> session = onnxruntime.InferenceSession(path)
    >>> (probabilities,) = session.run(None, {"images": X})
    >>> bool(np.allclose(probabilities, clf.predict_proba(X), atol=1e-4))
    True
    """
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "export_onnx needs the onnx package: pip install onnx onnxruntime "
            "(or pip install 'sklearn-cnn[onnx]')."
        ) from None
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}; got {layout!r}.")
    check_is_fitted(model)
    if layout is None:
        layout = _fitted.fitted_layout(model)
    steps, final = _fitted.split_pipeline(model)
    if not _fitted.has_network(final):
        raise _unsupported(model, final)
    _check_steps(steps)
    classifier = _fitted.is_classifier_network(final)
    image_shape = _fitted.fitted_image_shape(model)
    modules = _exported_steps(model, steps, image_shape)
    if getattr(final, "test_time_augmentation", None) is not None:
        warnings.warn(
            f"This {type(final).__name__} predicts with test_time_augmentation="
            f"{final.test_time_augmentation!r}; the ONNX graph predicts each "
            "image once, as with test_time_augmentation=None. Average the "
            "graph's outputs over the views yourself to match.",
            UserWarning,
            stacklevel=2,
        )
    if _fitted.prediction_autocast_dtype(final) is not None:
        warnings.warn(
            f"This {type(final).__name__} predicts in "
            f"{str(_fitted.prediction_autocast_dtype(final)).split('.')[-1]}; the "
            "ONNX graph computes in float32, so its outputs differ from the "
            "model's by that rounding. Fit with precision='float32' for outputs "
            "that match.",
            UserWarning,
            stacklevel=2,
        )
    wrapper = _ExportedModel(
        modules,
        _fitted.copy_of_network(final, device="cpu"),
        scale_uint8=_fitted.uses_uint8_scaling(model),
        activation=_fitted.output_activation(final),
        layout=layout,
        image_shape=image_shape,
        targets=_fitted.target_standardization(final),
    ).eval()
    height, width, channels = image_shape
    if layout == "nhw" and channels != 1:
        raise ValueError(
            f"layout='nhw' holds grayscale images, but this model takes images of "
            f"{channels} channels; pass layout='nhwc' or 'nchw'."
        )
    shape = {
        "nhwc": (2, height, width, channels),
        "nchw": (2, channels, height, width),
        "nhw": (2, height, width),
        "flat": (2, height * width * channels),
    }[layout]
    example = torch.zeros(shape, dtype=torch.uint8)
    _exportable_pools(wrapper, example)
    output_name = "probabilities" if classifier else "features"
    if hasattr(final, "target_mean_"):
        output_name = "predictions"
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter's notice that a newer one exists, and the
        # tracer's about shapes read as Python numbers (fixed in this graph).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper,
            (example,),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[output_name],
            dynamic_axes={INPUT_NAME: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=opset_version,
        )
    graph = onnx.load_from_string(buffer.getvalue())
    from . import __version__

    metadata = {
        "producer": f"sklearn-cnn {__version__}",
        "estimator": type(final).__name__,
        "input_layout": layout,
        "image_shape": json.dumps([height, width, channels]),
        "output": output_name,
    }
    if classifier:
        metadata["classes"] = json.dumps(np.asarray(final.classes_).tolist())
        metadata["multilabel"] = json.dumps(bool(getattr(final, "multilabel_", False)))
    onnx.helper.set_model_props(graph, metadata)
    from .utils._io import write_atomically

    write_atomically(os.fspath(path), graph.SerializeToString())
    return os.fspath(path)
