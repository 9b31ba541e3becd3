"""The name a bench run files its results under: two kinds of machine must never share one (a run
on one would replace the other's generated section of docs/benchmarks.md)."""

from __future__ import annotations

import pytest
import torch

from bench import common

DEVICE = torch.device("cpu")


def cpuinfo(tmp_path, vendor: str, flags: str, name: str = "Some CPU") -> str:
    path = tmp_path / f"cpuinfo-{vendor or 'none'}"
    lines = [f"vendor_id\t: {vendor}"] if vendor else []
    lines += ["cpu family\t: 6", "model\t\t: 207", f"model name\t: {name}", "stepping\t: 2",
              f"flags\t\t: fpu sse2 avx2 {flags}", "", "processor\t: 1", "vendor_id\t: Other"]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(autouse=True)
def default_precision(monkeypatch):
    monkeypatch.delenv("GCN_AMP", raising=False)


def prefix() -> str:
    return f"cpu-{common.usable_cores()}c-{torch.backends.cpu.get_cpu_capability().lower()}"


@pytest.mark.parametrize("vendor, flags, suffix", [
    ("AuthenticAMD", "avx512f avx512_bf16", "-bf16-amd"),
    ("GenuineIntel", "avx512f avx512_bf16 avx512_fp16", "-bf16-intel"),  # a VM hiding AMX
    ("GenuineIntel", "avx512f avx512_bf16 amx_tile amx_bf16", "-amx-intel"),
    ("AuthenticAMD", "avx512f", "-amd"),
    ("HygonGenuine", "", "-hygongenuine"),
    ("", "", ""),
])
def test_the_tag_names_vendor_and_bfloat16_hardware(tmp_path, vendor, flags, suffix):
    assert common.machine_tag(DEVICE, cpuinfo(tmp_path, vendor, flags)) == prefix() + suffix


def test_an_intel_xeon_hiding_amx_and_an_amd_epyc_get_different_tags(tmp_path):
    intel = common.machine_tag(DEVICE, cpuinfo(tmp_path, "GenuineIntel", "avx512f avx512_bf16"))
    amd = common.machine_tag(DEVICE, cpuinfo(tmp_path, "AuthenticAMD", "avx512f avx512_bf16"))
    assert intel != amd


def test_a_precision_override_gets_its_own_tag(tmp_path, monkeypatch):
    monkeypatch.setenv("GCN_AMP", "off")
    assert common.machine_tag(DEVICE, cpuinfo(tmp_path, "AuthenticAMD", "avx512f")) == prefix() + "-amd-amp-off"


def test_cpu_model_reads_the_first_cpu_only(tmp_path):
    path = cpuinfo(tmp_path, "GenuineIntel", "", name="Intel(R) Xeon(R) Processor")
    assert common.cpu_model(path) == "Intel(R) Xeon(R) Processor (cpu family 6, model 207, stepping 2)"
    assert common.cpu_vendor(path) == "intel"
