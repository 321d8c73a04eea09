"""The reinforce stage's per-step log reaches MLflow as curves: one metric history per number."""

from __future__ import annotations

from evomath.files import write_jsonl


def test_curves_are_logged_step_by_step(tmp_path):
    from tasks.tracking import Tracker

    curves = tmp_path / "rl-curves.jsonl"
    write_jsonl(curves, [{"step": 1, "loss": 0.5, "gold_accuracy": 0.25, "prm_score": 0.1, "kl": 0.0},
                         {"step": 2, "loss": 0.4, "gold_accuracy": 0.5, "prm_score": None, "kl": 0.01}])
    tracker = Tracker("unit", tmp_path, uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    with tracker.run("reinforce", key="k") as run_id:
        tracker.log_stage(run_id, "reinforce", {"rl_trained": 1, "stopped": "", "artifacts": {"curves": str(curves)}})
    history = {name: [(m.step, m.value) for m in tracker.client.get_metric_history(run_id, name)]
               for name in ("gold_accuracy", "prm_score", "kl")}
    assert sorted(history["gold_accuracy"]) == [(1, 0.25), (2, 0.5)]
    assert history["prm_score"] == [(1, 0.1)]  # a step without a scored completion has no point
    assert sorted(history["kl"]) == [(1, 0.0), (2, 0.01)]
    assert [a.path for a in tracker.client.list_artifacts(run_id, "data")] == ["data/rl-curves.jsonl"]
