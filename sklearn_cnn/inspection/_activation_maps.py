"""Class activation maps: where in an image the network found its class.

Grad-CAM (Selvaraju et al., 2017) weighs the feature maps of a convolutional
layer by the gradient of a class's score and keeps the positive part: the
regions whose features raise that score. Grad-CAM++ (Chattopadhay et al.,
2018) weighs the positive gradients pixel by pixel, which helps when a class
appears several times; LayerCAM (Jiang et al., 2021) keeps the positive
gradient of every position instead of one weight per channel, which works on
earlier, finer layers too.

The maps are computed here, on a copy of the fitted network, rather than with
the ``grad-cam`` package: that package registers hooks on, switches the mode of
and back-propagates into the model it is given (the shared fitted network,
unless copied), resizes maps with OpenCV image by image on the CPU, and pulls
OpenCV and ttach in. The three methods are a few lines each on a copy, batched
on the network's device; the tests check them against the package.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from . import _fitted

METHODS = ("gradcam", "gradcam++", "layercam")
# Images per backward pass when the estimator has no batch size of its own.
_DEFAULT_BATCH_SIZE = 32


def _check_estimator(estimator, function_name: str):
    check_is_fitted(estimator)
    steps, final = _fitted.split_pipeline(estimator)
    if not _fitted.is_classifier_network(final):
        check_is_fitted(final)
        raise TypeError(
            f"{function_name} needs a fitted estimator with a trained network "
            "(net_) and classes (classes_), such as a CNNImageClassifier or a "
            f"Pipeline ending in one; got {type(estimator).__name__}"
            + (f" ending in {type(final).__name__}" if final is not estimator else "")
            + "."
        )
    return steps, final


def find_target_layer(network: torch.nn.Module, layer: str | None):
    """``(name, module)`` of the layer the maps are taken from."""
    modules = dict(network.named_modules())
    if layer is not None:
        if layer not in modules:
            convolutions = [
                name
                for name, module in modules.items()
                if isinstance(module, torch.nn.Conv2d)
            ]
            raise ValueError(
                f"layer={layer!r} is not a layer of the network; its convolutional "
                f"layers are {convolutions[-5:]} (last five)."
            )
        return layer, modules[layer]
    convolutions = [
        (name, module)
        for name, module in modules.items()
        if isinstance(module, torch.nn.Conv2d)
    ]
    if not convolutions:
        raise ValueError(
            f"The network ({type(network).__name__}) has no torch.nn.Conv2d layer "
            "to take activation maps from; name a layer with 4-D outputs with "
            "layer=<its name in network.named_modules()>."
        )
    return convolutions[-1]


def _channel_weighted(activations, gradients, method: str) -> torch.Tensor:
    """The map of each image at the layer's resolution, before normalization."""
    if method == "gradcam":
        weights = gradients.mean(dim=(2, 3), keepdim=True)
        return torch.relu((weights * activations).sum(dim=1))
    if method == "gradcam++":
        squared, cubed = gradients**2, gradients**3
        total = activations.sum(dim=(2, 3), keepdim=True)
        denominator = 2 * squared + total * cubed
        alpha = squared / torch.where(
            denominator != 0, denominator, torch.ones_like(denominator)
        )
        alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
        weights = (torch.relu(gradients) * alpha).sum(dim=(2, 3), keepdim=True)
        return torch.relu((weights * activations).sum(dim=1))
    # layercam
    return torch.relu((torch.relu(gradients) * activations).sum(dim=1))


def _unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1]; a map with no positive evidence stays zero."""
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    span = high - low
    return torch.where(
        span > 0, (maps - low) / torch.where(span > 0, span, 1), torch.zeros_like(maps)
    )


def _targets(final, target, n_images: int):
    """Class positions per image, or None for the predicted class."""
    if target is None:
        return None
    labels = np.asarray(target)
    if labels.ndim == 0:
        labels = np.full(n_images, labels.item(), dtype=object)
    if labels.shape != (n_images,):
        raise ValueError(
            f"target must be one class label or one label per image; got "
            f"{labels.shape[0] if labels.ndim == 1 else labels.shape} labels for "
            f"{n_images} images."
        )
    return _fitted.class_indices(final, labels)


def _n_images(X) -> int:
    return len(X)


def _output_size(estimator, X) -> tuple[int, int]:
    """(height, width) of the images as given: the maps' size."""
    return _fitted.input_size(estimator)


