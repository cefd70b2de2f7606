"""Process-wide runtime settings."""

import platform

import pytest
import torch

from recsys_cli.runtime import keep_freed_memory, release_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_takes_on_glibc_and_leaves_results_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(256, 4096)
    before = (x @ x.T).sum()
    assert keep_freed_memory() is True
    assert torch.equal((x @ x.T).sum(), before)
    monkeypatch.setenv("RECSYS_DEFAULT_MALLOC", "1")
    assert keep_freed_memory() is False


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_released_memory_goes_back_to_the_os(monkeypatch: pytest.MonkeyPatch) -> None:
    assert keep_freed_memory() is True  # freed heap memory now stays mapped (up to 512 MiB)
    chunks = [torch.ones(1 << 18) for _ in range(400)]  # 400 MiB in 1 MiB pieces, under the mmap threshold
    held = resident_mb()
    del chunks
    kept = resident_mb()
    assert release_freed_memory() is True
    released = resident_mb()
    assert kept > held - 100 and released < kept - 300
    monkeypatch.setenv("RECSYS_DEFAULT_MALLOC", "1")
    assert release_freed_memory() is False


def test_precision_auto_resolves_by_native_bf16(monkeypatch):
    from recsys_cli import runtime

    assert runtime.resolve_precision("16-mixed") == "16-mixed"
    assert runtime.resolve_precision(32) == 32
    monkeypatch.setattr(runtime, "native_bf16", lambda accelerator="cpu": True)
    assert runtime.resolve_precision("auto") == "bf16-mixed"
    monkeypatch.setattr(runtime, "native_bf16", lambda accelerator="cpu": False)
    assert runtime.resolve_precision("auto") == "32-true"
    assert isinstance(runtime.native_bf16("cpu"), bool)


@pytest.mark.parametrize(
    ("env", "capped"),
    [
        ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, True),
        ({"ONEDNN_MAX_CPU_ISA": "avx512_core_amx"}, False),
        ({"ONEDNN_MAX_CPU_ISA": "ALL"}, False),
        ({"ATEN_CPU_CAPABILITY": "avx2"}, True),
        ({"ATEN_CPU_CAPABILITY": "avx512"}, False),
        ({}, False),
    ],
)
def test_an_instruction_set_capped_below_bf16_means_no_native_bf16(monkeypatch, env, capped):
    from recsys_cli import runtime

    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert runtime.isa_capped_below_bf16() is capped
    if capped:
        assert runtime.native_bf16("cpu") is False
