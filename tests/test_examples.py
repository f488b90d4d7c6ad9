"""The gallery examples, the README and the docs build, as a new user meets them."""

import ast
import os
import re
import runpy
import shutil
import subprocess
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _cells(path: Path) -> list[list[ast.stmt]]:
    """The top-level statements of each ``# %%`` cell of an example."""
    source = path.read_text()
    starts = [
        number
        for number, line in enumerate(source.splitlines(), start=1)
        if line.startswith("# %%")
    ]
    cells = [[] for _ in range(len(starts) + 1)]
    for statement in ast.parse(source).body:
        cells[sum(start < statement.lineno for start in starts)].append(statement)
    return [cell for cell in cells if cell]


def _shows_a_repr(statement: ast.stmt) -> bool:
    """True for an expression whose value sphinx-gallery would print as a repr."""
    if not isinstance(statement, ast.Expr):
        return False
    value = statement.value
    if isinstance(value, ast.Constant):  # the docstring
        return False
    return not (
        isinstance(value, ast.Call) and getattr(value.func, "id", "") == "print"
    )


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("plot_*.py")), ids=str)
def test_cells_end_without_printing_an_object(path):
    # sphinx-gallery prints the value of a cell's last expression: an estimator
    # or a Figure would show up as '<... object at 0x...>'. Assign it instead.
    for cell in _cells(path):
        last = cell[-1]
        assert not _shows_a_repr(last), (
            f"{path.name}, line {last.lineno}: {ast.unparse(last)} ends a cell with "
            "an object; assign it (_ = ...) or print what it shows"
        )


RUN_BY_TESTS = [
    "plot_activation_maps.py",
    "plot_cross_val_score.py",
    "plot_export_onnx.py",
    "plot_grid_search.py",
    "plot_image_classification_pipeline.py",
    "plot_image_folder.py",
    "plot_multilabel.py",
    "plot_pretrained.py",
    "plot_regression.py",
    "plot_save_load.py",
]
# Examples the docs build runs but this module does not, each with its reason.
NOT_RUN_BY_TESTS = {
    "plot_accelerate.py": "tests/test_accelerate.py covers the accelerated fit",
}


def test_every_example_is_run_or_says_why_not():
    examples = {path.name for path in EXAMPLES.glob("plot_*.py")}
    assert examples == set(RUN_BY_TESTS) | set(NOT_RUN_BY_TESTS)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("plot_*.py")), ids=str)
def test_every_example_has_a_thumbnail(path):
    # The gallery shows a placeholder for an example that draws nothing: draw
    # a figure, or name a picture with sphinx_gallery_thumbnail_path.
    source = path.read_text()
    thumbnail = re.search(r'^# sphinx_gallery_thumbnail_path = "(.+)"$', source, re.M)
    if thumbnail:
        assert (EXAMPLES.parent / "docs" / thumbnail.group(1)).is_file()
    else:
        assert re.search(r"\bplt\.subplots\(|\bplot_\w+\(|Display\.from_", source), (
            f"{path.name} draws no figure and names no thumbnail"
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", RUN_BY_TESTS)
def test_example_runs(name, monkeypatch, capsys):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(EXAMPLES)
    try:
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    finally:
        plt.close("all")
    out = capsys.readouterr().out
    assert out.strip() and " object at 0x" not in out


def test_docs_build_ends_by_saying_where_the_html_is(tmp_path):
    # docs/build.sh, run beside a stand-in for Sphinx that writes an index page.
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(EXAMPLES.parent / "docs" / "build.sh", docs / "build.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_python = bin_dir / "python"
    fake_python.write_text(
        "#!/bin/sh\nmkdir -p _build/html && touch _build/html/index.html\n"
    )
    fake_python.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", str(docs / "build.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    last_line = result.stdout.strip().splitlines()[-1]
    index = Path(last_line.split()[-1])
    assert index.name == "index.html" and index.is_file()
    assert index.resolve() == (docs / "_build" / "html" / "index.html").resolve()


def test_user_facing_text_speaks_in_its_own_words():
    # Words from how the project was planned mean nothing to its users.
    root = EXAMPLES.parent
    files = [root / "README.md", *root.glob("docs/**/*.rst"), *EXAMPLES.glob("*.py")]
    files += root.glob("sklearn_cnn/**/*.py")
    for path in files:
        if "_build" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            assert not re.search(r"\bbrief\b", line, re.IGNORECASE), (
                f"{path.relative_to(root)}:{number}: {line.strip()}"
            )


def test_readme_quick_start_shows_progress_and_cpu_only_install():
    readme = (EXAMPLES.parent / "README.md").read_text()
    set_up = readme[readme.index("## Set up") : readme.index("## Quick start")]
    assert "--index-url https://download.pytorch.org/whl/cpu" in set_up
    quick_start = readme[readme.index("## Quick start") : readme.index("## What")]
    search = quick_start[
        quick_start.index("GridSearchCV(pipe") : quick_start.index("search.fit")
    ]
    assert "verbose=" in search
    assert "minutes" in quick_start
