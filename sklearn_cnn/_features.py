"""CNNFeatureExtractor: images in, a pretrained network's pooled features out."""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from numbers import Integral

import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
)
from sklearn.utils.validation import check_is_fitted

from ._backbones import BackboneNetwork, input_normalization, load_backbone
from ._inference import network_outputs
from ._net import PredictionSettings
from ._sources import IMAGE_SHAPE_CONSTRAINT, image_source
from .utils._runtime import (
    resolve_device,
    resolve_precision,
    resolve_seed,
    seeded_random_ops,
)
from .utils._sklearn_private import Interval, StrOptions, _fit_context


class CNNFeatureExtractor(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """Embed images with a pretrained network: its pooled penultimate features.

    Each image becomes the vector a torchvision or timm network computes just
    before its classification layer (512 values for resnet18, 1024 for
    mobilenet_v3_small). A linear model on these features is the quickest
    classifier of few labelled images::

        make_pipeline(CNNFeatureExtractor("resnet18", weights="DEFAULT"),
                      LogisticRegression(max_iter=1000))

    ``fit`` loads the network and learns nothing from the data; ``transform``
    runs it batch by batch under :func:`torch.inference_mode`, on the GPU when
    there is one. uint8 images are scaled to [0, 1]; the input normalization the
    weights expect (ImageNet's mean and std for torchvision's weights) is
    applied on the device, unless the images given to ``fit`` are outside
    [0, 1], that is, standardized already. Images are used at the size given:
    resize them with :class:`~sklearn_cnn.preprocessing.ImageResizer` (224 px
    is what ImageNet weights saw; smaller images work, less well).

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="resnet18"
        A torchvision classification model name
        (``torchvision.models.list_models(module=torchvision.models)``),
        ``"timm/<name>"`` for a timm model (``pip install timm``), or a module
        that maps images to feature vectors or feature maps (maps are averaged
        over their height and width).
    weights : None, str or path-like, default=None
        None keeps random weights. ``"DEFAULT"`` or a torchvision weights entry
        name (``"IMAGENET1K_V1"``) loads torchvision's weights through its cache
        (``$TORCH_HOME/hub/checkpoints/``, downloading when online); for timm,
        ``"DEFAULT"`` loads timm's pretrained weights. A ``.safetensors``,
        ``.pt`` or ``.pth`` path loads that state dict.
    batch_size : int, default=64
        Images per forward pass.
    device : 'auto', str or torch.device, default='auto'
        'auto' uses CUDA when available, else the CPU.
    precision : {'auto', 'float32', 'bfloat16'}, default='auto'
        'auto' computes in bfloat16 where the hardware runs it natively and in
        float32 elsewhere; the features are always returned as float32.
    random_state : int, RandomState instance or None, default=None
        Seeds the random weights (those that ``weights`` does not load), so
        that two fits with an int give the same features. The global torch
        random state is left untouched.
    image_shape : tuple of int or None, default=None
        ``(height, width)`` or ``(height, width, channels)`` of the images when
        ``X`` is 2-D (flattened ``(n, height * width * channels)`` arrays), or to
        say which axis holds the channels of an ambiguous 4-D array, as for
        :class:`~sklearn_cnn.CNNImageClassifier`.
    image_size : int, tuple of (int, int) or None, default=None
        ``(height, width)`` that image files, PIL images or a Hugging Face image
        column given as ``X`` are resized to; None keeps their own size, which
        must then be the same for all.
    color_mode : {'auto', 'rgb', 'grayscale'}, default='auto'
        The channels of images decoded from files or PIL images: 'auto' reads
        one gray channel when every image of ``fit`` is grayscale and RGB
        otherwise.

    Attributes
    ----------
    network_ : BackboneNetwork
        The torch network, in evaluation mode, on ``device_``.
    input_normalization_ : dict or None
        ``{"mean": ..., "std": ...}`` applied to the [0, 1] pixels inside the
        network, or None when the weights expect none or the images given to
        ``fit`` were standardized already.
    device_ : str
        The device the network runs on.
    n_features_in_ : int
        Number of values per image (height * width * channels).
    image_shape_ : tuple of int
        ``(height, width, channels)`` of the images seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of the features, when ``X`` was a DataFrame with string columns.

    See Also
    --------
    CNNImageClassifier : Fine-tunes the same backbones end to end.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cnn import CNNFeatureExtractor
    >>> X = np.random.RandomState(0).randint(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    >>> extractor = CNNFeatureExtractor("resnet18", precision="float32").fit(X)
    >>> extractor.transform(X).shape
    (4, 512)
    >>> extractor.get_feature_names_out()[:2]
    array(['cnnfeatureextractor0', 'cnnfeatureextractor1'], dtype=object)
    """

    _parameter_constraints: dict = {
        "backbone": [str, torch.nn.Module],
        "weights": [str, os.PathLike, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "precision": [StrOptions({"auto", "float32", "bfloat16"})],
        "random_state": ["random_state"],
        "image_shape": IMAGE_SHAPE_CONSTRAINT,
        "image_size": [Interval(Integral, 1, None, closed="left"), tuple, list, None],
        "color_mode": [StrOptions({"auto", "rgb", "grayscale"})],
    }

    def __init__(
        self,
        backbone="resnet18",
        *,
        weights=None,
        batch_size=64,
        device="auto",
        precision="auto",
        random_state=None,
        image_shape=None,
        image_size=None,
        color_mode="auto",
    ):
        self.backbone = backbone
        self.weights = weights
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.image_shape = image_shape
        self.image_size = image_size
        self.color_mode = color_mode

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Load the backbone and its weights for images shaped like ``X``.

        Nothing is learned from ``X``: its image shape is recorded, and the
        backbone is built for its number of channels.

        Parameters
        ----------
        X : array-like of images, image files, PIL images or an image column
            Any input :class:`~sklearn_cnn.CNNImageClassifier` takes.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The extractor, ready to ``transform``.
        """
        source = image_source(
            self,
            X,
            reset=True,
            image_shape=self.image_shape,
            image_size=self.image_size,
            color_mode=self.color_mode,
        )
        height, width, channels = source.image_shape
        device = resolve_device(self.device)
        normalization = input_normalization(
            self.backbone, self.weights, source.pixels_in_memory()
        )
        with seeded_random_ops(resolve_seed(self.random_state)):
            backbone = load_backbone(
                self.backbone,
                self.weights,
                in_channels=channels,
                image_size=(height, width),
            )
        network = BackboneNetwork(
            backbone.body,
            backbone.n_features,
            None,
            normalization=normalization,
            rgb=backbone.rgb,
        )
        self.network_ = network.to(device).eval().requires_grad_(False)
        self.input_normalization_ = (
            None if normalization is None else dataclasses.asdict(normalization)
        )
        self.device_ = str(device)
        return self

    def transform(self, X):
        """Pooled features of every image.

        Parameters
        ----------
        X : array-like of images, image files, PIL images or an image column
            Same image size as in :meth:`fit` (decoded images are resized to it
            with ``image_size``).

        Returns
        -------
        features : ndarray of shape (n_samples, n_features)
            float32 features, one row per image.
        """
        check_is_fitted(self)
        source = image_source(self, X, reset=False, image_size=self.image_size)
        device = torch.device(self.device_)
        autocast_dtype = resolve_precision(self.precision, device)
        settings = PredictionSettings(
            # Channels-last convolutions are the faster ones on CPUs and with bf16.
            channels_last=device.type == "cpu" or autocast_dtype is not None,
            autocast_dtype=autocast_dtype,
        )
        return network_outputs(
            self.network_,
            source,
            settings,
            device=device,
            batch_size=self.batch_size,
        )

    @property
    def _n_features_out(self):
        """Number of features ``transform`` returns (for get_feature_names_out)."""
        return self.network_.n_features

    def __getstate__(self):
        state = super().__getstate__()
        if state.get("device_", "cpu") != "cpu":
            # CUDA tensors unpickle only where CUDA is: pickle a CPU copy.
            state = {**state, "network_": copy.deepcopy(self.network_).cpu()}
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        device = getattr(self, "device_", "cpu")
        if device == "cpu":
            return
        if device.startswith("cuda") and not torch.cuda.is_available():
            warnings.warn(
                "This extractor was fitted on CUDA, which is not available here; "
                "it was loaded on the CPU.",
                UserWarning,
                stacklevel=2,
            )
            self.device_ = "cpu"
        else:
            self.network_.to(device)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
