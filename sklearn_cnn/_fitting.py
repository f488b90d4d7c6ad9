"""Fitting: from a validated image source and encoded targets to a trained net.

The estimators (``_estimator.py`` and its subclasses) validate their input and
encode their targets; :func:`fit_network` does the rest, the same for every
task: seeds, device and precision, the checkpoint to resume, the net and its
callbacks, the validation split, the batch preparer, training, and the fitted
attributes that summarise it. What differs between tasks (the loss, the
metric, the number of outputs, stratification) comes from the estimator's
``_task_*`` methods.
"""

from __future__ import annotations

import copy
import inspect
from numbers import Integral
from typing import NamedTuple

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from skorch.helper import predefined_split

from ._backbones import BackboneNetwork, Normalization, load_backbone
from ._checkpoint import TrainingCheckpoint, checkpoint_path
from ._net import (
    BatchPreparer,
    PredictionSettings,
    _EpochProgressBar,
    _StoppingEarly,
    body_freezing,
    cosine_schedule,
)
from ._network import ConvNet
from ._recipe import BatchMixer, WeightAveraging
from ._sources import ImageSource, LabelledImages
from .utils._runtime import (
    TrainingRandomness,
    derive_seeds,
    resolve_device,
    resolve_precision,
    resolve_seed,
    resolve_verbose,
    seeded_random_ops,
)
from .utils._sklearn_private import InvalidParameterError

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


class TrainingSet(NamedTuple):
    """What one fit trains on, validated: the images and their encoded targets."""

    source: ImageSource
    targets: np.ndarray
    sample_weight: np.ndarray | None


def fit_network(
    estimator,
    training_set: TrainingSet,
    *,
    epochs: int,
    continuing: bool,
    float32: bool = False,
):
    """Train ``estimator.net_`` (new, resumed or continued) on ``training_set``.

    ``float32`` trains in float32 whatever ``precision`` says (the retry of a
    fit that diverged in bfloat16 under ``precision='auto'``).
    """
    device = training_device(estimator)
    path = checkpoint_path(
        estimator,
        training_set.source,
        training_set.targets,
        training_set.sample_weight,
    )
    resumed = None
    if not continuing and path is not None and path.exists():
        resumed = TrainingCheckpoint.load(path)
    seed = resolve_seed(estimator.random_state)
    if continuing:
        # Continue the random streams rather than repeat the first epochs'.
        seed += estimator.n_iter_
    elif resumed is not None:
        seed += len(resumed["history"])
        epochs = max(estimator.epochs - len(resumed["history"]), 0)
    # A sixth stream, for mixing, leaves the first five as they were.
    seeds = derive_seeds(seed, 6)
    init_seed, shuffle_seed, augment_seed, split_seed, dropout_seed, mix_seed = seeds
    autocast_dtype = None if float32 else resolve_precision(estimator.precision, device)
    # Channels-last batches run the convolutions faster on CPUs (measured in
    # benchmarks/) and are what bf16 kernels want on GPUs.
    settings = PredictionSettings(
        channels_last=device.type == "cpu" or autocast_dtype is not None,
        autocast_dtype=autocast_dtype,
    )
    train_data, valid_data = _split_data(estimator, training_set, device, split_seed)

    # Weight initialization draws from generators of this fit only: the
    # process-wide generator, shared by all threads, stays untouched.
    with seeded_random_ops(init_seed):
        if continuing:
            net = estimator.net_
            # Parameters may have changed since the last fit (early stopping,
            # verbosity, checkpoints): their callbacks follow.
            net.set_params(
                verbose=resolve_verbose(estimator.verbose),
                callbacks=callbacks(estimator),
            )
            net.initialize_callbacks()
        else:
            net = build_net(estimator, training_set, device)
            net.initialize()
            if resumed is not None:
                TrainingCheckpoint.restore(net, resumed, weight_averaging(net))
    if settings.channels_last:
        net.module_.to(memory_format=torch.channels_last)
    if path is not None:
        dict(net.callbacks_)["checkpoint"].path = path
    recipe = training_set.source.recipe
    net.batch_preparer = BatchPreparer(
        source_is_uint8=training_set.source.dtype == np.uint8,
        scale_uint8=training_set.source.scale_uint8,
        augmenters=recipe.augmenters,
        post_steps=recipe.post_steps,
        channels_last=settings.channels_last,
    )
    net.batch_preparer.generator = torch.Generator(device=device).manual_seed(
        augment_seed
    )
    net.autocast_dtype = autocast_dtype
    net.shuffle_generator = torch.Generator().manual_seed(shuffle_seed)
    net.randomness = TrainingRandomness(dropout_seed)
    mixing = estimator._task_batch_mixing()
    if mixing is not None and mixing.active:
        net.batch_mixer = BatchMixer(mixing, mix_seed, device)
    if valid_data is not None:
        net.train_split = predefined_split(valid_data)
    estimator.net_ = net
    try:
        if epochs > 0:
            net.partial_fit(train_data, None, epochs=epochs)
    except torch.cuda.OutOfMemoryError as error:
        raise MemoryError(
            "CUDA ran out of memory training with batch_size="
            f"{estimator.batch_size} on images of shape {estimator.image_shape_}. "
            "Lower batch_size, use precision='bfloat16', or device='cpu'."
        ) from error
    finally:
        # What prediction needs travels as a value; nothing that belongs to
        # this fit only stays on the net.
        net.train_split = None
        net.shuffle_generator = None
        net.batch_preparer = None
        net.randomness = None
        net.batch_mixer = None
        averaging = weight_averaging(net)
        if averaging is not None:
            # Also when no epoch ran (a finished checkpoint) or one failed.
            averaging.finish(net)
        if net.device is None:
            # Placed by an accelerator: say where, for prediction and pickles.
            net.device = str(device)
        net.module_.eval()
        estimator.prediction_settings_ = settings
        estimator.device_ = str(device)
        record_history(estimator)
    return estimator


