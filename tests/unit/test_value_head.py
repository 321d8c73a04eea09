"""AlphaMath's value head: trained jointly with SFT on a tiny random model, saved as one checkpoint
whose policy part is a plain causal LM and whose head serves through the reward-model scorer."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from tiny_model import make_tiny_model

from evomath.config import ValueHeadConfig
from evomath.files import write_jsonl
from evomath.formats import make_format
from evomath.scoring import load_scorer
from training import TrainingInputError
from training.step_rewards import step_row
from training.value_head import train_value_head

FMT = make_format("natural")
FAST = ValueHeadConfig(learning_rate=1e-2, epochs=8, batch_size=8, per_device_batch_size=8, max_length=64, bf16=False,
                       beta=1.0)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", dtype="float32")


def test_value_head_learns_q_and_the_policy_stays_a_causal_lm(base, tmp_path):
    sft = [{"prompt": f"tom has {a} pens .", "completion": f" he gets 2 more . the answer is {a + 2} ."}
           for a in range(1, 5)]
    steps = []
    for a in range(1, 5):
        question = f"tom has {a} pens ."
        steps.append(step_row(FMT, question, ["he gets 2 more .\n\n", f"the answer is {a + 2} ."], [0.8, 1.0], f"p{a}"))
        steps.append(step_row(FMT, question, ["he has 9 .\n\n", "the answer is 9 ."], [-0.8, -1.0], f"p{a}"))
    write_jsonl(tmp_path / "sft.jsonl", sft)
    write_jsonl(tmp_path / "q.jsonl", steps)
    out = tmp_path / "policy"
    metrics = train_value_head(tmp_path / "sft.jsonl", tmp_path / "q.jsonl", base, out, FAST, progress=False)
    assert metrics["sft_examples"] == 4 and metrics["labelled_steps"] == 16
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["evomath_reward_model"]["kind"] == "value"
    with safe_open(str(out / "model.safetensors"), "pt") as saved:  # only the policy's weights at the top level
        assert not any("value_head" in key for key in saved.keys())
        changed = not torch.equal(saved.get_tensor("model.layers.0.mlp.up_proj.weight"),
                                  safe_open(str(base / "model.safetensors"), "pt").get_tensor("model.layers.0.mlp.up_proj.weight"))
    assert changed and (out / "value_head" / "head.safetensors").is_file()
    scorer = load_scorer(out, kind="value")
    good, bad = scorer.score_prefixes([("tom has 3 pens .", ["he gets 2 more .\n\n"]),
                                       ("tom has 3 pens .", ["he has 9 .\n\n"])])
    scorer.close()
    assert bad[0] < 0 < good[0]


def test_the_value_head_is_full_fine_tuning(base, tmp_path):
    with pytest.raises(TrainingInputError, match="lora: false"):
        train_value_head(tmp_path / "s.jsonl", tmp_path / "q.jsonl", base, tmp_path / "o",
                         FAST.model_copy(update={"lora": True}))
