"""models.precision: GCN_AMP and the CPU's bfloat16 hardware decide whether the net autocasts."""

from __future__ import annotations

import pytest
import torch

from models import cpu_split, precision
from models.inpaint import recover
from models.pipeline import make_learner, synthesize
from models.presets import get_preset

CPU = torch.device("cpu")
AMX = frozenset({"fpu", "avx2", "avx512f", "amx_tile", "amx_bf16"})
ZEN4 = frozenset({"fpu", "avx2", "avx512f", "avx512_bf16"})
AVX2 = frozenset({"fpu", "sse4_2", "avx", "avx2", "fma"})


def test_cpu_flags_are_read_from_the_kernels_list(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert precision.cpu_flags(str(info)) == {"fpu", "avx2", "amx_bf16", "amx_tile"}
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert precision.cpu_flags(str(arm)) == {"fp", "asimd", "bf16"}
    assert precision.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_native_bf16_means_amx_or_avx512_bf16():
    assert precision.native_bf16(AMX) and precision.native_bf16(ZEN4)
    assert not precision.native_bf16(AVX2) and not precision.native_bf16(frozenset())


@pytest.mark.parametrize("value, setting", [("auto", "auto"), ("", "auto"), ("1", "on"), ("ON", "on"),
                                            ("true", "on"), ("0", "off"), (" off ", "off"), ("no", "off")])
def test_amp_setting_accepts_the_usual_spellings(value, setting):
    assert precision.amp_setting(value) == setting


def test_a_bad_amp_setting_is_an_error_that_names_the_variable(monkeypatch):
    with pytest.raises(ValueError, match="GCN_AMP must be auto, on or off, not 'fast'"):
        precision.amp_setting("fast")
    monkeypatch.setenv("GCN_AMP", "fast")
    with pytest.raises(ValueError, match="GCN_AMP"):
        precision.use_amp("cpu")


@pytest.mark.parametrize("flags, cpu_auto", [(AMX, True), (ZEN4, True), (AVX2, False)])
def test_auto_autocasts_on_cuda_and_on_cpus_with_bf16_hardware(monkeypatch, flags, cpu_auto):
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    monkeypatch.delenv("GCN_AMP", raising=False)
    assert precision.use_amp("cpu") is cpu_auto
    assert precision.use_amp("cuda") is True
    assert precision.use_amp("cpu", "off") is False and precision.use_amp("cuda", "off") is False
    assert precision.use_amp("cpu", "on") is True


@pytest.mark.parametrize("flags, setting, expected", [(ZEN4, "auto", True), (AMX, "auto", False), (AVX2, "auto", False),
                                                      (ZEN4, "on", False), (ZEN4, "off", False)])
def test_float32_is_timed_beside_autocast_under_auto_on_a_cpu_without_amx_only(monkeypatch, flags, setting, expected):
    """With AMX bfloat16 was 1.6-3.6x ahead wherever measured: kept untimed (docs/benchmarks.md)."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    assert precision.amp_if_faster("cpu", setting) is expected
    assert precision.amp_if_faster("cuda", setting) is False  # CUDA keeps autocast under auto


def test_the_pipeline_follows_the_setting(monkeypatch, brick64):
    """make_learner's learner, synthesize's sampler and recover (inpainting) autocast exactly when
    use_amp says so."""
    preset = get_preset("texture-fast").replace(image_size=16, iterations=1)
    seen = []
    real_autocast = torch.autocast

    def spy(device_type, *args, enabled=True, **kwargs):
        seen.append(enabled)
        return real_autocast(device_type, *args, enabled=enabled, **kwargs)

    monkeypatch.setattr(torch, "autocast", spy)
    timed = []  # amp_if_faster of every sampling loop
    real_sharing = cpu_split.sharing

    def sharing_spy(*args, **kwargs):
        timed.append(kwargs.get("amp_if_faster", args[5] if len(args) > 5 else False))
        return real_sharing(*args, **kwargs)

    monkeypatch.setattr(cpu_split, "sharing", sharing_spy)
    for flags, env, expected in [(AVX2, "auto", False), (ZEN4, "auto", True), (AMX, "auto", True), (AMX, "off", False),
                                 (AVX2, "on", True)]:
        monkeypatch.setattr(precision, "cpu_flags", lambda flags=flags: flags)
        monkeypatch.setenv("GCN_AMP", env)
        measured = expected and env == "auto" and flags is not AMX  # float32 timed beside autocast (models.cpu_split)
        learner = make_learner([brick64], preset, device=CPU)
        assert learner.amp is expected and learner.sampler.amp is expected
        assert learner.sampler.amp_if_faster is measured
        seen.clear(), timed.clear()
        synthesize(learner.model, 1, seed=0, steps=2)
        assert seen and set(seen) == {expected}, (flags, env, seen)  # a tiny net: never timed, as asked
        assert timed == [measured]
        seen.clear(), timed.clear()
        x = torch.zeros(1, 3, 16, 16)
        known = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
        known[..., :8] = True
        recover(learner.model, x, known, steps=2)
        assert seen and set(seen) == {expected}, ("recover", flags, env, seen)
        assert timed == [measured]
        timed.clear()
        recover(learner.model, x, known, steps=2, amp=expected)  # a caller's own choice is kept as given
        assert timed == [False]


@pytest.mark.parametrize("setting, tf32", [("off", False), ("auto", True), ("on", True)])
def test_float32_everywhere_means_no_tf32_convolutions_on_a_gpu(monkeypatch, setting, tf32):
    """``GCN_AMP=off`` promises float32 everywhere: on CUDA, ``prepare_device`` turns cuDNN's TF32
    convolutions (PyTorch's default) off; other settings leave the default; the CPU is untouched.
    (The flags are plain settings, so this runs without a GPU.)"""
    from models.precision import prepare_device

    before = torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark
    monkeypatch.setenv("GCN_AMP", setting)
    monkeypatch.delenv("GCN_CUDNN_BENCHMARK", raising=False)
    try:
        torch.backends.cudnn.allow_tf32 = True
        prepare_device(CPU)
        assert torch.backends.cudnn.allow_tf32 is True
        prepare_device(torch.device("cuda"))
        assert torch.backends.cudnn.allow_tf32 is tf32 and torch.backends.cudnn.benchmark is True
        for off in ("0", " No ", "false", "OFF"):  # the words GCN_AMP takes for off
            torch.backends.cudnn.benchmark = True
            monkeypatch.setenv("GCN_CUDNN_BENCHMARK", off)
            prepare_device(torch.device("cuda"))
            assert torch.backends.cudnn.benchmark is False, off
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = before


def test_every_kind_of_job_prepares_its_device_first(monkeypatch, brick64):
    """Learning, sampling, reconstruction and inpainting each call ``prepare_device`` for the
    model's device before any arithmetic (so ``GCN_AMP=off`` means float32 on a GPU for each)."""
    from models import inpaint, pipeline

    calls = []
    spy = lambda device: calls.append(device.type)  # noqa: E731
    monkeypatch.setattr(pipeline, "prepare_device", spy)
    monkeypatch.setattr(inpaint, "prepare_device", spy)
    preset = get_preset("texture-fast").replace(iterations=1, image_size=16, n_chains=1, langevin_steps=1)
    learner = make_learner([brick64], preset, device=CPU)
    assert calls == ["cpu"]
    synthesize(learner.model, 1, steps=1, seed=0)
    assert calls == ["cpu"] * 2
    pipeline.reconstruct_image(learner.model, brick64)
    assert calls == ["cpu"] * 3
    known = torch.ones(1, 1, 16, 16, dtype=torch.bool)
    known[..., :8] = False
    recover(learner.model, torch.zeros(1, 3, 16, 16), known, steps=0)
    assert calls == ["cpu"] * 4


@pytest.mark.parametrize("word, graph", [(None, False), ("1", True), (" Yes ", True), ("on", True),
                                         ("0", False), ("off", False), ("auto", False), ("maybe", False)])
def test_cuda_graphs_are_opt_in_with_the_words_every_switch_takes(monkeypatch, word, graph):
    """``GCN_CUDA_GRAPH`` reads ``models.precision.switch`` like GCN_AMP and GCN_CUDNN_BENCHMARK;
    CUDA only (a plain setting: no GPU needed to read it)."""
    from models import pipeline

    if word is None:
        monkeypatch.delenv("GCN_CUDA_GRAPH", raising=False)
    else:
        monkeypatch.setenv("GCN_CUDA_GRAPH", word)
    assert pipeline._cuda_graph(torch.device("cuda")) is graph
    assert pipeline._cuda_graph(CPU) is False
