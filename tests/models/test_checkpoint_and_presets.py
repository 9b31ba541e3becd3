"""Checkpoints round-trip exactly, resume continues exactly, bad files and options fail clearly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from models import CheckpointError, PresetError, checkpoint, get_preset, preset_names
from models.pipeline import make_learner, synthesize

TINY = dict(image_size=32, layers=[[8, 5, 2, 2], [8, 3, 1, 1]], iterations=6, langevin_steps=3, n_chains=2)


def tiny_learner(image, **changes):
    preset = get_preset("texture-fast").replace(**{**TINY, **changes})
    return make_learner([image], preset, device=torch.device("cpu"))


def test_round_trip_is_exact(tmp_path, brick64):
    learner = tiny_learner(brick64)
    learner.run()
    path = checkpoint.save(tmp_path / "m.safetensors", learner.model, learner)

    model, state = checkpoint.load(path)
    for (name, a), (_, b) in zip(learner.model.net.state_dict().items(), model.net.state_dict().items()):
        assert torch.equal(a, b), name
    assert model.preset == learner.model.preset
    assert torch.equal(model.mean, learner.model.mean)
    assert model.history == learner.model.history and len(model.history) == 6
    assert torch.equal(state[1]["chains"], learner.chains)
    a = synthesize(learner.model, 2, steps=4, seed=3, init="noise")
    b = synthesize(model, 2, steps=4, seed=3, init="noise")
    assert torch.equal(a, b)


@pytest.mark.parametrize("optimizer", ["adam", "release"])
def test_resume_continues_exactly_where_it_stopped(tmp_path, brick64, optimizer):
    straight = tiny_learner(brick64, optimizer=optimizer, learner="ml")
    straight.run()

    first = tiny_learner(brick64, optimizer=optimizer, learner="ml")
    first.run(max_iterations=4)
    path = checkpoint.save(tmp_path / "m.safetensors", first.model, first)
    resumed = make_learner([brick64], first.preset, device=torch.device("cpu"), resume_from=path)
    assert resumed.iteration == 4
    resumed.run()

    assert resumed.iteration == straight.iteration == 6
    for (name, a), (_, b) in zip(straight.model.net.state_dict().items(), resumed.model.net.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert [h["gap"] for h in resumed.model.history] == [h["gap"] for h in straight.model.history]


def test_layer_by_layer_resume_keeps_the_stage(tmp_path, brick64):
    learner = tiny_learner(brick64, schedule="layer_by_layer", iterations=3, optimizer="release", learner="ml")
    learner.run(max_iterations=4)  # into stage 2
    assert learner.model.net.depth == 2
    path = checkpoint.save(tmp_path / "m.safetensors", learner.model, learner)
    resumed = make_learner([brick64], learner.preset, device=torch.device("cpu"), resume_from=path)
    assert resumed.model.net.depth == 2 and resumed.chain_stage == 1
    resumed.run()
    assert resumed.iteration == 6 and [h["stage"] for h in resumed.model.history] == [1, 1, 1, 2, 2, 2]


def test_bad_checkpoint_files_give_clear_errors(tmp_path, brick64):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01 definitely not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not a safetensors"):
        checkpoint.load(junk)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError):
        checkpoint.load(empty)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a gcn checkpoint"):
        checkpoint.load(foreign)

    learner = tiny_learner(brick64)
    path = checkpoint.save(tmp_path / "m.safetensors", learner.model)
    config = checkpoint.read_config(path)
    tensors = {f"net.{k}": v for k, v in learner.model.net.state_dict().items()}
    tensors["net.convs.0.weight"] = torch.zeros(1, 1, 1, 1)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={"gcn.config": json.dumps(config)})
    with pytest.raises(CheckpointError, match="do not fit"):
        checkpoint.load(bad)


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, brick64, monkeypatch):
    learner = tiny_learner(brick64)
    path = checkpoint.save(tmp_path / "m.safetensors", learner.model)
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", explode)
    learner.run(max_iterations=1)
    with pytest.raises(OSError):
        checkpoint.save(path, learner.model, learner)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_presets_record_the_release_settings_and_validate_overrides():
    assert set(preset_names()) >= {"texture", "codebook", "object", "cd", "texture-fast", "object-fast"}
    t = get_preset("texture")
    assert (t.langevin_steps, t.step_size, t.iterations, t.lr, t.lr_stage_factor) == (10, 0.3, 700, 5e-4, 0.5)
    assert (t.image_size, t.sigma, t.weight_decay, t.clip, t.bias_lr_mult, t.init_std) == (224, 1.0, 1e-4, 20.0, 2.0, 0.01)
    c = get_preset("cd")
    assert (c.learner, c.schedule, c.langevin_steps, c.step_size, c.momentum, c.iterations) == ("cd", "end_to_end", 1, 0.5, 0.9, 2000)
    assert get_preset("object").top == "fc" and get_preset("codebook").top == "sum"

    p = t.with_overrides(["iterations=3", "lr=0.01", "layers=[[8,3,1,1]]", "schedule=end_to_end"])
    assert (p.iterations, p.lr, p.layers[0].out_channels, p.schedule) == (3, 0.01, 8, "end_to_end")
    with pytest.raises(PresetError, match="unknown preset field"):
        t.with_overrides(["no_such_field=1"])
    with pytest.raises(PresetError, match="step_size must be positive"):
        t.with_overrides(["step_size=-1"])
    with pytest.raises(PresetError, match="key=value"):
        t.with_overrides(["iterations"])
    with pytest.raises(PresetError, match="unknown preset 'nope'"):
        get_preset("nope")
