"""CNNImageRegressor: a convolutional image regressor with scikit-learn's manners."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import RegressorMixin

from ._estimator import CNNImageEstimator
from ._net import R2, ImageNeuralNetRegressor
from .utils._sklearn_private import StrOptions, _fit_context

_LOSSES = {
    "squared_error": torch.nn.MSELoss,
    "absolute_error": torch.nn.L1Loss,
    "huber": torch.nn.HuberLoss,
}


class CNNImageRegressor(RegressorMixin, CNNImageEstimator):
    """A convolutional neural network image regressor.

    Predicts one or several numbers per image (an angle, a count, a size, a
    brightness) with the network, training loop and data path of
    :class:`CNNImageClassifier`, and behaves like any scikit-learn regressor:
    it fits into ``Pipeline``, ``GridSearchCV``, ``cross_val_score``,
    ``TransformedTargetRegressor`` and ``pickle``; ``score`` is R².

    Targets are standardized inside the estimator for training (each output
    to mean 0 and standard deviation 1) and put back on their own scale by
    ``predict``, so that the learning rate does not depend on the targets'
    units.

    The built-in network has one block per entry of ``filters`` (a 'same'
    convolution, batch normalization, ReLU and a 2x2 max pool), an adaptive
    average pool to at most 8x8 cells, an optional hidden dense layer and a dense
    output layer with one unit per target. It works for images of any size from 1x1 up.

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
        ``module(in_channels, n_classes, image_size)`` with ``n_classes`` the
        number of targets and ``image_size`` the ``(height, width)`` of the
        input; an instance is used as it is (and copied, so that the instance
        you pass stays untouched). The network takes a float32 batch of shape
        (n, channels, height, width) and returns the standardized targets, of
        shape (n, n_outputs). The architecture parameters above are ignored.
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
    lr : float or 'auto', default=1e-3
        Learning rate (of the head, with a backbone). 'auto' runs
        :func:`~sklearn_cnn.inspection.find_learning_rate` on the training
        images first and trains at the rate it suggests (``lr_``); it needs an
        epoch of a few dozen batches to be reliable.
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
    weight_averaging : {'ema'} or None, default=None
        'ema' keeps an exponential moving average of the weights during
        training (timm's ``ModelEmaV3``): after every optimizer step each
        weight's average becomes ``ema_decay * average + (1 - ema_decay) *
        weight``, and batch-norm statistics are copied. The average, usually
        smoother and a little more accurate than the last weights of a noisy
        training, is what the validation split scores, what early stopping
        keeps (the average of the best epoch) and what the fitted model
        predicts with, saves and exports. It helps long trainings with high
        learning rates or strong augmentation; over few optimizer steps the
        average is still mostly the initial weights (a warning says so): lower
        ``ema_decay`` then. With ``warm_start`` and ``partial_fit`` training
        goes on from the averaged weights and the average restarts from them;
        a ``checkpoint`` keeps the average and the weights training goes on
        from, so a resumed fit averages as an uninterrupted one.
    ema_decay : float, default=0.999
        Decay of the moving average of ``weight_averaging='ema'``, in (0, 1):
        the average spans about ``1 / (1 - ema_decay)`` optimizer steps (1000
        for the default). Ignored without ``weight_averaging``.
    loss : {'squared_error', 'absolute_error', 'huber'}, default='squared_error'
        The loss on the standardized targets: the mean squared error, the mean
        absolute error (robust to outlying targets), or the Huber loss
        (squared below one standard deviation of the targets, absolute above).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data and
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
        nor to the validation split. Augmenters placed before the regressor in
        a Pipeline work the same way. None trains on the images as they are.
        Choose augmentations that leave the targets unchanged: a flip changes
        the position of a square, not its size.
    test_time_augmentation : {'flip'}, augmenter, list of augmenters or None, \
default=None
        Predict each image as several views and average the predicted values:
        'flip' averages the image and its horizontal mirror; an augmenter (or a
        list, applied in turn) averages the image and ``n_test_time_draws``
        random draws, seeded by ``random_state``. All the views of a batch go
        through the network in one forward pass, so 'flip' costs about twice
        the prediction time. Used by ``predict`` and ``score``; the
        layer trace, activation maps and ONNX export see the image alone. Read
        at prediction: ``set_params`` on a fitted model takes effect without
        refitting. It helps when the mirror of an image is as likely as the
        image (on a held-out transfer task, 'flip' alone added 2.3 points of
        accuracy); it hurts where orientation carries the answer. None
        predicts each image once, exactly as without this parameter.
    n_test_time_draws : int, default=4
        Random draws per image of an augmenter ``test_time_augmentation``
        (besides the image itself); ignored for None and 'flip'.
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
        threads give identical results. Fitting never changes the global
        torch, NumPy or Python random state.
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
    target_mean_ : ndarray of shape (n_outputs,)
        Mean of each target in the training data (weighted by
        ``sample_weight``).
    target_scale_ : ndarray of shape (n_outputs,)
        Standard deviation of each target, weighted likewise (1 for a constant
        target): the
        network learns ``(y - target_mean_) / target_scale_``.
    n_outputs_ : int
        Number of targets per image.
    n_features_in_ : int
        Number of values per image (height * width * channels).
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of the features, when ``X`` was a DataFrame with string columns.
    image_shape_ : tuple of int
        ``(height, width, channels)`` of the training images.
    net_ : skorch.NeuralNetRegressor
        The trained skorch net; ``net_.module_`` is the torch network.
    history_ : list of dict
        One record per epoch: ``epoch``, ``train_loss``, ``train_r2``,
        ``valid_loss`` and ``valid_r2`` when there is a validation split, and
        ``dur`` (seconds). R² is computed on the standardized targets, which
        gives the same value as on the targets themselves.
    loss_curve_ : list of float
        Training loss per epoch.
    validation_scores_ : list of float or None
        Validation R² per epoch, or None without a validation split.
    lr_ : float
        The learning rate trained with: ``lr``, or the rate ``lr='auto'`` found.
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
    CNNImageClassifier : The same network for class labels.
    sklearn.neural_network.MLPRegressor : Fully connected network regressor.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cnn import CNNImageRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randint(0, 256, size=(40, 8, 8, 3), dtype=np.uint8)
    >>> y = X.mean(axis=(1, 2, 3)) / 255  # the brightness of each image
    >>> reg = CNNImageRegressor(filters=(8,), epochs=2, random_state=0).fit(X, y)
    >>> reg.predict(X[:3]).shape
    (3,)
    """

    _parameter_constraints: dict = {
        **CNNImageEstimator._parameter_constraints,
        "loss": [StrOptions(set(_LOSSES))],
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
        weight_averaging=None,
        ema_decay=0.999,
        loss="squared_error",
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        warm_start=False,
        callbacks=None,
        augment=None,
        test_time_augmentation=None,
        n_test_time_draws=4,
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
        self.weight_averaging = weight_averaging
        self.ema_decay = ema_decay
        self.loss = loss
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.callbacks = callbacks
        self.augment = augment
        self.test_time_augmentation = test_time_augmentation
        self.n_test_time_draws = n_test_time_draws
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
        """Train the network on images ``X`` with targets ``y``.

        Parameters
        ----------
        X : array-like of images, image files, PIL images or an image column
            Training images, in any input kind and layout
            :class:`CNNImageClassifier` takes.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets: numbers, finite.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each image in the loss; a weight of 0 ignores the image.

        Returns
        -------
        self : object
            The fitted regressor.
        """
        continuing = self.warm_start and hasattr(self, "net_")
        return self._fit(
            X, y, sample_weight, epochs=self.epochs, classes=None, continuing=continuing
        )

    def partial_fit(self, X, y, sample_weight=None):
        """Train for one more epoch on ``X`` and ``y``.

        Parameters
        ----------
        X : array-like of images
            See :meth:`fit`.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets; the standardization of the first call is kept.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each image in the loss.

        Returns
        -------
        self : object
            The regressor, trained one more epoch.
        """
        continuing = hasattr(self, "net_")
        if not continuing:
            self._validate_params()
        return self._fit(
            X, y, sample_weight, epochs=1, classes=None, continuing=continuing
        )

    # -- the task: numbers ----------------------------------------------------------
    def _task_targets(self, y, *, classes, continuing, sample_weight) -> np.ndarray:
        y = np.asarray(y)
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"Unknown label type: {type(self).__name__} needs numeric targets; "
                f"got y of dtype {y.dtype} (for example {y.flat[0]!r}). For class "
                "labels, use CNNImageClassifier."
            ) from None
        if y.ndim not in (1, 2):
            raise ValueError(
                "y must have shape (n_samples,) or (n_samples, n_outputs); got an "
                f"array of shape {y.shape}."
            )
        if not np.isfinite(y).all():
            raise ValueError(
                f"y holds {int((~np.isfinite(y)).sum())} NaN or infinite value(s); "
                "every target must be a finite number."
            )
        targets = y.reshape(len(y), -1)
        if continuing:
            if targets.shape[1] != self.n_outputs_:
                raise ValueError(
                    f"y has {targets.shape[1]} output(s) per image, but this model "
                    f"was fitted on {self.n_outputs_}."
                )
        else:
            # Weighted as the loss is: an image of weight 0 counts for nothing.
            weights = None if sample_weight is None else sample_weight.astype(float)
            mean = np.average(targets, axis=0, weights=weights)
            scale = np.sqrt(np.average((targets - mean) ** 2, axis=0, weights=weights))
            self.target_mean_ = mean
            self.target_scale_ = np.where(scale > 0, scale, 1.0)
            self.n_outputs_ = targets.shape[1]
            self.target_ndim_ = y.ndim
        standardized = (targets - self.target_mean_) / self.target_scale_
        return standardized.astype(np.float32)

    def _task_criterion(self, training_set):
        return _LOSSES[self.loss], {}

    def _task_net_class(self):
        return ImageNeuralNetRegressor

    def _task_n_outputs(self) -> int:
        return self.n_outputs_

    def _task_metric(self):
        return R2()

    def _task_metric_name(self) -> str:
        return R2.name

    # -- prediction --------------------------------------------------------------
    def predict(self, X):
        """Predict the targets of each image.

        Parameters
        ----------
        X : array-like of images, image files, PIL images or an image column
            Same layout and image size as in :meth:`fit`.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The shape of the ``y`` given to :meth:`fit`.
        """
        outputs = self._predicted(X)
        predictions = outputs * self.target_scale_ + self.target_mean_
        return predictions[:, 0] if self.target_ndim_ == 1 else predictions

    # -- tags ----------------------------------------------------------------------
    _required_fitted = (
        "target_mean_",
        "target_scale_",
        "n_outputs_",
        "target_ndim_",
        "image_shape_",
        "history_",
    )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
