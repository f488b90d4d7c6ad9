"""Training on image files: streamed by CNNImageClassifier, against its peers.

One command makes JPEG folders from the embedded cats and dogs (in a temporary
folder, removed afterwards) and measures, side by side in one run:

    python benchmarks/streaming.py            # full run, about 15 minutes on 2 cores
    python benchmarks/streaming.py --quick    # smoke run, seconds
    python benchmarks/streaming.py --only decoders memory   # some sections

Sections:

* ``decoders``: microseconds per image of Pillow (``read_image``, what the
  package uses) and ``torchvision.io.decode_image`` + ``resize(antialias=True)``,
  in 1 and in 2 threads; and one pass over the files as a thread pool over
  batches (the package's choice) against a ``DataLoader`` with 2 worker
  processes over batches of indices (``BatchSampler``).
* ``throughput``: training images per second at 64, 128 and 224 px, 2 epochs,
  median of 3 interleaved repeats after a warm-up fit,
  of ``CNNImageClassifier`` fitted on the paths (``streamed``), the same fitted on
  the decoded arrays (``in_memory``, loading not counted; ``load_s`` says what
  loading took), and torchvision's ``ImageFolder`` + ``DataLoader(num_workers=2)``
  feeding the same network in a plain training loop (``imagefolder``).
* ``cache``: seconds of epochs 2-3 streamed with and without ``cache_decoded``.
* ``memory``: peak resident memory (RSS) of a fresh process fitting one epoch on
  2,000 / 8,000 / 32,000 JPEGs, streamed and in memory.
* ``accuracy``: test accuracy, same seed, of the in-memory and the streamed route
  on the embedded data written as JPEG files.

The figures go to standard output and to ``benchmarks/streaming_results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn._network import ConvNet
from sklearn_cnn.datasets import load_cats_dogs, load_image_folder
from sklearn_cnn.datasets._folder import read_image

BATCH_SIZE = 64
LR = 1e-3
# The classifier's default network, built the same way for every contender.
FILTERS = (16, 32, 64, 128)


# -- data ---------------------------------------------------------------------------
def write_jpegs(root: Path, n_files: int, size: int, seed: int = 0) -> Path:
    """``n_files`` JPEGs of ``size`` px in one sub-folder per class (cached by name)."""
    folder = root / f"jpeg_{n_files}_{size}_{seed}"
    if folder.exists():
        return folder
    images, labels = load_cats_dogs(
        image_size=size, n_samples=None, random_state=seed, return_X_y=True
    )

    def write(i):
        label = labels[i % len(labels)]
        pixels = images[i % len(images)]
        if i >= len(images):
            # More files than images: shifted copies, so files differ.
            pixels = np.roll(pixels, i // len(images), axis=1)
        Image.fromarray(pixels).save(folder / label / f"{i:06d}.jpg", quality=90)

    for label in np.unique(labels):
        (folder / label).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(4) as executor:
        list(executor.map(write, range(n_files)))
    return folder


# -- decoders -------------------------------------------------------------------------
def _decode_pil(path, size):
    return read_image(path, size)


def _decode_torchvision(path, size):
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms.v2 import functional as F

    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders (for TorchCodec): measured anyway.
        warnings.simplefilter("ignore", DeprecationWarning)
        image = decode_image(read_file(path), mode=ImageReadMode.RGB)
    if size is not None and tuple(image.shape[1:]) != tuple(size):
        image = F.resize(image, list(size), antialias=True)
    return image


def _microseconds_per_image(decode, paths, size, threads):
    start = time.perf_counter()
    if threads == 1:
        for path in paths:
            decode(path, size)
    else:
        with ThreadPoolExecutor(threads) as executor:
            list(executor.map(lambda path: decode(path, size), paths))
    return (time.perf_counter() - start) / len(paths) * 1e6


class _BatchDataset(torch.utils.data.Dataset):
    """A batch of decoded images per list of indices (for a ``BatchSampler``)."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, indices):
        return torch.stack(
            [torch.tensor(read_image(self.paths[i], None)) for i in indices]
        )


