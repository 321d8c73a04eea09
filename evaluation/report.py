"""The evaluation table as text, and plots as PNG files.

Plots are drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot,
so they work headless and leave a caller's matplotlib backend alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from evaluation.methods import parse_method
from evomath.config import BUCKETS

TABLE = (  # header, summary key(s), format
    ("benchmark", "benchmark", "{}"),
    ("method", "method", "{}"),
    ("n", "problems", "{}"),
    ("accuracy", "accuracy", "{:.1%}"),
    ("95%", ("accuracy_low", "accuracy_high"), "[{:.1%},{:.1%}]"),
    ("s/question", "seconds_per_question", "{:.2f}"),
    ("steps", "avg_steps", "{:.1f}"),
    ("solutions", "avg_solutions", "{:.1f}"),
    ("tokens/q", "tokens_per_question", "{:.0f}"),
    ("pass@k", "pass_at_k", "{:.1%}"),
)
ROUND_KINDS = ("greedy", "maj", "ppm-bon", "ppm-vote")  # what plot_rounds follows by default


def _cell(row: Mapping, key: str | tuple[str, ...], fmt: str) -> str:
    return fmt.format(*(row[k] for k in key)) if isinstance(key, tuple) else fmt.format(row[key])


def format_table(rows: Sequence[Mapping]) -> str:
    """An aligned plain-text table: text columns left, numbers right."""
    cells = [[h for h, _, _ in TABLE]] + [[_cell(row, key, fmt) for _, key, fmt in TABLE] for row in rows]
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
    """Accuracy by round with its 95% interval (a band for greedy, bars for the others; greedy, maj@k,
    ppm-bon@k, ppm-vote@k by default; the legend gives each line's problems), bucket counts by round
    and minutes per stage by round.

    Each item: ``{"round": k, "summary": [summary rows], "buckets": {"easy": n, "medium": n,
    "hard": n}, "minutes": {stage: minutes}}``; ``buckets`` and ``minutes`` are optional (their
    panel appears when some round has them).
    """
    rounds = sorted(per_round_summaries, key=lambda r: r["round"])
    with_buckets = [r for r in rounds if r.get("buckets")]
    with_minutes = [r for r in rounds if r.get("minutes")]
    fig, axes = _figure(5.5, 4.0, 1 + bool(with_buckets) + bool(with_minutes))
    lines: dict[str, list[Mapping]] = {}
    for item in rounds:
        for row in item.get("summary", []):
            if parse_method(row["method"]).kind in kinds:
                lines.setdefault(f"{row['benchmark']} {row['method']}", []).append({"round": item["round"], **row})
    for label, points in lines.items():
        xs, ys = [p["round"] for p in points], [100 * p["accuracy"] for p in points]
        n = "/".join(dict.fromkeys(str(p["problems"]) for p in points))
        line = axes[0].plot(xs, ys, marker="o", label=f"{label} (n={n})")[0]
        if all("accuracy_low" in p for p in points):  # summaries written before intervals have none
            low, high = [100 * p["accuracy_low"] for p in points], [100 * p["accuracy_high"] for p in points]
            if parse_method(points[0]["method"]).kind == "greedy":  # the headline: a band
                axes[0].fill_between(xs, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
            else:  # the rest, often on fewer problems: thin bars, so the bands do not bury each other
                axes[0].errorbar(xs, ys, yerr=[[y - lo for y, lo in zip(ys, low)], [hi - y for y, hi in zip(ys, high)]],
                                 fmt="none", ecolor=line.get_color(), alpha=0.4, capsize=2, linewidth=0.8)
    axes[0].set(title="accuracy by round (95% intervals)", xlabel="round", ylabel="accuracy (%)")
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
