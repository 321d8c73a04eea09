"""Step-level RL (training/rl.py): the per-token advantage from hand-made rewards, steps mapped to their
tokens, the gold reward, the reward-hacking guard on synthetic series, and the refusals."""

from __future__ import annotations

import json
import math

import pytest
import torch

from evomath.config import ConfigError, ExperimentConfig, RLConfig, apply_overrides, load_config
from evomath.errors import InputError
from evomath.formats import make_format
from evomath.grading import Grader
from evomath.problem import Problem
from evomath.scoring import NotARewardModelError
from training import TrainingInputError
from training.rl import (
    EPS,
    GoldReward,
    HackingGuard,
    check_rl_inputs,
    completion_steps,
    normalized_step_rewards,
    rl_rows,
    step_end_tokens,
    token_advantages,
    train_rl,
)

FMT = make_format("natural")


def test_token_advantage_is_the_outcome_plus_the_rewards_of_this_and_later_steps():
    outcome = torch.tensor([1.0, -1.0])
    rewards = [[0.5, 2.0], [-1.0]]
    ends = [[1, 3], [2]]  # completion 0: step 1 is tokens 0-1, step 2 tokens 2-3; token 4 is padding
    got = token_advantages(outcome, rewards, ends, length=5)
    assert got.shape == (2, 5)
    assert got.tolist() == [[3.5, 3.5, 3.0, 3.0, 1.0], [-2.0, -2.0, -2.0, -1.0, -1.0]]
    half = token_advantages(outcome, rewards, ends, length=5, weight=0.5)
    assert half.tolist() == [[2.25, 2.25, 2.0, 2.0, 1.0], [-1.5, -1.5, -1.5, -1.0, -1.0]]


def test_two_steps_ending_at_one_token_both_count_there():
    got = token_advantages(torch.zeros(1), [[1.0, 2.0]], [[1, 1]], length=3)
    assert got.tolist() == [[3.0, 3.0, 0.0]]


def test_step_rewards_are_normalised_over_every_step_of_the_group_and_only_the_group():
    # group 1: steps 1, 3, 2 -> mean 2, population std sqrt(2/3); group 2: equal scores -> all 0
    got = normalized_step_rewards([[1.0, 3.0], [2.0], [0.7], [0.7, 0.7]], group=2)
    std = math.sqrt(2 / 3) + EPS
    assert got[0] == pytest.approx([-1 / std, 1 / std]) and got[1] == pytest.approx([0.0])
    assert got[2] == pytest.approx([0.0], abs=1e-9) and got[3] == pytest.approx([0.0, 0.0], abs=1e-9)
    assert normalized_step_rewards([[], []], group=2) == [[], []]
    with pytest.raises(ValueError, match="whole groups"):
        normalized_step_rewards([[1.0]] * 3, group=2)


class PieceTokenizer:
    """Token id -> text; id 9 is EOS, a special token that decoding skips."""

    eos_token_id = 9
    pieces = {1: "Tom has ", 2: "3.\n\n", 3: "So ", 4: "5.", 5: "3.\n\nSo ", 6: "he has \\boxed{5}", 9: "<eos>"}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.pieces[i] for i in ids if not (skip_special_tokens and i == self.eos_token_id))


def test_each_step_ends_at_the_token_that_completes_it_and_the_last_at_the_last_token():
    tok = PieceTokenizer()
    steps = completion_steps(FMT, tok.decode([1, 2, 3, 4, 9], skip_special_tokens=True))
    assert steps == ["Tom has 3.\n\n", "So 5."]
    assert step_end_tokens(tok, [1, 2, 3, 4, 9], steps) == [1, 4]  # EOS belongs to the final step
    straddling = [1, 5, 4]  # "3.\n\nSo " ends step 1 and opens step 2
    assert step_end_tokens(tok, straddling, completion_steps(FMT, tok.decode(straddling))) == [1, 2]
    assert step_end_tokens(tok, [], []) == []


