"""Does the embedded demo really learn? Runs the CPU demo evolution (plain Python, no servers) and
prints the per-round tables: held-out accuracy by method (greedy with its 95% interval, on
``eval.limit`` problems; the other methods on ``eval.sampled_limit``), greedy on the generalisation
benchmarks (``eval.greedy_benchmarks``), and what the loop produced (buckets, SFT examples, their
length in tokens, the share of distinct solutions, the share right only through a wrong step, PPM
pairs) and minutes per stage; it saves the round plot (accuracy with intervals, buckets and minutes
per stage by round) as ``rounds.png``.

    python benchmarks/demo_learning.py [--config configs/cpu_demo.yaml] [--seeds 0 1 2] [--run-dir runs/bench] \
        [--set 'eval.greedy_benchmarks=[demo_phrasing:1-2]' --set 'eval.greedy_rounds=[0, 4]']

With several seeds (each moves the training subset, the search and the training) it ends with the
spread across seeds: the greedy gain from the base model to the last round (held out and on each
generalisation benchmark), the rounds that fell more than their interval below the round before,
and PPM best-of-8 minus majority vote in the last round. A finished stage is reused, so
an interrupted run continues where it stopped. ``--against RUN_DIR`` measures a lever: run the same
seeds with and without it in two run directories, and this prints greedy of one minus the other,
paired on the same problems, per round and pooled over the seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

from evaluation.records import read_verdicts
from evaluation.report import plot_rounds
from evaluation.stats import paired_bootstrap
from evolution import stages
from evolution.regressions import regressed, round_regressions
from evomath.config import ExperimentConfig, apply_overrides, load_config

METHODS = ("greedy", "maj@8", "ppm-bon@8", "ppm-bon-last@8", "ppm-vote@8")
LOOP = ("easy", "medium", "hard", "solved", "sft", "sft_tokens", "distinct", "wrong_step", "pairs", "ppm_acc")


def seeded(config: ExperimentConfig, seed: int, run_dir: str) -> ExperimentConfig:
    """The same experiment with every seed moved, under its own name."""
    updates = {"name": f"{config.name}-seed{seed}", "run_dir": Path(run_dir)}
    for section in ("search", "sft", "ppm", "data"):
        part = getattr(config, section)
        updates[section] = part.model_copy(update={"seed": part.seed + seed})
    return config.model_copy(update=updates)


def accuracy(metrics: dict, benchmark: str, method: str, column: str = "accuracy") -> float | None:
    return metrics.get(f"{benchmark}/{method.replace('@', '_at_')}/{column}")


def greedy_of(metrics: dict, benchmark: str) -> dict | None:
    """Greedy's accuracy on a benchmark with its 95% interval and problems, None if not evaluated."""
    if accuracy(metrics, benchmark, "greedy") is None:
        return None
    return {c: accuracy(metrics, benchmark, "greedy", c) for c in ("accuracy", "accuracy_low", "accuracy_high", "problems")}


def round_row(k: int, results: dict, benchmark: str, generalisation: list[str]) -> dict:
    """One round: greedy with its interval, the other methods, greedy on each generalisation
    benchmark, and what the loop produced (buckets, SFT data and its audit, PPM pairs)."""
    evaluation = results.get("evaluate", {})
    buckets, sft = results.get("bucket", {}), results.get("select_sft", {})
    row = {"round": k, "greedy": greedy_of(evaluation, benchmark)}
    row |= {m: accuracy(evaluation, benchmark, m) for m in METHODS[1:]}
    row["sampled_problems"] = accuracy(evaluation, benchmark, METHODS[1], "problems")
    row |= {f"{name} greedy": greedy_of(evaluation, name) for name in generalisation}
    row |= {b: buckets.get(b) for b in ("easy", "medium", "hard", "solved")}
    row |= {"sft": sft.get("sft_examples"), "sft_tokens": sft.get("sft_avg_tokens"),
            "distinct": sft.get("sft_distinct_share"), "wrong_step": sft.get("sft_wrong_step_share")}
    row["pairs"] = results.get("reward_data", {}).get("pairs")
    row["ppm_acc"] = results.get("train_reward", {}).get("heldout_accuracy")
    row["minutes"] = {s: round(m.get("stage_seconds", 0) / 60, 1) for s, m in results.items()}
    return row


