"""Learning job: a dataset + a preset -> a model (safetensors weights + a row), with previews.
With ``categories`` in its params (``[{"name", "dataset_id"}, ...]``), one net of several
categories is learned, each from its own dataset; the model row records them.

The checkpoint lives in the job's folder and is rewritten every ``GCN_CHECKPOINT_EVERY``
iterations; a redelivered job finds it and ``models.pipeline.train(resume=True)`` continues from
it. Only when learning completes is it copied to the model's folder and the model row written
(in the same transaction that marks the job succeeded): a canceled or diverged run publishes
nothing.
"""

from __future__ import annotations

import time

from models import checkpoint
from models.pipeline import pick_device, preview, train
from models.presets import get_preset
from service.artifacts import keys, png_bytes
from service.db import TrainedModel
from service.jobs import thin_curve

from .jobrun import JobRun


def run_learning(run: JobRun) -> None:
    job, store, artifacts, settings = run.job, run.store, run.artifacts, run.settings
    params = job.params
    # one category from the job's dataset, or {name: images} for a model of several categories
    wanted = params.get("categories") or [{"name": None, "dataset_id": job.dataset_id or ""}]
    datasets = []
    for c in wanted:
        dataset = store.dataset(c["dataset_id"])
        if dataset is None:
            raise ValueError(f"dataset {c['dataset_id']} no longer exists")
        datasets.append(dataset)

    def images(d) -> list[str]:
        return [str(artifacts.path(keys.dataset_image(d.id, k))) for k in range(d.image_count)]

    if params.get("categories"):
        sources = {c["name"]: images(d) for c, d in zip(wanted, datasets)}
    else:
        sources = images(datasets[0])
    preset = get_preset(params["preset"], params.get("overrides") or {})
    ckpt_key = keys.job_checkpoint(job.id)
    ckpt = artifacts.path(ckpt_key)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    resumed_from = 0
    if ckpt.exists():
        resumed_from = int(checkpoint.read_config(ckpt).get("learner", {}).get("iteration", 0))
    last_preview = [time.monotonic()]
    device = pick_device(settings.device)  # the first touch of CUDA: in the job process, never the parent

    def on_progress(learner, progress) -> None:
        now = time.monotonic()
        due = (progress.iteration % learner.preset.preview_every == 0 or progress.iteration == progress.total
               or now - last_preview[0] >= settings.preview_interval)
        if due:
            artifacts.put(keys.job_preview(job.id), png_bytes(preview(learner)))
            last_preview[0] = now
        metrics = {
            "gap": progress.gap, "f_obs": progress.f_obs, "f_syn": progress.f_syn, "lr": progress.lr,
            "stage": progress.stage, "n_stages": progress.n_stages, "resumed_from": resumed_from,
            "device": str(device),
        }
        run.tick(progress.iteration, progress.total, eta=progress.eta, metrics=metrics, preview=due)

    model = train(
        sources, preset, ckpt, device=device,
        checkpoint_every=settings.checkpoint_every, resume=True, on_progress=on_progress,
    )

    # Publish: the final progress, the weights into the model's folder, then the model row and
    # the job's success in one transaction. A cancel arriving now still wins (tick raises).
    history = model.history
    last = history[-1] if history else {}
    total = model.preset.total_iterations
    run.tick(total, total, eta=0.0, metrics={
        "gap": last.get("gap"), "f_obs": last.get("f_obs"), "f_syn": last.get("f_syn"),
        "stage": last.get("stage"), "n_stages": model.preset.n_stages, "resumed_from": resumed_from,
        "device": str(device),
    }, force=True)
    chains = None
    if model.preset.learner == "ml":  # only maximum likelihood keeps chains worth continuing
        _, state = checkpoint.load(ckpt, "cpu")
        chains = state[1].get("chains") if state else None
    model_id = job.model_id
    assert model_id is not None
    weights_key = keys.model_weights(model_id)
    artifacts.copy(ckpt_key, weights_key)
    categories = [{"name": name, "dataset_id": d.id} for name, d in zip(model.category_names, datasets)]
    row = TrainedModel(
        id=model_id, dataset_id=datasets[0].id, job_id=job.id, preset=params["preset"], kind=model.preset.kind,
        learner=model.preset.learner, image_size=model.preset.image_size,
        chain_size=int(chains.shape[-1]) if chains is not None else None,
        iterations=len(history), config=model.preset.to_dict(), curve=thin_curve(history),
        api_key_id=job.api_key_id, categories=categories,
    )
    result = {"model_id": model_id, "iterations": len(history), "resumed_from": resumed_from, "device": str(device),
              "categories": [c["name"] for c in categories]}
    if run.succeed(result, row):
        artifacts.delete(ckpt_key)
    else:  # the job was taken from this worker meanwhile: publish nothing
        artifacts.delete_tree(keys.model(model_id))