def test_whitespace_only_pieces_join_a_neighbouring_step():
    assert completion_steps(FMT, "\n\nA\n\n\n\nB") == ["\n\nA\n\n\n\n", "B"]
    assert completion_steps(FMT, "") == []


class LengthScorer:
    """A stand-in reward model: step k of a chain scores k / 10."""

    def score_prefixes(self, items):
        return [[(k + 1) / 10 for k in range(len(steps))] for _, steps in items]


def test_gold_reward_grades_the_final_answer_and_keeps_step_scores_and_ends():
    tok = PieceTokenizer()
    ids = [[1, 2, 6, 9], [1, 2, 3, 4], []]
    texts = [tok.decode(x, skip_special_tokens=True) for x in ids]
    with Grader() as grader:
        reward = GoldReward(FMT, grader, tok, LengthScorer())
        got = reward(prompts=["p"] * 3, completions=texts, completion_ids=ids, question=["q"] * 3,
                     answer=["5", "5", "5"])
    assert got == [1.0, 0.0, 0.0]  # the second states 5 but is cut off (no EOS): no final answer
    assert [s.step_scores for s in reward.scored] == [[0.1, 0.2], [0.1, 0.2], []]
    assert [s.step_ends for s in reward.scored] == [[1, 3], [1, 3], []]
    assert [s.solution_score for s in reward.scored] == [0.1, 0.1, None]


def rising_and_falling(n: int, score_step: float, accuracy_step: float):
    return [(0.2 + score_step * i, 0.5 + accuracy_step * i) for i in range(n)]


def test_the_guard_fires_when_the_score_rises_while_accuracy_falls_over_a_window():
    guard = HackingGuard(window=3, tolerance=0.05)
    verdicts = [guard.update(s, a, step=i + 1) for i, (s, a) in enumerate(rising_and_falling(8, 0.03, -0.03))]
    assert verdicts[:5] == [None] * 5  # two full windows are needed
    # windows (0.2, 0.23, 0.26) -> (0.29, 0.32, 0.35): +0.09; accuracy 0.47 -> 0.38: -0.09
    assert verdicts[5].startswith("reward hacking at step 6: the mean reward-model score rose 0.230 -> 0.320 while "
                                  "gold accuracy fell 0.470 -> 0.380")
    assert "rl.hack_window=3, rl.hack_tolerance=0.05, rl.hack_z=2.0" in verdicts[5]


# The demo's process RL (benchmarks/rl.py, 2 problems x 8 completions a step), steps 6-15: a 0.05
# tolerance alone fired on these (score -0.626 -> -0.517, accuracy 0.325 -> 0.237), a swing of
# the problems drawn: each window's steps spread by about 0.1 in both.
NOISY_SCORES = [-0.799, -0.685, -0.732, -0.510, -0.402, -0.655, -0.614, -0.490, -0.305, -0.522]
NOISY_ACCURACIES = [0.188, 0.375, 0.250, 0.312, 0.500, 0.125, 0.188, 0.375, 0.188, 0.312]


def test_the_guard_ignores_a_swing_within_the_noise_of_its_windows_and_not_a_real_drop():
    quiet = HackingGuard(window=5, tolerance=0.05)
    assert [quiet.update(s, a, step=i) for i, (s, a) in enumerate(zip(NOISY_SCORES, NOISY_ACCURACIES))] == [None] * 10
    loud = HackingGuard(window=5, tolerance=0.05, z=0.0)  # the guard without its noise test fires
    assert [loud.update(s, a, step=i) for i, (s, a) in enumerate(zip(NOISY_SCORES, NOISY_ACCURACIES))][-1]
    guard = HackingGuard(window=5, tolerance=0.05)  # the same spread around a real drop: 0.325 -> 0.075
    dropped = NOISY_ACCURACIES[:5] + [a - 0.25 for a in NOISY_ACCURACIES[:5]]
    risen = NOISY_SCORES[:5] + [s + 0.4 for s in NOISY_SCORES[:5]]
    assert [guard.update(s, a, step=i) for i, (s, a) in enumerate(zip(risen, dropped))][-1]


