"""Does the embedded demo really learn? Runs the CPU demo evolution (plain Python, no servers) and
prints the per-round table: held-out accuracy by method, buckets, data sizes and minutes per stage.

    python benchmarks/demo_learning.py [--config configs/cpu_demo.yaml] [--seed 0] [--run-dir runs/bench]

Run it with several seeds (the seed moves the training subset, the search and the training) to see
the spread; a finished round is reused, so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from evomath import stages
from evomath.config import load_config

METHODS = ("greedy", "maj@8", "ppm-bon@8")


def seeded(config, seed: int, run_dir: str):
    """The same experiment with every seed moved, under its own name."""
    updates = {"name": f"{config.name}-seed{seed}", "run_dir": Path(run_dir)}
    for section in ("search", "sft", "ppm", "data"):
        part = getattr(config, section)
        updates[section] = part.model_copy(update={"seed": part.seed + seed})
    return config.model_copy(update=updates)


def accuracy(metrics: dict, benchmark: str, method: str) -> float | None:
    return metrics.get(f"{benchmark}/{method.replace('@', '_at_')}/accuracy")


def round_row(k: int, results: dict, benchmark: str) -> dict:
    evaluation = results.get("evaluate", {})
    buckets = results.get("bucket", {})
    row = {"round": k}
    row |= {m: accuracy(evaluation, benchmark, m) for m in METHODS}
    row |= {b: buckets.get(b) for b in ("easy", "medium", "hard")}
    row["sft"] = results.get("select_sft", {}).get("sft_examples")
    row["pairs"] = results.get("build_pairs", {}).get("pairs")
    row["ppm_acc"] = results.get("train_ppm", {}).get("heldout_accuracy")
    row["minutes"] = {s: round(m.get("stage_seconds", 0) / 60, 1) for s, m in results.items()}
    return row


def print_table(rows: list[dict]) -> None:
    def cell(v):
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    header = ["round", *METHODS, "easy", "medium", "hard", "sft", "pairs", "ppm_acc"]
    print(" ".join(f"{h:>10}" for h in header))
    for row in rows:
        print(" ".join(f"{cell(row[h]):>10}" for h in header))
    for row in rows:
        print(f"round {row['round']} minutes per stage: {row['minutes']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/cpu_demo.yaml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", default="runs/bench")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    config = seeded(load_config(args.config), args.seed, args.run_dir)
    benchmark = config.eval.benchmarks[0]
    start = time.perf_counter()
    results = stages.run_evolution(config)
    minutes = (time.perf_counter() - start) / 60
    rows = [round_row(k, r, benchmark) for k, r in enumerate(results)]
    print(f"\n{config.name}: {config.rounds} rounds in {minutes:.1f} minutes (held-out: {benchmark}, "
          f"{config.eval.limit} problems)")
    print_table(rows)
    out = stages.experiment_dir(config) / "learning.json"
    out.write_text(json.dumps({"minutes": minutes, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
