"""The training recipe: what each setting gains in accuracy, and what it costs.

    python benchmarks/recipe.py            # 3 seeds, about 10 minutes on 2 cores
    python benchmarks/recipe.py --quick    # 1 seed, fewer images, a minute or two

Each setting of ``CNNImageClassifier`` (label smoothing, mixup, cutmix, both,
EMA weights, test-time augmentation 'flip', ``lr='auto'``) against the same
model without it, on two tasks, each over the same seeds:

* **embedded**: the cats and dogs of ``sklearn-cnn train`` (1000 images of 64
  px, 800 to train, 200 to test, stratified by seed), trained as the command
  trains (flip and rotation augmentation, 5 epochs, the defaults otherwise);
* **transfer**: the gallery's transfer task: a resnet18 pretrained on the
  digits 0-4 of ``load_digits`` (16 px, once, saved to a state-dict file) is
  fine-tuned on 10 labelled images of each of the digits 5-9 and tested on all
  the others (10 epochs, batch size 16, lr 3e-3).

For each it reports the test accuracy (mean and spread over the seeds), the
gain over the baseline, and the training and prediction time as ratios to the
baseline's (medians over the seeds; prediction timed on the test images,
interleaved with the baseline's). TTA trains nothing: it is the baseline model
predicting with ``test_time_augmentation='flip'``. The figures go to standard
output (a Markdown table) and to ``recipe.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn.augmentation import RandomAugment, RandomHorizontalFlip, RandomRotation
from sklearn_cnn.datasets import load_cats_dogs
from sklearn_cnn.preprocessing import ImageResizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import machine  # noqa: E402

# name -> (parameters of training, parameters of prediction); EMA decays are set
# per task from its number of optimizer steps.
SETTINGS = {
    "baseline": ({}, {}),
    "label_smoothing=0.1": ({"label_smoothing": 0.1}, {}),
    "mixup_alpha=0.2": ({"mixup_alpha": 0.2}, {}),
    "cutmix_alpha=1.0": ({"cutmix_alpha": 1.0}, {}),
    "mixup 0.2 + cutmix 1.0": ({"mixup_alpha": 0.2, "cutmix_alpha": 1.0}, {}),
    "weight_averaging='ema'": ({"weight_averaging": "ema"}, {}),
    "test_time_augmentation='flip'": (None, {"test_time_augmentation": "flip"}),
    "lr='auto'": ({"lr": "auto"}, {}),
}


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def fitted(params, X, y):
    return CNNImageClassifier(**params).fit(X, y)


def embedded_task(quick: bool):
    n_samples = 400 if quick else 1000
    X, y = load_cats_dogs(image_size=64, n_samples=n_samples, return_X_y=True)
    augment = RandomAugment(
        steps=[("flip", RandomHorizontalFlip()), ("rotate", RandomRotation(15))]
    )
    base = dict(augment=augment, epochs=3 if quick else 5, verbose=0)
    n_steps = int(0.8 * n_samples / 16) * base["epochs"]

    def split(seed):
        return train_test_split(X, y, test_size=0.2, stratify=y, random_state=seed)

    return base, n_steps, split


def transfer_task(quick: bool, folder: Path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = ImageResizer(16).fit_transform((digits.images * (255 / 16)).astype(np.uint8))
    y = digits.target
    task_a = y < 5
    pretrained = CNNImageClassifier(
        backbone="resnet18", epochs=2 if quick else 4, batch_size=32, random_state=0,
        verbose=0,
    ).fit(X[task_a], y[task_a])  # fmt: skip
    weights = folder / "resnet18_digits_0_4.pt"
    torch.save(pretrained.net_.module_.state_dict(), weights)
    base = dict(
        backbone="resnet18", weights=weights, epochs=5 if quick else 10,
        batch_size=16, lr=3e-3, verbose=0,
    )  # fmt: skip
    n_steps = int(np.ceil(50 / 16)) * base["epochs"]
    task_b = np.flatnonzero(y >= 5)

    def split(seed):
        rng = np.random.RandomState(seed)
        train = np.concatenate(
            [
                rng.choice(task_b[y[task_b] == digit], 10, replace=False)
                for digit in range(5, 10)
            ]
        )
        test = np.setdiff1d(task_b, train)
        return X[train], X[test], y[train], y[test]

    return base, n_steps, split


def measure(base, n_steps, split, seeds, repeats) -> dict:
    """Accuracy and time ratios of every setting on one task."""
    # An average over about a fifth of the training's optimizer steps.
    ema_decay = round(1 - 5 / max(n_steps, 10), 3)
    results = {name: {"accuracy": [], "fit": [], "predict": []} for name in SETTINGS}
    for seed in seeds:
        X_train, X_test, y_train, y_test = split(seed)
        baseline = None
        for name, (fit_params, predict_params) in SETTINGS.items():
            if fit_params is None:  # prediction only: the baseline model
                model, seconds = baseline, results["baseline"]["fit"][-1]
            else:
                params = {**base, **fit_params, "random_state": seed}
                if params.get("weight_averaging"):
                    params["ema_decay"] = ema_decay
                seconds, model = timed(fitted, params, X_train, y_train)
            if name == "baseline":
                baseline = model
            model.set_params(**predict_params)
            results[name]["fit"].append(seconds)
            results[name]["accuracy"].append(float(model.score(X_test, y_test)))
            # Prediction time, interleaved with the baseline's.
            times, base_times = [], []
            for _ in range(repeats):
                baseline.set_params(test_time_augmentation=None)
                base_times.append(timed(baseline.predict_proba, X_test)[0])
                model.set_params(**predict_params)
                times.append(timed(model.predict_proba, X_test)[0])
            model.set_params(test_time_augmentation=None)
            results[name]["predict"].append(
                statistics.median(times) / statistics.median(base_times)
            )
    summary = {}
    base_fit = results["baseline"]["fit"]
    base_accuracy = np.mean(results["baseline"]["accuracy"])
    for name, values in results.items():
        accuracy = np.asarray(values["accuracy"])
        summary[name] = {
            "accuracy_mean": float(accuracy.mean()),
            "accuracy_min": float(accuracy.min()),
            "accuracy_max": float(accuracy.max()),
            "accuracies": values["accuracy"],
            "gain": float(accuracy.mean() - base_accuracy),
            "fit_ratio": float(
                statistics.median(f / b for f, b in zip(values["fit"], base_fit))
            ),
            "predict_ratio": float(statistics.median(values["predict"])),
        }
    summary["_ema_decay"] = ema_decay
    return summary


def table(task: str, summary: dict) -> str:
    lines = [
        f"| {task} | accuracy (mean, min-max) | gain | training time "
        "| prediction time |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in summary.items():
        if name.startswith("_"):
            continue
        if name == "weight_averaging='ema'":
            name = f"{name}, ema_decay={summary['_ema_decay']}"
        lines.append(
            f"| {name} | {row['accuracy_mean']:.3f} ({row['accuracy_min']:.3f}-"
            f"{row['accuracy_max']:.3f}) | {row['gain']:+.3f} | "
            f"{row['fit_ratio']:.2f}x | {row['predict_ratio']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, fewer images")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="prediction timings")
    parser.add_argument(
        "--output", default=str(Path(__file__).with_name("recipe.json"))
    )
    args = parser.parse_args(argv)
    seeds = range(1 if args.quick else args.seeds)
    results = {"machine": machine(torch.device("cpu")), "quick": args.quick}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for task, make in (
            ("embedded", lambda: embedded_task(args.quick)),
            ("transfer", lambda: transfer_task(args.quick, Path(folder))),
        ):
            base, n_steps, split = make()
            results[task] = measure(base, n_steps, split, seeds, args.repeats)
            print(table(task, results[task]) + "\n", flush=True)
    results["seconds"] = time.perf_counter() - start
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"{results['seconds']:.0f} s; figures in {args.output}")


if __name__ == "__main__":
    main()
