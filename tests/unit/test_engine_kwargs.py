"""The engine's keyword arguments: the KV block size on CPUs (the prefix cache shares whole blocks)."""

from __future__ import annotations

import pytest

from evomath.backends import vllm_backend
from evomath.config import EngineConfig
from evomath.errors import InputError


@pytest.mark.parametrize(("on_cpu", "block_size", "expected"), [
    (True, None, vllm_backend.CPU_BLOCK_SIZE), (True, 64, 64), (False, None, None), (False, 16, 16)])
def test_block_size_defaults_to_small_blocks_on_cpus_and_vllms_own_on_gpus(monkeypatch, on_cpu, block_size, expected):
    monkeypatch.setattr(vllm_backend, "_on_cpu", lambda: on_cpu)
    kwargs = vllm_backend.engine_kwargs("model", EngineConfig(block_size=block_size))
    assert kwargs.get("block_size") == expected


def test_a_block_size_vllm_cpu_cannot_run_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(vllm_backend, "_on_cpu", lambda: True)
    with pytest.raises(InputError, match="engine.block_size 16: .*multiple of 32"):
        vllm_backend.engine_kwargs("model", EngineConfig(block_size=16))


@pytest.mark.parametrize(("on_cpu", "native", "requested", "expected"), [
    (True, False, "auto", "float32"), (True, True, "auto", "bfloat16"), (False, False, "auto", "bfloat16"),
    (True, False, "bfloat16", "bfloat16"), (False, True, "float16", "float16")])
def test_auto_dtype_is_bf16_where_the_hardware_computes_it_and_fp32_on_other_cpus(monkeypatch, on_cpu, native,
                                                                                  requested, expected):
    from evomath import hardware

    monkeypatch.setattr(vllm_backend, "_on_cpu", lambda: on_cpu)
    monkeypatch.setattr(hardware, "native_bf16", lambda on_gpu: native)
    assert vllm_backend.engine_kwargs("model", EngineConfig(dtype=requested))["dtype"] == expected


def test_native_bf16_reads_the_cpus_features(monkeypatch):
    import torch

    from evomath.hardware import native_bf16

    for avx512_bf16, amx, expected in [(False, False, False), (True, False, True), (False, True, True)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert native_bf16(on_gpu=False) is expected
