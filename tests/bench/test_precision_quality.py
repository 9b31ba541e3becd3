"""bench.precision_quality: each recipe is scored against a crop of its own size, and bad input is refused."""

from __future__ import annotations

import pytest
import torch

from bench import precision_quality as pq


def test_the_224_px_recipe_is_the_shipped_texture_preset_and_only_run_when_asked_for():
    recipes = pq.recipes()
    assert recipes["texture"].image_size == 224
    assert recipes["texture"].schedule == "layer_by_layer"
    assert "texture" not in pq.DEFAULT_RECIPES and set(pq.DEFAULT_RECIPES) <= set(recipes)


@pytest.mark.parametrize("name, size", [("texture-fast", 64), ("project", 64), ("texture", 224)])
def test_each_recipe_is_scored_against_a_crop_of_its_own_size(name, size):
    assert pq.exemplar_of(pq.recipes()[name]).shape == (1, 3, size, size)


def test_a_run_at_another_size_learns_and_is_scored_at_that_size(monkeypatch):
    monkeypatch.setenv("GCN_AMP", "off")  # pq.one sets it: restored after the test
    torch.manual_seed(0)
    preset = pq.recipes()["texture"].replace(image_size=48, iterations=1, langevin_steps=2)
    r = pq.one("texture", preset, "fp32", 0, pq.exemplar_of(preset))
    assert r["size"] == 48 and r["precision"] == "fp32" and r["iterations"] >= 1
    assert r["floor_patch_swd"] > 0 and r["patch_swd"] > 0


def test_bf16_sampling_autocasts_the_sampler_and_not_the_parameter_gradient(monkeypatch):
    monkeypatch.setenv("GCN_AMP", "off")
    made = []
    real = pq.make_learner
    monkeypatch.setattr(pq, "make_learner", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    preset = pq.recipes()["project"].replace(image_size=32, iterations=1, langevin_steps=2)
    r = pq.one("project", preset, "bf16-sampling", 0, pq.exemplar_of(preset))
    (learner,) = made
    assert r["precision"] == "bf16-sampling"
    assert learner.sampler.amp is True and learner.amp is False


@pytest.mark.parametrize("argv, words", [(["--recipes", "nope"], "unknown recipe(s) nope"),
                                         (["--recipes", ","], "(none given)"),
                                         (["--precisions", "fp16"], "unknown precision(s) fp16"),
                                         (["--seeds", "0"], "at least 1")])
def test_bad_arguments_exit_2_with_a_one_line_reason(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        pq.main(argv)
    assert e.value.code == 2
    assert words in capsys.readouterr().err


def test_results_are_written_where_the_benchmarks_write_theirs(monkeypatch, tmp_path, capsys):
    """GCN_BENCH_OUT (read into common.OUT) moves every benchmark's results, this one's too."""
    monkeypatch.setattr(pq.common, "OUT", tmp_path)

    def scored(name, preset, precision, seed, exemplar):  # the learning itself is tested above
        return {"recipe": name, "precision": precision, "seed": seed, "learn_s": 1.0, "iterations": 1,
                "size": preset.image_size, "patch_swd": 0.2, "copy_max_ncc": 0.5, "diversity": 9.0,
                "floor_patch_swd": 0.1}

    monkeypatch.setattr(pq, "one", scored)
    pq.main(["--seeds", "1", "--recipes", "project", "--precisions", "fp32",
             "--threads", str(torch.get_num_threads())])
    (written,) = tmp_path.glob("precision-quality-*-project-seeds0-0.json")
    assert str(written) in capsys.readouterr().out
