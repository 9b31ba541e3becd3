"""The strided layers' input gradient: its pixel shuffle and crop done as one pass of strided
copies (``models.net.depth_to_space_crop``) give exactly what ``F.pixel_shuffle`` and
``crop_to_input`` give, in the memory format asked for, and the whole pass still equals autograd."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from models import EnergyNet, get_preset
from models.net import crop_to_input, depth_to_space_crop
from models.presets import ConvSpec

FORMATS = [torch.contiguous_format, torch.channels_last]


@pytest.mark.parametrize("s, padding, size, ys", [
    (2, (3, 3), (64, 64), (35, 35)),   # texture-fast's first layer: 7 x 7, stride 2, padding 3
    (3, (2, 2), (224, 224), (77, 77)),  # texture's first layer: 15 x 15, stride 3, padding 2
    (2, (2, 2), (32, 32), (18, 18)),   # a strided second layer (5 x 5, stride 2, padding 2)
    (3, (0, 1), (10, 13), (4, 5)),     # unequal paddings, sizes not multiples of the stride
    (2, (1, 0), (1, 1), (1, 1)),       # smaller than the stride
    (3, (2, 2), (20, 20), (6, 6)),     # rows the stride never reached: the zero-filled fallback
])
@pytest.mark.parametrize("y_format", FORMATS)
@pytest.mark.parametrize("out_format", FORMATS)
def test_the_same_numbers_as_pixel_shuffle_then_crop(s, padding, size, ys, y_format, out_format):
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 3 * s * s, *ys, generator=g).contiguous(memory_format=y_format)
    expected = crop_to_input(F.pixel_shuffle(y, s), padding, size)
    out = depth_to_space_crop(y, s, padding, size, out_format)
    assert out.shape == expected.shape == (2, 3, *size)
    assert torch.equal(out, expected)  # copies only: bitwise the same
    if padding[0] + size[0] <= ys[0] * s and padding[1] + size[1] <= ys[1] * s:
        assert out.is_contiguous(memory_format=out_format)


@pytest.mark.parametrize("preset, layers", [
    ("texture-fast", None),
    ("texture-fast", (ConvSpec(8, 7, 2, 3), ConvSpec(8, 5, 2, 2), ConvSpec(8, 3, 1, 1))),  # two strided layers
])
def test_the_pass_with_strided_layers_equals_autograd_and_gives_the_chains_layout(preset, layers):
    p = get_preset(preset)
    if layers is not None:
        p = p.replace(layers=layers)
    net = EnergyNet(p, generator=torch.Generator().manual_seed(1)).double()
    with torch.no_grad():
        for conv in net.convs:
            conv.bias.uniform_(-0.2, 0.2)
    x = torch.randn(3, 3, 48, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    f, g = net.score_and_grad_view(x)
    f_ref, g_ref = net.score_and_grad_autograd(x)
    assert torch.allclose(f, f_ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(g, g_ref, rtol=1e-9, atol=1e-12)
    assert g.is_contiguous()  # the chains' own layout: their update reads it without a layout change