def learning_rate(estimator) -> float:
    """The rate of the head: ``lr``, or the rate ``lr="auto"`` found (``lr_``)."""
    if isinstance(estimator.lr, str):  # "auto": _fit has set lr_
        return estimator.lr_
    return estimator.lr


def weight_averaging(net) -> WeightAveraging | None:
    """The net's weight-averaging callback, if ``weight_averaging`` asked for one."""
    callback = dict(net.callbacks_).get("weight_averaging")
    return callback if isinstance(callback, WeightAveraging) else None


def training_device(estimator) -> torch.device:
    accelerator = estimator.accelerator
    if accelerator is None:
        return resolve_device(estimator.device)
    device = torch.device(accelerator.device)
    from ._accelerate import same_device

    if estimator.device != "auto" and not same_device(
        torch.device(estimator.device), device
    ):
        raise ValueError(
            f"device={str(estimator.device)!r} differs from the accelerator's device "
            f"{str(device)!r}; leave device='auto' when passing an accelerator."
        )
    n_processes = accelerator.num_processes
    if n_processes > 1 and not isinstance(estimator.random_state, Integral):
        raise ValueError(
            f"Training on {n_processes} processes needs an int random_state, so "
            "that every process holds out and shuffles the same images; got "
            f"random_state={estimator.random_state!r}."
        )
    return device


def _split_data(estimator, training_set: TrainingSet, device, seed):
    """The training and validation :class:`LabelledImages` (None: no validation)."""
    source = training_set.source.on_device(device)
    if estimator.cache_decoded and hasattr(source, "with_cache"):
        source = source.with_cache()
    targets = torch.as_tensor(training_set.targets)
    weights = training_set.sample_weight
    data = LabelledImages(
        source,
        targets,
        None if weights is None else torch.as_tensor(weights, dtype=torch.float32),
        device=device,
    )
    train_idx, valid_idx = _split(estimator, training_set.targets, seed)
    if valid_idx is None:
        return data, None
    return data.subset(train_idx), data.subset(valid_idx)


