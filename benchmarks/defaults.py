"""Choosing the classifier's defaults: accuracy and time of candidate settings.

Two tasks, each 800 training and 200 test images of 64x64x3, trained in
``Pipeline([ImageScaler(), RandomAugment(flip, rotation 15), CNNImageClassifier])``:

* ``seed``: the 1000 embedded images ``load_cats_dogs()`` returns, on which the
  settings were tuned;
* ``held-out``: the other 1000 silhouettes of the data set, never looked at while
  tuning.

Each candidate is fitted with three ``random_state`` values (split, weights,
shuffling and augmentation all follow it); the table gives the mean test
accuracy and the total fitting time of the three fits. Times are comparable
only within one run on a quiet machine.

Run: ``python benchmarks/defaults.py`` (about 5 minutes on 2 CPU cores), or
``--quick`` for a smoke test.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn.augmentation import RandomAugment, RandomHorizontalFlip, RandomRotation
from sklearn_cnn.datasets import load_cats_dogs
from sklearn_cnn.datasets._cats_dogs import _load_raw, _resize_gray
from sklearn_cnn.preprocessing import ImageScaler

CANDIDATES = {
    # The first release's defaults.
    "0.1 defaults": dict(
        filters=(32, 64), batch_size=64, epochs=10, lr_schedule="constant"
    ),
    # The command's settings of 0.1, which became the defaults.
    "new defaults": {},
    # Larger batches, a higher rate and one more epoch: faster, less accurate.
    "batch 32": dict(
        filters=(16, 32, 64, 128),
        batch_size=32,
        lr=2e-3,
        epochs=6,
        lr_schedule="cosine",
    ),
}


def held_out_images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The 1000 silhouettes that ``load_cats_dogs()`` leaves out by default."""
    images, labels = _load_raw()
    rng = np.random.RandomState(0)
    taken = set()
    for name, n_wanted in zip(np.unique(labels), (500, 500), strict=True):
        (indices,) = np.nonzero(labels == name)
        taken.update(rng.choice(indices, size=n_wanted, replace=False).tolist())
    rest = np.random.RandomState(1).permutation(sorted(set(range(len(labels))) - taken))
    gray = _resize_gray(images[rest], (size, size))
    return np.repeat(gray[..., None], 3, axis=-1), labels[rest]


def pipeline(params: dict, seed: int) -> Pipeline:
    augment = RandomAugment(
        steps=[("flip", RandomHorizontalFlip()), ("rotate", RandomRotation(15))],
        random_state=seed,
    )
    classifier = CNNImageClassifier(**params, random_state=seed, device="cpu")
    return Pipeline(
        [("scale", ImageScaler()), ("augment", augment), ("cnn", classifier)]
    )


def evaluate(params, X, y, seeds) -> tuple[list[float], float]:
    scores, start = [], time.perf_counter()
    for seed in seeds:
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=200 * len(X) // 1000, stratify=y, random_state=seed
        )
        model = pipeline(params, seed).fit(X_train, y_train)
        scores.append(float(model.score(X_test, y_test)))
    return scores, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test")
    parser.add_argument("--output", type=Path, default=None, help="JSON results")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    size, seeds = (16, [0]) if args.quick else (64, [0, 1, 2])
    tasks = {
        "seed": load_cats_dogs(image_size=size, return_X_y=True),
        "held-out": held_out_images(size),
    }
    if args.quick:
        tasks = {name: (X[:100], y[:100]) for name, (X, y) in tasks.items()}
    results = {}
    print(f"{'settings':<14} {'task':<9} {'accuracy per seed':<24} mean  seconds")
    for name, params in CANDIDATES.items():
        if args.quick:
            params = {**params, "epochs": 1}
        for task, (X, y) in tasks.items():
            scores, seconds = evaluate(params, X, y, seeds)
            results[f"{name} / {task}"] = dict(
                scores=scores, mean=float(np.mean(scores)), seconds=seconds
            )
            per_seed = " ".join(f"{score:.3f}" for score in scores)
            print(
                f"{name:<14} {task:<9} {per_seed:<24} "
                f"{np.mean(scores):.3f} {seconds:7.1f}"
            )
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
