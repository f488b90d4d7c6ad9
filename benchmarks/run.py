"""Side-by-side speed and memory of CNNImageClassifier, skorch and a hand-written loop.

One command runs every measurement on the same synthetic data, the same network
(the package's ConvNet with the classifier's defaults) and the same number of
epochs, interleaving the contenders' repeats and reporting medians and ratios:

    python benchmarks/run.py                  # full run, a few minutes on 2 cores
    python benchmarks/run.py --quick          # smoke run, seconds
    python benchmarks/run.py --device cuda    # the GPU comparison, about 2 minutes
    python benchmarks/run.py --suite gpu --device cpu --quick --samples 64
                                              # the GPU comparison's code, on a CPU

Contenders:

* ``hand``: a hand-written PyTorch loop, the data converted to a float32 tensor
  once and batches cut by index: the limit; ``hand_cl`` is the same loop with
  channels-last batches and weights, the tuning our classifier applies on CPUs;
* ``skorch``: skorch's ``NeuralNetClassifier`` with its default data loading
  (``Dataset`` + ``DataLoader``, per-image ``__getitem__`` and collate) on float32
  data, ``train_split=None`` so it trains on as many images as the others: the peer;
* ``ours``: ``CNNImageClassifier`` on the uint8 images.

On a GPU (``--suite gpu``, the default with ``--device cuda``) the contenders are
those a GPU user weighs, each at its own defaults apart from the training
settings they share (the classifier's default network, optimizer, learning rate
and batch size; the same epochs):

* ``hand_bf16``: the ceiling, a hand-written loop with the whole set resident on
  the GPU, bfloat16 autocast and channels-last batches and weights;
* ``hand``: the same loop in float32, contiguous;
* ``skorch``: ``NeuralNetClassifier`` on a ``TensorDataset`` of float32 tensors
  with its default ``DataLoader``;
* ``ours``: ``CNNImageClassifier()`` with its defaults; ``ours_float32`` with
  ``precision="float32"``.

The figures go to standard output as a table, to a JSON file and, with
``--markdown``, to a Markdown file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn._fitting import _OPTIMIZERS
from sklearn_cnn._network import ConvNet
from sklearn_cnn.augmentation import RandomAugment
from sklearn_cnn.utils._runtime import cpu_has_native_bf16, resolve_precision

# Every contender trains as the classifier does by default, and follows its defaults.
DEFAULTS = CNNImageClassifier().get_params()
BATCH_SIZE = DEFAULTS["batch_size"]
PREDICT_BATCH_SIZE = BATCH_SIZE
LR = DEFAULTS["lr"]
OPTIMIZER, OPTIMIZER_KWARGS = _OPTIMIZERS[DEFAULTS["optimizer"]]

# --quick and full runs of each suite; options given on the command line win.
SIZES = {
    ("cpu", False): {"repeats": 3, "epochs": 2, "samples": 1000},
    ("cpu", True): {"repeats": 1, "epochs": 1, "samples": 128},
    # 10,000 images: a CIFAR-sized epoch at 32 px.
    ("gpu", False): {"repeats": 3, "epochs": 2, "samples": 10_000},
    ("gpu", True): {"repeats": 1, "epochs": 1, "samples": 1000},
}
MEMORY_SAMPLES = {False: 20_000, True: 512}
GPU_CLASSES = 10


def make_data(n_samples: int, size: int, seed: int = 0, n_classes: int = 2):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n_samples, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, n_classes, size=n_samples)
    return X, y


def network(size: int, n_classes: int = 2) -> nn.Module:
    """The classifier's default network."""
    return ConvNet(3, n_classes, (size, size), **network_params())


def network_params() -> dict:
    names = ("filters", "kernel_size", "dense_units", "dropout")
    return {name: DEFAULTS[name] for name in names}


def n_classes_of(y) -> int:
    return int(y.max()) + 1


