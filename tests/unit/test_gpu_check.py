"""benchmarks/gpu_check.py, the device check, on the CPU with a tiny random model: every trainer runs
its real steps and moves fp32 weights, every reward model is saved as its stage saves it and served
back, so the script a lent GPU runs is known to work before the GPU is there."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_check  # noqa: E402


def test_every_trainer_runs_and_every_reward_model_serves(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setenv("GPU_CHECK_NAME", "tiny")
    assert gpu_check.main(["--device", "cpu", "--shape", "tiny", "--steps", "1", "--batch-size", "4",
                           "--max-length", "64"]) == 0
    report = json.loads((tmp_path / "tiny.json").read_text())
    assert report["ok"] and list(gpu_check.TRAINERS) == [k for k in report if k in gpu_check.TRAINERS]
    for name in gpu_check.TRAINERS:
        assert report[name]["trainable_dtypes"] == ["torch.float32"]
        assert report[name]["fraction_of_weights_moved"] > 0.9
    for name in ("ppm", "prm", "value"):
        served = report[name]["served"]
        assert served["scores_finite_and_varied"] and served["prefixes_scored"] >= 64
    assert report["prm"]["config"] == "gpu_math_shepherd_7b.yaml" and report["value"]["config"] == "gpu_alphamath_7b.yaml"


def test_an_unknown_trainer_is_refused_before_anything_loads(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu", "--trainers", "sft,orm"])
    assert "--trainers: orm unknown" in capsys.readouterr().err


def test_rows_have_the_shape_each_trainer_reads():
    for name, fields in {"sft": {"prompt", "completion"}, "ppm": {"prompt", "chosen", "rejected"},
                         "prm": {"prompt", "steps", "labels"}}.items():
        rows = gpu_check.training_rows(name, 6, 40)
        assert len(rows) == 6 and all(set(r) == fields for r in rows)
    prm = gpu_check.training_rows("prm", 6, 40)
    assert all(len(r["steps"]) == len(r["labels"]) and all(0 <= v <= 1 for v in r["labels"]) for r in prm)
    value = gpu_check.training_rows("value", 6, 40)
    assert sum("completion" in r for r in value) == 3
    assert any(v < 0 for r in value if "labels" in r for v in r["labels"])  # Q values reach below 0