def _split(estimator, targets, seed):
    """Indices of the training and the validation images (None: no split).

    Stratified, where the task has classes, whenever every class can have an
    image on both sides; otherwise (a class with a single image, or fewer
    images to hold out than there are classes) a plain random split.
    """
    if not estimator.early_stopping:
        return None, None
    n_images = len(targets)
    n_valid = int(np.ceil(estimator.validation_fraction * n_images))
    if n_valid >= n_images:
        raise ValueError(
            f"validation_fraction={estimator.validation_fraction} of "
            f"{n_images} images leaves no images for training; use more "
            "images or early_stopping=False."
        )
    strata = estimator._task_strata(targets)
    if strata is not None:
        counts = np.unique(strata, return_counts=True)[1]
        if counts.min() < 2 or min(n_valid, n_images - n_valid) < len(counts):
            strata = None
    return train_test_split(
        np.arange(n_images),
        test_size=n_valid,
        stratify=strata,
        random_state=seed % (2**32),
    )


def build_net(estimator, training_set: TrainingSet, device, *, load_weights=True):
    """The skorch net of ``estimator`` for its fitted image shape, not initialized."""
    height, width, channels = estimator.image_shape_
    n_outputs = estimator._task_n_outputs()
    module, module_kwargs = _module_spec(
        estimator, channels, n_outputs, height, width, load_weights=load_weights
    )
    optimizer, optimizer_kwargs = _optimizer_spec(estimator)
    if optimizer in _FUSED_OPTIMIZERS and _has_fused_kernels(device):
        # One kernel for all parameters instead of a dozen small ops each:
        # resnet18's Adam step measured 0.067 s -> 0.010 s on a CPU core.
        optimizer_kwargs.setdefault("optimizer__fused", True)
    criterion, criterion_kwargs = estimator._task_criterion(training_set)
    # One loss per image: the net weighs and averages them (get_loss).
    criterion_kwargs = {
        "criterion__reduction": "none",
        **{f"criterion__{key}": value for key, value in criterion_kwargs.items()},
    }
    net_class, net_kwargs = estimator._task_net_class(), {"device": str(device)}
    if estimator.accelerator is not None:
        from ._accelerate import accelerated_net_class, accelerated_net_kwargs

        net_class = accelerated_net_class(net_class)
        net_kwargs = accelerated_net_kwargs(estimator.accelerator, estimator.verbose)
    return net_class(
        module,
        input_shape=(channels, height, width),
        criterion=criterion,
        optimizer=optimizer,
        lr=learning_rate(estimator),
        max_epochs=estimator.epochs,
        batch_size=estimator.batch_size,
        train_split=None,
        callbacks=callbacks(estimator) or None,
        verbose=resolve_verbose(estimator.verbose),
        metric=estimator._task_metric(),
        **estimator._task_net_kwargs(),
        **module_kwargs,
        **optimizer_kwargs,
        **criterion_kwargs,
        **net_kwargs,
    )


def callbacks(estimator) -> list:
    """The user's callbacks plus those the estimator's parameters ask for."""
    result = list(estimator.callbacks or [])
    verbose = resolve_verbose(estimator.verbose)
    if estimator.weight_averaging == "ema":
        # Before early stopping, whose best weights must be the average's and
        # which loads them at the end of training (see WeightAveraging).
        result.insert(0, ("weight_averaging", WeightAveraging(estimator.ema_decay)))
    if estimator.lr_schedule == "cosine":
        result.append(("lr_schedule", cosine_schedule(estimator.epochs)))
    if _fine_tuning(estimator) and estimator.freeze_epochs:
        result += body_freezing("body.*", estimator.freeze_epochs)
    if estimator.early_stopping:
        result.append(
            (
                "early_stopping",
                _StoppingEarly(
                    monitor="valid_loss",
                    patience=estimator.n_iter_no_change,
                    threshold=1e-4,
                    load_best=True,
                    sink=print if verbose else _silent,
                ),
            )
        )
    accelerator = estimator.accelerator
    main_process = accelerator is None or accelerator.is_main_process
    if verbose and main_process:
        # One progress bar for a data-parallel run: the main process's.
        result.append(("progress_bar", _EpochProgressBar()))
    if estimator.checkpoint is not None:
        # The path depends on the data; fit sets it before training.
        result.append(("checkpoint", TrainingCheckpoint(estimator.checkpoint)))
    return result


