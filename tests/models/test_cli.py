"""The `gcn` command line as a user runs it: a real process, real files, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

TINY = ["--set", "image_size=32", "--set", "layers=[[8,5,2,2],[8,3,1,1]]", "--set", "langevin_steps=3",
        "--set", "n_chains=2", "--set", "preview_every=2"]


def gcn(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "GCN_TORCH_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "models.cli", *args], capture_output=True, text=True, timeout=240, cwd=cwd, env=env
    )


def gcn_here(*args: str, cwd) -> subprocess.CompletedProcess:
    """The same command line run in this process (typer's CliRunner: the same parser, commands and
    error paths, exit code and stderr apart), for the many bad-input cases: a new interpreter
    importing torch costs seconds per case. The tests above run the real subprocess."""
    from typer.testing import CliRunner

    from models.cli import app

    old = os.getcwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(list(args), r.exit_code, r.stdout, r.stderr)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, brick64):
    folder = tmp_path_factory.mktemp("cli")
    image = folder / "brick.png"
    brick64.save(image)
    model = folder / "brick.safetensors"
    r = gcn("train", str(image), "--preset", "texture-fast", "--iterations", "4", *TINY, "--out", str(model))
    assert r.returncode == 0, r.stderr
    return folder, image, model, r


def test_train_writes_a_checkpoint_and_previews(trained):
    folder, _, model, r = trained
    assert model.is_file()
    previews = sorted((folder / "brick.safetensors.previews").glob("preview_*.png"))
    assert [p.name for p in previews] == ["preview_000002.png", "preview_000004.png"]
    info = json.loads(gcn("info", str(model)).stdout)
    assert info["preset"]["iterations"] == 4 and info["history"]["iterations"] == 4
    assert info["learner"]["iteration"] == 4


def test_resume_extends_learning_and_an_existing_output_is_refused(trained):
    folder, image, model, _ = trained
    r = gcn("train", str(image), "--preset", "texture-fast", "--iterations", "4", *TINY, "--out", str(model))
    assert r.returncode == 2 and "--resume" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    copy = folder / "copy.safetensors"
    copy.write_bytes(model.read_bytes())
    r = gcn("train", str(image), "--iterations", "6", "--resume", "--out", str(copy))
    assert r.returncode == 0, r.stderr
    assert json.loads(gcn("info", str(copy)).stdout)["learner"]["iteration"] == 6


def test_sample_writes_pngs_of_the_asked_size_and_a_grid(trained, tmp_path):
    _, _, model, _ = trained
    r = gcn("sample", str(model), "--n", "3", "--size", "48", "--steps", "5", "--init", "noise", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["grid.png", "sample_000.png", "sample_001.png", "sample_002.png"]
    assert Image.open(tmp_path / "sample_001.png").size == (48, 48)


def test_reconstruct_and_eval(trained, tmp_path):
    _, image, model, _ = trained
    out = tmp_path / "recon.png"
    r = gcn("reconstruct", str(model), str(image), "--out", str(out), "--side-by-side")
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size[0] > Image.open(out).size[1]  # input and reconstruction side by side
    r = gcn("eval", str(model), str(image), "--n", "2", "--steps", "3", "--json", str(tmp_path / "m.json"))
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert {"patch_swd", "gram", "spectrum", "copy_max_ncc", "floor"} <= set(metrics)


def test_presets_lists_every_preset():
    r = gcn("presets")
    assert r.returncode == 0
    for name in ("texture", "codebook", "object", "cd", "texture-fast", "object-fast"):
        assert f"\n{name} " in "\n" + r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["sample", "missing.safetensors", "--out", "x"], "no such checkpoint"),
        (["train", "nope.png", "--out", "m.safetensors"], "nope.png: no such file"),
        (["train", "img.png", "--preset", "nope", "--out", "m.safetensors"], "unknown preset 'nope'"),
        (["train", "img.png", "--set", "sigma=-1", "--out", "m.safetensors"], "sigma must be positive"),
        (["train", "not-an-image.png", "--out", "m.safetensors"], "not a readable image"),
        (["reconstruct", "not-an-image.png", "img.png", "--out", "r.png"], "not a safetensors checkpoint"),
    ],
)
def test_bad_input_gives_one_line_and_a_non_zero_exit(tmp_path, brick64, args, message):
    brick64.save(tmp_path / "img.png")
    (tmp_path / "not-an-image.png").write_bytes(b"GIF89a garbage")
    r = gcn_here(*args, cwd=tmp_path)
    assert r.returncode != 0
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "m.safetensors").exists()


# ---- several categories -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_categories(tmp_path_factory):
    """A model of two categories (horizontal and vertical stripes) from files and a glob."""
    from stripes import HORIZONTAL, VERTICAL

    folder = tmp_path_factory.mktemp("cli-categories")
    for k, im in enumerate(HORIZONTAL):
        im.save(folder / f"h{k}.png")
    for k, im in enumerate(VERTICAL):
        im.save(folder / f"v{k}.png")
    model = folder / "stripes.safetensors"
    r = gcn("train", "--category", f"horizontal={folder / 'h0.png'},{folder / 'h1.png'},{folder / 'h2.png'}",
            "-c", f"vertical={folder / 'v*.png'}", "--iterations", "3", *TINY, "--out", str(model))
    assert r.returncode == 0, r.stderr
    assert "categories horizontal, vertical" in r.stdout
    return folder, model


def test_train_with_categories_and_info_names_them(two_categories, trained):
    _, model = two_categories
    info = json.loads(gcn("info", str(model)).stdout)
    assert info["category_names"] == ["horizontal", "vertical"] and info["preset"]["categories"] == 2
    assert info["learner"]["iteration"] == 3
    _, _, single, _ = trained
    assert json.loads(gcn("info", str(single)).stdout)["category_names"] == ["default"]


def test_sample_a_category_by_name_or_index(two_categories, tmp_path):
    _, model = two_categories
    outs = {}
    for category in ("horizontal", "vertical", "0", "1"):
        out = tmp_path / category
        r = gcn("sample", str(model), "--n", "2", "--steps", "3", "--seed", "1", "--category", category, "--out", str(out))
        assert r.returncode == 0, r.stderr
        name = {"0": "horizontal", "1": "vertical"}.get(category, category)
        assert f"of category {name}" in r.stdout
        outs[category] = (out / "sample_001.png").read_bytes()
    assert outs["horizontal"] == outs["0"] and outs["vertical"] == outs["1"]
    assert outs["horizontal"] != outs["vertical"]


@pytest.mark.parametrize("args, message, code", [
    (["sample", "MODEL", "--category", "diagonal", "--out", "x"],
     "unknown category 'diagonal'; this model has: horizontal, vertical", 1),
    (["sample", "MODEL", "--category", "2", "--out", "x"], "category index 2 out of range", 1),
    (["reconstruct", "MODEL", "IMG", "--category", "-1", "--out", "r.png"], "out of range", 1),
    (["train", "IMG", "--category", "a=IMG", "--out", "m.safetensors"], "not both", 2),
    (["train", "--out", "m.safetensors"], "give the training images, or --category", 2),
    (["train", "--category", "a", "--out", "m.safetensors"], "expected NAME=PATH", 2),
    (["train", "--category", "a=", "--out", "m.safetensors"], "expected NAME=PATH", 2),
    (["train", "--category", "a b=IMG", "-c", "c=IMG", "--out", "m.safetensors"], "a name is 1 to 40", 2),
    (["train", "-c", "a=IMG", "-c", "a=IMG", "--out", "m.safetensors"], "given twice", 2),
    (["train", "-c", "a=IMG", "-c", "b=nothing*.png", "--out", "m.safetensors"], "matches no file", 2),
    (["train", "-c", "a=IMG", "-c", "b=missing.png", "--out", "m.safetensors"], "missing.png: no such file", 1),
    (["train", "-c", "a=IMG", "-c", "b=IMG", "--preset", "texture", "--out", "m.safetensors"],
     "categories must be 1 with schedule layer_by_layer", 1),
])
def test_bad_category_input_gives_one_line_and_the_right_exit(two_categories, tmp_path, brick64, args, message, code):
    _, model = two_categories
    brick64.save(tmp_path / "img.png")
    args = [{"MODEL": str(model), "IMG": "img.png"}.get(a, a.replace("=IMG", "=img.png")) for a in args]
    r = gcn_here(*args, cwd=tmp_path)
    assert r.returncode == code, r.stderr
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "m.safetensors").exists()
