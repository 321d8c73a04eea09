"""Training and PPM-serving throughput on this machine, side by side.

    python benchmarks/training_throughput.py [--model smollm2-135m] [--steps 5] [--json out.json]
    python benchmarks/training_throughput.py --scoring-only PPM_DIR

Measures, on the same synthetic data: SFT tokens/s and PPM training pairs/s, each for full fp32,
full with bf16 autocast, and LoRA; and PPM scoring of 64 short texts through transformers vs vLLM's pooling runner (which one
``evomath.scoring`` should default to). Prints each figure, the ratios, and the load average: on a
shared machine, compare only figures taken side by side in one run. Runs one thing at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback

from evomath.config import EngineConfig, PPMConfig, SFTConfig
from evomath.files import write_jsonl
from evomath.formats import make_format
from evomath.scoring import RewardScorer, ppm_text
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


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step. The first (allocations, optimizer state) is reported apart;
    the rest give the best step, the figure least disturbed by other work on a shared machine."""

    def __init__(self):
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.start)

    @property
    def steady(self) -> float:
        return min(self.times[1:])


VARIANTS = {"full": {}, "full-bf16": {"bf16": True}, "lora": {"lora": True}}  # fp32 unless bf16


def bench_training(model: str, workdir: Path, steps: int, batch: int) -> dict:
    """Per variant: the best step after the first; SFT in tokens/s, PPM in pairs/s."""
    write_jsonl(workdir / "sft.jsonl", sft_rows(steps * batch))
    write_jsonl(workdir / "pairs.jsonl", pair_rows(steps * batch))
    results = {}
    for kind, options in VARIANTS.items():
        timer = StepTimer()
        sft = SFTConfig(batch_size=batch, per_device_batch_size=batch, max_length=128, **options)
        m = train_sft(workdir / "sft.jsonl", model, workdir / f"sft-{kind}", sft, progress=False,
                      overwrite=True, max_steps=steps, callbacks=[timer])
        tokens_per_step = m["tokens"] / m["steps"]
        results[f"sft_{kind}_tokens_per_s"] = tokens_per_step / timer.steady
        print(f"SFT {kind:9s}: {tokens_per_step:.0f} tokens/step, first step {timer.times[0]:.1f} s, "
              f"best of the rest {timer.steady:.2f} s/step = {results[f'sft_{kind}_tokens_per_s']:.0f} tokens/s")
        timer = StepTimer()
        ppm = PPMConfig(batch_size=batch, per_device_batch_size=batch, max_length=128, heldout_fraction=0.0, **options)
        train_ppm(workdir / "pairs.jsonl", model, workdir / f"ppm-{kind}", ppm, progress=False,
                  overwrite=True, max_steps=steps, callbacks=[timer])
        results[f"ppm_{kind}_pairs_per_s"] = batch / timer.steady
        print(f"PPM {kind:9s}: {batch} pairs/step, first step {timer.times[0]:.1f} s, "
              f"best of the rest {timer.steady:.2f} s/step = {results[f'ppm_{kind}_pairs_per_s']:.1f} pairs/s")
    for kind in ("lora", "full-bf16"):
        results[f"sft_{kind}_over_full"] = results[f"sft_{kind}_tokens_per_s"] / results["sft_full_tokens_per_s"]
        results[f"ppm_{kind}_over_full"] = results[f"ppm_{kind}_pairs_per_s"] / results["ppm_full_pairs_per_s"]
        print(f"{kind} / full fp32: SFT x{results[f'sft_{kind}_over_full']:.2f}, "
              f"PPM x{results[f'ppm_{kind}_over_full']:.2f}")
    return results


def bench_scoring(ppm_dir: Path, repeats: int = 5) -> dict:
    """Load time, and the best time to score 64 short texts, per backend.

    Both scorers are loaded first and then called in turns, so a change in the machine's load
    during the run hits both alike (this machine is shared).
    """
    texts = [ppm_text(q, f"He starts with {a} pens.\n\nHe buys {b} more: {a} + {b} = {a + b}.")
             for q, a, b in problems(64)]
    results, scorers = {}, {}
    for backend in ("transformers", "vllm"):
        start = time.perf_counter()
        engine = EngineConfig(dtype="float32", cpu_kv_cache_gb=0.5) if backend == "vllm" else None
        scorers[backend] = RewardScorer(ppm_dir, backend=backend, batch_size=16, engine=engine)
        results[f"load_{backend}_s"] = time.perf_counter() - start
    best, scores = dict.fromkeys(scorers, float("inf")), {}
    for _ in range(repeats):
        for backend, scorer in scorers.items():
            start = time.perf_counter()
            scores[backend] = scorer.score_texts(texts)
            best[backend] = min(best[backend], time.perf_counter() - start)
    for backend, scorer in scorers.items():
        scorer.close()
        results[f"score64_{backend}_s"] = best[backend]
        print(f"PPM scoring, {backend:12s}: load {results[f'load_{backend}_s']:.1f} s, "
              f"64 texts in {best[backend]:.2f} s (best of {repeats})")
    results["score_vllm_over_transformers"] = best["vllm"] / best["transformers"]
    results["max_abs_score_diff"] = max(abs(a - b) for a, b in zip(scores["transformers"], scores["vllm"], strict=True))
    print(f"vLLM / transformers time: x{results['score_vllm_over_transformers']:.2f}; "
          f"largest score difference {results['max_abs_score_diff']:.2e}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="embedded name or model directory")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per run (the first is warm-up)")
    parser.add_argument("--batch", type=int, default=8, help="examples (SFT) or pairs (PPM) per step")
    parser.add_argument("--skip-scoring", action="store_true", help="training only (no vLLM engine)")
    parser.add_argument("--scoring-only", type=Path, metavar="PPM_DIR", help="only compare scoring, on this PPM")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.scoring_only:
        results = bench_scoring(args.scoring_only)
    else:
        from evomath.models import resolve_model

        with tempfile.TemporaryDirectory() as tmp:
            results = bench_training(resolve_model(args.model), Path(tmp), args.steps, args.batch)
            if not args.skip_scoring:
                results.update(bench_scoring(Path(tmp) / "ppm-full"))
    results["load_average_after"] = os.getloadavg()[0]
    print(f"load average after: {results['load_average_after']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
