"""Pretrained backbones: transfer accuracy, fine-tuning and feature-extraction speed.

One command, three measurements, each side by side in one run:

    python benchmarks/backbones.py            # full run, several minutes on 2 cores
    python benchmarks/backbones.py --quick    # smoke run, seconds

(a) **Transfer.** A resnet18 is pretrained on the digits 0-4 of
    ``sklearn.datasets.load_digits`` (all their images), its state dict saved to a
    file; then ``--labels`` images of each of the digits 5-9 train four models,
    tested on all the other images of 5-9, over ``--seeds`` draws of the labels:
    ``default`` (``weights=<file>``: body frozen for one epoch, then lr / 2 for
    the body), ``naive`` (the same pretrained weights, everything trained at
    ``lr`` from the start, as when the network is passed as ``module=``),
    ``scratch`` (``weights=None``), and ``features`` (``CNNFeatureExtractor`` and
    a logistic regression).
(b) **Fine-tuning throughput** against skorch's transfer-learning recipe on the
    same network (resnet18 with a new head, torchvision's loading path), the same
    uint8 images and the same epochs (one frozen, the rest unfrozen with the body
    at lr / 2): skorch's ``NeuralNetClassifier`` with its ``Freezer`` and
    ``Unfreezer`` callbacks, a ``Dataset`` doing the per-image ``ToTensor`` and
    ``Normalize`` of torchvision's recipes, and a ``DataLoader``, all in float32.
    Ours runs in float32 (``ours``) and with its defaults (``ours_auto``:
    bfloat16 where the CPU runs it natively). Goal: at least 1.2x its images per
    second on a CPU.
(c) **Feature-extraction throughput** of ``CNNFeatureExtractor`` against a
    hand-written ``torch.inference_mode`` loop over the same network, batches and
    precision (float32), plain and channels-last. Goal: at least 0.95x.

Weights never come from the network: (b) and (c) put a randomly initialized
resnet18 state dict in a temporary ``$TORCH_HOME`` under the name torchvision
looks for, so ``weights="DEFAULT"`` runs torchvision's real loading path.
The figures go to standard output and to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from sklearn_cnn import CNNFeatureExtractor, CNNImageClassifier
from sklearn_cnn.preprocessing import ImageResizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import interleaved, machine, synchronize  # noqa: E402

LR = 1e-3
BATCH_SIZE = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# -- (a) transfer -------------------------------------------------------------------
def digits(size: int):
    from sklearn.datasets import load_digits

    data = load_digits()
    X = (data.images * (255 / 16)).astype(np.uint8)
    return ImageResizer(size).fit_transform(X), data.target


def transfer(size, pretrain_epochs, epochs, n_labels, seeds, folder: Path) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    X, y = digits(size)
    task_a = y < 5
    pretrained = CNNImageClassifier(
        backbone="resnet18",
        epochs=pretrain_epochs,
        batch_size=BATCH_SIZE,
        random_state=0,
    ).fit(X[task_a], y[task_a])
    weights = folder / "resnet18_digits_0_4.pt"
    torch.save(pretrained.net_.module_.state_dict(), weights)

    common = dict(backbone="resnet18", epochs=epochs, batch_size=16, lr=LR)
    contenders = {
        "default": lambda seed: CNNImageClassifier(
            weights=weights, random_state=seed, **common
        ),
        "naive": lambda seed: CNNImageClassifier(
            weights=weights,
            freeze_epochs=0,
            backbone_lr=LR,
            random_state=seed,
            **common,
        ),
        "scratch": lambda seed: CNNImageClassifier(random_state=seed, **common),
        "features": lambda seed: make_pipeline(
            CNNFeatureExtractor("resnet18", weights=weights),
            LogisticRegression(max_iter=1000),
        ),
    }
    task_b = np.flatnonzero(y >= 5)
    scores = {name: [] for name in contenders}
    for seed in range(seeds):
        rng = np.random.RandomState(seed)
        train = np.concatenate(
            [
                rng.choice(task_b[y[task_b] == digit], n_labels, replace=False)
                for digit in range(5, 10)
            ]
        )
        test = np.setdiff1d(task_b, train)
        for name, make in contenders.items():
            model = make(seed).fit(X[train], y[train])
            scores[name].append(float(model.score(X[test], y[test])))
    return scores


# -- (b) fine-tuning throughput ------------------------------------------------------
def cache_random_resnet18(torch_home: Path) -> None:
    """A resnet18 state dict where torchvision looks for its ImageNet weights."""
    entry = torchvision.models.ResNet18_Weights.DEFAULT
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, checkpoints / os.path.basename(entry.url))


def make_images(n_samples, size, n_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n_samples, size, size, 3), dtype=np.uint8)
    return X, rng.integers(0, n_classes, size=n_samples)


class TransformDataset(torch.utils.data.Dataset):
    """torchvision's per-image recipe: ToTensor (HWC uint8 -> CHW float) + Normalize."""

    def __init__(self, X, y):
        from torchvision import transforms

        self.X, self.y = X, y
        self.transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        )

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.transform(self.X[i]), int(self.y[i])


class PretrainedResNet(nn.Module):
    """skorch's transfer-learning tutorial network: torchvision's model, new fc."""

    def __init__(self, n_classes):
        super().__init__()
        self.model = torchvision.models.resnet18(
            weights=torchvision.models.ResNet18_Weights.DEFAULT
        )
        self.model.fc = nn.Linear(self.model.fc.in_features, n_classes)

    def forward(self, x):
        return self.model(x)