# -- (a) the hand-written loop ---------------------------------------------------------
def hand_fit(X, y, epochs, device, autocast_dtype=None, channels_last=False):
    torch.manual_seed(0)
    model = network(X.shape[1], n_classes_of(y)).to(device)
    optimizer = OPTIMIZER(model.parameters(), lr=LR, **OPTIMIZER_KWARGS)
    # The uint8 images cross to the device, a quarter of the float32 bytes, and
    # are converted there once: the whole set stays resident.
    images = torch.from_numpy(X).to(device)
    images = images.permute(0, 3, 1, 2).float().div(255).contiguous()
    labels = torch.from_numpy(y).to(device)
    channels_last = channels_last or autocast_dtype is not None
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), device=device)
        for start in range(0, len(images), BATCH_SIZE):
            index = order[start : start + BATCH_SIZE]
            batch = images[index]
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast(
                device.type,
                dtype=autocast_dtype or torch.float32,
                enabled=autocast_dtype is not None,
            ):
                loss = loss_fn(model(batch).float(), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    synchronize(device)
    return model


def hand_predict(model, X, device, channels_last=False, autocast_dtype=None):
    channels_last = channels_last or autocast_dtype is not None
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = torch.from_numpy(X).to(device)
    outputs = []
    with (
        torch.inference_mode(),
        torch.autocast(
            device.type,
            dtype=autocast_dtype or torch.float32,
            enabled=autocast_dtype is not None,
        ),
    ):
        for start in range(0, len(X), PREDICT_BATCH_SIZE):
            batch = images[start : start + PREDICT_BATCH_SIZE]
            batch = batch.permute(0, 3, 1, 2).float().div(255)
            batch = batch.contiguous(memory_format=memory_format)
            outputs.append(model(batch).float().cpu())
    return torch.cat(outputs).argmax(1).numpy()


# -- (b) skorch with its defaults ------------------------------------------------------
class PerImageDataset(torch.utils.data.Dataset):
    """The usual augmentation: per-image torchvision transforms in __getitem__."""

    def __init__(self, X, y, transform):
        self.X, self.y, self.transform = X, y, transform

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        image = torch.from_numpy(self.X[i]).permute(2, 0, 1)
        return self.transform(image).float().div(255), self.y[i]


def skorch_net(size, epochs, device, n_classes=2):
    from skorch import NeuralNetClassifier

    torch.manual_seed(0)
    return NeuralNetClassifier(
        ConvNet,
        module__in_channels=3,
        module__n_classes=n_classes,
        module__image_size=(size, size),
        **{f"module__{name}": value for name, value in network_params().items()},
        criterion=nn.CrossEntropyLoss,
        optimizer=OPTIMIZER,
        **{f"optimizer__{name}": value for name, value in OPTIMIZER_KWARGS.items()},
        lr=LR,
        batch_size=BATCH_SIZE,
        max_epochs=epochs,
        train_split=None,
        iterator_train__shuffle=True,
        device=str(device),
        verbose=0,
    )


def skorch_fit(X, y, epochs, device, augment=False, tensors=False):
    net = skorch_net(X.shape[1], epochs, device, n_classes_of(y))
    if augment:
        from torchvision.transforms import v2

        transform = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomRotation(15)])
        net.fit(PerImageDataset(X, y, transform), None)
    elif tensors:
        # A Dataset of float32 tensors in host memory, skorch's default DataLoader.
        X_float = torch.from_numpy(X).permute(0, 3, 1, 2).float().div(255)
        dataset = torch.utils.data.TensorDataset(X_float, torch.from_numpy(y))
        net.fit(dataset, None)
    else:
        # skorch needs float input: the whole set converted, as its users do.
        X_float = X.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
        net.fit(X_float, y)
    synchronize(device)
    return net


def skorch_predict(net, X):
    return net.predict(X.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255))


# -- (c) ours --------------------------------------------------------------------------
def ours_fit(X, y, epochs, device, augment=False, precision="float32"):
    clf = CNNImageClassifier(
        epochs=epochs,
        batch_size=BATCH_SIZE,
        lr=LR,
        device=str(device),
        precision=precision,
        random_state=0,
        augment=RandomAugment(horizontal_flip=0.5, degrees=15) if augment else None,
    )
    clf.fit(X, y)
    synchronize(device)
    return clf


