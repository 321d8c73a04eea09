"""benchmarks/demo_learning.py's paired comparison of two runs of the same seeds: it pairs greedy
verdicts by problem, reports each seed and the pool, and skips rounds one run did not evaluate."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import demo_learning  # noqa: E402

from evaluation.records import write_records  # noqa: E402
from evolution import stages  # noqa: E402
from evomath.config import load_config  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "cpu_demo.yaml"


def _write_greedy(config, k: int, verdicts: dict[str, bool]) -> None:
    benchmark = config.eval.benchmarks[0]
    write_records(stages.round_dir(config, k) / stages.EVAL,
                  [{"benchmark": benchmark, "method": "greedy", "problem_id": p, "correct": c} for p, c in verdicts.items()])


def test_against_pairs_by_problem_per_seed_and_pooled(tmp_path, capsys):
    base = load_config(CONFIG)
    mine = [demo_learning.seeded(base, s, str(tmp_path / "lever")) for s in (0, 1)]
    theirs = [demo_learning.seeded(base, s, str(tmp_path / "baseline")) for s in (0, 1)]
    problems = [f"p{i}" for i in range(10)]
    for lever, baseline in zip(mine, theirs):
        _write_greedy(lever, 4, {p: i < 6 for i, p in enumerate(problems)})  # 60%
        _write_greedy(baseline, 4, {p: i < 3 for i, p in enumerate(reversed(problems))})  # 30%, other problems
    _write_greedy(mine[0], 3, {"p0": True})  # the baseline has no round 3: nothing to pair
    demo_learning.paired_against(mine, str(tmp_path / "baseline"))
    lines = [line for line in capsys.readouterr().out.splitlines() if " round " in line]
    assert len(lines) == 1 and lines[0].startswith(f"{base.eval.benchmarks[0]} round 4: ")
    # 6 right against 3, on 10 shared problems: +30 points on each seed and pooled
    assert lines[0].count("+30.0 [") == 3 and "(10)" in lines[0] and "pooled +30.0" in lines[0] and "(20)" in lines[0]


def test_against_a_missing_run_directory_is_refused_before_any_run(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    with pytest.raises(SystemExit) as stop:
        demo_learning.main(["--run-dir", str(tmp_path / "runs"), "--against", str(missing)])
    assert stop.value.code == 2
    assert f"--against {missing}: no such run directory" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
