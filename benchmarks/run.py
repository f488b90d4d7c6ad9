"""Side-by-side speed and memory of CNNImageClassifier, skorch and a hand-written loop.

One command runs every measurement on the same synthetic data, the same network
(the package's ConvNet with its defaults) and the same number of epochs,
interleaving the contenders' repeats and reporting medians and ratios:

    python benchmarks/run.py                  # full run, a few minutes on 2 cores
    python benchmarks/run.py --quick          # smoke run, seconds

Contenders:

* ``hand``: a hand-written PyTorch loop, the data converted to a float32 tensor
  once and batches cut by index: the limit; ``hand_cl`` is the same loop with
  channels-last batches and weights, the tuning our classifier applies on CPUs;
* ``skorch``: skorch's ``NeuralNetClassifier`` with its default data loading
  (``Dataset`` + ``DataLoader``, per-image ``__getitem__`` and collate) on float32
  data, ``train_split=None`` so it trains on as many images as the others: the peer;
* ``ours``: ``CNNImageClassifier`` on the uint8 images.

The figures go to standard output as a table and to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn._network import ConvNet
from sklearn_cnn.augmentation import RandomAugment
from sklearn_cnn.utils._runtime import cpu_has_native_bf16

BATCH_SIZE = 64
PREDICT_BATCH_SIZE = 64
LR = 1e-3


def make_data(n_samples: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n_samples, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 2, size=n_samples)
    return X, y


def network(size: int) -> nn.Module:
    return ConvNet(3, 2, (size, size))


# -- (a) the hand-written loop ---------------------------------------------------------
def hand_fit(X, y, epochs, device, autocast_dtype=None, channels_last=False):
    torch.manual_seed(0)
    model = network(X.shape[1]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    images = torch.from_numpy(X).permute(0, 3, 1, 2).float().div(255).contiguous()
    images = images.to(device)
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


def hand_predict(model, X, device, channels_last=False):
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(X), PREDICT_BATCH_SIZE):
            batch = torch.from_numpy(X[start : start + PREDICT_BATCH_SIZE])
            batch = batch.to(device).permute(0, 3, 1, 2).float().div(255)
            memory_format = (
                torch.channels_last if channels_last else torch.contiguous_format
            )
            batch = batch.contiguous(memory_format=memory_format)
            outputs.append(model(batch).cpu())
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


def skorch_net(size, epochs, device):
    from skorch import NeuralNetClassifier

    torch.manual_seed(0)
    return NeuralNetClassifier(
        ConvNet,
        module__in_channels=3,
        module__n_classes=2,
        module__image_size=(size, size),
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=LR,
        batch_size=BATCH_SIZE,
        max_epochs=epochs,
        train_split=None,
        iterator_train__shuffle=True,
        device=str(device),
        verbose=0,
    )


def skorch_fit(X, y, epochs, device, augment=False):
    net = skorch_net(X.shape[1], epochs, device)
    if augment:
        from torchvision.transforms import v2

        transform = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomRotation(15)])
        net.fit(PerImageDataset(X, y, transform), None)
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


def machine() -> dict:
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--memory-samples", type=int, default=20_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).with_name("results.json")
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.epochs, args.samples, args.memory_samples = 1, 1, 128, 512
    device = torch.device(args.device)
    info = machine()
    print("machine:", json.dumps(info))
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

    print(f"\n{'measurement':48s} {'value':>12s}")
    for key, value in results.items():
        if key.startswith(("train_", "predict_")):
            print(f"{key + ' (images/s)':48s} {value:12.1f}")
    print(f"\n{'ratio':48s} {'value':>8s} {'goal':>6s}")
    rows = ratio_rows(results)
    for label, value, goal in rows:
        mark = "" if not goal else ("  ok" if value >= goal else "  MISSED")
        print(f"{label:48s} {value:8.2f} {goal:6.2f}{mark}")
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
        "settings": vars(args) | {"output": str(args.output), "device": str(device)},
        "results": results,
        "ratios": {label: value for label, value, _ in rows},
        "grid_search_speedup": speedup,
        "peak_rss_gib": {
            who: results[f"memory_peak_rss_{who}"] / gib for who in ("ours", "skorch")
        },
    }
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
