"""The one place where inspection and export read a fitted estimator's insides.

Class activation maps, top losses and the ONNX export need what the fitted
model does to an image before and inside its network: the Pipeline steps
before it, the float batch the network receives, and the network itself. They
get those from the functions here and from nowhere else, so that a change in
how the estimators store their fitted state is mirrored in this module alone.

Nothing here changes the fitted model: the network handed out is a copy, and
the batches are built the way prediction builds them, from values the model
fixed at fit.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing
from sklearn.utils.validation import check_is_fitted

from .._net import PredictionSettings
from .._sources import LabelledImages, batch_loader, image_source


def split_pipeline(estimator) -> tuple[tuple, object]:
    """``(image_steps, final_estimator)`` of a fitted estimator or Pipeline.

    ``image_steps`` are the fitted steps before the last one (empty for a bare
    estimator); ``final_estimator`` is the last step.
    """
    if isinstance(estimator, Pipeline):
        check_is_fitted(estimator)
        steps = tuple(step for _, step in estimator.steps[:-1] if step != "passthrough")
        return steps, estimator.steps[-1][1]
    return (), estimator


def has_network(final) -> bool:
    """True for a fitted estimator that holds a trained torch network."""
    net = getattr(final, "net_", None)
    return (net is not None and hasattr(net, "module_")) or isinstance(
        getattr(final, "network_", None), torch.nn.Module
    )


def is_classifier_network(final) -> bool:
    """True for a fitted estimator with a network that ends in class logits."""
    return hasattr(final, "classes_") and getattr(final, "net_", None) is not None


def output_activation(final) -> str | None:
    """What turns the network's outputs into probabilities.

    ``"softmax"`` for a classifier, ``"sigmoid"`` for a multi-label one, None
    for a network whose outputs are used as they are (regressor, features).
    """
    if not is_classifier_network(final):
        return None
    return final._output_activation()


def fitted_network(final) -> torch.nn.Module:
    """The shared fitted network itself: read it, never change it."""
    net = getattr(final, "net_", None)
    if net is not None:
        return net.module_
    return final.network_


def copy_of_network(final, device=None) -> torch.nn.Module:
    """A deep copy of the fitted network, in eval mode, on ``device``.

    Hooks, ``requires_grad`` and the mode are then set on the copy: threads
    predicting with the shared network meanwhile see nothing of it.
    """
    network = copy.deepcopy(fitted_network(final))
    if device is not None:
        network = network.to(device)
    return network.eval()


def network_device(final) -> torch.device:
    parameter = next(fitted_network(final).parameters(), None)
    return torch.device("cpu") if parameter is None else parameter.device


def take_images(X, indices):
    """The images of ``X`` at ``indices``, as scikit-learn's splitters take them."""
    return _safe_indexing(X, np.asarray(indices, dtype=int))


def target_standardization(final):
    """A regressor's ``(mean, scale)`` tensors, or None for other estimators."""
    if not hasattr(final, "target_mean_"):
        return None
    return (
        torch.as_tensor(final.target_mean_, dtype=torch.float32),
        torch.as_tensor(final.target_scale_, dtype=torch.float32),
    )


def fitted_layout(estimator) -> str:
    """The layout of the images the estimator (or its first step) was fitted on."""
    steps, final = split_pipeline(estimator)
    first = steps[0] if steps else final
    return getattr(first, "input_layout_", None) or "nhwc"


def fitted_image_shape(estimator) -> tuple[int, int, int]:
    """``(height, width, channels)`` of the images the estimator was fitted on."""
    steps, final = split_pipeline(estimator)
    first = steps[0] if steps else final
    return tuple(int(side) for side in first.image_shape_)


def _after_steps(estimator, X):
    """``X`` through the Pipeline's steps (their ``transform``), and the last step."""
    steps, final = split_pipeline(estimator)
    for step in steps:
        X = step.transform(X)
    return X, final


def network_inputs(
    estimator, X, batch_size: int
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """``(indices, batch)`` pairs: the float32 NCHW batches the network sees.

    The Pipeline's steps are applied first; the images are then read through
    the final estimator's image source, as its ``predict`` reads them (any
    input kind), uint8 pixels scaled to [0, 1] by the batch preparer fixed at
    fit. Batches are on the network's device.
    """
    X, final = _after_steps(estimator, X)
    device = network_device(final)
    settings = getattr(final, "prediction_settings_", None) or PredictionSettings(
        channels_last=False, autocast_dtype=None
    )
    source = image_source(
        final, X, reset=False, image_size=getattr(final, "image_size", None)
    )
    loader = batch_loader(
        LabelledImages(source, device=device), batch_size=batch_size, shuffle=False
    )
    start = 0
    for batch, _ in loader:
        indices = np.arange(start, start + len(batch))
        start += len(batch)
        with torch.no_grad():
            images = settings.preparer(batch)(batch, training=False)
        # Plain contiguous float32: the preparer may choose channels-last memory.
        yield indices, images.to(torch.float32).contiguous()


def input_size(estimator) -> tuple[int, int]:
    """``(height, width)`` of the images as the estimator takes them."""
    steps, final = split_pipeline(estimator)
    first = steps[0] if steps else final
    # An augmenter fitted on image files recorded no shape: the files are
    # decoded at the final estimator's.
    height, width, _ = getattr(first, "image_shape_", None) or final.image_shape_
    return int(height), int(width)


def input_images(estimator, X) -> np.ndarray:
    """The images ``X`` as given, channels last, for showing them (any input kind)."""
    steps, final = split_pipeline(estimator)
    first = steps[0] if steps and hasattr(steps[0], "image_shape_") else final
    size = getattr(final, "image_size", None)
    if hasattr(first, "image_shape_"):
        source = image_source(first, X, reset=False, image_size=size)
    else:
        # An estimator that records no image shape: read X as it comes.
        source = image_source(_ImageReader(), X, reset=True, image_size=size)
    return source.read(np.arange(len(source))).permute(0, 2, 3, 1).numpy()


class _ImageReader(BaseEstimator):
    """A stand-in estimator to read images for a model that records no shape."""


def class_indices(final, labels) -> np.ndarray:
    """Positions in ``classes_`` of ``labels``, or a ValueError naming the unknown."""
    classes = final.classes_
    labels = np.asarray(labels)
    positions = {label: i for i, label in enumerate(classes.tolist())}
    try:
        return np.array([positions[label] for label in labels.tolist()], dtype=int)
    except KeyError as error:
        raise ValueError(
            f"{error.args[0]!r} is not a class of this model; its classes are "
            f"{classes.tolist()}."
        ) from None


def uses_uint8_scaling(estimator, input_dtype=np.uint8) -> bool:
    """Whether the network's input is divided by 255 after the Pipeline's steps.

    The final estimator scales batches that reach it as uint8; a step that
    outputs floats (an ImageScaler) has scaled them already.
    """
    steps, _ = split_pipeline(estimator)
    dtype = np.dtype(input_dtype)
    for step in steps:
        output_dtype = getattr(step, "_output_dtype", None)
        if output_dtype is not None:
            dtype = np.dtype(output_dtype(dtype))
    return dtype == np.uint8


def prediction_autocast_dtype(final) -> torch.dtype | None:
    """The reduced precision the fitted estimator predicts in; None for float32."""
    settings = getattr(final, "prediction_settings_", None)
    if settings is not None:
        return settings.autocast_dtype
    from ..utils._runtime import resolve_precision

    return resolve_precision(final.precision, torch.device(final.device_))
