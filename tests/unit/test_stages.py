"""Stage bookkeeping that needs no model: what a round leaves on disk, and rounds that train no PPM."""

from __future__ import annotations

import json

from evomath import stages
from evomath.config import ExperimentConfig


def config(tmp_path, **updates) -> ExperimentConfig:
    return ExperimentConfig(name="unit", run_dir=tmp_path, **updates)


def test_recorded_round_reads_stage_records_and_the_eval_summary(tmp_path):
    cfg = config(tmp_path)
    ctx = stages.round_context(cfg, 1, policy="p")
    stages._write_json(ctx.path("stage-generate.json"), {"stage": "generate", "key": "k",
                                                         "metrics": {"stage_seconds": 90.0}})
    stages._write_json(ctx.path("stage-bucket.json"), {"stage": "bucket", "key": "k",
                                                       "metrics": {"easy": 1, "medium": 2, "hard": 3, "stage_seconds": 0.6}})
    (ctx.path("eval")).mkdir()
    rows = [{"benchmark": "b", "method": "greedy", "accuracy": 0.25}]
    ctx.path("eval/summary.json").write_text(json.dumps(rows))
    item = stages.recorded_round(cfg, 1)
    assert item == {"round": 1, "summary": rows, "buckets": {"easy": 1, "medium": 2, "hard": 3},
                    "minutes": {"generate": 1.5, "bucket": 0.01}}
    assert stages.recorded_round(cfg, 2) == {"round": 2, "summary": [], "buckets": {}, "minutes": {}}


def test_rounds_before_ppm_train_from_round_train_no_ppm(tmp_path):
    ctx = stages.round_context(config(tmp_path, ppm_train_from_round=3), 2, policy="p")
    ctx.path("pairs.jsonl").write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\\n')
    assert stages.train_ppm(ctx) == {"ppm_trained": 0, "artifacts": {}}
    assert not ctx.path("ppm").exists()