@pytest.mark.parametrize(("score_step", "accuracy_step"), [(0.03, 0.03), (0.0, -0.03), (0.03, 0.0), (0.01, -0.01)])
def test_the_guard_stays_quiet_unless_both_move_past_the_tolerance(score_step, accuracy_step):
    guard = HackingGuard(window=3, tolerance=0.05)
    series = rising_and_falling(12, score_step, accuracy_step)
    assert all(guard.update(s, a, step=i) is None for i, (s, a) in enumerate(series))


def test_steps_without_a_scored_completion_are_not_recorded():
    guard = HackingGuard(window=1, tolerance=0.0)
    assert guard.update(None, 0.0, step=1) is None and guard.scores == []
    assert guard.update(0.1, 0.9, step=2) is None
    assert guard.update(0.5, 0.1, step=3) is not None


def test_rl_config_refuses_partial_groups_and_batches():
    with pytest.raises(ValueError, match="not a multiple of num_generations"):
        RLConfig(batch_size=10, num_generations=4)
    with pytest.raises(ValueError, match="not a multiple of per_device_batch_size"):
        RLConfig(batch_size=8, num_generations=4, per_device_batch_size=3)


def test_process_rewards_in_a_round_need_the_rounds_reward_model_kind():
    with pytest.raises(ConfigError, match="rl.reward_kind is 'prm' but the round trains reward_model 'ppm'"):
        apply_overrides(ExperimentConfig(), ["rl.enabled=true"])
    assert apply_overrides(ExperimentConfig(), ["rl.enabled=true", "rl.reward_kind=ppm"]).rl.enabled
    assert apply_overrides(ExperimentConfig(), ["rl.enabled=true", "rl.rewards=outcome"]).rl.enabled


def test_shipped_configs_keep_rl_off_on_the_cpu_and_math_shepherds_settings_on_gpus():
    assert load_config("configs/cpu_demo.yaml").rl.enabled is False
    gpu = load_config("configs/gpu_math_shepherd_7b.yaml").rl
    assert (gpu.enabled, gpu.rewards, gpu.reward_kind, gpu.learning_rate, gpu.beta, gpu.use_vllm) == (
        True, "process", "prm", 4e-7, 0.04, True)


def test_rows_use_the_prompt_the_policy_was_fine_tuned_on():
    fmt = make_format("natural", "chat_few_shot", chat=lambda text: f"<user>{text}</user>")
    row = rl_rows([Problem("p1", "Tom has 3 pens.", "3")], fmt)[0]
    assert row == {"prompt": fmt.styled_prompt("Tom has 3 pens.", "chat"), "question": "Tom has 3 pens.", "answer": "3"}
    assert "Examples" not in row["prompt"]


def test_bad_inputs_are_refused_in_one_line(tmp_path):
    problems = [Problem("p1", "q", "1")]
    with pytest.raises(TrainingInputError, match="rl: no training problems"):
        check_rl_inputs([], tmp_path, RLConfig(), FMT)
    with pytest.raises(InputError, match="use step_format natural"):
        check_rl_inputs(problems, tmp_path, RLConfig(), make_format("code"))
    with pytest.raises(InputError, match=r"rl.rewards is 'process': give the reward model .*--reward-model DIR"):
        check_rl_inputs(problems, None, RLConfig(), FMT)
    check_rl_inputs(problems, None, RLConfig(rewards="outcome"), FMT)


