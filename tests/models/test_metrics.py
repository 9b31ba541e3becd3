"""Offline quality metrics on real textures (skimage brick and grass, 512 x 512 grayscale)."""

import json
import math

import numpy as np
import pytest
import torch

skdata = pytest.importorskip("skimage.data")

from models import metrics as M  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Small tensors: one thread is fastest and immune to other processes competing for cores.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _rgb(gray: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(gray.astype(np.float32))[None, None].repeat(1, 3, 1, 1)


@pytest.fixture(scope="module")
def brick() -> torch.Tensor:
    return _rgb(skdata.brick())


@pytest.fixture(scope="module")
def grass() -> torch.Tensor:
    return _rgb(skdata.grass())


def _crop(x, y, x0, s, w=None):
    return x[..., y : y + s, x0 : x0 + (w or s)].contiguous()


def _noise(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * 40 + 128).clamp(0, 255)


@pytest.fixture(scope="module")
def sets(brick, grass):
    s = 128
    ref = _crop(brick, 0, 0, s)
    return {
        "ref": ref,
        "brick": _crop(brick, 0, s, s),  # adjacent, disjoint
        "grass": _crop(grass, 0, 0, s),
        "noise": _noise((1, 3, s, s)),
        "const": torch.full((1, 3, s, s), 128.0),
    }


def test_pyramid_of_constant_has_no_band_pass_energy():
    for h, w in [(64, 64), (33, 38), (47, 52)]:
        levels = M._laplacian_pyramid(torch.full((1, 3, h, w), 100.0), 3)
        for lvl in levels[:-1]:
            assert lvl.abs().max() < 1e-3
        assert abs(float(levels[-1].mean()) - 100.0) < 1e-3


def test_patch_swd_self_is_zero_and_levels(sets):
    r = M.patch_swd(sets["ref"], sets["ref"])
    assert r["mean"] < 1e-6
    assert len(r["levels"]) == 4  # 128 -> 64 -> 32 -> 16
    assert len(M.patch_swd(_crop(sets["ref"], 0, 0, 64), sets["ref"])["levels"]) == 3
    assert len(M.patch_swd(_crop(sets["ref"], 0, 0, 32), sets["ref"])["levels"]) == 2


def test_patch_swd_orders_real_vs_other_textures(sets):
    swd = {k: M.patch_swd(sets[k], sets["ref"])["mean"] for k in ("brick", "grass", "noise", "const")}
    assert swd["brick"] < 0.7 * swd["grass"], swd
    assert swd["brick"] < 0.7 * swd["noise"], swd
    assert swd["brick"] < 0.3 * swd["const"], swd
    # Per level too, on the finest (texture detail) level.
    fine = {k: M.patch_swd(sets[k], sets["ref"])["levels"][0] for k in ("brick", "grass", "noise")}
    assert fine["brick"] < 0.5 * min(fine["grass"], fine["noise"]), fine


def test_gram_and_spectrum_order_the_same_way(sets):
    ref = sets["ref"]
    gram = {k: M.gram_distance(sets[k], ref) for k in ("brick", "grass", "noise", "const")}
    spec = {k: M.spectrum_distance(sets[k], ref) for k in ("brick", "grass", "noise", "const")}
    for d in (gram, spec):
        assert d["brick"] < 0.6 * min(d["grass"], d["noise"], d["const"]), d
    assert M.gram_distance(ref, ref) < 1e-9
    assert M.spectrum_distance(ref, ref) < 1e-9


def test_spectrum_compares_across_sizes():
    n = _noise((1, 3, 256, 256), seed=3)
    # Same white noise, different sizes: nearly equal spectra (size-normalised frequencies/power).
    assert M.spectrum_distance(_crop(n, 0, 0, 64), n) < 0.2
    assert M.spectrum_distance(_crop(n, 0, 0, 64), n) < 0.2 * M.spectrum_distance(
        torch.full((1, 3, 64, 64), 50.0), n
    )


def test_copy_guard_detects_copies_and_not_noise(brick, grass):
    region = _crop(brick, 100, 100, 160)
    piece = _crop(brick, 137, 191, 64)  # cut from inside region, at an arbitrary offset
    r = M.copy_guard(piece, region)
    assert r["max_ncc"] > 0.999 and r["mean_ncc"] > 0.999, r
    # Up to a brightness/contrast change it is still a copy (NCC is invariant to both).
    r2 = M.copy_guard(piece * 0.5 + 40.0, region)
    assert r2["mean_ncc"] > 0.999, r2
    n = M.copy_guard(_noise((2, 3, 64, 64)), region)
    assert n["max_ncc"] < 0.3, n
    g = M.copy_guard(_crop(grass, 0, 0, 64), region)
    assert g["mean_ncc"] < 0.7, g
    assert 0.0 <= n["mean_ncc"] <= n["max_ncc"] <= 1.0


def test_copy_guard_caps_patches_deterministically(brick):
    samples = torch.cat([_crop(brick, 8 * i, 16 * i, 224) for i in range(4)])
    exemplar = _crop(brick, 250, 250, 96)
    a = M.copy_guard(samples, exemplar, max_patches=64, seed=1)
    b = M.copy_guard(samples, exemplar, max_patches=64, seed=1)
    assert a == b


def test_diversity(brick):
    x = _crop(brick, 0, 0, 64)
    assert M.diversity(x.repeat(3, 1, 1, 1)) == 0.0
    assert M.diversity(x) == 0.0
    two = torch.cat([torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 10.0)])
    assert math.isclose(M.diversity(two), 10.0, rel_tol=1e-9)
    assert M.diversity(torch.cat([x, _crop(brick, 200, 200, 64)])) > 5.0