def cell(value, percent: bool = False) -> str:
    """A greedy entry as 'accuracy [low, high]' in percent; other accuracies in percent when
    ``percent``; counts as they are, shares to three places."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        return f"{100 * value['accuracy']:.1f} [{100 * value['accuracy_low']:.1f}, {100 * value['accuracy_high']:.1f}]"
    if isinstance(value, float):
        return f"{100 * value:.1f}" if percent else f"{value:.3f}"
    return str(value)


def print_table(rows: list[dict]) -> None:
    """Two tables: accuracy by round (percent; greedy with its 95% interval), then what the loop made
    (sft_tokens: the completions' mean length in the policy's tokens; distinct: the share of distinct
    solutions; wrong_step: the share of SFT examples right only through a wrong step)."""
    scores = [k for k in rows[0] if k in METHODS or k.endswith(" greedy")]
    for header, percent in ((["round", *scores], True), (["round", *LOOP], False)):
        widths = [max(8, len(h), *(len(cell(r[h], percent)) for r in rows)) for h in header]
        print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths)))
        for row in rows:
            print(" ".join(f"{cell(row[h], percent):>{w}}" for h, w in zip(header, widths)))
    for row in rows:
        print(f"round {row['round']} minutes per stage: {row['minutes']}")


def run_seed(config: ExperimentConfig) -> dict:
    """One evolution: its table printed, its plot and ``learning.json`` saved; returns the latter."""
    benchmark = config.eval.benchmarks[0]
    start = time.perf_counter()
    results = stages.run_evolution(config)
    minutes = (time.perf_counter() - start) / 60
    stage_minutes = sum(m.get("stage_seconds", 0) for r in results for m in r.values()) / 60
    rows = [round_row(k, r, benchmark, config.eval.greedy_benchmarks) for k, r in enumerate(results)]
    print(f"\n{config.name}: {config.rounds} rounds, {stage_minutes:.1f} minutes of stages as recorded "
          f"({minutes:.1f} minutes in this call; held-out: {benchmark}, greedy on {config.eval.limit} problems, "
          f"the other methods on {config.eval.sampled_limit or config.eval.limit})")
    print_table(rows)
    for k in range(1, len(rows)):
        for line in round_regressions(config, k):
            print(f"round {k} regressed: {line}")
    directory = stages.experiment_dir(config)
    plot = plot_rounds([stages.recorded_round(config, k) for k in range(len(rows))], directory / "rounds.png")
    learning = {"name": config.name, "minutes": stage_minutes, "call_minutes": minutes, "rows": rows}
    (directory / "learning.json").write_text(json.dumps(learning, indent=2))
    print(f"plot: {plot}")
    return learning


def gain(rows: list[dict], column: str) -> float | None:
    """Points from the base model to the last round on a greedy column."""
    first, last = rows[0].get(column), rows[-1].get(column)
    return 100 * (last["accuracy"] - first["accuracy"]) if first and last else None


def spread(runs: list[dict]) -> None:
    """Per seed and across seeds, in points: the greedy gain from the base model to the last round
    (held out, and on each generalisation benchmark), the rounds more than their interval below the
    round before, each PPM selection (best-of-8, PPM-weighted vote) minus majority vote over the same
    8 samples in the last round; and the minutes its stages took (as recorded, so a resumed run
    still counts the work done before)."""
    def minus_maj(r: dict, method: str) -> float | None:
        final = r["rows"][-1]
        return None if final[method] is None or final["maj@8"] is None else 100 * (final[method] - final["maj@8"])

    columns = {"greedy gain": lambda r: gain(r["rows"], "greedy")}
    columns |= {f"{k.removesuffix(' greedy')} gain": (lambda r, k=k: gain(r["rows"], k))
                for k in runs[0]["rows"][0] if k.endswith(" greedy")}
    columns |= {
        "regressions": lambda r: sum(bool(a["greedy"] and b["greedy"] and regressed(a["greedy"], b["greedy"]))
                                     for a, b in zip(r["rows"], r["rows"][1:])),
        "bon-maj": lambda r: minus_maj(r, "ppm-bon@8"),
        "bon_last-maj": lambda r: minus_maj(r, "ppm-bon-last@8"),
        "vote-maj": lambda r: minus_maj(r, "ppm-vote@8"),
        "minutes": lambda r: r["minutes"],
    }
    values = {label: [f(r) for r in runs] for label, f in columns.items()}
    widths = {label: max(14, len(label) + 2) for label in columns}
    print("\n" + f"{'run':>24}" + "".join(f"{label:>{widths[label]}}" for label in columns))
    for i, r in enumerate(runs):
        print(f"{r['name']:>24}" + "".join(
            f"{'-' if values[label][i] is None else f'{values[label][i]:+.1f}':>{widths[label]}}" for label in columns))
    if len(runs) > 1:
        for label, vs in values.items():
            vs = [v for v in vs if v is not None]
            if len(vs) > 1:
                print(f"{label}: mean {statistics.mean(vs):+.1f}, sd {statistics.stdev(vs):.1f}, "
                      f"range {min(vs):+.1f} .. {max(vs):+.1f}")


def greedy_outcomes(config: ExperimentConfig, k: int, benchmark: str) -> dict[str, bool]:
    """Round k's greedy verdict per problem id on a benchmark; empty where it was not evaluated."""
    return read_verdicts(stages.round_dir(config, k) / stages.EVAL, benchmark, "greedy")