def skorch_fine_tune(X, y, epochs, device):
    from skorch import NeuralNetClassifier
    from skorch.callbacks import Freezer, Unfreezer

    def body(name):
        return not name.startswith("model.fc")

    torch.manual_seed(0)
    net = NeuralNetClassifier(
        PretrainedResNet,
        module__n_classes=int(y.max()) + 1,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        optimizer__param_groups=[("model.fc.*", {"lr": LR})],
        lr=LR / 2,
        batch_size=BATCH_SIZE,
        max_epochs=epochs,
        train_split=None,
        iterator_train__shuffle=True,
        callbacks=[Freezer(body, at=1), Unfreezer(body, at=2)],
        device=str(device),
        verbose=0,
    )
    net.fit(TransformDataset(X, y), None)
    synchronize(device)
    return net


def ours_fine_tune(X, y, epochs, device, precision="float32"):
    clf = CNNImageClassifier(
        backbone="resnet18",
        weights="DEFAULT",
        epochs=epochs,
        batch_size=BATCH_SIZE,
        lr=LR,
        device=str(device),
        precision=precision,
        random_state=0,
    ).fit(X, y)
    synchronize(device)
    return clf


# -- (c) feature extraction ------------------------------------------------------------
def hand_features(X, device, channels_last=False):
    model = torchvision.models.resnet18(
        weights=torchvision.models.ResNet18_Weights.DEFAULT
    )
    model.fc = nn.Identity()
    model = model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    images = torch.from_numpy(X).permute(0, 3, 1, 2)
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(images), BATCH_SIZE):
            batch = images[start : start + BATCH_SIZE].to(device).float() / 255
            batch = (batch - mean) / std
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            outputs.append(model(batch).cpu().numpy())
    synchronize(device)
    return np.concatenate(outputs)


def ours_features(X, device):
    extractor = CNNFeatureExtractor(
        "resnet18",
        weights="DEFAULT",
        batch_size=BATCH_SIZE,
        device=str(device),
        precision="float32",
    )
    features = extractor.fit(X).transform(X)
    synchronize(device)
    return features


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=128, help="image side for (b), (c)")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2, help="epochs for (b)")
    parser.add_argument("--transfer-size", type=int, default=32)
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--transfer-epochs", type=int, default=10)
    parser.add_argument("--labels", type=int, default=10, help="per class, task B")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).with_name("backbones.json")
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.size, args.samples, args.epochs = 1, 32, 64, 2
        args.transfer_size, args.pretrain_epochs, args.transfer_epochs = 16, 1, 2
        args.labels, args.seeds = 5, 1
    device = torch.device(args.device)
    info = machine(device)
    print("machine:", json.dumps(info))
    folder = Path(tempfile.mkdtemp())
    os.environ["TORCH_HOME"] = str(folder / "torch")
    cache_random_resnet18(folder / "torch")

    scores = transfer(
        args.transfer_size,
        args.pretrain_epochs,
        args.transfer_epochs,
        args.labels,
        args.seeds,
        folder,
    )
    print(
        f"\n(a) transfer, {args.labels} labels per class, {args.seeds} seeds: "
        "test accuracy (mean, std)"
    )
    for name, values in scores.items():
        print(f"    {name:10s} {np.mean(values):.3f}  {np.std(values):.3f}")

    X, y = make_images(args.samples, args.size)
    # Warm the kernels up once, so that no contender pays for the first call.
    ours_fine_tune(X[:BATCH_SIZE], y[:BATCH_SIZE], 1, device)
    images = args.samples * args.epochs
    training = interleaved(
        {
            "skorch_recipe": lambda: skorch_fine_tune(X, y, args.epochs, device),
            "ours": lambda: ours_fine_tune(X, y, args.epochs, device),
            "ours_auto": lambda: ours_fine_tune(
                X, y, args.epochs, device, precision="auto"
            ),
        },
        args.repeats,
    )
    extraction = interleaved(
        {
            "hand": lambda: hand_features(X, device),
            "hand_cl": lambda: hand_features(X, device, channels_last=True),
            "ours": lambda: ours_features(X, device),
        },
        args.repeats,
    )
    results = {f"fine_tune_{k}": images / v for k, v in training.items()}
    results |= {f"features_{k}": args.samples / v for k, v in extraction.items()}
    print(f"\n{'(b), (c) at ' + str(args.size) + ' px':40s} {'images/s':>10s}")
    for key, value in results.items():
        print(f"    {key:36s} {value:10.1f}")
    ratios = {
        "fine-tuning: ours / skorch recipe (float32)": (
            results["fine_tune_ours"] / results["fine_tune_skorch_recipe"],
            1.2,
        ),
        "fine-tuning: ours defaults / skorch recipe": (
            results["fine_tune_ours_auto"] / results["fine_tune_skorch_recipe"],
            1.2,
        ),
        "features: ours / hand loop": (
            results["features_ours"] / results["features_hand"],
            0.95,
        ),
        "features: ours / hand loop channels-last": (
            results["features_ours"] / results["features_hand_cl"],
            0.95,
        ),
    }
    print(f"\n{'ratio':44s} {'value':>6s} {'goal':>6s}")
    for label, (value, goal) in ratios.items():
        mark = "  ok" if value >= goal else "  MISSED"
        print(f"{label:44s} {value:6.2f} {goal:6.2f}{mark}")
    payload = {
        "machine": info,
        "settings": vars(args) | {"output": str(args.output), "device": str(device)},
        "transfer_accuracy": {
            name: {"mean": float(np.mean(v)), "std": float(np.std(v)), "runs": v}
            for name, v in scores.items()
        },
        "throughput": results,
        "ratios": {label: value for label, (value, _) in ratios.items()},
        "medians_seconds": {"fine_tune": training, "features": extraction},
    }
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
