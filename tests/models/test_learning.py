"""Learning on real data: a small texture preset on a 64 x 64 brick crop learns something real."""

from __future__ import annotations

import statistics

import pytest
import torch

from models import Cancelled, NumericalError, checkpoint, cpu_conv, get_preset
from models.metrics import evaluate
from models.pipeline import make_learner, synthesize, train
from models.transforms import load_pixels, to_pixels


@pytest.mark.slow
def test_texture_fast_shrinks_the_gap_and_its_samples_approach_the_exemplar(brick64, monkeypatch):
    # One trajectory of a chaotic system: float rounding moves it (on 6 seeds the samples' patch
    # SWD spread 0.12-0.26 whatever the rounding, docs/benchmarks.md), so the choices this
    # machine times (NNPACK or oneDNN per layer, the activations' format) are pinned: oneDNN and
    # channels-last, the same arithmetic in every run here.
    monkeypatch.setattr(cpu_conv, "_policy", "onednn")
    learner = make_learner([brick64], get_preset("texture-fast"), device=torch.device("cpu"))
    exemplar = load_pixels([brick64], 64)

    first_synthesis = []

    def keep_first(learner, progress):
        if progress.iteration == 1:
            first_synthesis.append(to_pixels(learner.synthesis, learner.model.mean).clamp(0, 255))

    learner.run(keep_first)
    history = learner.model.history

    def relative_gap(rows):
        return statistics.mean(abs(r["gap"]) / max(abs(r["f_obs"]), 1e-8) for r in rows)

    early, late = relative_gap(history[:10]), relative_gap(history[-30:])
    assert late < 0.6 * early, (early, late)  # margins leave room for float-rounding differences between machines

    # a fresh draw from noise, not the learner's own chains, compared with the initial chains
    samples = to_pixels(synthesize(learner.model, 4, seed=1), learner.model.mean).clamp(0, 255)
    initial = evaluate(first_synthesis[0], exemplar, num_threads=1)
    learned = evaluate(samples, exemplar, num_threads=1)
    assert learned["patch_swd"] < 0.8 * initial["patch_swd"], (initial["patch_swd"], learned["patch_swd"])
    assert learned["spectrum"] < 0.3 * initial["spectrum"], (initial["spectrum"], learned["spectrum"])
    assert learned["diversity"] > 10 and samples.std() > 10  # several different, non-flat images


def test_nan_stops_learning_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path, brick64):
    preset = get_preset("texture-fast").replace(
        iterations=4, image_size=32, layers=[[8, 5, 2, 2]], langevin_steps=2, n_chains=2
    )
    out = tmp_path / "m.safetensors"
    train([brick64], preset.replace(iterations=2), out, checkpoint_every=1)

    def poison(learner, progress):  # runs after iteration 3 was checkpointed
        with torch.no_grad():
            learner.model.net.convs[0].weight.fill_(float("nan"))

    with pytest.raises(NumericalError, match="NaN/inf at iteration 4"):
        train([brick64], preset, out, checkpoint_every=1, resume=True, on_progress=poison)
    model, state = checkpoint.load(out)
    assert state[0]["iteration"] == 3 and torch.isfinite(model.net.convs[0].weight).all()


def test_cancel_from_the_progress_callback_stops_learning(brick64, tmp_path):
    preset = get_preset("texture-fast").replace(iterations=50, image_size=32, layers=[[8, 5, 2, 2]], langevin_steps=2)
    seen = []

    def cancel_at_three(learner, progress):
        seen.append(progress.iteration)
        if progress.iteration == 3:
            raise Cancelled()

    with pytest.raises(Cancelled):
        train([brick64], preset, tmp_path / "m.safetensors", checkpoint_every=1, on_progress=cancel_at_three)
    assert seen == [1, 2, 3]
    _, state = checkpoint.load(tmp_path / "m.safetensors")
    assert state[0]["iteration"] == 3  # the checkpoint of the last finished iteration is there to resume


def test_contrastive_divergence_and_layer_by_layer_run(brick64, faces):
    cd = get_preset("cd").replace(
        image_size=32, layers=[[8, 5, 2, 2], [8, 3, 1, 1]], iterations=3, lr=1e-3
    )
    learner = make_learner(faces[:3], cd, device=torch.device("cpu"))
    learner.run()
    assert learner.iteration == 3 and learner.synthesis.shape == (3, 3, 32, 32)

    lbl = get_preset("texture").replace(image_size=40, layers=[[8, 7, 3, 2], [8, 3, 1, 1], [4, 3, 1, 1]], iterations=2)
    learner = make_learner([brick64], lbl, device=torch.device("cpu"))
    depths = []
    learner.run(lambda l, p: depths.append(l.model.net.depth))
    assert depths == [1, 1, 2, 2, 3, 3]
    assert [h["stage"] for h in learner.model.history] == [1, 1, 2, 2, 3, 3]
