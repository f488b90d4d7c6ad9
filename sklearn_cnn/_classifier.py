"""CNNImageClassifier: a convolutional image classifier with scikit-learn's manners."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import os
import warnings
from numbers import Integral, Real
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from skorch.helper import predefined_split

from ._backbones import (
    BackboneNetwork,
    Normalization,
    input_normalization,
    load_backbone,
)
from ._files import validate_image_files
from ._network import ConvNet
from ._training import (
    BatchPreparer,
    ImageData,
    ImageFiles,
    ImageNeuralNet,
    PredictionSettings,
    TrainingCheckpoint,
    TrainingDivergedError,
    _EpochProgressBar,
    _StoppingEarly,
    body_freezing,
    cosine_schedule,
    predict_logits,
)
from .augmentation._images import AugmentedImages
from .datasets._folder import check_image_size
from .utils._runtime import (
    derive_seeds,
    resolve_device,
    resolve_precision,
    resolve_seed,
    resolve_verbose,
    retry_in_float32,
    seeded_random_ops,
    seeded_training_ops,
)
from .utils._sklearn_private import (
    HasMethods,
    Interval,
    InvalidParameterError,
    StrOptions,
    _check_sample_weight,
    _fit_context,
)
from .utils._validation import IMAGE_SHAPE_CONSTRAINT, is_file_paths, validate_images

_OPTIMIZERS = {
    "adam": (torch.optim.Adam, {}),
    "adamw": (torch.optim.AdamW, {}),
    "sgd": (torch.optim.SGD, {"momentum": 0.9}),
}

# Optimizers with a fused implementation (torch >= 2.4 on CPUs, CUDA earlier).
_FUSED_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW)


def _has_fused_kernels(device: torch.device) -> bool:
    if device.type == "cuda":
        return True
    return device.type == "cpu" and torch.__version__ >= (2, 4)


class _TrainingSet(NamedTuple):
    """What one fit trains on, validated: channels-first images and their labels."""

    images: np.ndarray | ImageFiles
    y: np.ndarray
    classes: np.ndarray
    sample_weight: np.ndarray | None
    scale_uint8: bool
    augmenters: tuple
    post_steps: tuple


class CNNImageClassifier(ClassifierMixin, BaseEstimator):
    """A convolutional neural network image classifier.

    Trains a PyTorch network through skorch, on CUDA when a GPU is available, and
    behaves like any scikit-learn classifier: it fits into ``Pipeline``,
    ``GridSearchCV``, ``cross_val_score`` and ``pickle``.

    The built-in network has one block per entry of ``filters`` (a 'same'
    convolution, batch normalization, ReLU and a 2x2 max pool), an adaptive
    average pool to at most 8x8 cells, an optional hidden dense layer and a dense
    output layer with a softmax: the classic Conv -> Pool -> Fully connected ->
    Softmax design. It works for images of any size from 1x1 up.

    Parameters
    ----------
    filters : tuple of int, default=(16, 32, 64, 128)
        Number of convolution filters in each convolutional block. The default's
        four narrow blocks run the wide layers on small maps: on the embedded
        cats and dogs they are more accurate than two wide blocks, and faster
        (``benchmarks/defaults.py``).
    kernel_size : int, default=3
        Side of the square convolution kernels.
    dense_units : int or None, default=64
        Units of the hidden dense layer; None connects the pooled features
        straight to the output layer.
    dropout : float, default=0.0
        Dropout probability before the dense layers.
    module : torch.nn.Module class or instance, default=None
        A network to use instead of the built-in one. A class is called as
        ``module(in_channels, n_classes, image_size)`` with ``image_size`` the
        ``(height, width)`` of the input; an instance is used as it is (and
        copied, so that the instance you pass stays untouched). The network takes
        a float32 batch of shape (n, channels, height, width) and returns logits
        of shape (n, n_classes). The architecture parameters above are ignored.
        Lazy layers (``nn.LazyLinear``, ``nn.LazyConv2d``) work: one forward
        pass of a zero batch of the images' shape gives them their sizes before
        the optimizer is built, so a head needs no computed input size.
    backbone : str, torch.nn.Module or None, default=None
        A pretrained network to fine-tune instead of the built-in one: the
        name of a torchvision classification model (``"resnet18"``,
        ``"mobilenet_v3_small"``; see
        ``torchvision.models.list_models(module=torchvision.models)``),
        ``"timm/<name>"`` for a timm model (``pip install timm``), or a torch
        module used as the body (it maps images to feature vectors or feature
        maps; maps are averaged). Its final layer is replaced by a new linear
        head sized for the classes. Images are used at the size given: resize
        them with :class:`~sklearn_cnn.preprocessing.ImageResizer`, or files
        with ``image_size`` (ImageNet weights saw 224 px). See :ref:`pretrained`.
    weights : None, str or path-like, default=None
        Weights of the ``backbone``: None keeps a random initialization;
        ``"DEFAULT"`` or a torchvision weights entry name (``"IMAGENET1K_V1"``)
        loads torchvision's weights through its cache
        (``$TORCH_HOME/hub/checkpoints/``, downloading when online: offline, the
        error names the file to put there); for timm, ``"DEFAULT"`` loads timm's
        pretrained weights; a ``.safetensors``, ``.pt`` or ``.pth`` path loads
        that state dict. The input normalization the weights expect (ImageNet's
        mean and std) is applied inside the network, unless the images given to
        ``fit`` are outside [0, 1], that is, already standardized (by an
        ``ImageStandardizer(preset="imagenet")`` in the Pipeline).
    freeze_epochs : int, default=1
        With ``weights``, the number of first epochs in which the backbone is
        frozen and only the new head trains; then everything trains, the
        backbone at ``backbone_lr``. 0 trains everything from the start.
    backbone_lr : float or None, default=None
        Learning rate of the backbone once unfrozen, when ``weights`` is given;
        None means ``lr / 2``, as fastai's ``fine_tune`` does after unfreezing:
        on a transfer task of ``benchmarks/backbones.py`` it gave 0.849 test
        accuracy against 0.762 for ``lr / 10`` and 0.831 for training
        everything at ``lr`` from the start. Without ``weights`` every layer
        trains at ``lr``.
    epochs : int, default=5
        Number of passes over the training data.
    batch_size : int, default=16
        Number of images per gradient step.
    lr : float, default=1e-3
        Learning rate.
    optimizer : {'adam', 'adamw', 'sgd'} or torch.optim.Optimizer class, \
