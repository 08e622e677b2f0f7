"""``explain`` reruns: a plain rerun recomputes; ``--resume`` skips only the very files finished before (not a
changed image with the same name); stochastic methods are seeded per image, whatever the batch."""

from __future__ import annotations

import os
import shutil

import numpy as np
from PIL import Image

from semantic_pullbacks.examples import example_path
from test_cli import run_cli, written

GRADIENT = ("--method", "Gradient", "--target", "967", "--save-tensors", "npy")


def test_a_plain_rerun_of_the_quick_start_recomputes_and_rewrites(tmp_path):
    out = str(tmp_path / "out")
    first = run_cli("explain", "example:chelsea", "--out", out)
    second = run_cli("explain", "example:chelsea", "--out", out)
    assert first[0] == second[0] == 0, second[2]
    assert "top-5 of efficientnet_lite0" in second[1]
    assert written(second[1]) == written(first[1]) and len(written(first[1])) == 1


def test_resume_skips_the_same_file_but_not_a_changed_one_with_the_same_name(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("coffee", "rocket"):
        shutil.copy(example_path(name), photos / f"{name}.jpg")
    out = str(tmp_path / "out")
    assert run_cli("explain", str(photos), *GRADIENT, "--out", out)[0] == 0
    before = np.load(tmp_path / "out" / "coffee_Gradient_967-espresso.npy")

    code, stdout, stderr = run_cli("explain", str(photos), *GRADIENT, "--resume", "--out", out)
    assert code == 0, stderr
    assert "2 of 2 images were already explained" in stdout and not written(stdout)

    # the same name, another picture (and another modification time): explained again, not skipped
    Image.open(example_path("chelsea")).convert("RGB").save(photos / "coffee.jpg")
    os.utime(photos / "coffee.jpg", ns=(1, 1))
    code, stdout, stderr = run_cli("explain", str(photos), *GRADIENT, "--resume", "--out", out)
    assert code == 0, stderr
    assert "1 of 2 images were already explained" in stdout
    assert [p.name for p in written(stdout)] == ["coffee_Gradient_967-espresso.png", "coffee_Gradient_967-espresso.npy"]
    assert not np.allclose(np.load(tmp_path / "out" / "coffee_Gradient_967-espresso.npy"), before)

    code, stdout, _ = run_cli("explain", str(photos), *GRADIENT, "--no-resume", "--out", out)
    assert code == 0 and len(written(stdout)) == 4


def test_a_stochastic_map_is_the_same_alone_or_in_a_batch(tmp_path):
    args = ("--method", "GradientShap", "--target", "285", "--save-tensors", "npy", "--seed", "3")
    alone, together = str(tmp_path / "alone"), str(tmp_path / "together")
    assert run_cli("explain", "example:chelsea", *args, "--out", alone)[0] == 0
    code, _, stderr = run_cli(
        "explain", "example:coffee", "example:chelsea", *args, "--batch-size", "2", "--out", together
    )
    assert code == 0, stderr
    name = "chelsea_GradientShap_285-egyptian-cat.npy"
    a, b = np.load(tmp_path / "alone" / name), np.load(tmp_path / "together" / name)
    assert np.array_equal(a, b)
    other = np.load(tmp_path / "together" / "coffee_GradientShap_285-egyptian-cat.npy")
    assert not np.allclose(a, other)