def test_a_ppm_given_where_a_prm_is_asked_for_is_named(tmp_path):
    from tiny_model import make_tiny_model

    policy = make_tiny_model(tmp_path / "policy", dtype="float32")
    ppm = tmp_path / "ppm"
    ppm.mkdir()
    (ppm / "config.json").write_text(json.dumps({"evomath_reward_model": {"kind": "ppm", "head": "tanh",
                                                                          "format": "natural"}}))
    with pytest.raises(NotARewardModelError, match=f"{ppm} is a PPM, not a PRM"):
        train_rl([Problem("p1", "q", "1")], policy, ppm, tmp_path / "out", RLConfig(), FMT, progress=False)
    assert not (tmp_path / "out").exists()


# --- a few real GRPO steps on the tiny random model -------------------------------------------------

TINY = RLConfig(learning_rate=1e-2, batch_size=4, per_device_batch_size=4, num_generations=2,
                max_completion_length=6, max_length=64, temperature=1.0, beta=0.04, reward_kind="prm", bf16=False)
TINY_PROBLEMS = [Problem("p1", "tom has 3 pens .", "5"), Problem("p2", "tom has 4 pens .", "6")]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny policy and a PRM trained from it on a few labelled steps."""
    from tiny_model import make_tiny_model

    from evomath.config import PRMConfig
    from evomath.files import write_jsonl
    from training.step_rewards import step_row, train_step_reward

    root = tmp_path_factory.mktemp("rl")
    policy = make_tiny_model(root / "policy", dtype="float32")
    rows = [step_row(FMT, f"tom has {a} pens .", ["he gets 2 more .\n\n", f"the answer is {a + 2} ."], [1.0, 1.0],
                     f"p{a}") for a in range(1, 4)]
    rows += [step_row(FMT, f"tom has {a} pens .", ["he has 9 .\n\n", "the answer is 9 ."], [0.0, 0.0], f"p{a}")
             for a in range(1, 4)]
    write_jsonl(root / "labels.jsonl", rows)
    config = PRMConfig(learning_rate=1e-2, epochs=2, batch_size=6, per_device_batch_size=6, max_length=64,
                       heldout_fraction=0.0, bf16=False)
    train_step_reward(root / "labels.jsonl", policy, root / "prm", config, "prm", progress=False)
    return policy, root / "prm"


def weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_process_rewards_move_the_policy_where_the_outcome_gives_no_signal(tiny_models, tmp_path):
    """The tiny model never boxes the gold answer, so every outcome advantage is 0: outcome-only RL
    leaves the weights as they were (the KL term has no gradient at the reference), process RL
    moves them, and both record their curves."""
    policy, prm = tiny_models
    runs = {}
    for rewards in ("outcome", "process"):
        config = TINY.model_copy(update={"rewards": rewards})
        runs[rewards] = train_rl(TINY_PROBLEMS, policy, prm, tmp_path / rewards, config, FMT, progress=False,
                                 max_steps=2)
    before = weights(policy)
    for rewards, metrics in runs.items():
        assert metrics["saved"] == 1 and metrics["stopped"] == "" and metrics["rl_steps"] == 2
        assert metrics["gold_accuracy_last"] == 0.0 and -1 <= metrics["prm_score_last"] <= 1
        assert metrics["generated_tokens"] > 0
        rows = [json.loads(line) for line in (tmp_path / f"{rewards}-curves.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2]
        assert {"gold_accuracy", "prm_score", "kl", "generated_tokens", "loss"} <= set(rows[0])
    moved = {rewards: max((weights(tmp_path / rewards)[k].float() - v.float()).abs().max().item()
                          for k, v in before.items()) for rewards in runs}
    assert moved["outcome"] == 0.0 and moved["process"] > 0.0


def test_a_run_the_guard_stops_writes_its_curves_and_no_model(tiny_models, tmp_path, monkeypatch):
    policy, prm = tiny_models
    monkeypatch.setattr(HackingGuard, "update", lambda self, score, accuracy, step: f"reward hacking at step {step}")
    metrics = train_rl(TINY_PROBLEMS, policy, prm, tmp_path / "out", TINY, FMT, progress=False, max_steps=3)
    assert metrics["stopped"] == "reward hacking at step 1" and metrics["saved"] == 0 and metrics["rl_steps"] == 1
    assert not (tmp_path / "out").exists()
    assert len((tmp_path / "out-curves.jsonl").read_text().splitlines()) == 1


def test_the_token_budget_ends_the_run(tiny_models, tmp_path):
    policy, prm = tiny_models
    config = TINY.model_copy(update={"token_budget": 1})
    metrics = train_rl(TINY_PROBLEMS, policy, prm, tmp_path / "out", config, FMT, progress=False, max_steps=5)
    assert metrics["rl_steps"] == 1 and metrics["saved"] == 1


# --- the reinforce stage ------------------------------------------------------------------------


def _stage_round(tmp_path, monkeypatch, result: dict, **rl):
    """Round 1 with an SFT policy and a PRM on disk and ``training.rl.train_rl`` replaced by a fake
    that writes a model (when ``result`` says saved) and returns ``result``; returns (ctx, calls)."""
    import training.rl
    from evolution import stages
    from evomath.config import DataConfig, SearchConfig
    from evomath.files import write_jsonl

    write_jsonl(tmp_path / "problems.jsonl", [{"id": "p1", "question": "tom has 3 pens .", "answer": "3"}])
    cfg = ExperimentConfig(name="unit", run_dir=tmp_path, reward_model="prm",
                           search=SearchConfig(step_format="natural", prompt_style="bare"),
                           data=DataConfig(source=str(tmp_path / "problems.jsonl")),
                           rl=RLConfig(reward_kind="prm", **rl))
    ctx = stages.round_context(cfg, 1, policy="base")
    for name in (stages.POLICY, stages.PPM):
        ctx.path(name).mkdir()
        (ctx.path(name) / "config.json").write_text("{}")
    calls = []

    def fake(problems, policy, reward, out, config, fmt, **kwargs):
        calls.append((problems, policy, reward, out, fmt.name, kwargs["curves"]))
        if result["saved"]:
            out.mkdir()
        return result

    monkeypatch.setattr(training.rl, "train_rl", fake)
    monkeypatch.setattr("evomath.models.resolve_model", lambda spec: spec)
    return ctx, calls


def test_the_reinforce_stage_trains_the_rounds_sft_policy_with_its_reward_model(tmp_path, monkeypatch):
    from evolution import stages

    ctx, calls = _stage_round(tmp_path, monkeypatch, {"saved": 1, "stopped": "", "gold_accuracy_last": 0.5},
                              enabled=True)
    metrics = stages.reinforce(ctx)
    [(problems, policy, reward, out, fmt, curves)] = calls
    assert [p.id for p in problems] == ["p1"] and fmt == "natural"
    assert (policy, reward, out) == (str(ctx.path(stages.POLICY)), str(ctx.path(stages.PPM)), ctx.path("policy-rl"))
    assert curves == ctx.path("rl-curves.jsonl")
    assert metrics["rl_trained"] == 1 and metrics["reward_hacking"] == 0 and metrics["gold_accuracy_last"] == 0.5
    assert metrics["artifacts"] == {"curves": str(curves), "policy_rl": str(out)}
    assert stages.round_models(ctx) == (str(out), str(ctx.path(stages.PPM)))  # the RL policy is evaluated
    assert stages.round_context(ctx.config, 2).policy == str(out)  # and round 2 generates with it


def test_a_round_keeps_its_sft_policy_when_rl_is_off_lacks_a_reward_model_or_was_stopped(tmp_path, monkeypatch):
    from evolution import stages

    ctx, calls = _stage_round(tmp_path / "off", monkeypatch, {"saved": 1, "stopped": ""})
    assert stages.reinforce(ctx) == {"rl_trained": 0, "artifacts": {}} and calls == []
    stopped = {"saved": 0, "stopped": "reward hacking at step 6: ..."}
    ctx, calls = _stage_round(tmp_path / "hacked", monkeypatch, stopped, enabled=True)
    metrics = stages.reinforce(ctx)
    assert metrics["rl_trained"] == 0 and metrics["reward_hacking"] == 1 and metrics["stopped"] == stopped["stopped"]
    assert stages.round_models(ctx)[0] == str(ctx.path(stages.POLICY))
    ctx, calls = _stage_round(tmp_path / "early", monkeypatch, {"saved": 1, "stopped": ""}, enabled=True)
    (ctx.path(stages.PPM) / "config.json").unlink()
    ctx.path(stages.PPM).rmdir()  # round 1 trained no reward model and had none before
    assert stages.reinforce(ctx) == {"rl_trained": 0, "artifacts": {}} and calls == []


def test_rl_buckets_train_on_the_rounds_problems_of_those_buckets_only(tmp_path, monkeypatch):
    from evolution import stages
    from evomath.files import write_jsonl

    ctx, calls = _stage_round(tmp_path, monkeypatch, {"saved": 1, "stopped": ""}, enabled=True, buckets=["medium"])
    write_jsonl(ctx.config.data.source, [{"id": pid, "question": f"q {pid}", "answer": "3"} for pid in ("p1", "p2", "p3")])
    write_jsonl(ctx.path(stages.BUCKETS), [{"problem_id": "p1", "bucket": "hard"},
                                          {"problem_id": "p2", "bucket": "medium"}])
    metrics = stages.reinforce(ctx)
    assert [p.id for p in calls[0][0]] == ["p2"] and metrics["rl_problems"] == 1
    assert ctx.path(stages.BUCKETS) in stages.stage_inputs(ctx, "reinforce")  # new buckets rerun the stage
    ctx, calls = _stage_round(tmp_path / "none", monkeypatch, {"saved": 1, "stopped": ""}, enabled=True,
                              buckets=["easy"])
    write_jsonl(ctx.path(stages.BUCKETS), [{"problem_id": "p1", "bucket": "hard"}])
    assert stages.reinforce(ctx) == {"rl_trained": 0, "rl_problems": 0, "artifacts": {}} and calls == []
    assert stages.round_models(ctx)[0] == str(ctx.path(stages.POLICY))


def test_rl_buckets_name_known_buckets():
    with pytest.raises(ValueError, match="buckets.0"):
        RLConfig(buckets=["middling"])


# --- the command line ---------------------------------------------------------------------------


def test_the_rl_command_refuses_bad_input_in_one_line(tiny_models, tmp_path, capsys):
    from training.cli import main

    policy, prm = tiny_models
    common = ["train", "rl", "--policy", str(policy), "--problems", "demo_train:1-2", "--out", str(tmp_path / "o"),
              "--step-format", "natural", "--prompt-style", "bare"]
    assert main(common) == 2
    assert capsys.readouterr().err.strip().endswith("give the reward model whose step scores are the rewards "
                                                    "(--reward-model DIR), or set rl.rewards to 'outcome'")
    assert main([*common, "--reward-model", str(prm), "--reward-kind", "ppm"]) == 2
    assert f"{prm} is a PRM, not a PPM" in capsys.readouterr().err
    assert main([*common, "--reward-model", str(prm), "--limit", "0"]) == 2
    assert "rl: no training problems" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_rl_command_relaunches_under_accelerate_on_several_gpus(monkeypatch, capsys):
    import subprocess
    import sys

    from training.cli import main

    argv = ["train", "rl", "--policy", "p", "--reward-model", "r", "--problems", "demo_train:1-2", "--out", "o"]
    launched = []
    monkeypatch.setattr(sys, "argv", ["evomath", *argv])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(subprocess, "run", lambda command: launched.append(command) or subprocess.CompletedProcess(
        command, 0))
    assert main(argv) == 0
    [command] = launched
    assert command[:2] == ["accelerate", "launch"] and command[3].endswith("training/accelerate_fsdp.yaml")
    assert command[4:6] == ["--num_processes", "4"] and command[6:] == ["-m", "training.cli", *argv]