def paired_outcomes(config: ExperimentConfig, other_run_dir: str, k: int, benchmark: str) -> list[tuple[str, bool, bool]]:
    """(problem id, right in this run, right in the other run) for every problem both evaluated."""
    mine = greedy_outcomes(config, k, benchmark)
    theirs = greedy_outcomes(config.model_copy(update={"run_dir": Path(other_run_dir)}), k, benchmark)
    return [(p, mine[p], theirs[p]) for p in sorted(mine.keys() & theirs.keys())]


def paired_cell(pairs: list[tuple[str, bool, bool]]) -> str:
    """'+6.2 [+2.8, +9.6] (800)': the difference in points, a problem's pairs resampled together."""
    problems, mine, theirs = zip(*pairs)
    return f"{paired_bootstrap(mine, theirs, groups=problems).points()} ({len(pairs)})"


def paired_against(configs: list[ExperimentConfig], other_run_dir: str) -> None:
    """Greedy of this run minus another run of the same seeds (under ``other_run_dir``), paired on
    the problems both evaluated, with 95% bootstrap intervals: per round and seed, and pooled over
    the seeds, where a problem's pairs from every seed are resampled together (the seeds share the
    held-out problems, so they are not independent samples of them)."""
    print(f"\ngreedy, this run minus {other_run_dir} (points, paired on the same problems, 95% bootstrap)")
    for benchmark in [configs[0].eval.benchmarks[0], *configs[0].eval.greedy_benchmarks]:
        for k in range(configs[0].rounds + 1):
            per_seed = {c.name: paired_outcomes(c, other_run_dir, k, benchmark) for c in configs}
            cells = [f"{name} {paired_cell(pairs)}" for name, pairs in per_seed.items() if pairs]
            if len(cells) > 1:
                cells.append(f"pooled {paired_cell([p for pairs in per_seed.values() for p in pairs])}")
            if cells:
                print(f"{benchmark} round {k}: " + "; ".join(cells))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/cpu_demo.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one evolution per seed, in turn")
    parser.add_argument("--run-dir", default="runs/bench")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field, e.g. --set 'eval.greedy_benchmarks=[demo_phrasing:1-2]' "
                        "--set 'eval.greedy_rounds=[0, 4]' (repeatable; values are YAML)")
    parser.add_argument("--against", metavar="RUN_DIR",
                        help="another --run-dir of the same seeds (e.g. the same command without an option): "
                        "print greedy of this run minus that one, paired on the same problems, per round and pooled")
    args = parser.parse_args(argv)
    if args.against and not Path(args.against).is_dir():
        parser.error(f"--against {args.against}: no such run directory")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    config = apply_overrides(load_config(args.config), args.overrides)
    configs = [seeded(config, seed, args.run_dir) for seed in args.seeds]
    spread([run_seed(c) for c in configs])
    if args.against:
        paired_against(configs, args.against)


if __name__ == "__main__":
    main()
