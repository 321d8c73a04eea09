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
