"""``import sklearn_cnn`` and ``sklearn-cnn --help`` import nothing heavy.

Start-up is tested by its cause, in a fresh process: which modules got imported.
How long it takes is measured by ``benchmarks/startup.py``, against ``import torch``.
"""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sklearn_cnn

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["torch", "torchvision", "skorch", "accelerate", "matplotlib", "sklearn"]
PUBLIC = {
    "sklearn_cnn": [
        "CNNFeatureExtractor",
        "CNNImageClassifier",
        "CNNImageRegressor",
        "__version__",
        "export_onnx",
        "load_model",
        "save_model",
    ],
    "sklearn_cnn.augmentation": [
        "AugmentationLostWarning",
        "AugmentedImages",
        "BaseAugmenter",
        "ColorJitter",
        "GaussianNoise",
        "RandomAugment",
        "RandomCrop",
        "RandomErasing",
        "RandomHorizontalFlip",
        "RandomResizedCrop",
        "RandomRotation",
        "RandomTranslation",
        "RandomVerticalFlip",
    ],
    "sklearn_cnn.datasets": ["load_cats_dogs", "load_image_folder", "load_images"],
    "sklearn_cnn.inspection": [
        "LayerRow",
        "LayerTrace",
        "LearningRateFinderResult",
        "class_activation_map",
        "find_learning_rate",
        "layer_trace",
        "most_confused",
        "plot_class_activation_maps",
        "plot_history",
        "plot_predictions",
        "plot_top_losses",
    ],
    "sklearn_cnn.preprocessing": [
        "BaseImageTransformer",
        "ImageResizer",
        "ImageScaler",
        "ImageStandardizer",
    ],
    "sklearn_cnn.utils": ["ImageLayout", "validate_images"],
}


def imported_after(code: str) -> list[str]:
    """The heavy packages imported once ``code`` has run in a fresh process."""
    script = (
        f"import json, sys\n{code}\n"
        f"print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_import_sklearn_cnn_imports_nothing_heavy():
    assert imported_after("import sklearn_cnn; sklearn_cnn.__version__") == []


def test_help_imports_nothing_heavy():
    code = (
        "from contextlib import redirect_stdout\n"
        "from io import StringIO\n"
        "from sklearn_cnn.cli import build_parser, main\n"
        "build_parser()\n"
        "for args in ([], ['--help'], ['--version'], ['train', '--help'],\n"
        "             ['predict', '--help'], ['evaluate', '--help']):\n"
        "    try:\n"
        "        with redirect_stdout(StringIO()):\n"
        "            main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
    )
    assert imported_after(code) == []


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_public_names_are_unchanged_listed_and_importable(module_name):
    module = importlib.import_module(module_name)
    assert module.__all__ == PUBLIC[module_name]
    assert set(module.__all__) <= set(dir(module))
    for name in module.__all__:
        assert getattr(module, name) is not None
    namespace = {}
    exec(f"from {module_name} import *", namespace)
    assert set(module.__all__) <= set(namespace)


def test_subpackages_are_attributes_and_unknown_names_say_so():
    assert {"augmentation", "datasets", "inspection", "preprocessing"} <= set(
        dir(sklearn_cnn)
    )
    assert sklearn_cnn.datasets.load_cats_dogs.__name__ == "load_cats_dogs"
    assert sklearn_cnn.CNNImageClassifier.__module__ == "sklearn_cnn._classifier"
    with pytest.raises(AttributeError, match="'sklearn_cnn' has no attribute 'nope'"):
        _ = sklearn_cnn.nope