def class_activation_map(
    estimator, X, *, target=None, method="gradcam", layer=None, batch_size=None
):
    """Where each image shows its class: a heat map per image, in [0, 1].

    Computes Grad-CAM (or a variant) of a convolutional layer of the fitted
    network for each image: the layer's feature maps weighted by the gradient
    of the class score, the negative part dropped, upsampled to the image's
    height and width and scaled to [0, 1] (1 at the most telling place). The
    images go through the Pipeline's steps before the network, as in
    ``predict``. The fitted model is not changed: the gradients are taken on a
    copy of its network, so threads can keep predicting with it meanwhile.

    Parameters
    ----------
    estimator : CNNImageClassifier or Pipeline
        A fitted estimator with a network (``net_``) and ``classes_``: a
        :class:`~sklearn_cnn.CNNImageClassifier` (the built-in network, a
        ``module=`` network or a ``backbone``), or a Pipeline ending in one.
    X : array-like of images or list of image file paths
        Images as ``predict`` takes them.
    target : class label, array-like of shape (n_images,) or None, default=None
        The class whose evidence is mapped: None for each image's predicted
        class, one label of ``classes_`` for all images, or one per image.
    method : {"gradcam", "gradcam++", "layercam"}, default="gradcam"
        "gradcam" weighs each feature map by its mean gradient; "gradcam++"
        by its positive gradients, pixel-weighted (better with several
        instances of the class); "layercam" weighs every position by its own
        positive gradient (usable on earlier layers).
    layer : str or None, default=None
        Name of the layer in ``network.named_modules()`` (``"features.4"``,
        ``"body.layer4"``); None takes the last ``torch.nn.Conv2d``.
    batch_size : int or None, default=None
        Images per backward pass; None uses the estimator's ``batch_size``.

    Returns
    -------
    maps : ndarray of shape (n_images, height, width)
        float32 maps in [0, 1], at the size of the images given (before any
        resizing step of the Pipeline). A map is all zeros where no feature
        speaks for the class.

    Raises
    ------
    TypeError
        If ``estimator`` has no trained network and classes.
    ValueError
        If ``method``, ``layer`` or ``target`` is not one that fits.

    See Also
    --------
    plot_class_activation_maps : The maps over the images.

    Examples
    --------
    >>> from sklearn_cnn import CNNImageClassifier
    >>> from sklearn_cnn.datasets import load_cats_dogs
    >>> from sklearn_cnn.inspection import class_activation_map
    >>> X, y = load_cats_dogs(image_size=16, n_samples=20, return_X_y=True)
    >>> clf = CNNImageClassifier(filters=(4, 8), epochs=1, random_state=0).fit(X, y)
    >>> maps = class_activation_map(clf, X[:3])
    >>> maps.shape, bool(maps.min() >= 0 and maps.max() <= 1)
    ((3, 16, 16), True)
    """
    _, final = _check_estimator(estimator, "class_activation_map")
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}; got {method!r}.")
    if batch_size is None:
        batch_size = getattr(final, "batch_size", None) or _DEFAULT_BATCH_SIZE
    if not isinstance(batch_size, Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
    targets = _targets(final, target, _n_images(X))
    size = _output_size(estimator, X)
    network = _fitted.copy_of_network(final).requires_grad_(False)
    for module in network.modules():
        # An in-place activation after the layer would overwrite its output,
        # which the gradient is taken with respect to.
        if getattr(module, "inplace", False):
            module.inplace = False
    _, target_layer = find_target_layer(network, layer)
    captured = []

    def keep_output(_, __, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = target_layer.register_forward_hook(keep_output)
    maps = []
    try:
        for indices, images in _fitted.network_inputs(estimator, X, batch_size):
            captured.clear()
            with torch.enable_grad():
                images.requires_grad_(True)
                logits = network(images)
                if not captured or captured[-1].dim() != 4:
                    got = "no output" if not captured else tuple(captured[-1].shape)
                    raise ValueError(
                        "Activation maps need a layer with (n, channels, height, "
                        f"width) outputs; the chosen layer gave {got}. Choose "
                        "another with layer=."
                    )
                activations = captured[-1]
                classes = (
                    logits.argmax(dim=1)
                    if targets is None
                    else torch.as_tensor(targets[indices], device=logits.device)
                )
                score = logits.gather(1, classes[:, None]).sum()
                (gradients,) = torch.autograd.grad(score, activations)
            with torch.no_grad():
                low = _channel_weighted(activations.detach(), gradients, method)
                upsampled = torch.nn.functional.interpolate(
                    low[:, None], size=size, mode="bilinear", align_corners=False
                )[:, 0]
                maps.append(_unit_range(upsampled).float().cpu().numpy())
    finally:
        handle.remove()
    return np.concatenate(maps)


def plot_class_activation_maps(
    estimator,
    X,
    y=None,
    *,
    n=8,
    target=None,
    method="gradcam",
    layer=None,
    alpha=0.5,
    n_cols=None,
):
    """Show images with their class activation maps laid over them.

    Each panel is an image with its :func:`class_activation_map` drawn on top
    (the "jet" colormap, red where the class is seen), titled with the class
    mapped, the predicted class's probability and, when ``y`` is given, the
    true label.

    Parameters
    ----------
    estimator : CNNImageClassifier or Pipeline
        As for :func:`class_activation_map`.
    X : array-like of images or list of image file paths
        Images as ``predict`` takes them; the first ``n`` are shown.
    y : array-like of shape (n_samples,), default=None
        The true labels.
    n : int, default=8
        How many images to show.
    target, method, layer
        As for :func:`class_activation_map`.
    alpha : float, default=0.5
        Opacity of the map over the image.
    n_cols : int, default=None
        Columns of the grid; None makes it about square.

    Returns
    -------
    figure : matplotlib Figure
        The figure holding the grid.

    Examples
    --------
    >>> from sklearn_cnn import CNNImageClassifier
    >>> from sklearn_cnn.datasets import load_cats_dogs
    >>> from sklearn_cnn.inspection import plot_class_activation_maps
    >>> X, y = load_cats_dogs(image_size=16, n_samples=20, return_X_y=True)
    >>> clf = CNNImageClassifier(filters=(4, 8), epochs=1, random_state=0).fit(X, y)
    >>> figure = plot_class_activation_maps(clf, X, y, n=4)
    >>> len([ax for ax in figure.axes if ax.get_title()])
    4
    """
    from ._plot import _pyplot

    plt = _pyplot("plot_class_activation_maps")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}.")
    n = min(n, _n_images(X))
    X_shown = _fitted.take_images(X, np.arange(n))
    if target is not None and np.ndim(target) == 1:
        target = np.asarray(target)[:n]
    maps = class_activation_map(
        estimator, X_shown, target=target, method=method, layer=layer
    )
    probabilities = estimator.predict_proba(X_shown)
    _, final = _fitted.split_pipeline(estimator)
    classes = final.classes_
    mapped = (
        classes[np.argmax(probabilities, axis=1)]
        if target is None
        else np.broadcast_to(np.asarray(target, dtype=object), (n,))
    )
    images = display_images(estimator, X_shown)
    n_cols = n_cols or math.ceil(math.sqrt(n))
    n_rows = math.ceil(n / n_cols)
    figure, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(2.0 * n_cols, 2.3 * n_rows),
        squeeze=False,
        layout="constrained",
    )
    predicted = classes[np.argmax(probabilities, axis=1)]
    for i, axis in enumerate(axes.ravel()):
        axis.axis("off")
        if i >= n:
            continue
        axis.imshow(images[i], cmap="gray" if images[i].ndim == 2 else None)
        axis.imshow(maps[i], cmap="jet", alpha=alpha, vmin=0, vmax=1)
        title = f"{method}: {mapped[i]}\npred: {predicted[i]} "
        title += f"({probabilities[i].max():.2f})"
        color = "black"
        if y is not None:
            title += f", true: {np.asarray(y)[i]}"
            color = "tab:green" if predicted[i] == np.asarray(y)[i] else "tab:red"
        axis.set_title(title, fontsize=8, color=color)
    return figure


def display_images(estimator, X) -> np.ndarray:
    """Images ready for ``imshow``: arrays as given, files as the model decodes them."""
    from ._plot import _displayable

    images = _fitted.input_images(estimator, X)
    return _displayable(images, images.shape[1:])
