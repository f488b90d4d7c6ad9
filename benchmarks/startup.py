"""Start-up time of the sklearn-cnn command, against the time to import torch.

Each command runs in a fresh Python process, as a user runs it; the repeats of
the commands are interleaved (so that a noisy neighbour slows them alike) after
one warm-up round that fills the file cache, and the medians are reported with
their ratio to ``python -c "import torch"``:

    python benchmarks/startup.py             # 7 repeats, about a minute
    python benchmarks/startup.py --quick     # 1 repeat, a smoke run

``sklearn-cnn ...`` runs as ``python -m sklearn_cnn ...`` with this checkout
first on the path, so that it measures this checkout's code rather than an
installed copy; the console script imports the same modules.
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
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
# name -> the command line; "import torch" is the yardstick of the ratios.
COMMANDS = {
    "python -c pass": [PYTHON, "-c", "pass"],
    "python -c 'import torch'": [PYTHON, "-c", "import torch"],
    "python -c 'import sklearn_cnn'": [PYTHON, "-c", "import sklearn_cnn"],
    "sklearn-cnn --help": [PYTHON, "-m", "sklearn_cnn", "--help"],
    "sklearn-cnn train --help": [PYTHON, "-m", "sklearn_cnn", "train", "--help"],
}
YARDSTICK = "python -c 'import torch'"


def seconds(command: list[str]) -> float:
    """Wall time of one run of ``command`` in a fresh process."""
    path = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(repeats: int) -> dict[str, list[float]]:
    for command in COMMANDS.values():  # warm-up: the file cache, the .pyc files
        seconds(command)
    times = {name: [] for name in COMMANDS}
    for _ in range(repeats):
        for name, command in COMMANDS.items():
            times[name].append(seconds(command))
    return times


def machine() -> dict:
    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": version("torch"),
        "scikit-learn": version("scikit-learn"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).with_name("startup.json")
    )
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    info = machine()
    print("machine:", json.dumps(info))
    times = measure(repeats)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"\nmedian of {repeats} run(s) per command, in fresh processes\n")
    print(f"{'command':<34} {'seconds':>8} {'vs import torch':>16}")
    for name, median in medians.items():
        ratio = median / medians[YARDSTICK]
        print(f"{name:<34} {median:8.3f} {ratio:15.2f}x")
    payload = {
        "machine": info,
        "repeats": repeats,
        "seconds": times,
        "median_seconds": medians,
        "ratio_to_import_torch": {
            name: median / medians[YARDSTICK] for name, median in medians.items()
        },
    }
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
