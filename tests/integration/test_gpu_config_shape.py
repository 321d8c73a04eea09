"""The GPU configs' shape on the CPU: ``configs/gpu_rstar_1.5b.yaml`` with only the model and the sizes
overridden on the command line, one full round through ``evomath run``, then the training commands.

The model is the embedded one laid out as a Hugging Face cache snapshot and named by a hub-style id,
with the hub unreachable (``HF_HUB_OFFLINE=1``): generation, SFT from ``base`` (the hub id), the PPM,
evaluation and the stage keys all go through the snapshot. Everything but CUDA is exercised: rStar's
code-augmented steps in the sandbox, few-shot prompts, the extra rollouts, every evaluation method
kind, fp32 master weights. The 135M model writes almost no valid rStar code, so the round's own SFT
data and pairs are usually empty (its training stages then pass the models on); the training commands
afterwards train the same hub id on a hand-written verified solution and pair, with the GPU config's
training sections.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hf_cache import install_snapshot
from safetensors import safe_open

from evolution import stages
from evomath.config import apply_overrides, load_config
from evomath.files import write_jsonl
from evomath.scoring import ppm_text
from evomath.tree import read_trees

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "gpu_rstar_1.5b.yaml"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SIZES = [
    "rounds=1", "data.limit=3", "hard_extra_rollouts={1: [1]}", "engine.enforce_eager=true",
    "search.rollouts=2", "search.n_candidates=2", "search.max_depth=4", "search.max_step_tokens=64",
    "eval_search.n_candidates=2", "eval_search.max_depth=4", "eval_search.max_step_tokens=64",
    "sandbox.workers=1", "sandbox.timeout_s=5", "eval.limit=1", "eval.methods=[greedy, maj@2, ppm-bon@2, beam-1x2, mcts@1]",
    "sft.batch_size=2", "sft.per_device_batch_size=2", "sft.max_length=512",
    "ppm.batch_size=2", "ppm.per_device_batch_size=1", "ppm.max_length=512",
]


@pytest.fixture(scope="module")
def hub(embedded_model_dir, tmp_path_factory):
    """The embedded model as a hub snapshot in a private cache, and the environment that finds it."""
    root = tmp_path_factory.mktemp("gpu-shape")
    cache = root / "hf-cache"
    snapshot = install_snapshot(embedded_model_dir, cache, HUB_ID, "1f" * 20)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return root, snapshot, env


def evomath(env, *args, timeout=1500) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "deployments.cli", *args], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def finished_round(hub):
    root, snapshot, env = hub
    overrides = [f"policy={HUB_ID}", f"run_dir={root / 'runs'}", *SIZES]
    result = evomath(env, "run", str(CONFIG), *[arg for o in overrides for arg in ("--set", o)])
    config = apply_overrides(load_config(CONFIG), overrides)
    return config, result


def test_one_round_of_the_gpu_config_runs_through_every_stage(finished_round, hub):
    config, result = finished_round
    _, snapshot, _ = hub
    assert "memory plan on CPU only" in result.stdout
    assert config.search.step_format == "code" and config.sft_from == "base" and config.policy == HUB_ID
    ctx = stages.round_context(config, 1)
    for stage in stages.STAGES:
        assert ctx.path(f"stage-{stage}.json").is_file(), stage
    assert stages.round_dir(config, 0).joinpath("stage-evaluate.json").is_file()  # the base model's baseline
    trees = list(read_trees(ctx.path("trees-final.jsonl")))
    assert len(trees) == 3 and all(t.meta["step_format"] == "code" for t in trees)
    assert len({t.meta[stages.GENERATION_KEY] for t in trees}) == 1  # made under one key, resumable
    assert any(n.code_output is not None for t in trees for n in t.nodes), "no step's code ran in the sandbox"
    summary = json.loads(ctx.path("eval/summary.json").read_text())
    assert {row["benchmark"] for row in summary} == set(config.eval.benchmarks)
    assert {"greedy", "maj@2"} <= {row["method"] for row in summary}


def test_the_training_commands_take_the_hub_id_as_their_base(finished_round, hub):
    config, _ = finished_round
    root, snapshot, env = hub
    question = "Tom has 3 pens and buys 4 more. How many pens does he have?"
    solution = ("# Step 1: add the pens\npens = 3 + 4\n<end_of_step>\n# Step 2: print it\nprint(pens)\n<end_of_code>\n"
                "<output>7<end_of_output>\n<answer>He has \\boxed{7} pens.<end_of_answer>")
    write_jsonl(root / "sft.jsonl", [{"prompt": f"<|user|>:\n{question}\n<|assistant|>: ", "completion": solution}])
    wrong = solution.replace("3 + 4", "3 * 4").replace(">7<", ">12<").replace("{7}", "{12}")
    write_jsonl(root / "pairs.jsonl", [{"prompt": ppm_text(question, ""), "chosen": solution, "rejected": wrong,
                                        "problem_id": "p", "format": "code"}] * 2)
    policy, ppm = root / "policy", root / "ppm"
    # two steps: rStar's warm-up (3% of the steps, at least one) starts the schedule at lr 0
    evomath(env, "train", "sft", "--data", str(root / "sft.jsonl"), "--base", HUB_ID, "--out", str(policy),
            "--config", str(CONFIG), "--max-steps", "2", "--no-progress")
    with safe_open(str(snapshot / "model.safetensors"), "pt") as before, \
            safe_open(str(policy / "model.safetensors"), "pt") as after:
        key = "model.layers.0.self_attn.q_proj.weight"
        assert not torch.equal(before.get_tensor(key), after.get_tensor(key))
        assert after.get_tensor(key).dtype == before.get_tensor(key).dtype  # stored in the base's dtype
    evomath(env, "train", "ppm", "--pairs", str(root / "pairs.jsonl"), "--base", str(policy), "--out", str(ppm),
            "--config", str(CONFIG), "--max-steps", "1", "--no-progress", "--heldout-fraction", "0")
    assert json.loads((ppm / "config.json").read_text())["evomath_reward_model"] == {"kind": "ppm", "head": "tanh", "format": "code"}


def test_an_uncached_hub_id_fails_before_any_work_with_the_download_hint(hub):
    root, _, env = hub
    write_jsonl(root / "one.jsonl", [{"prompt": "q", "completion": "a"}])
    result = subprocess.run(
        [sys.executable, "-m", "deployments.cli", "train", "sft", "--data", str(root / "one.jsonl"), "--base",
         "nobody/no-such-model", "--out", str(root / "never")], env=env, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert "hf download nobody/no-such-model" in result.stderr
    assert not (root / "never").exists()
