"""Training and PPM-serving throughput on this machine, side by side.

    python benchmarks/training_throughput.py [--model smollm2-135m] [--steps 4] [--json out.json]

Measures, on the same synthetic data: SFT tokens/s (full vs LoRA), PPM training pairs/s (full vs
LoRA), and PPM scoring of 64 short texts through transformers vs vLLM's pooling runner (which one
``evomath.scoring`` should default to). Prints each figure and the ratios. Runs one thing at a time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from evomath.config import EngineConfig, PPMConfig, SFTConfig
from evomath.formats import make_format
from evomath.scoring import PPMScorer, ppm_text
from evomath.tree import write_jsonl
from training.ppm import train_ppm
from training.sft import train_sft


def problems(n: int) -> list[tuple[str, int, int]]:
    return [(f"Tom has {a} pens and buys {b} more at the shop. How many pens does he have now?", a, b)
            for a, b in ((3 + i % 7, 2 + i % 5) for i in range(n))]


def sft_rows(n: int) -> list[dict]:
    """Rows as ``data sft`` renders them in the natural-language format."""
    fmt = make_format("natural")
    rows = []
    for q, a, b in problems(n):
        steps = [f"He starts with {a} pens.\n\n", f"He buys {b} more: {a} + {b} = {a + b}.\n\n", f"\\boxed{{{a + b}}}"]
        prompt, completion = fmt.render(q, steps)
        rows.append({"prompt": prompt, "completion": completion})
    return rows


def pair_rows(n: int) -> list[dict]:
    rows = []
    for i, (q, a, b) in enumerate(problems(n)):
        rows.append({
            "prompt": ppm_text(q, f"He starts with {a} pens.\n\n"),
            "chosen": f"He buys {b} more: {a} + {b} = {a + b}.",
            "rejected": f"He gives {b} away: {a} - {b} = {a - b}.",
            "problem_id": f"p{i}", "depth": 2, "q_chosen": 1.0, "q_rejected": -1.0, "final": False, "format": "natural",
        })
    return rows


def bench_training(model: str, workdir: Path, steps: int, batch: int) -> dict:
    write_jsonl(workdir / "sft.jsonl", sft_rows(steps * batch))
    write_jsonl(workdir / "pairs.jsonl", pair_rows(steps * batch))
    results = {}
    for lora in (False, True):
        kind = "lora" if lora else "full"
        sft = SFTConfig(batch_size=batch, per_device_batch_size=batch, max_length=128, lora=lora)
        m = train_sft(workdir / "sft.jsonl", model, workdir / f"sft-{kind}", sft, progress=False,
                      overwrite=True, max_steps=steps)
        results[f"sft_{kind}_tokens_per_s"] = m["tokens_per_s"]
        print(f"SFT {kind:4s}: {m['tokens']} tokens in {m['seconds']:.1f} s = {m['tokens_per_s']:.1f} tokens/s")
        ppm = PPMConfig(batch_size=batch, per_device_batch_size=batch, max_length=128, lora=lora, heldout_fraction=0.0)
        m = train_ppm(workdir / "pairs.jsonl", model, workdir / f"ppm-{kind}", ppm, progress=False,
                      overwrite=True, max_steps=steps)
        results[f"ppm_{kind}_pairs_per_s"] = m["pairs_per_s"]
        print(f"PPM {kind:4s}: {steps} steps of {batch} pairs in {m['seconds']:.1f} s = {m['pairs_per_s']:.2f} pairs/s")
    results["sft_lora_over_full"] = results["sft_lora_tokens_per_s"] / results["sft_full_tokens_per_s"]
    results["ppm_lora_over_full"] = results["ppm_lora_pairs_per_s"] / results["ppm_full_pairs_per_s"]
    print(f"LoRA / full: SFT x{results['sft_lora_over_full']:.2f}, PPM x{results['ppm_lora_over_full']:.2f}")
    return results


def bench_scoring(ppm_dir: Path, repeats: int = 3) -> dict:
    """Load time and best-of-``repeats`` time to score 64 short texts, per backend (one engine at a time)."""
    texts = [ppm_text(q, f"He starts with {a} pens.\n\nHe buys {b} more: {a} + {b} = {a + b}.")
             for q, a, b in problems(64)]
    results, scores = {}, {}
    for backend in ("transformers", "vllm"):
        start = time.perf_counter()
        engine = EngineConfig(dtype="float32", cpu_kv_cache_gb=0.5) if backend == "vllm" else None
        scorer = PPMScorer(ppm_dir, backend=backend, batch_size=16, engine=engine)
        load = time.perf_counter() - start
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            scores[backend] = scorer.score_texts(texts)
            best = min(best, time.perf_counter() - start)
        scorer.close()
        results[f"score64_{backend}_s"], results[f"load_{backend}_s"] = best, load
        print(f"PPM scoring, {backend:12s}: load {load:.1f} s, 64 texts in {best:.2f} s")
    results["score_vllm_over_transformers"] = results["score64_vllm_s"] / results["score64_transformers_s"]
    results["max_abs_score_diff"] = max(abs(a - b) for a, b in zip(scores["transformers"], scores["vllm"], strict=True))
    print(f"vLLM / transformers time: x{results['score_vllm_over_transformers']:.2f}; "
          f"largest score difference {results['max_abs_score_diff']:.2e}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="embedded name or model directory")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per training run")
    parser.add_argument("--batch", type=int, default=8, help="examples (SFT) or pairs (PPM) per step")
    parser.add_argument("--skip-scoring", action="store_true", help="training only (no vLLM engine)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    from evomath.models import resolve_model

    model = resolve_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        results = bench_training(model, Path(tmp), args.steps, args.batch)
        if not args.skip_scoring:
            results.update(bench_scoring(Path(tmp) / "ppm-full"))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