default='adam'
        Optimizer; 'sgd' uses momentum 0.9. A class is called with the
        network's parameters, ``lr`` and ``weight_decay``.
    weight_decay : float, default=0.0
        L2 penalty (decoupled for 'adamw').
    lr_schedule : {'cosine', 'constant'}, default='cosine'
        'cosine' decays the learning rate from ``lr`` towards 0 over the
        ``epochs`` of each ``fit`` (cosine annealing), which settles the weights
        at the end of short trainings: on the embedded cats and dogs it lifted
        5-epoch test accuracy from 0.845-0.92 to 0.955. 'constant' keeps
        ``lr``, for ``warm_start`` and ``partial_fit`` training that goes on.
    class_weight : dict, 'balanced' or None, default=None
        Weights of the classes in the loss, as in scikit-learn: 'balanced'
        weights are computed from the labels given to ``fit``.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified) and
        stop when the validation loss has not improved for ``n_iter_no_change``
        epochs; the best weights are kept.
    validation_fraction : float, default=0.1
        Share of the training data held out when ``early_stopping=True``.
    n_iter_no_change : int, default=5
        Patience of early stopping, in epochs.
    warm_start : bool, default=False
        When True, ``fit`` continues training the fitted network for ``epochs``
        more epochs instead of starting afresh.
    callbacks : list of skorch callbacks or (name, callback) tuples, default=None
        Passed through to skorch (for example ``skorch.callbacks.LRScheduler``).
    augment : augmenter or None, default=None
        A train-time augmenter from :mod:`sklearn_cnn.augmentation`, applied
        afresh to every training batch in every epoch, never at prediction time
        nor to the validation split. Augmenters placed before the classifier in a
        Pipeline work the same way. None trains on the images as they are,
        unlike ``sklearn-cnn train``, which flips and rotates by default: pass
        ``RandomAugment(steps=[("flip", RandomHorizontalFlip()), ("rotate",
        RandomRotation(degrees=15))])`` for the command's training.
    device : 'auto', str or torch.device, default='auto'
        Where to train: 'auto' picks CUDA when available, else the CPU. With an
        ``accelerator``, the accelerator's device ('auto', or the same device).
    accelerator : accelerate.Accelerator or None, default=None
        Train data-parallel on several GPUs (or processes) with Hugging Face
        Accelerate: launch the script once per GPU (``accelerate launch
        script.py`` or ``torchrun --nproc-per-node=4 script.py``). Every process
        trains on its own share of each epoch's images and the gradients are
        averaged, so all processes end with the same network. ``batch_size`` is
        per process; validation and prediction run whole on every process. The
        accelerator's own mixed precision and gradient accumulation apply (leave
        ``precision='auto'`` off then: ``precision='float32'``). With several
        processes ``random_state`` must be an int, so every process holds out
        and shuffles alike. Needs ``pip install 'sklearn-cnn[distributed]'``.
    precision : {'auto', 'float32', 'bfloat16'}, default='auto'
        Numeric precision of the network's arithmetic. 'auto' uses bfloat16
        autocast with channels-last memory where the hardware runs bfloat16
        natively (recent NVIDIA GPUs, CPUs with AVX512-BF16 or AMX), and float32
        elsewhere. Weights are always stored in float32. A fit that diverges
        in bfloat16 under 'auto' is started again in float32, with a warning
        (see :ref:`precision`).
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialization, shuffling, augmentation and the validation
        split. With an int, two fits on the CPU with the same number of torch
        threads give identical results. Fitting
        never changes the global torch, NumPy or Python random state.
    verbose : "auto" or int, default="auto"
        1 prints an epoch-by-epoch table (epoch, train loss and accuracy,
        validation loss and accuracy when there is a validation split, seconds)
        with a progress bar during each epoch on a terminal; 0 prints nothing.
        "auto" is 1 when the output is a terminal or a Jupyter notebook, and 0
        when it is redirected to a file or a pipe and in the workers of a
        parallel search (joblib's and Dask's processes, threads other than the
        main one).
    image_shape : tuple of int or None, default=None
        ``(height, width)`` or ``(height, width, channels)`` of the images when
        ``X`` is 2-D (flattened ``(n, height * width * channels)`` arrays, as
        from ``X.reshape(n, -1)``), or to say which axis holds the channels of an
        ambiguous 4-D array. Without it, flattened rows of a square length are
        taken as square grayscale images, other lengths as a single row.
    image_size : int, tuple of (int, int) or None, default=None
        ``(height, width)`` that image files given as ``X`` are decoded and
        resized to (an int gives square images); None keeps the files' own size,
        which must then be the same for all. Only used when ``X`` holds file
        paths: see :ref:`large_data`. Colour files are read as RGB; when every
        training file is grayscale, as one gray channel.
    color_mode : {'auto', 'rgb', 'grayscale'}, default='auto'
        The channels of images decoded from files given as ``X``: 'auto' reads
        one gray channel when every training file is grayscale and RGB
        otherwise; 'rgb' and 'grayscale' convert every file (a pretrained
        backbone, say, wants RGB even from gray scans). Decided at ``fit``.
    unreadable_files : {'skip', 'raise'}, default='skip'
        What ``fit`` does with image files given as ``X`` that cannot be
        opened: 'skip' trains without them, with one warning naming them (as
        :func:`~sklearn_cnn.datasets.load_image_folder` does); 'raise' refuses
        them. Prediction always refuses them, since every image gets a label.
    cache_decoded : bool, default=False
        Keep the images decoded from files in memory during ``fit``, so that
        epochs after the first do not decode them again; it takes
        ``n_samples * height * width * channels`` bytes. Only used when ``X``
        holds file paths.
    checkpoint : str, path-like or None, default=None
        A folder where the training state (weights, optimizer state, history)
        is saved after every epoch, atomically. A later ``fit`` with the same
        parameters (``epochs`` aside) on the same data resumes from it: a fit of
        3 epochs followed by ``set_params(epochs=6).fit(X, y)`` trains epochs 4
        to 6. Each combination of parameters and data gets its own file, so
        parallel fits in a search never share one.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in the order of ``predict_proba``'s columns.
    n_features_in_ : int
        Number of values per image (height * width * channels).
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of the features, when ``X`` was a DataFrame with string columns.
    image_shape_ : tuple of int
        ``(height, width, channels)`` of the training images.
    net_ : skorch.NeuralNetClassifier
        The trained skorch net; ``net_.module_`` is the torch network.
    history_ : list of dict
        One record per epoch: ``epoch``, ``train_loss``, ``train_accuracy``,
        ``valid_loss`` and ``valid_accuracy`` when there is a validation split,
        and ``dur`` (seconds).
    loss_curve_ : list of float
        Training loss per epoch.
    validation_scores_ : list of float or None
        Validation accuracy per epoch, or None without a validation split.
    n_iter_ : int
        Number of epochs trained (across calls with ``warm_start`` or
        ``partial_fit``).
    device_ : str
        The device the network lives on.
    input_normalization_ : dict or None
        ``{"mean": ..., "std": ...}`` the backbone's network applies to the
        [0, 1] pixels, or None: no backbone, weights that expect none, or
        training images standardized already.

    See Also
    --------
    sklearn.neural_network.MLPClassifier : Fully connected network classifier.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cnn import CNNImageClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randint(0, 256, size=(40, 8, 8, 3), dtype=np.uint8)
    >>> y = np.array(["cat", "dog"] * 20)
    >>> clf = CNNImageClassifier(filters=(8,), epochs=2, random_state=0).fit(X, y)
    >>> clf.predict(X[:3]).shape
    (3,)
    >>> clf.classes_
    array(['cat', 'dog'], dtype='<U3')
    """

    _parameter_constraints: dict = {
        "filters": [tuple, list],
        "kernel_size": [Interval(Integral, 1, None, closed="left")],
        "dense_units": [Interval(Integral, 1, None, closed="left"), None],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "module": [None, callable],
        "backbone": [None, str, torch.nn.Module],
        "weights": [None, str, os.PathLike],
        "freeze_epochs": [Interval(Integral, 0, None, closed="left")],
        "backbone_lr": [Interval(Real, 0, None, closed="neither"), None],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "optimizer": [StrOptions(set(_OPTIMIZERS)), type],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "lr_schedule": [StrOptions({"constant", "cosine"})],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "warm_start": ["boolean"],
        "callbacks": [list, None],
        "augment": [HasMethods(["augment_batch"]), None],
        "device": [str, torch.device],
        "accelerator": [HasMethods(["prepare", "backward", "unwrap_model"]), None],
        "precision": [StrOptions({"auto", "float32", "bfloat16"})],
        "random_state": ["random_state"],
        "verbose": ["verbose", StrOptions({"auto"})],
        "image_shape": IMAGE_SHAPE_CONSTRAINT,
        "image_size": [Interval(Integral, 1, None, closed="left"), tuple, list, None],
        "color_mode": [StrOptions({"auto", "rgb", "grayscale"})],
        "unreadable_files": [StrOptions({"skip", "raise"})],
        "cache_decoded": ["boolean"],
        "checkpoint": [str, os.PathLike, None],
    }

    def __init__(
        self,
        *,
        filters=(16, 32, 64, 128),
        kernel_size=3,
        dense_units=64,
        dropout=0.0,
        module=None,
        backbone=None,
        weights=None,
        freeze_epochs=1,
        backbone_lr=None,
        epochs=5,
        batch_size=16,
        lr=1e-3,
        optimizer="adam",
        weight_decay=0.0,
        lr_schedule="cosine",
        class_weight=None,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        warm_start=False,
        callbacks=None,
        augment=None,
        device="auto",
        accelerator=None,
        precision="auto",
        random_state=None,
        verbose="auto",
        image_shape=None,
        image_size=None,
        color_mode="auto",
        unreadable_files="skip",
        cache_decoded=False,
        checkpoint=None,
    ):
        self.filters = filters
        self.kernel_size = kernel_size
        self.dense_units = dense_units
        self.dropout = dropout
        self.module = module
        self.backbone = backbone
        self.weights = weights
        self.freeze_epochs = freeze_epochs
        self.backbone_lr = backbone_lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.class_weight = class_weight
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.callbacks = callbacks
        self.augment = augment
        self.device = device
        self.accelerator = accelerator
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose
        self.image_shape = image_shape
        self.image_size = image_size
        self.color_mode = color_mode
        self.unreadable_files = unreadable_files
        self.cache_decoded = cache_decoded
        self.checkpoint = checkpoint

    # -- fitting ---------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train the network on images ``X`` with labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width, channels) or \
list of paths
            Training images; also accepted: (n_samples, channels, height,
            width), (n_samples, height, width) grayscale, or flattened
            (n_samples, height * width * channels) with ``image_shape``. uint8
            pixels (0-255) are scaled to 0-1 batch by batch; other dtypes are
            used as they are. A list or 1-D array of image file paths is read
            batch by batch during training (see ``image_size``).
        y : array-like of shape (n_samples,)
            Class labels: ints, strings or bools.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each image in the loss (the weighted mean of the images'
            losses), multiplied by ``class_weight`` where both are given. A
            weight of 0 ignores the image; the validation split of
            ``early_stopping`` is weighted too. None weighs all images alike.

        Returns
        -------
        self : object
            The fitted classifier.
        """
        continuing = self.warm_start and hasattr(self, "net_")
        return self._fit(
            X,
            y,
            sample_weight,
            epochs=self.epochs,
            classes=None,
            continuing=continuing,
        )

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Train for one more epoch on ``X`` and ``y``.

        Parameters
        ----------
        X : array-like of images
            See :meth:`fit`.
        y : array-like of shape (n_samples,)
            Class labels.
        classes : array-like of shape (n_classes,), default=None
            All the classes that will ever be seen; required on the first call.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each image in the loss; see :meth:`fit`.

        Returns
        -------
        self : object
            The classifier, trained one more epoch.
        """
        if not hasattr(self, "net_"):
            self._validate_params()
            if classes is None:
                raise ValueError(
                    "classes must be passed on the first call to partial_fit, "
                    "for example classes=np.unique(y_all)."
                )
            return self._fit(
                X, y, sample_weight, epochs=1, classes=classes, continuing=False
            )
        return self._fit(X, y, sample_weight, epochs=1, classes=None, continuing=True)

    def _fit(self, X, y, sample_weight, *, epochs, classes, continuing, float32=False):
        snapshot = self.__dict__.copy()
        weights = self._snapshot_weights() if continuing else None
        try:
            return self._fit_unsafe(
                X,
                y,
                sample_weight,
                epochs=epochs,
                classes=classes,
                continuing=continuing,
                float32=float32,
            )
        except TrainingDivergedError as error:
            self.__dict__.clear()
            self.__dict__.update(snapshot)
            if weights is not None:
                self._restore_weights(weights)
            device = self._training_device()
            if float32 or not retry_in_float32(self.precision, device, error):
                raise
            return self._fit(
                X, y, sample_weight, epochs=epochs, classes=classes,
                continuing=continuing, float32=True,
            )  # fmt: skip
        except KeyboardInterrupt:
            if hasattr(self, "net_") and self.net_ is not snapshot.get("net_"):
                # Keep what was trained: the completed epochs stay usable.
                self._record_history()
            raise
        except BaseException:
            # Nothing half-fitted: the estimator is exactly as before the call.
            self.__dict__.clear()
            self.__dict__.update(snapshot)
            if weights is not None:
                self._restore_weights(weights)
            raise

    def _fit_unsafe(
        self, X, y, sample_weight, *, epochs, classes, continuing, float32=False
    ):
        training_set = self._training_set(X, y, sample_weight, classes, continuing)
        device = self._training_device()
        checkpoint_path = self._checkpoint_path(training_set)
        resumed = None
        if not continuing and checkpoint_path is not None and checkpoint_path.exists():
            resumed = TrainingCheckpoint.load(checkpoint_path)
        seed = resolve_seed(self.random_state)
        if continuing:
            # Continue the random streams rather than repeat the first epochs'.
            seed += self.n_iter_
        elif resumed is not None:
            seed += len(resumed["history"])
            epochs = max(self.epochs - len(resumed["history"]), 0)
        init_seed, shuffle_seed, augment_seed, split_seed, dropout_seed = derive_seeds(
            seed, 5
        )
        autocast_dtype = None if float32 else resolve_precision(self.precision, device)
        # Channels-last batches run the convolutions faster on CPUs (measured in
        # benchmarks/) and are what bf16 kernels want on GPUs.
        settings = PredictionSettings(
            channels_last=device.type == "cpu" or autocast_dtype is not None,
            autocast_dtype=autocast_dtype,
        )
        train_data, valid_data = self._split_data(training_set, device, split_seed)

        # Weight initialization and dropout draw from generators of this fit
        # only: the process-wide generator, shared by all threads, stays untouched.
        with seeded_random_ops(init_seed):
            if continuing:
                net = self.net_
                # Parameters may have changed since the last fit (early
                # stopping, verbosity, checkpoints): their callbacks follow.
                net.set_params(
                    verbose=resolve_verbose(self.verbose), callbacks=self._callbacks()
                )
                net.initialize_callbacks()
            else:
                net = self._build_net(
                    training_set.classes,
                    training_set.y,
                    device,
                    training_set.sample_weight,
                )
                net.initialize()
                if resumed is not None:
                    TrainingCheckpoint.restore(net, resumed)
        if settings.channels_last:
            net.module_.to(memory_format=torch.channels_last)
        if checkpoint_path is not None:
            dict(net.callbacks_)["checkpoint"].path = checkpoint_path
        net.batch_preparer = self._fit_preparer(
            training_set, settings, device, augment_seed
        )
        net.autocast_dtype = autocast_dtype
        net.shuffle_generator = torch.Generator().manual_seed(shuffle_seed)
        if valid_data is not None:
            net.train_split = predefined_split(valid_data)
        self.net_ = net
        try:
            if epochs > 0:
                with seeded_training_ops(net.module_, dropout_seed):
                    net.partial_fit(train_data, train_data.y, epochs=epochs)
        except torch.cuda.OutOfMemoryError as error:
            raise MemoryError(
                "CUDA ran out of memory training with batch_size="
                f"{self.batch_size} on images of shape {self.image_shape_}. "
                "Lower batch_size, use precision='bfloat16', or device='cpu'."
            ) from error
        finally:
            # What prediction needs travels as a value; nothing that belongs
            # to this fit only stays on the net.
            net.train_split = None
            net.shuffle_generator = None
            net.batch_preparer = None
            net.module_.eval()
            self.prediction_settings_ = settings
            self.classes_ = training_set.classes
            self.device_ = str(device)
            self._record_history()
        return self

    def _training_set(self, X, y, sample_weight, classes, continuing) -> _TrainingSet:
        """Validated training images, encoded labels, weights and augmentation."""
        augmenters, post_steps, source = self._training_recipe(X)
        self._check_filters()
        files, y = self._training_files(X, y, source, continuing)
        if files is None:
            X_nchw, _, y = validate_images(
                self, X, y, reset=not continuing, image_shape=self.image_shape
            )
            self._check_image_size_of_arrays()
        if not continuing:
            # Files are decoded to uint8 pixels, which the batches scale to [0, 1].
            self.input_normalization_ = self._input_normalization(
                X_nchw if files is None else None
            )
        check_classification_targets(y)
        y_encoded, classes_ = self._encode_labels(y, classes, continuing)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(
                sample_weight, y_encoded, dtype=np.float32, ensure_non_negative=True
            )
        images = X_nchw if files is None else files
        if source is not None and files is None:
            # Training batches are drawn afresh from the un-augmented source.
            images = source.source_layout.to_nchw(np.asarray(source.source))
            if len(images) != len(X_nchw):
                raise ValueError(
                    f"The augmented images hold {len(images)} source images "
                    f"but X has {len(X_nchw)}."
                )
        if sample_weight is not None and not sample_weight.all():
            # An image of weight 0 is left out altogether, so that it counts for
            # nothing in batch-norm statistics either.
            kept = np.flatnonzero(sample_weight)
            images, y_encoded = images[kept], y_encoded[kept]
            sample_weight = sample_weight[kept]
        return _TrainingSet(
            images=images,
            y=y_encoded,
            classes=classes_,
            sample_weight=sample_weight,
            scale_uint8=files is not None or X_nchw.dtype == np.uint8,
            augmenters=tuple(augmenters),
            post_steps=tuple(post_steps),
        )

    def _training_files(self, X, y, source, continuing):
        """The readable image files of ``X`` and their labels (None for arrays)."""
        # Augmenters in a Pipeline pass image files on as the source they keep.
        paths = X if source is None else source.source
        if not is_file_paths(paths):
            return None, y
        if self.image_shape is not None:
            raise ValueError(
                "image_shape describes the layout of arrays; X holds image files, "
                "whose size image_size sets. Pass image_shape=None."
            )
        return validate_image_files(
            self,
            paths,
            y,
            reset=not continuing,
            image_size=self.image_size,
            skip_unreadable=self.unreadable_files == "skip",
            color_mode=self.color_mode,
            stacklevel=9,  # the caller of fit, through _fit_context
        )

    def _check_image_size_of_arrays(self):
        """image_size resizes files only: arrays of another size are refused."""
        if self.image_size is None:
            return
        size = check_image_size(self.image_size)
        if size != tuple(self.image_shape_[:2]):
            raise ValueError(
                f"image_size={self.image_size!r} resizes image files, but X is an "
                f"array of images of size (height, width) = {self.image_shape_[:2]}. "
                "Resize arrays with sklearn_cnn.preprocessing.ImageResizer, or "
                "pass image_size=None."
            )

    def _split_data(self, training_set, device, seed):
        """The training and validation :class:`ImageData` (None: no validation)."""
        train_idx, valid_idx = self._split(training_set.y, seed)
        if isinstance(training_set.images, ImageFiles):
            data = training_set.images.labelled(
                training_set.y, training_set.sample_weight, cache=self.cache_decoded
            )
        else:
            data = ImageData.from_numpy(
                training_set.images, training_set.y, device, training_set.sample_weight
            )
        if valid_idx is None:
            return data, None
        return data.subset(train_idx), data.subset(valid_idx)

    @staticmethod
    def _fit_preparer(training_set, settings, device, seed) -> BatchPreparer:
        """Training batches: augmented, then the Pipeline steps after the augmenters.

        Validation batches get those steps too, without augmentation.
        """
        preparer = BatchPreparer(
            source_is_uint8=training_set.images.dtype == np.uint8,
            scale_uint8=training_set.scale_uint8,
            augmenters=training_set.augmenters,
            post_steps=training_set.post_steps,
            channels_last=settings.channels_last,
        )
        preparer.generator = torch.Generator(device=device).manual_seed(seed)
        return preparer

    def _training_device(self) -> torch.device:
        if self.accelerator is None:
            return resolve_device(self.device)
        device = torch.device(self.accelerator.device)
        from ._accelerate import same_device

        if self.device != "auto" and not same_device(torch.device(self.device), device):
            raise ValueError(
                f"device={str(self.device)!r} differs from the accelerator's device "
                f"{str(device)!r}; leave device='auto' when passing an accelerator."
            )
        n_processes = self.accelerator.num_processes
        if n_processes > 1 and not isinstance(self.random_state, Integral):
            raise ValueError(
                f"Training on {n_processes} processes needs an int random_state, so "
                "that every process holds out and shuffles the same images; got "
                f"random_state={self.random_state!r}."
            )
        return device

    def _training_recipe(self, X):
        """The augmenters and follow-up steps for training batches, and their source.

        An :class:`AugmentedImages` made by an augmenter in a Pipeline brings its
        un-augmented source: training draws a fresh augmentation from it in every
        epoch instead of using the one draw it holds.
        """
        augmenters, post_steps, source = [], [], None
        if isinstance(X, AugmentedImages) and X.has_recipe:
            augmenters += X.augmenters
            post_steps += X.post_steps
            source = X
        if self.augment is not None:
            if post_steps:
                raise ValueError(
                    "augment=... cannot be combined with Pipeline steps between an "
                    "augmenter and the classifier; put all augmenters in one place."
                )
            # Check the augmenter's own parameters now, not at the first batch.
            self.augment._validate_params()
            self.augment._check_params()
            augmenters.append(self.augment)
        return augmenters, post_steps, source

    def _checkpoint_path(self, training_set):
        """One file per combination of parameters and data (None: no checkpoints)."""
        images, y_encoded = training_set.images, training_set.y
        sample_weight = training_set.sample_weight
        if self.checkpoint is None:
            return None
        ignored = {"epochs", "verbose", "checkpoint", "warm_start", "device"}
        params = sorted(
            (key, repr(value))
            for key, value in self.get_params(deep=False).items()
            if key not in ignored
        )
        digest = hashlib.sha256(repr(params).encode())
        if isinstance(images, ImageFiles):
            # Names, sizes and modification times stand for the files' contents,
            # which are not read here.
            digest.update(repr(images.image_shape).encode())
            for path in images.paths:
                stat = os.stat(path)
                digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        else:
            digest.update(repr((images.shape, str(images.dtype))).encode())
            for start in range(0, len(images), 1024):
                digest.update(np.ascontiguousarray(images[start : start + 1024]).data)
        digest.update(np.ascontiguousarray(y_encoded).data)
        if sample_weight is not None:
            digest.update(np.ascontiguousarray(sample_weight).data)
        return Path(self.checkpoint) / f"cnn-{digest.hexdigest()[:20]}.pt"

    def _check_filters(self):
        filters = self.filters
        if len(filters) == 0 or not all(
            isinstance(n, Integral) and not isinstance(n, bool) and n >= 1
            for n in filters
        ):
            raise InvalidParameterError(
                "The 'filters' parameter of CNNImageClassifier must be a non-empty "
                f"tuple of positive ints. Got {filters!r} instead."
            )

    def _encode_labels(self, y, classes, continuing):
        if continuing:
            classes_ = self.classes_
        elif classes is not None:
            classes_ = np.unique(np.asarray(classes))
        else:
            classes_ = np.unique(y)
        unknown = np.setdiff1d(np.unique(y), classes_)
        if len(unknown):
            raise ValueError(
                f"y contains labels {unknown.tolist()} that are not in the classes "
                f"{classes_.tolist()} this model knows."
            )
        if len(classes_) < 2:
            raise ValueError(
                "CNNImageClassifier needs samples of at least 2 classes in the data, "
                f"but the data contains only one class: {classes_[0]!r}."
            )
        return np.searchsorted(classes_, y).astype(np.int64), classes_

    def _split(self, y_encoded, seed):
        """Indices of the training and the validation images (None: no split).

        Stratified whenever every class can have an image on both sides;
        otherwise (a class with a single image, or fewer images to hold out
        than there are classes) a plain random split.
        """
        if not self.early_stopping:
            return None, None
        n_images = len(y_encoded)
        n_valid = int(np.ceil(self.validation_fraction * n_images))
        if n_valid >= n_images:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} of "
                f"{n_images} images leaves no images for training; use more "
                "images or early_stopping=False."
            )
        counts = np.bincount(y_encoded)
        counts = counts[counts > 0]
        stratifiable = counts.min() >= 2 and min(n_valid, n_images - n_valid) >= len(
            counts
        )
        return train_test_split(
            np.arange(n_images),
            test_size=n_valid,
            stratify=y_encoded if stratifiable else None,
            random_state=seed % (2**32),
        )

    def _build_net(
        self, classes_, y_encoded, device, sample_weight=None, *, load_weights=True
    ):
        channels, height, width = self._image_chw()
        module, module_kwargs = self._module_spec(
            channels, len(classes_), height, width, load_weights=load_weights
        )
        optimizer, optimizer_kwargs = self._optimizer_spec()
        if optimizer in _FUSED_OPTIMIZERS and _has_fused_kernels(device):
            # One kernel for all parameters instead of a dozen small ops each:
            # resnet18's Adam step measured 0.067 s -> 0.010 s on a CPU core.
            optimizer_kwargs.setdefault("optimizer__fused", True)
        # One loss per image: the net weighs and averages them (get_loss).
        criterion_kwargs = {"criterion__reduction": "none"}
        if self.class_weight is not None:
            criterion_kwargs["criterion__weight"] = torch.as_tensor(
                self._class_weights(classes_, y_encoded, sample_weight),
                dtype=torch.float32,
            )
        net_class, net_kwargs = ImageNeuralNet, {}
        if self.accelerator is not None:
            from ._accelerate import AcceleratedImageNet

            net_class, net_kwargs = (
                AcceleratedImageNet,
                {"accelerator": self.accelerator},
            )
        return net_class(
            module,
            input_shape=(channels, height, width),
            criterion=torch.nn.CrossEntropyLoss,
            optimizer=optimizer,
            lr=self.lr,
            max_epochs=self.epochs,
            batch_size=self.batch_size,
            train_split=None,
            callbacks=self._callbacks() or None,
            device=str(device),
            verbose=resolve_verbose(self.verbose),
            classes=np.arange(len(classes_)),
            **module_kwargs,
            **optimizer_kwargs,
            **criterion_kwargs,
            **net_kwargs,
        )

    def _callbacks(self):
        """The user's callbacks plus those our parameters ask for."""
        callbacks = list(self.callbacks or [])
        verbose = resolve_verbose(self.verbose)
        if self.lr_schedule == "cosine":
            callbacks.append(("lr_schedule", cosine_schedule(self.epochs)))
        if self._fine_tuning() and self.freeze_epochs:
            callbacks += body_freezing("body.*", self.freeze_epochs)
        if self.early_stopping:
            callbacks.append(
                (
                    "early_stopping",
                    _StoppingEarly(
                        monitor="valid_loss",
                        patience=self.n_iter_no_change,
                        threshold=1e-4,
                        load_best=True,
                        sink=print if verbose else _silent,
                    ),
                )
            )
        main_process = self.accelerator is None or self.accelerator.is_main_process
        if verbose and main_process:
            # One progress bar for a data-parallel run: the main process's.
            callbacks.append(("progress_bar", _EpochProgressBar()))
        if self.checkpoint is not None:
            # The path depends on the data; fit sets it before training.
            callbacks.append(("checkpoint", TrainingCheckpoint(self.checkpoint)))
        return callbacks

    def _image_chw(self):
        height, width, channels = self.image_shape_
        return channels, height, width

    def _module_spec(self, channels, n_classes, height, width, *, load_weights):
        if self.backbone is not None:
            # load_model rebuilds the architecture only: the file has the weights.
            weights = self.weights if load_weights else None
            backbone = load_backbone(
                self.backbone, weights, in_channels=channels, image_size=(height, width)
            )
            normalization = self.input_normalization_
            return BackboneNetwork(
                backbone.body,
                backbone.n_features,
                n_classes,
                normalization=normalization and Normalization(**normalization),
                rgb=backbone.rgb,
            ), {}
        if self.module is None:
            return ConvNet, {
                "module__in_channels": channels,
                "module__n_classes": n_classes,
                "module__image_size": (height, width),
                "module__filters": tuple(self.filters),
                "module__kernel_size": self.kernel_size,
                "module__dense_units": self.dense_units,
                "module__dropout": self.dropout,
            }
        if isinstance(self.module, torch.nn.Module):
            # Train a copy: the instance passed as a parameter must stay untouched.
            return copy.deepcopy(self.module), {}
        if inspect.isclass(self.module) or callable(self.module):
            return self.module, {
                "module__in_channels": channels,
                "module__n_classes": n_classes,
                "module__image_size": (height, width),
            }
        raise InvalidParameterError(
            "The 'module' parameter of CNNImageClassifier must be a torch.nn.Module "
            f"class or instance, or None. Got {self.module!r} instead."
        )

    def _optimizer_spec(self):
        if isinstance(self.optimizer, str):
            optimizer, defaults = _OPTIMIZERS[self.optimizer]
        else:
            optimizer, defaults = self.optimizer, {}
        kwargs = {f"optimizer__{key}": value for key, value in defaults.items()}
        if self.weight_decay:
            kwargs["optimizer__weight_decay"] = self.weight_decay
        if self._fine_tuning():
            backbone_lr = self.lr / 2 if self.backbone_lr is None else self.backbone_lr
            kwargs["optimizer__param_groups"] = [("body.*", {"lr": backbone_lr})]
        return optimizer, kwargs

    def _fine_tuning(self):
        """True when pretrained weights are fine-tuned (frozen, then a lower lr)."""
        return self.backbone is not None and self.weights is not None

    def _input_normalization(self, X_nchw):
        """The fitted ``input_normalization_``, after checking the backbone params.

        ``X_nchw`` None stands for uint8 images, read from files.
        """
        if self.backbone is None:
            if self.weights is not None:
                raise ValueError(
                    f"weights={self.weights!r} needs a backbone: pass, for "
                    "example, backbone='resnet18'."
                )
            return None
        if self.module is not None:
            raise ValueError(
                "module and backbone cannot both be given: a backbone brings its "
                "own network. Pass one of them."
            )
        normalization = input_normalization(self.backbone, self.weights, X_nchw)
        return None if normalization is None else dataclasses.asdict(normalization)

    def _class_weights(self, classes_, y_encoded, sample_weight=None):
        if self.class_weight == "balanced":
            present = np.unique(y_encoded)
            weights = np.ones(len(classes_))
            weights[present] = compute_class_weight(
                "balanced", classes=present, y=y_encoded, sample_weight=sample_weight
            )
            return weights
        weights = np.ones(len(classes_))
        for label, weight in self.class_weight.items():
            matches = np.flatnonzero(classes_ == label)
            if len(matches) == 0:
                raise ValueError(
                    f"class_weight names the class {label!r}, which is not in the "
                    f"classes {classes_.tolist()}."
                )
            weights[matches[0]] = weight
        return weights

    def _record_history(self):
        """Fitted attributes that summarise training, from the net's history."""
        keys = (
            "epoch",
            "train_loss",
            "train_accuracy",
            "valid_loss",
            "valid_accuracy",
            "dur",
        )
        # An epoch interrupted before its end has no train_loss: leave it out.
        history = [
            {
                key: row[key] if key == "epoch" else float(row[key])
                for key in keys
                if key in row
            }
            for row in self.net_.history
            if "train_loss" in row
        ]
        self.history_ = history
        self.loss_curve_ = [row["train_loss"] for row in history]
        scores = [row["valid_accuracy"] for row in history if "valid_accuracy" in row]
        self.validation_scores_ = scores or None
        self.n_iter_ = len(history)

    def _snapshot_weights(self):
        net = self.net_
        return (
            copy.deepcopy(net.module_.state_dict()),
            copy.deepcopy(net.optimizer_.state_dict()),
            copy.deepcopy(net.history),
        )

    def _restore_weights(self, weights):
        module_state, optimizer_state, history = weights
        self.net_.module_.load_state_dict(module_state)
        self.net_.optimizer_.load_state_dict(optimizer_state)
        self.net_.history = history

    # -- prediction --------------------------------------------------------------
    def _logits(self, X):
        check_is_fitted(self)
        if is_file_paths(X):
            data = validate_image_files(
                self,
                X,
                reset=False,
                image_size=self.image_size,
                skip_unreadable=False,
            )
        else:
            X_nchw, _ = validate_images(self, X, reset=False)
            data = ImageData.from_numpy(X_nchw, None, torch.device(self.net_.device))
        return predict_logits(self.net_, data, self.prediction_settings_)

    def predict_proba(self, X):
        """Probability of each class for each image.

        Parameters
        ----------
        X : array-like of images or list of image file paths
            Images in the layout and of the size :meth:`fit` was given, or image
            files, decoded batch by batch to the fitted size.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``.
        """
        return softmax(self._logits(X).astype(np.float64), axis=1)

    def predict_log_proba(self, X):
        """Logarithm of the class probabilities, computed from the logits.

        Computed as ``log_softmax`` of the network's outputs, so very unlikely
        classes get large negative values rather than ``log(0) = -inf``.

        Parameters
        ----------
        X : array-like of images or list of image file paths
            As for :meth:`predict_proba`.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            One column per class of ``classes_``, in that order.
        """
        return log_softmax(self._logits(X).astype(np.float64), axis=1)

    def predict(self, X):
        """Predict the class label of each image.

        Parameters
        ----------
        X : array-like of images or list of image file paths
            Same layout and image size as in :meth:`fit`.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Labels from ``classes_`` (the original labels, not indices).
        """
        logits = self._logits(X)
        return self.classes_[np.argmax(logits, axis=1)]

    # -- persistence and tags --------------------------------------------------------
    def _restore_net(self, device: torch.device) -> None:
        """Re-create ``net_`` on ``device`` from the fitted attributes, for load_model.

        ``classes_``, ``image_shape_`` and ``history_`` must be set. The network
        gets fresh weights: the caller loads the saved ones into ``net_.module_``
        and ``net_.criterion_``.
        """
        with seeded_random_ops(0):
            # Balanced class weights need the training labels: the saved criterion
            # state replaces these placeholder weights.
            net = self._build_net(
                self.classes_,
                np.arange(len(self.classes_)),
                device,
                load_weights=False,
            )
            net.initialize()
        for row in self.history_:
            net.history.new_epoch()
            for key, value in row.items():
                net.history.record(key, value)
        net.module_.eval()
        self.net_ = net
        self.device_ = str(device)

    def __setstate__(self, state):
        super().__setstate__(state)
        device = self._available_device()
        if device != getattr(self, "device_", None):
            self.device_ = self.net_.device = device
            self.net_.module_.to(device)
            self.net_.criterion_.to(device)

    def _available_device(self) -> str | None:
        """The device trained on if it is available here, else the CPU (warning)."""
        device = getattr(self, "device_", None)
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            warnings.warn(
                "This model was trained on CUDA, which is not available here; "
                "it was loaded on the CPU.",
                UserWarning,
                stacklevel=3,
            )
            return "cpu"
        return device

    def _saved_state(self) -> tuple[dict, dict]:
        """The parameters and fitted state that :func:`~sklearn_cnn.save_model` saves.

        The network is saved as its architecture and state dicts, and rebuilt
        from the parameters when loaded. The accelerator is left out: it is a
        runtime object, and the fitted model predicts without it.
        """
        from .utils._saved_state import PICKLE_HINT, fitted_attributes

        for name in ("module", "backbone"):
            value = getattr(self, name)
            if value is None or (name == "backbone" and isinstance(value, str)):
                continue
            shown = getattr(value, "__qualname__", type(value).__qualname__)
            raise TypeError(
                f"save_model cannot save a CNNImageClassifier with a custom network "
                f"({name}={shown}): it is Python code, which a model file cannot "
                "hold; load_model only rebuilds the built-in network and backbones "
                f"given by name. {PICKLE_HINT}"
            )
        for name in ("optimizer", "callbacks"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str) and value != []:
                raise TypeError(
                    f"save_model cannot save a CNNImageClassifier with {name}="
                    f"{getattr(value, '__qualname__', value)!r}: a model file holds "
                    f"the built-in optimizers, by name, and no callbacks. {PICKLE_HINT}"
                )
        fitted = fitted_attributes(self)
        net = fitted.pop("net_")
        fitted["prediction_settings_"] = self.prediction_settings_.to_json()
        fitted["net_"] = {
            "architecture": type(net.module_).__name__,
            "module": net.module_.state_dict(),
            "criterion": net.criterion_.state_dict(),
        }
        return {**self.get_params(deep=False), "accelerator": None}, fitted

    def _load_saved_state(self, fitted: dict, device) -> None:
        """Set the fitted state read by :func:`~sklearn_cnn.load_model`.

        ``net_`` is rebuilt from the parameters, and the saved weights are loaded
        into it once their names, shapes and dtypes fit it.
        """
        from .utils._saved_state import load_module_state

        self._check_filters()
        if self.callbacks:
            raise ValueError("a model file cannot give a CNNImageClassifier callbacks.")
        fitted = dict(fitted)
        network = fitted.pop("net_", None)
        settings = fitted.pop("prediction_settings_", None)
        missing = {"classes_", "image_shape_", "history_"} - fitted.keys()
        if not isinstance(network, dict) or not isinstance(settings, dict) or missing:
            raise ValueError(
                "the fitted state needs net_, prediction_settings_, classes_, "
                f"image_shape_ and history_; it lacks {sorted(missing) or 'some'}."
            )
        vars(self).update(fitted)
        settings = PredictionSettings.from_json(settings)
        if device is None:
            try:
                device = torch.device(self._available_device() or "cpu")
            except RuntimeError as error:
                raise ValueError(f"unusable device_ ({error}).") from None
        self._restore_net(device)
        architecture = type(self.net_.module_).__name__
        if network.get("architecture") != architecture:
            raise ValueError(
                f"the network has architecture {network.get('architecture')!r}, an "
                f"unknown architecture: the parameters build a {architecture}."
            )
        load_module_state(self.net_.module_, network.get("module"), "network")
        load_module_state(self.net_.criterion_, network.get("criterion"), "loss")
        for group in self.net_.optimizer_.param_groups:
            # The optimizer starts afresh, but a learning-rate schedule resumed by
            # a warm start at the saved epoch needs the base rate it started from.
            group.setdefault("initial_lr", group["lr"])
        self.prediction_settings_ = settings

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_label = False
        return tags


def _silent(*args, **kwargs):
    pass
