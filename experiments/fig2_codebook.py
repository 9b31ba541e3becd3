"""Figure 2 of the release: the "codebook" experiment on one image, layer by layer.

    python experiments/fig2_codebook.py --scale cpu --data grass     # minutes on 1 CPU thread
    python experiments/fig2_codebook.py --scale paper --data brick   # the release's settings (GPU)

paper: the ``codebook`` preset exactly (frame_3 net; 224 px; persistent chains from zeros, 1 chain;
T = 20, delta = 0.3, sigma = 1; 3 stages x 700 iterations; Gamma 1e-3 divided by 2.5 each stage;
the release's SGD rule). The release ran it on a photograph (a rose); here one scikit-image texture.

Interpretation (recorded in metrics.json): the release's top for this figure is its "frame layers";
the library treats ``kind=codebook`` exactly like a texture (f = sum of the top ReLU map), so this
figure differs from figure 1 only in T and the learning-rate schedule. The learned first-layer
filters (the codebook of local patterns) are shown in the panel and in filters.png.

cpu: the same recipe with only ``CPU`` below changed: the image side, with the release's pixel
scale kept (a centre crop of 512 * 96 / 224 = 219 px fitted to 96 px, see common.texture_image).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from models import get_preset  # noqa: E402

FIGURE = "fig2_codebook"
CPU = {"image_size": 96}


def main(argv=None) -> None:
    args = common.parser(__doc__.splitlines()[0], common.TEXTURES, "grass").parse_args(argv)
    device, out = common.resolve(args, FIGURE)
    preset, shrunk = common.shrink(get_preset("codebook"), CPU if args.scale == "cpu" else {}, args.overrides)
    images = [common.texture_image(args.data, preset.image_size)]
    notes = [
        "interpreted: the release's 'frame layers' top of the codebook figure is implemented by the "
        "library as the texture top (sum of the top ReLU map)",
        "the release's data (a rose photograph) is not available; one scikit-image texture instead",
        f"exemplar: centre {images[0].width} px crop of skimage.data.{args.data}() (512 px, gray -> RGB), "
        f"fitted to {preset.image_size} px: the release's pixel scale (512 -> 224)",
        "fresh samples continue the persistent chain (models.pipeline.default_init); samples_noise / "
        "samples_zeros start afresh",
    ]
    common.run(preset, images, out, figure=FIGURE, data_name=args.data, scale=args.scale, shrunk=shrunk,
               notes=notes, device=device, n_samples=args.samples, show_filters=True)


if __name__ == "__main__":
    main()