def ours_regressor_fit(X, y, epochs, device):
    """CNNImageRegressor with the classifier's settings, on the labels as numbers."""
    from sklearn_cnn import CNNImageRegressor

    regressor = CNNImageRegressor(
        epochs=epochs,
        batch_size=BATCH_SIZE,
        lr=LR,
        device=str(device),
        precision="float32",
        random_state=0,
    )
    regressor.fit(X, y.astype(np.float32))
    synchronize(device)
    return regressor


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# -- measurement -----------------------------------------------------------------------
def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def interleaved(contenders: dict, repeats: int) -> dict:
    """Median seconds of each contender, their repeats interleaved."""
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            seconds, _ = timed(run)
            times[name].append(seconds)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_training(size, n_samples, epochs, repeats, device, results):
    X, y = make_data(n_samples, size)
    # Warm up the kernels once so that no contender pays for the first call.
    hand_fit(X[:128], y[:128], 1, device)
    images = n_samples * epochs
    contenders = {
        "hand": lambda: hand_fit(X, y, epochs, device),
        "hand_cl": lambda: hand_fit(X, y, epochs, device, channels_last=True),
        "skorch": lambda: skorch_fit(X, y, epochs, device),
        "ours": lambda: ours_fit(X, y, epochs, device),
        "ours_auto": lambda: ours_fit(X, y, epochs, device, precision="auto"),
        "ours_regressor": lambda: ours_regressor_fit(X, y, epochs, device),
        "hand_bf16": lambda: hand_fit(X, y, epochs, device, torch.bfloat16),
    }
    medians = interleaved(contenders, repeats)
    for name, seconds in medians.items():
        results[f"train_{size}px_{name}"] = images / seconds

    augmented = {
        "skorch_augmented": lambda: skorch_fit(X, y, epochs, device, augment=True),
        "ours_augmented": lambda: ours_fit(X, y, epochs, device, augment=True),
    }
    for name, seconds in interleaved(augmented, repeats).items():
        results[f"train_{size}px_{name}"] = images / seconds

    model = hand_fit(X[:256], y[:256], 1, device)
    net = skorch_fit(X[:256], y[:256], 1, device)
    clf = ours_fit(X[:256], y[:256], 1, device)
    predictors = {
        "hand": lambda: hand_predict(model, X, device),
        "hand_cl": lambda: hand_predict(model, X, device, channels_last=True),
        "skorch": lambda: skorch_predict(net, X),
        "ours": lambda: clf.predict(X),
    }
    for name, seconds in interleaved(predictors, repeats).items():
        results[f"predict_{size}px_{name}"] = n_samples / seconds


def bench_gpu(size, n_samples, epochs, repeats, device, results):
    """Our defaults against skorch's and the GPU-resident bf16 ceiling, at ``size`` px.

    Every contender first trains one epoch on a few images untimed, so that none
    pays for CUDA's lazy start-up or cuDNN's kernel choice; the prediction
    contenders are those warm-up models.
    """
    X, y = make_data(n_samples, size, n_classes=GPU_CLASSES)
    bf16 = torch.bfloat16
    warm_up = min(512, n_samples)
    X_warm, y_warm = X[:warm_up], y[:warm_up]
    models = {
        "hand_bf16": hand_fit(X_warm, y_warm, 1, device, bf16),
        "hand": hand_fit(X_warm, y_warm, 1, device),
        "skorch": skorch_fit(X_warm, y_warm, 1, device, tensors=True),
        "ours": ours_fit(X_warm, y_warm, 1, device, precision="auto"),
        "ours_float32": ours_fit(X_warm, y_warm, 1, device),
    }
    autocast = models["ours"].prediction_settings_.autocast_dtype
    results[f"gpu_{size}px_ours_autocast"] = str(autocast).removeprefix("torch.")

    images = n_samples * epochs
    contenders = {
        "hand_bf16": lambda: hand_fit(X, y, epochs, device, bf16),
        "hand": lambda: hand_fit(X, y, epochs, device),
        "skorch": lambda: skorch_fit(X, y, epochs, device, tensors=True),
        "ours": lambda: ours_fit(X, y, epochs, device, precision="auto"),
        "ours_float32": lambda: ours_fit(X, y, epochs, device),
    }
    for name, seconds in interleaved(contenders, repeats).items():
        results[f"gpu_train_{size}px_{name}"] = images / seconds

    predictors = {
        "hand_bf16": lambda: hand_predict(
            models["hand_bf16"], X, device, autocast_dtype=bf16
        ),
        "hand": lambda: hand_predict(models["hand"], X, device),
        "skorch": lambda: skorch_predict(models["skorch"], X),
        "ours": lambda: models["ours"].predict(X),
        "ours_float32": lambda: models["ours_float32"].predict(X),
    }
    for name, seconds in interleaved(predictors, repeats).items():
        results[f"gpu_predict_{size}px_{name}"] = n_samples / seconds


