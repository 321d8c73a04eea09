"""Does the embedded demo really learn? Runs the CPU demo evolution (plain Python, no servers) and
prints the per-round table: held-out accuracy by method, buckets, data sizes and minutes per stage,
and saves the round plot (accuracy, buckets and minutes per stage by round) as ``rounds.png``.

    python benchmarks/demo_learning.py [--config configs/cpu_demo.yaml] [--seeds 0 1 2] [--run-dir runs/bench]

With several seeds (each moves the training subset, the search and the training) it ends with the
spread across seeds of the two numbers issue 7 asks for: the greedy gain from the base model to the
last round, and PPM best-of-8 minus majority vote in the last round. A finished stage is reused, so
an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

from evaluation.report import plot_rounds
from evolution import stages
from evomath.config import ExperimentConfig, load_config

METHODS = ("greedy", "maj@8", "ppm-bon@8", "ppm-bon-last@8", "ppm-vote@8")


def seeded(config: ExperimentConfig, seed: int, run_dir: str) -> ExperimentConfig:
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
    row["pairs"] = results.get("reward_data", {}).get("pairs")
    row["ppm_acc"] = results.get("train_reward", {}).get("heldout_accuracy")
    row["minutes"] = {s: round(m.get("stage_seconds", 0) / 60, 1) for s, m in results.items()}
    return row


def print_table(rows: list[dict]) -> None:
    def cell(v):
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    header = ["round", *METHODS, "easy", "medium", "hard", "sft", "pairs", "ppm_acc"]
    widths = [max(8, len(h)) for h in header]
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths)))
    for row in rows:
        print(" ".join(f"{cell(row[h]):>{w}}" for h, w in zip(header, widths)))
    for row in rows:
        print(f"round {row['round']} minutes per stage: {row['minutes']}")


def run_seed(config: ExperimentConfig) -> dict:
    """One evolution: its table printed, its plot and ``learning.json`` saved; returns the latter."""
    benchmark = config.eval.benchmarks[0]
    start = time.perf_counter()
    results = stages.run_evolution(config)
    minutes = (time.perf_counter() - start) / 60
    stage_minutes = sum(m.get("stage_seconds", 0) for r in results for m in r.values()) / 60
    rows = [round_row(k, r, benchmark) for k, r in enumerate(results)]
    print(f"\n{config.name}: {config.rounds} rounds, {stage_minutes:.1f} minutes of stages as recorded "
          f"({minutes:.1f} minutes in this call; held-out: {benchmark}, {config.eval.limit} problems)")
    print_table(rows)
    directory = stages.experiment_dir(config)
    plot = plot_rounds([stages.recorded_round(config, k) for k in range(len(rows))], directory / "rounds.png")
    learning = {"name": config.name, "minutes": stage_minutes, "call_minutes": minutes, "rows": rows}
    (directory / "learning.json").write_text(json.dumps(learning, indent=2))
    print(f"plot: {plot}")
    return learning


def spread(runs: list[dict]) -> None:
    """Per seed and across seeds, in points: the greedy gain from the base model to the last round,
    and each PPM selection (best-of-8, PPM-weighted vote) minus majority vote over the same 8
    samples in the last round; and the minutes its stages took (as recorded, so a resumed run
    still counts the work done before)."""
    columns = {
        "greedy gain": lambda r: 100 * (r["rows"][-1]["greedy"] - r["rows"][0]["greedy"]),
        "bon-maj": lambda r: 100 * ((r["rows"][-1]["ppm-bon@8"] or 0) - r["rows"][-1]["maj@8"]),
        "bon_last-maj": lambda r: 100 * ((r["rows"][-1]["ppm-bon-last@8"] or 0) - r["rows"][-1]["maj@8"]),
        "vote-maj": lambda r: 100 * ((r["rows"][-1]["ppm-vote@8"] or 0) - r["rows"][-1]["maj@8"]),
        "minutes": lambda r: r["minutes"],
    }
    values = {label: [f(r) for r in runs] for label, f in columns.items()}
    print("\n" + f"{'run':>24}" + "".join(f"{label:>14}" for label in columns))
    for i, r in enumerate(runs):
        print(f"{r['name']:>24}" + "".join(f"{values[label][i]:>+14.1f}" for label in columns))
    if len(runs) > 1:
        for label, vs in values.items():
            print(f"{label}: mean {statistics.mean(vs):+.1f}, sd {statistics.stdev(vs):.1f}, "
                  f"range {min(vs):+.1f} .. {max(vs):+.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/cpu_demo.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one evolution per seed, in turn")
    parser.add_argument("--run-dir", default="runs/bench")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    config = load_config(args.config)
    spread([run_seed(seeded(config, seed, args.run_dir)) for seed in args.seeds])


if __name__ == "__main__":
    main()
