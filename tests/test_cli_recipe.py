"""The training recipe's flags of ``sklearn-cnn train``."""

import pytest

from sklearn_cnn import load_model
from sklearn_cnn.cli import main

TINY = [
    "--epochs", "1", "--image-size", "12", "--n-samples", "100", "--filters", "4",
    "--dense-units", "8", "--seed", "0", "--report", "",
]  # fmt: skip


def test_recipe_flags_set_the_classifier_and_are_described(tmp_path, capsys):
    model_path = tmp_path / "model.safetensors"
    args = [
        "train", *TINY, "--tta", "flip", "--label-smoothing", "0.1",
        "--mixup", "0.2", "--cutmix", "1", "--ema", "0.5", "--lr", "0.002",
        "--output", str(model_path),
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "label smoothing 0.1, mixup alpha 0.2, cutmix alpha 1" in out
    assert "weights averaged (EMA, decay 0.5)" in out
    assert "predictions averaged with the mirror image" in out
    classifier = load_model(model_path)[-1]
    params = classifier.get_params()
    assert params["test_time_augmentation"] == "flip"
    assert params["label_smoothing"] == 0.1 and params["mixup_alpha"] == 0.2
    assert params["cutmix_alpha"] == 1.0 and params["lr"] == 0.002
    assert params["weight_averaging"] == "ema" and params["ema_decay"] == 0.5


def test_ema_alone_takes_the_default_decay_and_lr_auto_says_its_rate(tmp_path, capsys):
    args = ["train", *TINY, "--ema", "--lr", "auto", "--batch-size", "4"]
    assert main([*args, "--output", str(tmp_path / "m.pkl"), "--format", "pickle"]) == 0
    out = capsys.readouterr().out
    assert "weights averaged (EMA, decay 0.999)" in out
    assert "learning rate found by a range test" in out
    assert "lr='auto': the learning-rate range test picked lr=" in out


def test_help_lists_the_recipe_group(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "training recipe (each off by default):" in out
    for flag in ("--tta", "--label-smoothing", "--mixup", "--cutmix", "--ema"):
        assert flag in out


@pytest.mark.parametrize(
    "args, match",
    [
        (["--tta", "rotate"], "invalid choice: 'rotate'"),
        (["--label-smoothing", "1"], "expected a share from 0 up to 1"),
        (["--mixup", "-0.5"], "expected 0 (off) or a positive number"),
        (["--cutmix", "x"], "expected 0 (off) or a positive number"),
        (["--ema", "1"], "expected a decay between 0 and 1"),
        (["--lr", "fast"], "expected a positive number or auto"),
    ],
)
def test_bad_recipe_values_are_usage_errors(args, match, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *args])
    assert exit_info.value.code == 2
    assert match in capsys.readouterr().err


def test_a_regressor_refuses_the_classification_flags(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    rows = []
    for i in range(12):
        Image.fromarray(np.full((8, 8, 3), i * 20, np.uint8)).save(
            tmp_path / f"{i}.png"
        )
        rows.append(f"{i}.png,{i / 10}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    args = ["train", "--targets", str(tmp_path / "t.csv"), *TINY, "--mixup", "0.2"]
    assert main(args) == 1
    assert "--mixup apply to classes and labels" in capsys.readouterr().err
