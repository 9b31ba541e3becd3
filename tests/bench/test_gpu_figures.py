"""What a GPU run's figures mean, checked without a GPU: the bf16 peak is probed on CUDA too (the
bf16 rows, the default there, are scored against it), the agreement column is computed with
cuDNN's TF32 off, each scaling point prepares CUDA as the parent does, and the report says
whether the float32 convolutions ran in TF32."""

from __future__ import annotations

import torch

from bench import common, langevin, report
from models import precision

CUDA = torch.device("cuda")  # a device object only: nothing here touches a GPU


def _fake_peak(asked: list):
    def peak(device, repeats=5, dtype=torch.float32):
        asked.append((device.type, dtype))
        g = 100.0 if dtype == torch.float32 else 400.0
        return common._peak_of({"probes": {"mm4096": {"gflops_best": g, "gflops_median": g}}})
    return peak


def test_a_gpu_is_probed_for_its_bf16_peak_and_a_cpu_without_bf16_hardware_is_not(monkeypatch):
    asked: list = []
    monkeypatch.setattr(common, "matmul_peak", _fake_peak(asked))
    monkeypatch.setattr(langevin.precision, "native_bf16", lambda flags=None: False)
    peak = langevin.measure_peaks(CUDA, quick=True, when="before the cases")
    assert asked == [("cuda", torch.float32), ("cuda", torch.bfloat16)]
    assert peak["peak_gflops"] == 100.0 and peak["bf16"]["peak_gflops"] == 400.0
    asked.clear()
    peak = langevin.measure_peaks(torch.device("cpu"), quick=True, when="before the cases")
    assert asked == [("cpu", torch.float32)] and "bf16" not in peak


def test_strict_float32_turns_tf32_off_inside_and_restores_it_even_on_an_error():
    before = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        with common.strict_float32():
            assert torch.backends.cudnn.allow_tf32 is False
        assert torch.backends.cudnn.allow_tf32 is True
        try:
            with common.strict_float32():
                raise RuntimeError("a variant failed")
        except RuntimeError:
            pass
        assert torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.backends.cudnn.allow_tf32 = before


def test_the_agreement_check_runs_both_implementations_with_tf32_off(monkeypatch):
    seen = []

    def record(*args, **kwargs):
        seen.append(torch.backends.cudnn.allow_tf32)
        return torch.ones(1, 3, 4, 4)

    monkeypatch.setattr(langevin, "reference_langevin", record)
    monkeypatch.setattr(langevin, "_sampler", lambda p, steps, flags: record)
    before = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        model = langevin._model("texture-fast", 16, 1, torch.device("cpu"))
        x0 = torch.zeros(1, 3, 16, 16)
        assert langevin.agreement(model, None, x0, 2) == 0.0
        assert seen == [False, False] and torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.backends.cudnn.allow_tf32 = before


def test_the_bench_prepares_a_device_as_a_job_does_cudnn_benchmark_on_cuda_only(monkeypatch):
    monkeypatch.delenv("GCN_CUDNN_BENCHMARK", raising=False)
    monkeypatch.delenv("GCN_AMP", raising=False)
    before = torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.benchmark = False
        precision.prepare_device(torch.device("cpu"))
        assert torch.backends.cudnn.benchmark is False
        precision.prepare_device(CUDA)
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = before


def test_a_scaling_point_prepares_its_device_as_the_parent_does(monkeypatch):
    from bench import scaling

    prepared = []
    monkeypatch.setattr(precision, "prepare_device", lambda device: prepared.append(device.type))
    threads = torch.get_num_threads()
    try:
        point = scaling.one("reference", "texture-fast", 16, 1, 1, "cpu", 1)
    finally:
        torch.set_num_threads(threads)  # one() sets its own (it runs in a process of its own)
    assert prepared == ["cpu"] and point["step_s"] > 0


def _gpu_results(tf32: bool) -> dict:
    peak = common._peak_of({"probes": {"mm4096": {"gflops_best": 100.0, "gflops_median": 90.0}}})
    machine = {"cpu": "x", "cores": 16, "capability": "AVX512", "torch": "2.13.0", "python": "3.11",
               "load_avg": [0.1, 0.1, 0.1], "date": "2026-11-29", "device": "cuda", "gpu": "NVIDIA H200",
               "gpu_memory_gib": 139.8, "cuda": "12.8", "cudnn": 91000, "tf32_conv": tf32, "tf32_matmul": False}
    entry = {"threads": 16, "peak": peak, "cases": [], "learning": [], "load_avg_after": [0.1]}
    return {"machine": machine, "quick": True, "langevin": {"by_threads": [entry]}}


def test_the_report_says_whether_a_gpus_float32_convolutions_ran_in_tf32():
    on = report.render(_gpu_results(True), "python -m bench --device cuda")
    assert "NVIDIA H200 (139.8 GiB, CUDA 12.8, cuDNN 91000, TF32 convolutions on)" in on
    assert "cuDNN ran float32 convolutions in TF32" in on and "NNPACK" not in on
    results = _gpu_results(False)
    results["machine"]["cudnn_benchmark"] = False
    off = report.render(results, "python -m bench --device cuda")
    assert "TF32 convolutions off, cudnn.benchmark off (GCN_CUDNN_BENCHMARK)" in off
    assert "cuDNN ran float32 convolutions in TF32" not in off and "cudnn.benchmark off" not in on
    cpu = report.langevin_tables(_gpu_results(True)["langevin"])  # a CPU run: no machine's GPU line
    assert any("NNPACK" in line for line in cpu)
