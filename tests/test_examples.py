"""Smoke test: the gallery examples of the brief's pipeline run to the end."""

import runpy
from pathlib import Path

import pytest

matplotlib = pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "plot_brief_pipeline.py",
        "plot_cross_val_score.py",
        "plot_grid_search.py",
        "plot_image_folder.py",
        "plot_save_load.py",
    ],
)
def test_example_runs(name, monkeypatch, capsys):
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(EXAMPLES)
    try:
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    finally:
        plt.close("all")
    assert capsys.readouterr().out.strip()
