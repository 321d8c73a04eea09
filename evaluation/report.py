"""The evaluation table as text, and plots as PNG files.

Plots are drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot,
so they work headless and leave a caller's matplotlib backend alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from evaluation.methods import parse_method

TABLE = (  # header, summary key, format
    ("benchmark", "benchmark", "{}"),
    ("method", "method", "{}"),
    ("n", "problems", "{}"),
    ("accuracy", "accuracy", "{:.1%}"),
    ("s/question", "seconds_per_question", "{:.2f}"),
    ("steps", "avg_steps", "{:.1f}"),
    ("solutions", "avg_solutions", "{:.1f}"),
    ("tokens/q", "tokens_per_question", "{:.0f}"),
    ("pass@k", "pass_at_k", "{:.1%}"),
)
ROUND_KINDS = ("greedy", "maj", "ppm-bon", "ppm-vote")  # what plot_rounds follows by default
BUCKETS = ("easy", "medium", "hard")


def format_table(rows: Sequence[Mapping]) -> str:
    """An aligned plain-text table: text columns left, numbers right."""
    cells = [[h for h, _, _ in TABLE]] + [[fmt.format(row[key]) for _, key, fmt in TABLE] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(TABLE))]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(c) for c in cells[1:])])


def _figure(width: float, height: float, panels: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, panels, i + 1) for i in range(panels)]


def _family(method: str) -> str:
    """Methods that differ only in compute (maj@4, maj@8; beam-1x5, beam-3x5) share a line."""
    return parse_method(method).family


def plot_accuracy_vs_tokens(rows: Sequence[Mapping], path: str | Path) -> Path:
    """Accuracy against generated tokens per question, one panel per benchmark; a method family
    at several k is one line."""
    benchmarks = list(dict.fromkeys(r["benchmark"] for r in rows))
    fig, axes = _figure(5.5, 4.0, max(1, len(benchmarks)))
    for ax, benchmark in zip(axes, benchmarks):
        families: dict[str, list[Mapping]] = {}
        for row in rows:
            if row["benchmark"] == benchmark:
                families.setdefault(_family(row["method"]), []).append(row)
        for family, members in families.items():
            members = sorted(members, key=lambda r: r["tokens_per_question"])
            xs = [r["tokens_per_question"] for r in members]
            ys = [100 * r["accuracy"] for r in members]
            ax.plot(xs, ys, marker="o", label=family)
            for x, y, r in zip(xs, ys, members):
                ax.annotate(r["method"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        tokens = [r["tokens_per_question"] for r in rows if r["benchmark"] == benchmark and r["tokens_per_question"] > 0]
        if tokens and max(tokens) > 20 * min(tokens):
            ax.set_xscale("log")
        ax.set(title=benchmark, xlabel="generated tokens per question", ylabel="accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_rounds(per_round_summaries: Sequence[Mapping], path: str | Path, kinds: Sequence[str] = ROUND_KINDS) -> Path:
    """Accuracy by round (greedy, maj@k, ppm-bon@k, ppm-vote@k by default), bucket counts by round and
    minutes per stage by round.

    Each item: ``{"round": k, "summary": [summary rows], "buckets": {"easy": n, "medium": n,
    "hard": n}, "minutes": {stage: minutes}}``; ``buckets`` and ``minutes`` are optional (their
    panel appears when some round has them).
    """
    rounds = sorted(per_round_summaries, key=lambda r: r["round"])
    with_buckets = [r for r in rounds if r.get("buckets")]
    with_minutes = [r for r in rounds if r.get("minutes")]
    fig, axes = _figure(5.5, 4.0, 1 + bool(with_buckets) + bool(with_minutes))
    lines: dict[str, tuple[list[int], list[float]]] = {}
    for item in rounds:
        for row in item.get("summary", []):
            if parse_method(row["method"]).kind in kinds:
                xs, ys = lines.setdefault(f"{row['benchmark']} {row['method']}", ([], []))
                xs.append(item["round"])
                ys.append(100 * row["accuracy"])
    for label, (xs, ys) in lines.items():
        axes[0].plot(xs, ys, marker="o", label=label)
    axes[0].set(title="accuracy by round", xlabel="round", ylabel="accuracy (%)")
    axes[0].set_xticks([r["round"] for r in rounds])
    axes[0].grid(alpha=0.3)
    if lines:
        axes[0].legend(fontsize=7)
    if with_buckets:
        _stacked_bars(axes[1], with_buckets, "buckets", BUCKETS, "problems by difficulty bucket", "problems")
    if with_minutes:  # stacked, so the stage that dominates a round stands out
        stages = list(dict.fromkeys(stage for r in with_minutes for stage in r["minutes"]))
        _stacked_bars(axes[-1], with_minutes, "minutes", stages, "minutes per stage", "minutes")
    return _save(fig, path)


def _stacked_bars(ax, rounds: Sequence[Mapping], field: str, parts: Sequence[str], title: str, ylabel: str) -> None:
    """One bar per round, stacked by ``parts`` of ``round[field]`` (a missing part counts 0)."""
    xs = [r["round"] for r in rounds]
    bottom = [0.0] * len(rounds)
    for part in parts:
        heights = [r[field].get(part, 0) for r in rounds]
        ax.bar(xs, heights, bottom=bottom, label=part)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set(title=title, xlabel="round", ylabel=ylabel)
    ax.set_xticks(xs)
    ax.legend(fontsize=7)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
