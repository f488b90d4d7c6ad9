"""What every CNN estimator of the package shares: parameters, validation, methods.

:class:`CNNImageEstimator` is the family's base, as scikit-learn's
``BaseMultilayerPerceptron`` is for ``MLPClassifier`` and ``MLPRegressor``. It
validates the parameters and the images (through the image source), runs the
fit transaction (nothing half-fitted after an error), and predicts through
the package's one inference loop. A task (classification, regression) says
only what is its own, in the ``_task_*`` methods: how targets are encoded,
the loss, the metric, the number of outputs. The fit itself is in
``_fitting.py``, the net in ``_net.py``, the data sources in ``_sources.py``.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ._backbones import input_normalization
from ._fitting import (
    _OPTIMIZERS,
    TrainingSet,
    build_net,
    fit_network,
    restore_weights,
    snapshot_weights,
    training_device,
)
from ._inference import network_outputs
from ._net import TrainingDivergedError
from ._sources import IMAGE_SHAPE_CONSTRAINT, image_source
from ._tta import check_test_time_augmentation, views_of
from .utils._runtime import resolve_verbose, retry_in_float32, seeded_random_ops
from .utils._sklearn_private import (
    HasMethods,
    Interval,
    InvalidParameterError,
    StrOptions,
    _check_sample_weight,
)


class CNNImageEstimator(BaseEstimator):
    """Base class of the package's convolutional network estimators.

    Not for direct use: use :class:`~sklearn_cnn.CNNImageClassifier`.
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
        "lr": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "optimizer": [StrOptions(set(_OPTIMIZERS)), type],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "lr_schedule": [StrOptions({"constant", "cosine"})],
        "weight_averaging": [StrOptions({"ema"}), None],
        "ema_decay": [Interval(Real, 0, 1, closed="neither")],
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
        "test_time_augmentation": [
            None,
            StrOptions({"flip"}),
            HasMethods(["augment_batch"]),
            list,
        ],
        "n_test_time_draws": [Interval(Integral, 1, None, closed="left")],
    }

    # -- what a task defines ------------------------------------------------------
    def _task_targets(self, y, *, classes, continuing, sample_weight) -> np.ndarray:
        """Validate ``y`` and encode it for the loss; set the fitted target state."""
        raise NotImplementedError

    def _task_criterion(self, training_set: TrainingSet):
        """The torch loss class and its keyword arguments."""
        raise NotImplementedError

    def _task_net_class(self) -> type:
        """The skorch net class (our mixin on skorch's classifier or regressor)."""
        raise NotImplementedError

    def _task_net_kwargs(self) -> dict:
        """Task-specific keyword arguments of the net."""
        return {}

    def _task_n_outputs(self) -> int:
        """Outputs of the network (classes, labels, regression targets)."""
        raise NotImplementedError

    def _task_metric(self):
        """A skorch callback recording ``train_<name>`` and ``valid_<name>``."""
        raise NotImplementedError

    def _task_metric_name(self) -> str:
        raise NotImplementedError

    def _task_batch_mixing(self):
        """How training batches are mixed: a ``MixingSettings`` (None: never)."""
        return None

    def _task_strata(self, targets) -> np.ndarray | None:
        """What the validation split is stratified on (None: not stratified)."""
        return None

    # -- fitting ---------------------------------------------------------------
    def _fit(self, X, y, sample_weight, *, epochs, classes, continuing, float32=False):
        # A list passes the parameter constraints: its items are checked here.
        check_test_time_augmentation(self.test_time_augmentation)
        rate = self._learning_rate(X, y, sample_weight, continuing)
        snapshot = self.__dict__.copy()
        weights = snapshot_weights(self.net_) if continuing else None
        try:
            self.lr_ = rate
            training_set = self._training_set(X, y, sample_weight, classes, continuing)
            return fit_network(
                self,
                training_set,
                epochs=epochs,
                continuing=continuing,
                float32=float32,
            )
        except TrainingDivergedError as error:
            self.__dict__.clear()
            self.__dict__.update(snapshot)
            if weights is not None:
                restore_weights(self.net_, weights)
            if float32 or not retry_in_float32(
                self.precision, training_device(self), error
            ):
                raise
            # precision='auto' chose bfloat16, not the user: never the reason a
            # fit fails that converges in float32.
            return self._fit(
                X,
                y,
                sample_weight,
                epochs=epochs,
                classes=classes,
                continuing=continuing,
                float32=True,
            )
        except KeyboardInterrupt:
            if hasattr(self, "net_") and self.net_ is not snapshot.get("net_"):
                # Keep what was trained: the completed epochs stay usable.
                from ._fitting import record_history

                record_history(self)
            raise
        except BaseException:
            # Nothing half-fitted: the estimator is exactly as before the call.
            self.__dict__.clear()
            self.__dict__.update(snapshot)
            if weights is not None:
                restore_weights(self.net_, weights)
            raise

    def _learning_rate(self, X, y, sample_weight, continuing) -> float:
        """``lr``, or for ``lr="auto"`` the rate the range test suggests.

        Training that goes on (``warm_start``, ``partial_fit``) keeps the rate
        found when it started.
        """
        if not isinstance(self.lr, str):
            return float(self.lr)
        if continuing and hasattr(self, "lr_"):
            return self.lr_
        from .inspection._lr_finder import find_learning_rate

        # Warns where an epoch has too few batches for a reliable suggestion.
        result = find_learning_rate(self, X, y, sample_weight=sample_weight)
        rate = result.suggested_lr
        if not np.isfinite(rate):
            raise ValueError(
                "lr='auto' found no usable learning rate: the range test recorded "
                "no finite loss. Pass a number as lr."
            )
        if resolve_verbose(self.verbose):
            print(f"lr='auto': the learning-rate range test picked lr={rate:.3g}")
        return rate

    def _training_set(self, X, y, sample_weight, classes, continuing) -> TrainingSet:
        """Validated training images, encoded targets and weights."""
        self._check_filters()
        source, y = image_source(
            self,
            X,
            y,
            reset=not continuing,
            image_shape=self.image_shape,
            image_size=self.image_size,
            color_mode=self.color_mode,
            skip_unreadable=self.unreadable_files == "skip",
            augment=self.augment,
            stacklevel=6,  # the caller of fit, through _fit_context
        )
        if not continuing:
            self.input_normalization_ = self._input_normalization(source)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(
                sample_weight, np.asarray(y), dtype=np.float32, ensure_non_negative=True
            )
        targets = self._task_targets(
            y, classes=classes, continuing=continuing, sample_weight=sample_weight
        )
        if sample_weight is not None and not sample_weight.all():
            # An image of weight 0 is left out altogether, so that it counts for
            # nothing in batch-norm statistics either.
            kept = np.flatnonzero(sample_weight)
            source, targets = source.subset(kept), targets[kept]
            sample_weight = sample_weight[kept]
        return TrainingSet(source, targets, sample_weight)

    def _check_filters(self):
        filters = self.filters
        if len(filters) == 0 or not all(
            isinstance(n, Integral) and not isinstance(n, bool) and n >= 1
            for n in filters
        ):
            raise InvalidParameterError(
                f"The 'filters' parameter of {type(self).__name__} must be a "
                f"non-empty tuple of positive ints. Got {filters!r} instead."
            )

    def _input_normalization(self, source):
        """The fitted ``input_normalization_``, after checking the backbone params."""
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
        normalization = input_normalization(
            self.backbone, self.weights, source.pixels_in_memory()
        )
        return None if normalization is None else dataclasses.asdict(normalization)

    # -- prediction --------------------------------------------------------------
    def _prediction_source(self, X):
        """The images ``X`` as this fitted estimator reads them."""
        check_is_fitted(self)
        return image_source(self, X, reset=False, image_size=self.image_size)

    def _network_outputs(self, X, *, views=None) -> np.ndarray:
        """The network's outputs for ``X``, through the one inference loop.

        With ``views`` (``_tta.TestTimeViews``), one row of outputs per view:
        ``(n_images, n_views, ...)``.
        """
        source = self._prediction_source(X)
        return network_outputs(
            self.net_.module_,
            source,
            self.prediction_settings_,
            device=torch.device(self.device_),
            batch_size=self.batch_size,
            views=views,
        )

    def _predicted(self, X, transform=None) -> np.ndarray:
        """``transform`` of the network's outputs for ``X``, in float64.

        With ``test_time_augmentation``, the mean over the views of the
        transformed outputs (probabilities or values are averaged, not logits);
        without, exactly the transformed outputs.
        """
        views = views_of(self)
        outputs = self._network_outputs(X, views=views).astype(np.float64)
        if views is None:
            return outputs if transform is None else transform(outputs)
        # (n_images, n_views, ...): the mean over the views.
        return (outputs if transform is None else transform(outputs)).mean(axis=1)

    # -- persistence ---------------------------------------------------------------
    def _restore_net(self, device: torch.device) -> None:
        """Re-create ``net_`` on ``device`` from the fitted attributes, for load_model.

        The fitted target state, ``image_shape_`` and ``history_`` must be set. The
        network gets fresh weights: the caller loads the saved ones into
        ``net_.module_`` and ``net_.criterion_``.
        """
        with seeded_random_ops(0):
            # Balanced class weights need the training labels: the saved criterion
            # state replaces these placeholder weights.
            net = build_net(self, None, device, load_weights=False)
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

        name_of = type(self).__name__
        for name in ("module", "backbone"):
            value = getattr(self, name)
            if value is None or (name == "backbone" and isinstance(value, str)):
                continue
            shown = getattr(value, "__qualname__", type(value).__qualname__)
            raise TypeError(
                f"save_model cannot save a {name_of} with a custom network "
                f"({name}={shown}): it is Python code, which a model file cannot "
                "hold; load_model only rebuilds the built-in network and backbones "
                f"given by name. {PICKLE_HINT}"
            )
        for name in ("optimizer", "callbacks"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str) and value != []:
                raise TypeError(
                    f"save_model cannot save a {name_of} with {name}="
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

    # Fitted attributes a model file must hold, beside net_ and the settings.
    _required_fitted = ("image_shape_", "history_")

    def _load_saved_state(self, fitted: dict, device) -> None:
        """Set the fitted state read by :func:`~sklearn_cnn.load_model`.

        ``net_`` is rebuilt from the parameters, and the saved weights are loaded
        into it once their names, shapes and dtypes fit it.
        """
        from ._net import PredictionSettings
        from .utils._saved_state import load_module_state

        self._check_filters()
        if self.callbacks:
            raise ValueError(
                f"a model file cannot give a {type(self).__name__} callbacks."
            )
        fitted = dict(fitted)
        network = fitted.pop("net_", None)
        settings = fitted.pop("prediction_settings_", None)
        missing = set(self._required_fitted) - fitted.keys()
        if not isinstance(network, dict) or not isinstance(settings, dict) or missing:
            raise ValueError(
                "the fitted state needs net_, prediction_settings_, "
                f"{', '.join(self._required_fitted)}; it lacks "
                f"{sorted(missing) or 'some'}."
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
        return tags