def bench_decoders(root: Path, quick: bool) -> dict:
    n_files = 40 if quick else 300
    results = {}
    cases = [(64, None), (224, None), (500, (224, 224)), (500, (64, 64))]
    if quick:
        cases = [(64, None), (128, (64, 64))]
    for stored, size in cases:
        folder = write_jpegs(root, n_files, stored)
        paths = sorted(str(path) for path in folder.rglob("*.jpg"))
        decoders = (("pil", _decode_pil), ("torchvision", _decode_torchvision))
        for name, decode in decoders:
            decode(paths[0], size)
            for threads in (1, 2):
                key = f"{name} {stored}px->{size[0] if size else stored}px {threads}t"
                results[key] = _microseconds_per_image(decode, paths, size, threads)
                print(f"  {key:36s} {results[key]:8.0f} us/image", flush=True)
    folder = write_jpegs(root, 128 if quick else 1024, 128)
    paths = sorted(str(path) for path in folder.rglob("*.jpg"))
    batches = [
        range(start, min(start + BATCH_SIZE, len(paths)))
        for start in range(0, len(paths), BATCH_SIZE)
    ]
    dataset = _BatchDataset(paths)
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as executor:
        for _ in executor.map(dataset.__getitem__, batches):
            pass
    results["threads 2 pass s"] = time.perf_counter() - start
    start = time.perf_counter()
    loader = torch.utils.data.DataLoader(
        dataset,
        sampler=torch.utils.data.BatchSampler(
            torch.utils.data.SequentialSampler(paths), BATCH_SIZE, drop_last=False
        ),
        batch_size=None,
        num_workers=2,
    )
    for _ in loader:
        pass
    results["dataloader 2 workers pass s"] = time.perf_counter() - start
    for key in ("threads 2 pass s", "dataloader 2 workers pass s"):
        print(f"  {key:36s} {results[key]:8.3f} s for {len(paths)} images")
    return results


# -- throughput -----------------------------------------------------------------------
def classifier(epochs: int, device: str, **params) -> CNNImageClassifier:
    settings = dict(
        filters=FILTERS,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        lr=LR,
        precision="float32",
        device=device,
        random_state=0,
    )
    return CNNImageClassifier(**{**settings, **params})


def imagefolder_fit(folder: Path, size: int, epochs: int, device: str) -> None:
    """torchvision's ImageFolder + DataLoader(num_workers=2), the same network."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    dataset = ImageFolder(str(folder), transform=v2.PILToTensor())
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=BATCH_SIZE,
        shuffle=True,
        num_workers=2,
        pin_memory=device.startswith("cuda"),
        persistent_workers=True,
    )
    torch.manual_seed(0)
    model = ConvNet(3, 2, (size, size), filters=FILTERS).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for images, labels in loader:
            images = images.to(device, non_blocking=True).float().div(255)
            labels = labels.to(device, non_blocking=True)
            optimizer.zero_grad()
            loss_fn(model(images), labels).backward()
            optimizer.step()


def bench_throughput(root: Path, quick: bool, device: str) -> dict:
    n_files, epochs, repeats = (128, 1, 1) if quick else (2000, 2, 3)
    sizes = (32,) if quick else (64, 128, 224)
    results = {}
    for size in sizes:
        folder = write_jpegs(root, n_files, size)
        paths, y = load_image_folder(folder, paths_only=True, return_X_y=True)
        start = time.perf_counter()
        X, y_arrays = load_image_folder(folder, image_size=None, return_X_y=True)
        load_s = time.perf_counter() - start
        # The first fit of a process pays one-off costs (kernels, allocators).
        few = slice(None, None, max(1, n_files // 64))  # both classes: sorted by class
        classifier(1, device).fit(paths[few], y[few])
        classifier(1, device).fit(X[few], y_arrays[few])
        contenders = (
            ("streamed", lambda: classifier(epochs, device).fit, (paths, y)),
            ("in_memory", lambda: classifier(epochs, device).fit, (X, y_arrays)),
            ("imagefolder", lambda: imagefolder_fit, (folder, size, epochs, device)),
        )
        seconds = {name: [] for name, _, _ in contenders}
        for _ in range(repeats):
            # Interleaved repeats: a slow spell of the machine hits every contender.
            for name, make_run, arguments in contenders:
                run = make_run()
                start = time.perf_counter()
                run(*arguments)
                seconds[name].append(time.perf_counter() - start)
        timings = {
            name: n_files * epochs / statistics.median(times)
            for name, times in seconds.items()
        }
        row = {**timings, "load_s": load_s}
        row["streamed / imagefolder"] = timings["streamed"] / timings["imagefolder"]
        row["streamed / in_memory"] = timings["streamed"] / timings["in_memory"]
        results[f"{size}px"] = row
        print(
            f"  {size:4d}px  streamed {timings['streamed']:7.0f} img/s  in memory "
            f"{timings['in_memory']:7.0f} img/s (+ {load_s:.1f} s loading)  "
            f"ImageFolder {timings['imagefolder']:7.0f} img/s  ->  "
            f"{row['streamed / imagefolder']:.2f}x ImageFolder, "
            f"{row['streamed / in_memory']:.2f}x in memory",
            flush=True,
        )
    return results


def bench_cache(root: Path, quick: bool, device: str) -> dict:
    n_files, size = (128, 32) if quick else (2000, 64)
    paths, y = load_image_folder(
        write_jpegs(root, n_files, size), paths_only=True, return_X_y=True
    )
    results = {}
    for cache in (False, True):
        clf = classifier(3, device, cache_decoded=cache).fit(paths, y)
        later = sum(row["dur"] for row in clf.history_[1:])
        results[f"cache_decoded={cache} epochs 2-3 s"] = later
        print(f"  cache_decoded={cache!s:5s} epochs 2-3: {later:.2f} s", flush=True)
    return results


# -- memory ---------------------------------------------------------------------------
def _memory_child(mode: str, folder: str, device: str) -> None:
    """Fit one epoch in this fresh process and print its peak RSS in MiB."""
    if mode == "streamed":
        X, y = load_image_folder(folder, paths_only=True, return_X_y=True)
    else:
        X, y = load_image_folder(folder, image_size=None, return_X_y=True)
    classifier(1, device, filters=(8,), dense_units=None).fit(X, y)
    print(_peak_rss_mib())


def _peak_rss_mib() -> float:
    """This process's peak RSS: ``VmHWM`` on Linux, where ``ru_maxrss`` would
    count the parent's memory at fork."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