def test_split_exemplar_disjoint_halves():
    img = torch.arange(3 * 10 * 7, dtype=torch.float32).reshape(1, 3, 10, 7)  # tall
    a, b = M.split_exemplar(img)
    assert a.shape == b.shape == (1, 3, 5, 7)
    assert torch.equal(torch.cat([a, b], dim=2), img)
    wide = torch.arange(3 * 6 * 9, dtype=torch.float32).reshape(1, 3, 6, 9)
    a, b = M.split_exemplar(wide)
    assert a.shape == b.shape == (1, 3, 6, 4)
    assert torch.equal(a, wide[..., :4]) and torch.equal(b, wide[..., 5:])


def test_real_floor_is_below_other_texture(brick, grass):
    exemplar = _crop(brick, 0, 0, 128)
    floor = M.real_floor(exemplar)
    other = M.evaluate(torch.cat([_crop(grass, 64 * i, 0, 128) for i in range(4)]), exemplar)
    assert other["floor"]["patch_swd"] == pytest.approx(floor["patch_swd"])
    assert floor["patch_swd"] < 0.7 * other["patch_swd"], (floor, other)
    assert floor["gram"] < 0.6 * other["gram"], (floor, other)
    assert floor["spectrum"] < 0.6 * other["spectrum"], (floor, other)


def test_evaluate_json_deterministic_and_mixed_sizes(brick):
    samples = torch.cat([_crop(brick, 300 + 10 * i, 40 * i, 64) for i in range(4)])
    exemplar = torch.cat([_crop(brick, 0, 0, 96), _crop(brick, 100, 300, 96)])  # K = 2
    r1 = M.evaluate(samples, exemplar, seed=0)
    r2 = M.evaluate(samples, exemplar, seed=0)
    r3 = M.evaluate(samples, exemplar, seed=5)
    assert json.loads(json.dumps(r1)) == r1 == r2
    assert r3["patch_swd"] != r1["patch_swd"]
    keys = {"patch_swd", "patch_swd_levels", "gram", "spectrum", "copy_max_ncc", "copy_mean_ncc", "diversity", "floor"}
    assert keys <= set(r1)
    assert {"patch_swd", "gram", "spectrum", "copy_max_ncc"} <= set(r1["floor"])
    for v in [r1[k] for k in keys - {"floor", "patch_swd_levels"}] + r1["patch_swd_levels"]:
        assert isinstance(v, float) and math.isfinite(v)
    assert r1["diversity"] > 0.0


@pytest.mark.parametrize(
    "shape_a,shape_b",
    [((4, 3, 64, 64), (1, 3, 64, 64)), ((2, 3, 32, 32), (1, 3, 96, 96)), ((3, 3, 40, 56), (1, 3, 32, 48))],
)
def test_small_and_different_sizes_work(brick, shape_a, shape_b):
    a = torch.cat([_crop(brick, 50 * i, 30 * i, shape_a[2], shape_a[3]) for i in range(shape_a[0])])
    b = _crop(brick, 300, 300, shape_b[2], shape_b[3])
    r = M.evaluate(a, b)
    flat = [r[k] for k in ("patch_swd", "gram", "spectrum", "copy_max_ncc", "copy_mean_ncc")]
    flat += list(r["floor"].values())[:1] + r["patch_swd_levels"]
    assert all(math.isfinite(v) for v in flat), r
    assert M.patch_swd(a, b, seed=2) == M.patch_swd(a, b, seed=2)
