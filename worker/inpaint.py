"""Inpainting (recovery) job: a learned model, an image and a mask (or a fraction of pixels to
drop) -> the observed image, the recovery and the original as PNGs, and the error on the
missing pixels beside the model-free mean and blur fills."""

from __future__ import annotations

from models.inpaint import ORDER, default_init, inpaint_image
from models.presets import inpaint_steps
from models.transforms import make_grid
from service.artifacts import keys, png_bytes

from .jobrun import JobRun
from .sample import _load


def run_inpainting(run: JobRun) -> None:
    p = run.job.params
    model, _ = _load(run)
    steps = inpaint_steps(model.preset) if p.get("steps") is None else p["steps"]
    init = p.get("init") or default_init(model)
    size = p.get("size") or model.preset.image_size
    mask = None
    if p.get("drop") is None:
        mask = str(run.artifacts.path(keys.job_mask(run.id)))
    index = model.category_index(0 if p.get("category") is None else p["category"])
    info = {"init": init, "size": size, "noise": p.get("noise", True), "category": model.category_names[index]}
    run.tick(0, steps, metrics=info, force=True)

    def on_step(t: int, total: int, _x) -> None:
        run.tick(t, total, metrics=info)

    result = inpaint_image(
        model, str(run.artifacts.path(keys.job_input(run.id))), mask=mask, drop=p.get("drop"), size=size,
        steps=steps, noise=p.get("noise", True), init=init, seed=p.get("seed", 0), category=index,
        callback=on_step, callback_every=1,
    )
    images = result.images()
    for k, im in enumerate(images):
        run.artifacts.put(keys.job_image(run.id, k), png_bytes(im))
    run.artifacts.put(keys.job_grid(run.id), png_bytes(make_grid(images, columns=len(images))))
    run.tick(steps, steps, eta=0.0, metrics=info, force=True)
    run.succeed({
        "images": len(images), "order": ORDER, "size": size, "steps": steps, "init": init,
        "noise": p.get("noise", True), "seed": p.get("seed", 0), "missing_fraction": result.missing_fraction,
        "errors": result.errors, "category": model.category_names[index], "device": str(model.device),
    })
