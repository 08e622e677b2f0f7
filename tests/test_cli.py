"""The command line end to end, on the embedded model and the bundled photos.

Each expensive command runs once per module (fixtures); tests then read its output and files. Methods are the
fast ones, so the module stays well within a CPU test budget.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semantic_pullbacks import visualize
from semantic_pullbacks.cli import main
from semantic_pullbacks.examples import example_path


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit code, stdout, stderr); argparse's own exits count as codes too."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()  # decodes the whole file: a truncated PNG fails here
        assert image.format == "PNG"
        return image.size


def figure_size(rows: int, cols: int, extra_width: float = 0.0) -> tuple[int, int]:
    """Pixel size of a figure laid out by visualize (panels of _PANEL_INCHES at _DPI)."""
    panel, dpi = visualize._PANEL_INCHES, visualize._DPI
    return round((cols * panel + extra_width) * dpi), round((rows * panel + 0.35) * dpi)


def written(stdout: str) -> list[Path]:
    return [Path(line.split("wrote ", 1)[1]) for line in stdout.splitlines() if line.strip().startswith("wrote ")]


# --------------------------------------------------------------------------------------------- commands, once each


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    out = tmp_path_factory.mktemp("explain")
    result = run_cli("explain", "example:chelsea", "--top-k", "3", "--save-tensors", "npy", "--out", str(out))
    return (*result, out)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    result = run_cli(
        "compare", "example:coffee", "--methods", "gradient,SoftPullback", "--target", "espresso", "--out", str(out)
    )
    return (*result, out)


@pytest.fixture(scope="module")
def counterfactuals(tmp_path_factory):
    out = tmp_path_factory.mktemp("counterfactuals")
    settings = out / "settings.json"
    settings.write_text(json.dumps({"temperatures": {"relu": 0.5}, "ascent": {"steps": 1, "alpha": 20}}))
    result = run_cli(
        "counterfactuals", "example:chelsea", "example:coffee", "--classes", "tiger cat",
        "--settings", str(settings), "--out", str(out),
    )  # fmt: skip
    return (*result, out)


# --------------------------------------------------------------------------------------------- explain


def test_explain_prints_top5_and_explains_the_top3_classes(explained):
    code, stdout, stderr, out = explained
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == "example:chelsea: top-5 of efficientnet_lite0"
    assert lines[1].split()[:4] == ["1.", "Egyptian", "cat", "285"]
    took = [line for line in lines if " took " in line]  # what the explanation cost, as the app shows it
    assert len(took) == 1 and re.fullmatch(r"SoftPullback took \d+\.\d\d s \(1 image x 3 classes\)", took[0]), took
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))  # .done: finished images
    assert names == sorted(
        [f"chelsea_SoftPullback_{c}.{ext}" for c in ("285-egyptian-cat", "282-tiger-cat", "281-tabby")
         for ext in ("png", "npy")] + ["chelsea_SoftPullback_top3.png"]
    )  # fmt: skip
    assert sorted(written(stdout)) == sorted(out / n for n in names)


def test_explain_figures_and_tensors_are_complete(explained):
    _, _, _, out = explained
    assert png_size(out / "chelsea_SoftPullback_285-egyptian-cat.png") == figure_size(1, 4, 0.6)
    assert png_size(out / "chelsea_SoftPullback_top3.png") == figure_size(1, 4, 0.6)
    maps = [np.load(out / f"chelsea_SoftPullback_{c}.npy") for c in ("285-egyptian-cat", "282-tiger-cat")]
    assert maps[0].shape == (3, 224, 224) and np.isfinite(maps[0]).all()
    assert not np.allclose(maps[0], maps[1])  # one shared pass, still one map per class


def test_explain_folder_keeps_good_results_and_reports_a_corrupt_file(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(example_path("coffee"), folder / "a_coffee.jpg")
    (folder / "b_broken.jpg").write_bytes(example_path("coffee").read_bytes()[:300])
    (folder / "notes.txt").write_text("not an image")
    code, stdout, stderr = run_cli(
        "explain", str(folder), "--method", "Gradient", "--target", "967", "--batch-size", "1",
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 2
    assert "b_broken.jpg" in stderr and "corrupt" in stderr
    (figure,) = written(stdout)
    assert figure.name == "a_coffee_Gradient_967-espresso.png"
    assert png_size(figure) == figure_size(1, 4, 0.6)


# --------------------------------------------------------------------------------------------- compare, counterfactuals


def test_compare_writes_one_grid_per_image(compared):
    code, stdout, stderr, _ = compared
    assert code == 0, stderr
    (figure,) = written(stdout)
    assert figure.name == "coffee_compare_967-espresso.png"
    assert "espresso (967) with Gradient, SoftPullback" in stdout
    assert png_size(figure) == figure_size(1, 3)


def test_counterfactuals_per_image_and_combined_grid(counterfactuals):
    code, stdout, stderr, _ = counterfactuals
    assert code == 0, stderr
    figures = {p.name: p for p in written(stdout)}
    assert set(figures) == {
        "chelsea_PullbackAscent_counterfactuals.png",
        "coffee_PullbackAscent_counterfactuals.png",
        "PullbackAscent_counterfactuals_grid.png",
    }
    assert png_size(figures["chelsea_PullbackAscent_counterfactuals.png"]) == figure_size(2, 2)
    assert png_size(figures["PullbackAscent_counterfactuals_grid.png"]) == figure_size(4, 2)
    assert stdout.startswith("PullbackAscent (1 step, alpha=20)\n")  # steps from the settings file
    assert "tiger cat (282): p 0.19 → " in stdout
    assert re.search(r"^PullbackAscent took \d+\.\d\d s \(2 images x 1 class\)$", stdout, re.MULTILINE), stdout


def test_an_ascent_that_lowers_p_is_labelled_as_no_counterfactual(tmp_path):
    """At the paper's temperatures, 5 steps towards the clock photo's top-1 ("bubble") raise its logit but lower
    its probability: the summary and the figure say so instead of presenting it as a counterfactual."""
    code, stdout, stderr = run_cli(
        "counterfactuals", "example:clock", "--classes", "bubble", "--paper-defaults", "--out", str(tmp_path)
    )
    assert code == 0, stderr
    assert "bubble (971): p 0.44 → 0.00: lowered, not a counterfactual" in stdout


# --------------------------------------------------------------------------------------------- classes


def test_classes_search():
    code, stdout, _ = run_cli("classes", "egyptian", "--limit", "3")
    assert code == 0
    assert stdout.split() == ["285", "Egyptian", "cat"]
    assert run_cli("classes", "qqqqzzzz")[0] == 1


# --------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def bad_settings(tmp_path):
    def write(content: str) -> str:
        path = tmp_path / "settings.json"
        path.write_text(content)
        return str(path)

    return write


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain", "no/such/photo.jpg"], "'no/such/photo.jpg': file not found"),
        (["explain", "example:dog"], "no bundled example named 'dog'"),
        (["explain", "example:chelsea", "--method", "Magic"], "unknown method 'Magic'; available: SoftPullback"),
        (["explain", "example:chelsea", "--temperatures", "relu"], "write FAMILY=VALUE pairs"),
        (["explain", "example:chelsea", "--temperatures", "relu=hot"], "cannot read temperature 'hot'"),
        (["explain", "example:chelsea", "--temperatures", "rleu=0.5"], "unknown temperature family 'rleu'"),
        (["explain", "example:chelsea", "--settings", "missing.json"], "settings file 'missing.json' does not exist"),
        (["compare", "example:chelsea", "--steps", "0"], "argument --steps: must be at least 1"),
    ],
)
def test_bad_arguments_fail_fast_with_exit_code_2(argv, message):
    code, _, stderr = run_cli(*argv)
    assert code == 2
    assert message in stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"temperature": {"relu": 0.5}}', "unknown key(s) temperature"),
        ('{"temperatures": {"reluu": 0.5}}', "unknown temperature family 'reluu'"),
        ('{"temperatures": {"relu": -1}}', "non-negative"),
        ('{"temperatures": {}, "ascent": {"steps": 0}}', "steps must be a positive integer"),
    ],
)
def test_bad_settings_files_are_named_and_explained(bad_settings, content, message):
    code, _, stderr = run_cli("counterfactuals", "example:chelsea", "--settings", bad_settings(content))
    assert code == 2
    assert "settings file" in stderr and message in stderr


def test_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    code, _, stderr = run_cli("explain", str(tmp_path))
    assert code == 2
    assert f"folder {str(tmp_path)!r} contains no images" in stderr


def test_unknown_model():
    # "embedded:" skips the search for close names among timm's thousand models, which is slow
    code, _, stderr = run_cli("explain", "example:chelsea", "--model", "embedded:efficientnet_lite9")
    assert code == 2
    assert "no embedded model named 'efficientnet_lite9'; embedded: efficientnet_lite0" in stderr


@pytest.mark.parametrize(
    ("target", "message"),
    [("cat", "target 'cat' matches 358 (polecat), 282 (tiger cat)"), ("zebbra cat", "closest: ")],
)
def test_unknown_or_ambiguous_class_name_suggests_names(tmp_path, target, message):
    code, _, stderr = run_cli("explain", "example:chelsea", "--target", target, "--out", str(tmp_path))
    assert code == 2
    assert message in stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_an_error_not_a_fallback():
    code, _, stderr = run_cli("explain", "example:chelsea", "--device", "cuda")
    assert code == 2
    assert "CUDA is not available" in stderr


# --------------------------------------------------------------------------------------------- entry point


def test_module_entry_point_help_in_a_fresh_interpreter():
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "semantic_pullbacks", "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for command in ("explain", "compare", "counterfactuals", "classes"):
        assert command in done.stdout


_LOADED = """
import sys
from semantic_pullbacks.cli import main
try:
    code = main(%r)
except SystemExit as exit_:
    code = exit_.code
heavy = ("matplotlib", "gradio", "semantic_pullbacks.cli.explain", "semantic_pullbacks.cli.evaluate")
print(code, sorted(m for m in heavy if m in sys.modules))
"""


@pytest.mark.parametrize("argv", [["--help"], ["classes", "tabby"], []])
def test_help_and_classes_load_no_other_command(argv):
    """A command's module, and the plotting and web stacks it imports, load only when that command runs
    (``visualize`` itself may load: it imports matplotlib only where it draws)."""
    done = subprocess.run([sys.executable, "-c", _LOADED % (argv,)], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines()[-1] == ("2 []" if not argv else "0 []"), done.stderr


def test_a_command_whose_extra_is_missing_names_the_extra_to_install():
    # ``None`` in sys.modules makes ``import gradio`` fail as it does where Gradio is not installed
    child = "import sys; sys.modules['gradio'] = None; from semantic_pullbacks.cli import main; sys.exit(main(['app']))"
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: app needs gradio: pip install 'semantic-pullbacks[app]'"
