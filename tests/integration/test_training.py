"""Training on the embedded model: SFT (full and LoRA) and the PPM, a few steps each, reloaded and served.

Datasets are tiny and runs stop after two optimizer steps, so the whole file fits in a few minutes
on 2 CPU cores. Refusals of bad input need no model and run in the fast suite.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest
import torch
from safetensors import safe_open

from evomath.config import EngineConfig, PPMConfig, SFTConfig
from evomath.files import ArtifactError, write_jsonl
from evomath.scoring import NotARewardModelError, is_ppm_dir, load_scorer, ppm_text
from evomath.tree import Tree, write_trees
from training import TrainingInputError
from training.cli import main

slow = pytest.mark.slow
SFT = SFTConfig(learning_rate=1e-3, batch_size=2, per_device_batch_size=2, max_length=48)
PPM = PPMConfig(learning_rate=1e-3, batch_size=2, per_device_batch_size=2, max_length=48, heldout_fraction=0.25)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """SFT rows and PPM pairs about one-operation word problems (6 problems, short texts)."""
    root = tmp_path_factory.mktemp("data")
    sft, pairs = [], []
    for a, b in [(3, 4), (5, 2), (6, 3), (7, 5), (2, 9), (8, 1)]:
        question = f"Tom has {a} pens and gets {b} more. How many pens does he have?"
        sft.append({"prompt": f"{question}\n", "completion": f"He has {a} + {b} = {a + b} pens. \\boxed{{{a + b}}}"})
        steps = [(f"{a} + {b} = {a + b}", f"{a} - {b} = {a - b}"),
                 (f"{b} + {a} = {a + b}", f"{a} * {b} = {a * b}")]
        for good, bad in steps:
            pairs.append({
                "prompt": ppm_text(question, ""), "chosen": f"He adds: {good} pens.",
                "rejected": f"He errs: {bad} pens.", "depth": 1, "problem_id": f"p{a}{b}",
                "q_chosen": 1.0, "q_rejected": -1.0, "final": False, "format": "natural",
            })
    write_jsonl(root / "sft.jsonl", sft)
    write_jsonl(root / "pairs.jsonl", pairs)
    return root


def changed(before_dir, after_dir, key: str) -> bool:
    """Does tensor ``key`` differ between two saved models? (Read straight from safetensors: no model built.)"""
    tensors = []
    for model_dir in (before_dir, after_dir):
        with safe_open(str(model_dir / "model.safetensors"), "pt") as saved:
            tensors.append(saved.get_tensor(key))
    return not torch.equal(*tensors)


@slow
def test_full_sft_changes_the_weights_and_reloads(embedded_model_dir, data, tmp_path):
    from training.sft import train_sft

    out = tmp_path / "policy"
    metrics = train_sft(data / "sft.jsonl", embedded_model_dir, out, SFT, progress=False, max_steps=2)
    assert metrics["steps"] == 2 and metrics["tokens"] > 0 and metrics["train_loss"] > 0
    assert changed(embedded_model_dir, out, "model.layers.0.self_attn.q_proj.weight")
    assert not list(tmp_path.glob(".policy.*"))  # no staging directory left behind
    with pytest.raises(TrainingInputError, match="already holds a model"):
        train_sft(data / "sft.jsonl", embedded_model_dir, out, SFT, progress=False, max_steps=1)


@slow
def test_lora_sft_is_merged_into_a_plain_model_that_vllm_serves(embedded_model_dir, data, tmp_path):
    from evomath.models import verify_model
    from training.sft import train_sft

    out = tmp_path / "policy-lora"
    metrics = train_sft(data / "sft.jsonl", embedded_model_dir, out, SFT.model_copy(update={"lora": True}),
                        progress=False, max_steps=2)
    assert metrics["steps"] == 2 and metrics["lora"]
    assert not (out / "adapter_config.json").exists()
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert changed(embedded_model_dir, out, "model.layers.0.mlp.down_proj.weight")
    assert verify_model(out).startswith("ok: greedy completion")


@slow
def test_ppm_trains_reports_accuracy_and_scores_alike_in_both_backends(embedded_model_dir, data, tmp_path):
    from training.ppm import train_ppm

    out = tmp_path / "ppm"
    metrics = train_ppm(data / "pairs.jsonl", embedded_model_dir, out, PPM, progress=False, max_steps=2)
    assert metrics["steps"] == 2 and metrics["heldout_pairs"] >= 3 and metrics["pairs"] + metrics["heldout_pairs"] == 12
    assert 0.0 <= metrics["heldout_accuracy"] <= 1.0
    assert is_ppm_dir(out) and not is_ppm_dir(embedded_model_dir)
    assert changed(embedded_model_dir, out, "model.layers.0.self_attn.q_proj.weight")
    with pytest.raises(NotARewardModelError, match="not an evomath PPM"):
        load_scorer(embedded_model_dir)

    items = [("Tom has 3 pens and gets 4 more. How many pens does he have?", ["He adds: 3 + 4 = 7 pens."]),
             ("Tom has 3 pens and gets 4 more. How many pens does he have?", ["He errs: 3 - 4 = -1 pens."])]
    question, steps = items[0][0], ["He starts with 3 pens.\n\n", "He gets 4: 3 + 4 = 7.\n\n", "\\boxed{7}"]
    scorer = load_scorer(out, backend="transformers")
    local = scorer.score(items)
    each_prefix = scorer.score([(question, steps[: k + 1]) for k in range(len(steps))])
    [one_pass] = scorer.score_prefixes([(question, steps)])
    scorer.close()
    assert all(-1.0 <= s <= 1.0 for s in local) and local[0] != local[1]
    assert one_pass == pytest.approx(each_prefix, abs=1e-5)
    served = load_scorer(out, backend="vllm", engine=EngineConfig(dtype="float32", cpu_kv_cache_gb=0.25))
    try:
        assert served.score(items) == pytest.approx(local, abs=1e-4)
        assert served.score_prefixes([(question, steps)])[0] == pytest.approx(each_prefix, abs=1e-4)
    finally:
        served.close()


@slow
def test_lora_ppm_merges_its_head_and_keeps_the_marker(embedded_model_dir, data, tmp_path):
    from training.ppm import train_ppm

    out = tmp_path / "ppm-lora"
    config = PPM.model_copy(update={"lora": True, "heldout_fraction": 0.0})
    metrics = train_ppm(data / "pairs.jsonl", embedded_model_dir, out, config, progress=False, max_steps=1)
    assert metrics["heldout_accuracy"] is None and metrics["pairs"] == 12
    assert is_ppm_dir(out) and not (out / "adapter_config.json").exists()
    with safe_open(str(out / "model.safetensors"), "pt") as saved:
        assert "score.weight" in saved.keys() and not any("lora" in key for key in saved.keys())


def test_training_refuses_bad_input_with_one_line_and_leaves_nothing(data, tmp_path, monkeypatch):
    from training import sft as sft_module
    from training.ppm import train_ppm
    from training.sft import train_sft

    base = tmp_path / "base"
    base.mkdir()
    with pytest.raises(TrainingInputError, match="config.json is missing"):
        train_sft(data / "sft.jsonl", base, tmp_path / "out", SFT)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(TrainingInputError, match="is empty: nothing to train on"):
        train_ppm(tmp_path / "empty.jsonl", base, tmp_path / "out", PPM)
    with pytest.raises(ArtifactError, match=r"pairs\.jsonl:1: completion: missing"):
        train_sft(data / "pairs.jsonl", base, tmp_path / "out", SFT)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    monkeypatch.setattr(sft_module, "check_base_model", lambda path: path)
    with pytest.raises(TrainingInputError, match="holds no model"):
        train_sft(data / "sft.jsonl", base, tmp_path / "busy", SFT)

    def crash(*args, **kwargs):
        raise RuntimeError("killed mid-training")

    monkeypatch.setattr(sft_module, "SFT", dataclasses.replace(sft_module.SFT, build=crash))
    with pytest.raises(RuntimeError, match="killed"):
        train_sft(data / "sft.jsonl", base, tmp_path / "new", SFT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "busy", "empty.jsonl"]


def test_data_commands_write_buckets_sft_data_and_pairs(tmp_path, capsys):
    tree = Tree("p1", "What is 3 + 4?", "7")
    first = tree.add_child(tree.root, "Three plus four.\n\n", visits=2, value_sum=0.0)
    tree.add_child(first, "It is \\boxed{7}", terminal="answer", answer="7", correct=True, visits=1, value_sum=1.0)
    tree.add_child(first, "It is surely \\boxed{12}", terminal="answer", answer="12", correct=False,
                   visits=1, value_sum=-1.0)
    write_trees(tmp_path / "trees.jsonl", [tree])
    assert main(["data", "buckets", "--trees", str(tmp_path / "trees.jsonl"), "--out", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text()) == {
        "counts": {"easy": 0, "medium": 1, "hard": 0}, "hard_problem_ids": []}
    assert main(["data", "sft", "--trees", str(tmp_path / "trees.jsonl"), "--out", str(tmp_path / "sft.jsonl"),
                 "--step-format", "natural"]) == 0
    assert main(["data", "pairs", "--trees", str(tmp_path / "trees.jsonl"), "--out", str(tmp_path / "pairs.jsonl"),
                 "--step-format", "natural", "--min-edit-distance", "5"]) == 0
    assert '"pairs": 2' in capsys.readouterr().out  # the step pair and the final-answer pair
    assert main(["data", "sft", "--trees", str(tmp_path / "trees.jsonl"), "--out", str(tmp_path / "c.jsonl"),
                 "--step-format", "natural", "--prompt-style", "chat"]) == 2
    assert "--prompt-style chat needs --model" in capsys.readouterr().err


def test_train_command_prints_what_it_would_run(tmp_path, capsys, monkeypatch):
    argv = ["train", "sft", "--data", "d.jsonl", "--base", "base", "--out", str(tmp_path / "o"), "--print-command"]
    monkeypatch.setattr(sys, "argv", ["evomath", *argv])
    assert main(argv) == 0
    assert "-m training.cli train sft --data d.jsonl --base base" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()


def test_sft_command_uses_accelerate_with_fsdp_on_several_gpus():
    from training.sft import sft_command

    single = sft_command("d.jsonl", "base", "out")
    assert single[1:4] == ["-m", "training.cli", "train"]
    multi = sft_command("d.jsonl", "base", "out", num_gpus=4, extra=["--lora"])
    assert multi[:3] == ["accelerate", "launch", "--config_file"] and multi[3].endswith("training/accelerate_fsdp.yaml")
    assert multi[4:6] == ["--num_processes", "4"] and multi[-1] == "--lora"