def _module_spec(estimator, channels, n_outputs, height, width, *, load_weights):
    if estimator.backbone is not None:
        # load_model rebuilds the architecture only: the file has the weights.
        weights = estimator.weights if load_weights else None
        backbone = load_backbone(
            estimator.backbone,
            weights,
            in_channels=channels,
            image_size=(height, width),
        )
        normalization = estimator.input_normalization_
        return BackboneNetwork(
            backbone.body,
            backbone.n_features,
            n_outputs,
            normalization=normalization and Normalization(**normalization),
            rgb=backbone.rgb,
        ), {}
    module = estimator.module
    if module is None:
        return ConvNet, {
            "module__in_channels": channels,
            "module__n_classes": n_outputs,
            "module__image_size": (height, width),
            "module__filters": tuple(estimator.filters),
            "module__kernel_size": estimator.kernel_size,
            "module__dense_units": estimator.dense_units,
            "module__dropout": estimator.dropout,
        }
    if isinstance(module, torch.nn.Module):
        # Train a copy: the instance passed as a parameter must stay untouched.
        return copy.deepcopy(module), {}
    if inspect.isclass(module) or callable(module):
        return module, {
            "module__in_channels": channels,
            "module__n_classes": n_outputs,
            "module__image_size": (height, width),
        }
    raise InvalidParameterError(
        f"The 'module' parameter of {type(estimator).__name__} must be a "
        f"torch.nn.Module class or instance, or None. Got {module!r} instead."
    )


def _optimizer_spec(estimator):
    if isinstance(estimator.optimizer, str):
        optimizer, defaults = _OPTIMIZERS[estimator.optimizer]
    else:
        optimizer, defaults = estimator.optimizer, {}
    kwargs = {f"optimizer__{key}": value for key, value in defaults.items()}
    if estimator.weight_decay:
        kwargs["optimizer__weight_decay"] = estimator.weight_decay
    if _fine_tuning(estimator):
        backbone_lr = estimator.backbone_lr
        if backbone_lr is None:
            backbone_lr = learning_rate(estimator) / 2
        kwargs["optimizer__param_groups"] = [("body.*", {"lr": backbone_lr})]
    return optimizer, kwargs


def _fine_tuning(estimator) -> bool:
    """True when pretrained weights are fine-tuned (frozen, then a lower lr)."""
    return estimator.backbone is not None and estimator.weights is not None


def record_history(estimator) -> None:
    """Fitted attributes that summarise training, from the net's history."""
    metric = estimator._task_metric_name()
    keys = (
        "epoch",
        "train_loss",
        f"train_{metric}",
        "valid_loss",
        f"valid_{metric}",
        "dur",
    )
    # An epoch interrupted before its end has no train_loss: leave it out.
    history = [
        {
            key: row[key] if key == "epoch" else float(row[key])
            for key in keys
            if key in row
        }
        for row in estimator.net_.history
        if "train_loss" in row
    ]
    estimator.history_ = history
    estimator.loss_curve_ = [row["train_loss"] for row in history]
    scores = [row[f"valid_{metric}"] for row in history if f"valid_{metric}" in row]
    estimator.validation_scores_ = scores or None
    estimator.n_iter_ = len(history)


def snapshot_weights(net):
    """Copies of the trained state, to restore it if a warm start fails."""
    return (
        copy.deepcopy(net.module_.state_dict()),
        copy.deepcopy(net.optimizer_.state_dict()),
        copy.deepcopy(net.history),
    )


def restore_weights(net, weights) -> None:
    module_state, optimizer_state, history = weights
    net.module_.load_state_dict(module_state)
    net.optimizer_.load_state_dict(optimizer_state)
    net.history = history


def _silent(*args, **kwargs):
    pass
