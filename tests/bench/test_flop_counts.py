"""The benchmarks' GFLOP/s rest on two FLOP counts written apart on purpose: bench.common's from
the presets' layer specs (what the issue asks: "counted from the layer shapes") and the net's own
``EnergyNet.pass_flops`` from its built convolutions (what models.cpu_split and models.cpu_layout
use to decide whether a pass is worth splitting). Each checks the other here, per preset, size
and depth, so that neither can drift (a stride or padding rule changed in one place only)."""

from __future__ import annotations

import pytest
import torch

from bench import common
from models.model import GenerativeModel
from models.presets import get_preset, preset_names


@pytest.mark.parametrize("name", preset_names())
@pytest.mark.parametrize("size", [64, 100, 224])
def test_the_layer_spec_count_equals_the_built_nets_count(name, size):
    try:
        preset = get_preset(name).replace(image_size=size)
    except ValueError as exc:  # a size the preset's layers cannot take
        pytest.skip(f"{name} at {size} px: {exc}")
    net = GenerativeModel.create(preset, torch.zeros(3)).net
    depths = range(1, len(net.convs) + 1) if net.categories == 1 else [len(net.convs)]
    for depth in depths:
        net.set_depth(depth)
        assert common.langevin_step_flops(preset.layers, (size, size), depth) == net.pass_flops((1, 3, size, size)), depth
        assert 2 * common.langevin_step_flops(preset.layers, (size, size), depth) == net.pass_flops((2, 3, size, size))
