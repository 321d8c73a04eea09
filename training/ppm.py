"""Process preference model training (rStar step 6).

The PPM starts from this round's policy with the language-model head replaced by a scalar head
(``AutoModelForSequenceClassification``, one label) and is trained with the pairwise Bradley-Terry
loss -log σ(r_chosen - r_rejected).

Decision: TRL's ``RewardTrainer``, subclassed so the loss is taken over r = tanh(head output).
rStar's PPM *is* the tanh-bounded score: its head is "a linear layer and a tanh", and the BT loss is
over those bounded rewards. Training the raw score and applying tanh only at inference would rank
the same way (tanh is monotonic) but optimise a different objective: the raw margin grows without
bound, while over tanh scores the margin is at most 2, so the loss saturates and keeps scores on the
[-1, 1] scale the search mixes with terminal rewards (+1/-1) and Q values. Subclassing keeps TRL's
data handling, collator, LoRA, FSDP and logging; only ``compute_loss`` changes. The saved model is a
plain sequence-classification model (raw head), and scorers apply the tanh (``evomath.scoring``).

Texts are tokenised here with ``evomath.scoring.encode`` (no EOS appended), the tokenisation both
serving backends use, so the PPM is scored on exactly what it was trained on. Pair accuracy is
measured on ``heldout_fraction`` of the pairs, held out by whole problems (pairs of one problem share
prefixes, so a random split would leak), with the saved directory loaded back through the scorer.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from evomath.config import PPMConfig
from evomath.scoring import HEADS, MARKER_KEY, RewardScorer, encode
from training import TrainingInputError
from training.model_io import check_base_model, common_trainer_args, lora_config, model_init_kwargs, read_rows
from training.trainer import Recipe, prepare, train


def train_ppm(
    pairs_path: str | Path,
    base_model_dir: str | Path,
    out_dir: str | Path,
    config: PPMConfig,
    progress: bool = True,
    *,
    overwrite: bool = False,
    max_steps: int | None = None,
    callbacks: list | None = None,
    step_format: str | None = None,
    kind: str = "ppm",
) -> dict:
    """Train a PPM from the policy in ``base_model_dir`` on the pairs JSONL into ``out_dir``.

    ``step_format`` overrides the format named in the pairs; ``callbacks`` are ``TrainerCallback``s.
    ``kind="orm"``: rStar's outcome baseline, the same head and loss over whole-solution pairs
    (``ppm_pairs.outcome_pairs``).
    """
    rows = read_rows(pairs_path, PPM.fields, PPM.what)
    fmt_name = step_format or rows[0].get("format")
    if not fmt_name:
        raise TrainingInputError(f"{pairs_path}: the pairs name no step format; pass step_format")
    base = check_base_model(base_model_dir)
    train_rows, heldout = split_heldout(rows, config.heldout_fraction, config.seed)

    def mark_and_measure(stage: Path, trainer) -> dict:
        mark_reward_model(stage, kind, fmt_name)
        return {"heldout_accuracy": pair_accuracy(stage, heldout) if heldout else None}

    metrics, trainer = train(PPM, train_rows, base, out_dir, config, progress, overwrite=overwrite,
                             max_steps=max_steps, callbacks=callbacks, on_saved=mark_and_measure)
    seconds = metrics["seconds"]
    return metrics | {
        "pairs": len(train_rows),
        "pairs_too_long": len(train_rows) - len(trainer.train_dataset),
        "heldout_pairs": len(heldout),
        "pairs_per_s": trainer.pairs_seen / seconds if seconds else 0.0,
    }


def split_heldout(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out whole problems, in a seeded order, until ``fraction`` of the pairs is held out.

    At least one problem always stays in training; with a single problem, single pairs are held out.
    """
    if fraction <= 0 or len(rows) < 2:
        return rows, []
    target = min(len(rows) - 1, max(1, round(fraction * len(rows))))
    per_problem = Counter(row.get("problem_id") for row in rows)
    keys = sorted(per_problem, key=str)
    rng = random.Random(seed)
    rng.shuffle(keys)
    if len(keys) == 1:
        held_idx = set(rng.sample(range(len(rows)), target))
        return _partition(rows, lambda i, row: i in held_idx)
    held, count = set(), 0
    for key in keys[:-1]:
        if count >= target:
            break
        held.add(key)
        count += per_problem[key]
    return _partition(rows, lambda i, row: row.get("problem_id") in held)


def _partition(rows, is_held) -> tuple[list[dict], list[dict]]:
    train, held = [], []
    for i, row in enumerate(rows):
        (held if is_held(i, row) else train).append(row)
    return train, held


def _tanh_reward_trainer_class():
    """Built on first use so importing this module does not import TRL (slow) for the command line's help."""
    import torch
    from trl import RewardTrainer

    class TanhRewardTrainer(RewardTrainer):
        """RewardTrainer whose Bradley-Terry loss is over tanh-bounded scores (see the module docstring)."""

        pairs_seen = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mode = "train" if self.model.training else "eval"
            inputs["use_cache"] = False
            outputs = model(**inputs)
            chosen, rejected = torch.chunk(torch.tanh(outputs.logits.squeeze(-1)), chunks=2)
            loss = -torch.nn.functional.logsigmoid(chosen - rejected).mean()
            if mode == "train":
                self.pairs_seen += chosen.shape[0]
            with torch.no_grad():
                self._metrics[mode]["accuracy"].append((chosen > rejected).float().mean().item())
                self._metrics[mode]["margin"].append((chosen - rejected).mean().item())
            return (loss, outputs) if return_outputs else loss

    return TanhRewardTrainer


def build_trainer(rows: list[dict], base: Path, scratch: Path, config: PPMConfig, progress: bool, max_steps):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import RewardConfig

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    chosen = encode(tokenizer, [row["prompt"] + row["chosen"] for row in rows])
    rejected = encode(tokenizer, [row["prompt"] + row["rejected"] for row in rows])
    data = Dataset.from_dict({"chosen_ids": chosen, "rejected_ids": rejected})
    args = RewardConfig(
        **common_trainer_args(config, scratch, progress, max_steps),
        model_init_kwargs=model_init_kwargs(config),
    )
    trainer = _tanh_reward_trainer_class()(
        model=str(base),
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora_config(config, PPM.peft_task) if config.lora else None,
    )
    return prepare(trainer, progress, f"every PPM pair is longer than max_length={config.max_length} tokens")


PPM = Recipe(what="PPM pairs", fields=("prompt", "chosen", "rejected"), auto_class="AutoModelForSequenceClassification",
             peft_task="SEQ_CLS", build=build_trainer, head_labels=1)


def mark_reward_model(model_dir: Path, kind: str, fmt_name: str) -> None:
    """Add the marker that evaluation and ``load_scorer`` check before using a directory as a reward model."""
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    config[MARKER_KEY] = {"kind": kind, "head": HEADS[kind], "format": fmt_name}
    path.write_text(json.dumps(config, indent=2) + "\n")


def pair_accuracy(model_dir: Path, rows: list[dict]) -> float:
    """Share of pairs whose chosen text the saved PPM scores strictly above the rejected one."""
    scorer = RewardScorer(model_dir, backend="transformers", kind=None)
    try:
        chosen = scorer.score_texts([row["prompt"] + row["chosen"] for row in rows])
        rejected = scorer.score_texts([row["prompt"] + row["rejected"] for row in rows])
    finally:
        scorer.close()
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(rows)

