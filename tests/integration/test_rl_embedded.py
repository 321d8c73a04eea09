"""Step-level RL of the embedded model with a real PRM trained here: a few GRPO steps, the weights move,
the curves are recorded. Two optimizer steps on 4 demo problems keep it to a few minutes on 2 cores."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from evomath.config import PRMConfig, RLConfig
from evomath.files import write_jsonl
from evomath.formats import make_format
from evomath.problems import load_benchmark
from evomath.scoring import reward_marker
from training.rl import train_rl
from training.sft_data import chat_fn
from training.step_rewards import step_row, train_step_reward

slow = pytest.mark.slow
FMT = make_format("natural")
RL = RLConfig(learning_rate=1e-5, batch_size=4, per_device_batch_size=4, num_generations=2, max_completion_length=48,
              max_length=512, temperature=0.8, beta=0.04, reward_kind="prm", rewards="process")


@pytest.fixture(scope="module")
def prm(embedded_model_dir, tmp_path_factory):
    """A PRM trained from the embedded model for two steps on right and wrong first steps of sums."""
    root = tmp_path_factory.mktemp("prm")
    rows = []
    for a, b in [(3, 4), (5, 2), (6, 3), (7, 5)]:
        question = f"Tom has {a} pens and gets {b} more. How many pens does he have?"
        rows.append(step_row(FMT, question, [f"He has {a} + {b} = {a + b} pens.\n\n", f"\\boxed{{{a + b}}}"],
                             [1.0, 1.0], f"p{a}{b}"))
        rows.append(step_row(FMT, question, [f"He has {a} - {b} = {a - b} pens.\n\n", f"\\boxed{{{a - b}}}"],
                             [0.0, 0.0], f"p{a}{b}"))
    write_jsonl(root / "steps.jsonl", rows)
    config = PRMConfig(learning_rate=1e-4, batch_size=4, per_device_batch_size=4, max_length=128, heldout_fraction=0.0)
    train_step_reward(root / "steps.jsonl", embedded_model_dir, root / "prm", config, "prm", progress=False,
                      max_steps=2, step_format="natural")
    return root / "prm"


@slow
def test_process_rl_moves_the_embedded_policy_and_records_its_curves(embedded_model_dir, prm, tmp_path):
    assert reward_marker(prm, "prm")["format"] == "natural"
    fmt = make_format("natural", "chat", chat_fn(embedded_model_dir))
    problems = load_benchmark("demo_train:1-2", limit=4)
    metrics = train_rl(problems, embedded_model_dir, prm, tmp_path / "policy", RL, fmt, progress=False, max_steps=2)
    assert metrics["saved"] == 1 and metrics["stopped"] == "" and metrics["rl_steps"] == 2
    assert metrics["generated_tokens"] > 0 and -1 <= metrics["prm_score_last"] <= 1
    rows = [json.loads(line) for line in (tmp_path / "policy-curves.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all({"gold_accuracy", "prm_score", "kl", "generated_tokens", "loss"} <= set(r) for r in rows)
    assert rows[1]["generated_tokens"] > rows[0]["generated_tokens"]
    key = "model.layers.0.self_attn.q_proj.weight"
    tensors = []
    for model_dir in (embedded_model_dir, tmp_path / "policy"):
        with safe_open(str(model_dir / "model.safetensors"), "pt") as saved:
            tensors.append(saved.get_tensor(key))
    assert tensors[0].dtype == tensors[1].dtype  # stored in the base's dtype
    assert not torch.equal(*tensors)
