"""A round more than its interval below the round before says so, with both rounds' loop products."""

from __future__ import annotations

import json

from evolution import stages
from evolution.regressions import regressed, round_regressions
from evomath.config import ExperimentConfig
from evomath.files import write_json


def greedy(benchmark: str, accuracy: float, low: float, high: float) -> dict:
    return {"benchmark": benchmark, "method": "greedy", "problems": 400, "accuracy": accuracy,
            "accuracy_low": low, "accuracy_high": high}


def record(cfg, k: int, summary: list[dict], sft: dict | None = None) -> None:
    directory = stages.round_dir(cfg, k)
    (directory / "eval").mkdir(parents=True)
    (directory / "eval" / "summary.json").write_text(json.dumps(summary))
    if sft is not None:
        write_json(directory / "stage-select_sft.json", {"stage": "select_sft", "key": "k", "metrics": sft})
        write_json(directory / "stage-bucket.json", {"stage": "bucket", "key": "k", "metrics": {"solved": sft["n"]}})


def test_a_round_below_by_more_than_its_interval_says_so_with_what_its_loop_produced(tmp_path):
    cfg = ExperimentConfig(name="reg", run_dir=tmp_path)
    record(cfg, 3, [greedy("t", 0.205, 0.168, 0.248), greedy("g", 0.05, 0.03, 0.08)],
           {"n": 14, "sft_examples": 28, "sft_wrong_step_share": 0.1})
    record(cfg, 4, [greedy("t", 0.125, 0.096, 0.161), greedy("g", 0.04, 0.025, 0.065),
                    {**greedy("t", 0.0, 0.0, 0.0), "method": "maj@8"}],
           {"n": 9, "sft_examples": 17, "sft_wrong_step_share": 0.35})
    lines = round_regressions(cfg, 4)
    assert lines[0] == "t: greedy 20.5% [16.8, 24.8] in round 3 -> 12.5% [9.6, 16.1] in round 4, more than its 95% " \
                       "interval below"
    assert len(lines) == 2  # g fell, but within its interval; maj@8 is not compared
    assert "solved 14 -> 9" in lines[1] and "sft_examples 28 -> 17" in lines[1]
    assert "sft_wrong_step_share 0.1 -> 0.35" in lines[1] and "sft_avg_tokens - -> -" in lines[1]


def test_no_regression_no_lines(tmp_path):
    cfg = ExperimentConfig(name="ok", run_dir=tmp_path)
    record(cfg, 0, [greedy("t", 0.06, 0.04, 0.088)])
    record(cfg, 1, [greedy("t", 0.05, 0.033, 0.076)])  # lower, but its interval reaches 6%
    assert round_regressions(cfg, 1) == [] and round_regressions(cfg, 0) == []
    assert regressed({"accuracy": 0.2}, {"accuracy_high": 0.19}) and not regressed({"accuracy": 0.2}, {"accuracy_high": 0.2})