def bench_memory(root: Path, quick: bool, device: str) -> dict:
    counts, size = ((200, 800), 32) if quick else ((2000, 8000, 32000), 64)
    results = {}
    for n_files in counts:
        folder = write_jpegs(root, n_files, size)
        row = {}
        for mode in ("streamed", "in_memory"):
            output = subprocess.run(
                [sys.executable, __file__, "--memory-child", mode, str(folder)]
                + ["--device", device],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            row[f"{mode} MiB"] = float(output.split()[-1])
        results[f"{n_files} files"] = row
        print(
            f"  {n_files:6d} files of {size}px: streamed {row['streamed MiB']:7.0f} "
            f"MiB, in memory {row['in_memory MiB']:7.0f} MiB",
            flush=True,
        )
    return results


# -- accuracy -------------------------------------------------------------------------
def bench_accuracy(root: Path, quick: bool, device: str) -> dict:
    from sklearn.model_selection import train_test_split

    n_files, epochs = (200, 1) if quick else (2000, 5)
    folder = write_jpegs(root, n_files, 64)
    paths, y = load_image_folder(folder, paths_only=True, return_X_y=True)
    X, _ = load_image_folder(folder, image_size=None, return_X_y=True)
    train, test = train_test_split(
        np.arange(len(y)), test_size=0.25, stratify=y, random_state=0
    )
    results = {}
    for name, data in (("in_memory", X), ("streamed", paths)):
        clf = classifier(epochs, device, lr_schedule="cosine")
        clf.fit(data[train], y[train])
        results[name] = clf.score(data[test], y[test])
        print(f"  {name:10s} test accuracy {results[name]:.3f}", flush=True)
    return results


SECTIONS = {
    "decoders": lambda root, quick, device: bench_decoders(root, quick),
    "throughput": bench_throughput,
    "cache": bench_cache,
    "memory": bench_memory,
    "accuracy": bench_accuracy,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run, seconds")
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--output", default=str(Path(__file__).with_name("streaming_results.json"))
    )
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(*args.memory_child, args.device)
        return
    root = Path(tempfile.mkdtemp(prefix="sklearn-cnn-streaming-"))
    results = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "device": args.device,
            "quick": args.quick,
        }
    }
    try:
        for name in args.only or SECTIONS:
            print(f"{name}:", flush=True)
            results[name] = SECTIONS[name](root, args.quick, args.device)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if not args.quick:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        print(f"written to {args.output}")


if __name__ == "__main__":
    main()
