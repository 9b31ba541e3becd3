"""Sampling and reconstruction jobs: a learned model -> PNGs (each image and a grid).

Both take ``category`` (a name or an index of the model's categories; default the first), and
their results name it."""

from __future__ import annotations

from models import checkpoint
from models.pipeline import default_init, pick_device, reconstruct_image, sample_images, synthesize
from models.transforms import make_grid
from service.artifacts import keys, png_bytes

from .jobrun import JobRun


def _load(run: JobRun):
    model_id = run.job.model_id or ""
    if run.store.model(model_id) is None or not run.artifacts.exists(keys.model_weights(model_id)):
        raise ValueError(f"model {model_id} no longer exists")
    return checkpoint.load(run.artifacts.path(keys.model_weights(model_id)), pick_device(run.settings.device))


def run_sampling(run: JobRun) -> None:
    p = run.job.params
    model, state = _load(run)
    chains = state[1].get("chains") if state else None
    size = p.get("size") or model.preset.image_size
    steps = model.preset.sample_steps if p.get("steps") is None else p["steps"]
    init = p.get("init") or default_init(model, chains, size)
    n = p["n"]
    # a name (the API resolves the request's name or index to one) or an index; None: the first
    index = model.category_index(0 if p.get("category") is None else p["category"])
    category = model.category_names[index]
    info = {"init": init, "size": size, "category": category}
    run.tick(0, steps, metrics=info, force=True)

    def on_step(t: int, total: int, _x) -> None:
        run.tick(t, total, metrics=info)

    x = synthesize(model, n, size=size, steps=steps, seed=p.get("seed", 0), init=init, chains=chains,
                   callback=on_step, callback_every=1, category=index)
    images, grid = sample_images(model, x)
    for k, im in enumerate(images):
        run.artifacts.put(keys.job_image(run.id, k), png_bytes(im))
    run.artifacts.put(keys.job_grid(run.id), png_bytes(grid))
    run.tick(steps, steps, eta=0.0, metrics=info, force=True)
    run.succeed({"images": len(images), "size": size, "steps": steps, "init": init, "seed": p.get("seed", 0),
                 "category": category, "category_index": index, "device": str(model.device)})


def run_reconstruction(run: JobRun) -> None:
    model, _ = _load(run)
    category = run.job.params.get("category")  # None: a job queued before reconstructions took one
    index = model.category_index(0 if category is None else category)
    run.tick(0, 1, force=True)
    original, rebuilt = reconstruct_image(model, str(run.artifacts.path(keys.job_input(run.id))), index)
    run.artifacts.put(keys.job_image(run.id, 0), png_bytes(original))
    run.artifacts.put(keys.job_image(run.id, 1), png_bytes(rebuilt))
    run.artifacts.put(keys.job_grid(run.id), png_bytes(make_grid([original, rebuilt], columns=2)))
    run.tick(1, 1, eta=0.0, force=True)
    run.succeed({"images": 2, "size": model.preset.image_size, "order": ["input", "reconstruction"],
                 "category": model.category_names[index], "category_index": index})