def hand_resnet18_fit(images, labels, epochs, device):
    """resnet18 trained by hand: GPU-resident, bfloat16 autocast, channels last."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=GPU_CLASSES).to(device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = OPTIMIZER(model.parameters(), lr=LR, **OPTIMIZER_KWARGS)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), device=device)
        for start in range(0, len(images), BATCH_SIZE):
            index = order[start : start + BATCH_SIZE]
            batch = images[index].float().div(255)
            batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = loss_fn(model(batch).float(), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    synchronize(device)
    return model


def hand_resnet18_features(model, images, device, batch_size):
    """Pooled resnet18 features by hand: bfloat16, channels last, no grad."""
    body = nn.Sequential(*list(model.children())[:-1]).eval()
    outputs = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].float().div(255)
            batch = batch.contiguous(memory_format=torch.channels_last)
            outputs.append(body(batch).flatten(1).float())
    synchronize(device)
    return torch.cat(outputs)


def bench_gpu_resnet18(size, n_samples, epochs, repeats, device, results):
    """resnet18 at ``size`` px: fine-tuning and CNNFeatureExtractor against by hand.

    Ours fine-tunes from a state-dict file (random weights written here: no
    download), frozen body for the first epoch as by default; the hand loop
    trains everything, GPU-resident, in bfloat16 and channels last. Inference:
    ``CNNFeatureExtractor.transform`` against the same body run by hand.
    """
    import tempfile

    import torchvision

    from sklearn_cnn import CNNFeatureExtractor

    X, y = make_data(n_samples, size, n_classes=GPU_CLASSES)
    images = torch.from_numpy(X).to(device).permute(0, 3, 1, 2)
    labels = torch.from_numpy(y).to(device)
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "resnet18.pt"
        torch.save(torchvision.models.resnet18().state_dict(), weights)
        common = dict(
            backbone="resnet18",
            weights=weights,
            batch_size=BATCH_SIZE,
            lr=LR,
            device=str(device),
            random_state=0,
            verbose=0,
        )
        # Warm-up: CUDA's lazy start-up and cuDNN's kernel choice, untimed.
        CNNImageClassifier(**common, epochs=1).fit(X[:64], y[:64])
        hand = hand_resnet18_fit(images[:64], labels[:64], 1, device)
        contenders = {
            "hand_bf16": lambda: hand_resnet18_fit(images, labels, epochs, device),
            "ours": lambda: (
                CNNImageClassifier(**common, epochs=epochs).fit(X, y),
                synchronize(device),
            ),
        }
        for name, seconds in interleaved(contenders, repeats).items():
            results[f"gpu_train_resnet18_{size}px_{name}"] = (
                n_samples * epochs / seconds
            )
        extractor = CNNFeatureExtractor(
            "resnet18",
            weights=weights,
            batch_size=PREDICT_BATCH_SIZE,
            device=str(device),
        ).fit(X[:8])
        extractor.transform(X[:64])
        predictors = {
            "hand_bf16": lambda: hand_resnet18_features(
                hand, images, device, PREDICT_BATCH_SIZE
            ),
            "ours": lambda: extractor.transform(X),
        }
        for name, seconds in interleaved(predictors, repeats).items():
            results[f"gpu_features_resnet18_{size}px_{name}"] = n_samples / seconds


def gpu_ratio_rows(results: dict) -> list[tuple[str, float, float]]:
    """(label, ratio of images per second, goal) of the GPU comparison."""
    rows = []
    for size in (32, 64):
        for task in ("train", "predict"):
            prefix = f"gpu_{task}_{size}px_"
            for theirs, goal in (
                ("skorch", 3.0),
                ("hand_bf16", 0.9),
                ("hand", 0),
            ):
                ours, other = results.get(prefix + "ours"), results.get(prefix + theirs)
                if ours is not None and other is not None:
                    rows.append(
                        (f"{size}px {task}: ours / {theirs}", ours / other, goal)
                    )
            ours32 = results.get(prefix + "ours_float32")
            hand32 = results.get(prefix + "hand")
            if ours32 is not None and hand32 is not None:
                rows.append(
                    (f"{size}px {task}: ours float32 / hand", ours32 / hand32, 0)
                )
    for key in sorted(results):
        if key.startswith(("gpu_train_resnet18_", "gpu_features_resnet18_")):
            if key.endswith("_ours"):
                hand = results.get(key.removesuffix("_ours") + "_hand_bf16")
                if hand:
                    label = key.removeprefix("gpu_").removesuffix("_ours")
                    rows.append(
                        (f"{label}: ours / hand_bf16", results[key] / hand, 0.9)
                    )
    return rows


def bench_memory(n_samples, size, who):
    """Peak RSS (bytes) of a fresh process that fits one epoch on uint8 images."""
    code = (
        "import resource, sys; sys.path.insert(0, 'benchmarks');"
        "import torch; import run;"
        f"X, y = run.make_data({n_samples}, {size});"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        f"run.{who}_fit(X, y, 1, torch.device('cpu'));"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, X.nbytes)"
    )
    root = Path(__file__).resolve().parent.parent
    output = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(output[0]), int(output[1])


def bench_grid_search(n_samples, size, repeats):
    from sklearn.model_selection import GridSearchCV

    X, y = make_data(n_samples, size)

    def search(n_jobs):
        GridSearchCV(
            CNNImageClassifier(epochs=2, random_state=0),
            {"filters": [(16, 32), (32, 64)]},
            cv=2,
            n_jobs=n_jobs,
            refit=False,
        ).fit(X, y)

    return interleaved(
        {"n_jobs=1": lambda: search(1), "n_jobs=2": lambda: search(2)}, repeats
    )


def machine(device: torch.device) -> dict:
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                line.split(":", 1)[1].strip()
                for line in cpuinfo
                if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "native_bf16": cpu_has_native_bf16(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "device": str(device),
        "default_precision": str(resolve_precision("auto", device)),
    }


def ratio_rows(results: dict) -> list[tuple[str, float, float]]:
    rows = []

    def add(label, numerator, denominator, goal):
        if numerator in results and denominator in results:
            rows.append((label, results[numerator] / results[denominator], goal))

    for size in (64, 32):
        prefix = f"train_{size}px_"
        add(f"{size}px train: ours / hand", prefix + "ours", prefix + "hand", 0.95)
        add(
            f"{size}px train: ours / hand channels-last",
            prefix + "ours",
            prefix + "hand_cl",
            0.95,
        )
        add(f"{size}px train: ours / skorch", prefix + "ours", prefix + "skorch", 1.0)
        add(
            f"{size}px train: regressor / classifier (ours)",
            prefix + "ours_regressor",
            prefix + "ours",
            0.95,
        )
        add(
            f"{size}px train: ours defaults / hand fp32",
            prefix + "ours_auto",
            prefix + "hand",
            1.5 if results.get("native_bf16") else 0.95,
        )
        add(
            f"{size}px train: hand bf16 / hand fp32",
            prefix + "hand_bf16",
            prefix + "hand",
            0,
        )
        add(
            f"{size}px augmented: ours / skorch per-image",
            prefix + "ours_augmented",
            prefix + "skorch_augmented",
            3.0,
        )
        add(
            f"{size}px augmented / un-augmented (ours)",
            prefix + "ours_augmented",
            prefix + "ours",
            0.8,
        )
        prefix = f"predict_{size}px_"
        add(f"{size}px predict: ours / hand", prefix + "ours", prefix + "hand", 0.95)
        add(
            f"{size}px predict: ours / hand channels-last",
            prefix + "ours",
            prefix + "hand_cl",
            0.95,
        )
        add(f"{size}px predict: ours / skorch", prefix + "ours", prefix + "skorch", 1.0)
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--suite",
        choices=("cpu", "gpu"),
        help="cpu: the CPU contenders, memory and grid search; gpu: the GPU "
        "comparison (runs on --device cpu too, as a dry run of its code); "
        "default: gpu with --device cuda, else cpu",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--samples", type=int, help="images per size")
    parser.add_argument("--memory-samples", type=int)
    parser.add_argument("--output", type=Path, help="the JSON file to write")
    parser.add_argument("--markdown", type=Path, help="also write a Markdown table")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(
            f"--device {args.device} needs CUDA, which torch does not see here; "
            "use --suite gpu --device cpu to try the GPU comparison's code."
        )
    if args.suite is None:
        args.suite = "gpu" if device.type == "cuda" else "cpu"
    for name, value in SIZES[args.suite, args.quick].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.memory_samples is None:
        args.memory_samples = MEMORY_SAMPLES[args.quick]
    if args.output is None:
        name = "results.json" if args.suite == "cpu" else "results_gpu.json"
        args.output = Path(__file__).with_name(name)
    return args, device


def main(argv=None):
    args, device = parse_args(argv)
    info = machine(device)
    print("machine:", json.dumps(info))
    run = run_gpu if args.suite == "gpu" else run_cpu
    payload, figures, rows = run(args, device, info)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(payload, figures, rows))
        print(f"wrote {args.markdown}")


def print_figures(figures: dict, rows) -> None:
    print(f"\n{'measurement':48s} {'value':>12s}")
    for key, value in figures.items():
        print(f"{key + ' (images/s)':48s} {value:12.1f}")
    print(f"\n{'ratio':48s} {'value':>8s} {'goal':>6s}")
    for label, value, goal in rows:
        print(f"{label:48s} {value:8.2f} {goal:6.2f}{verdict(value, goal)}")


def verdict(value: float, goal: float) -> str:
    return "" if not goal else ("  ok" if value >= goal else "  MISSED")


def markdown(payload: dict, figures: dict, rows) -> str:
    settings = payload["settings"]
    lines = [
        f"# Benchmark: {settings['suite']} suite on {settings['device']}",
        "",
        f"`python benchmarks/run.py {' '.join(settings['argv'])}`: "
        f"{settings['repeats']} interleaved repeats (medians), "
        f"{settings['epochs']} epochs of {settings['samples']} images.",
        "",
        "Machine: " + ", ".join(f"{k}={v}" for k, v in payload["machine"].items()),
        "",
        *figure_table(figures),
        "",
        "| ratio | value | goal |",
        "| --- | ---: | ---: |",
        *(
            f"| {label} | {value:.2f} | {f'>= {goal:g}' if goal else ''}"
            f"{verdict(value, goal)} |"
            for label, value, goal in rows
        ),
        "",
    ]
    return "\n".join(lines)


def figure_table(figures: dict) -> list[str]:
    """Images per second as Markdown: a row per contender, a column per measurement."""
    cells: dict = {}
    columns: list = []
    for key, value in figures.items():
        match = re.fullmatch(
            r"(?:gpu_)?(train|predict|features)_(?:(resnet18)_)?(\d+)px_(\w+)", key
        )
        network = f" {match[2]}" if match[2] else ""
        column, contender = f"{match[1]}{network} {match[3]} px", match[4]
        if column not in columns:
            columns.append(column)
        cells.setdefault(contender, {})[column] = value
    # Training first, then prediction; small images first.
    columns.sort(key=lambda c: (c.split()[0] != "train", int(c.split()[-2])))
    lines = [
        "| contender (images/s) | " + " | ".join(columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for contender, row in cells.items():
        values = (f"{row[c]:.0f}" if c in row else "" for c in columns)
        lines.append(f"| `{contender}` | " + " | ".join(values) + " |")
    return lines


def settings_of(args, device) -> dict:
    return vars(args) | {
        "output": str(args.output),
        "markdown": None if args.markdown is None else str(args.markdown),
        "device": str(device),
    }


def run_gpu(args, device, info):
    results: dict = {}
    partial = {"machine": info, "settings": settings_of(args, device)}
    for size in (32, 64):
        bench_gpu(size, args.samples, args.epochs, args.repeats, device, results)
        # Keep what is measured should a time limit stop the run at the next size.
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(partial | {"results": results}, indent=2))
    backbone_size, backbone_samples = (32, 16) if args.quick else (224, 2048)
    bench_gpu_resnet18(
        backbone_size, backbone_samples, args.epochs, args.repeats, device, results
    )
    args.output.write_text(json.dumps(partial | {"results": results}, indent=2))
    figures = {
        key: value
        for key, value in results.items()
        if key.startswith(("gpu_train_", "gpu_predict_", "gpu_features_"))
    }
    rows = gpu_ratio_rows(results)
    print_figures(figures, rows)
    for size in (32, 64):
        print(
            f"ours at {size} px trained with autocast dtype "
            f"{results[f'gpu_{size}px_ours_autocast']}"
        )
    payload = {
        "machine": info,
        "settings": settings_of(args, device),
        "results": results,
        "ratios": {label: value for label, value, _ in rows},
        "goals": {label: goal for label, _, goal in rows if goal},
    }
    return payload, figures, rows


def run_cpu(args, device, info):
    results: dict = {"native_bf16": info["native_bf16"]}
    for size in (64, 32):
        bench_training(size, args.samples, args.epochs, args.repeats, device, results)
    for who in ("ours", "skorch"):
        peak, data_bytes = bench_memory(args.memory_samples, 64, who)
        results[f"memory_peak_rss_{who}"] = peak
    results["memory_uint8_data_bytes"] = data_bytes
    grid = bench_grid_search(args.samples, 32, args.repeats)
    results["grid_search_seconds_n_jobs_1"] = grid["n_jobs=1"]
    results["grid_search_seconds_n_jobs_2"] = grid["n_jobs=2"]

    figures = {
        key: value
        for key, value in results.items()
        if key.startswith(("train_", "predict_"))
    }
    rows = ratio_rows(results)
    print_figures(figures, rows)
    budget = 3 * results["memory_uint8_data_bytes"] + 2**30
    gib = 2**30
    for who in ("ours", "skorch"):
        peak = results[f"memory_peak_rss_{who}"]
        print(
            f"peak RSS fitting {args.memory_samples} images ({who}): "
            f"{peak / gib:.2f} GiB (budget {budget / gib:.2f} GiB)"
        )
    speedup = grid["n_jobs=1"] / grid["n_jobs=2"]
    print(f"GridSearchCV n_jobs=2 speed-up over n_jobs=1: {speedup:.2f}x (goal >= 1.0)")
    payload = {
        "machine": info,
        "settings": settings_of(args, device),
        "results": results,
        "ratios": {label: value for label, value, _ in rows},
        "grid_search_speedup": speedup,
        "peak_rss_gib": {
            who: results[f"memory_peak_rss_{who}"] / gib for who in ("ours", "skorch")
        },
    }
    return payload, figures, rows


if __name__ == "__main__":
    main()
