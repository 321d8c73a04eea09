"""Reward models read at every step end: Math-Shepherd's PRM and rStar's PQM baseline.

Both are a scalar head on the policy (``AutoModelForSequenceClassification``, one label, the same
architecture and text as the PPM: ``ppm_text``), read at the last token of each step, where a causal
model has seen exactly the solution so far. They differ in their labels and loss:

* **PRM** (Math-Shepherd): per-step binary cross-entropy with a probability label, hard (1 if any of
  N continuations from the step reaches the gold answer) or soft (the fraction that do). Served as
  2p - 1 so it reads on the same [-1, 1] scale as every other value function.
* **PQM** (rStar's Table 8): per-step MSE between tanh(head) and the step's Q from the trees.

Why a plain ``transformers.Trainer`` with its own ``compute_loss``: TRL 1.16 removed ``PRMTrainer``
(TRL <= 1.13 had one: per-step cross-entropy at step-separator tokens, the same objective), and its
``RewardTrainer`` is pairwise, sequence-level. The step loss is a dozen lines on top of the Trainer,
which still brings the optimiser, schedule, accumulation, FSDP/accelerate, LoRA and logging.

A row (``step_rows``): ``{"prompt": ppm_text(question, ""), "steps": [what each step adds to the
text], "labels": [one per step], "problem_id", "format"}``; ``prompt + "".join(steps[:k+1])`` is the
scorer's text after step k.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from evomath.config import PRMConfig
from evomath.files import ArtifactError, has_type, read_records
from evomath.problem import Problem
from evomath.scoring import encode
from evomath.tree import Node, Tree
from training import TrainingInputError
from training.model_io import check_base_model, common_trainer_args, lora_config, model_init_kwargs
from training.ppm import mark_reward_model, split_heldout
from training.ppm_pairs import split_prompt
from training.trainer import Recipe, prepare, train

LABEL_RANGE = {"prm": (0.0, 1.0), "pqm": (-1.0, 1.0)}
LOSSES = {"prm": "bce", "pqm": "mse"}


def step_row(fmt, question: str, steps: Sequence[str], labels: Sequence[float], problem_id: str) -> dict:
    """One solution's steps and their labels, as the text increments the scorer reads."""
    prompt, _ = split_prompt(fmt, question, [], [])
    increments = [split_prompt(fmt, question, list(steps[:k]), [steps[k]])[1] for k in range(len(steps))]
    return {"prompt": prompt, "steps": increments, "labels": [float(v) for v in labels],
            "problem_id": problem_id, "format": fmt.name}


def tree_labels(tree: Tree) -> dict[int, tuple[int, int]]:
    """Per node: (graded answers below it, successes among them), in one pass over the leaves."""
    counts = {n.id: [0, 0] for n in tree.nodes}
    for leaf in tree.answered():
        if leaf.answer is None:
            continue
        success = tree.is_success(leaf)
        for node in tree.ancestors(leaf):
            counts[node.id][0] += 1
            counts[node.id][1] += success
    return {k: (total, good) for k, (total, good) in counts.items()}


def answered_paths(tree: Tree) -> Iterator[list[Node]]:
    """The root-to-leaf path of every graded answer of a tree, each distinct text once."""
    seen: set[tuple[str, ...]] = set()
    for leaf in tree.answered():
        path = tree.path(leaf)
        steps = tuple(n.text for n in path)
        if leaf.answer is not None and steps not in seen:
            seen.add(steps)
            yield path


def tree_step_rows(trees: Iterable[Tree], fmt, target: str) -> list[dict]:
    """Labels read off MCTS trees, for free: every answered trajectory, each step labelled with
    ``q`` (its Q, for the PQM and the value head), ``soft`` (the share of graded answers below it that
    are right: the tree's Monte-Carlo estimate) or ``hard`` (1 if any is)."""
    rows = []
    for tree in trees:
        counts = tree_labels(tree)
        for path in answered_paths(tree):
            steps = [n.text for n in path]
            if target == "q":
                labels = [n.q for n in path]
            else:
                labels = [good / total if target == "soft" else float(good > 0)
                          for total, good in (counts[n.id] for n in path)]
            rows.append(step_row(fmt, tree.question, steps, labels, tree.problem_id))
    return rows


def mark_underived(trees: Iterable[Tree]) -> Iterator[Tree]:
    """The trees with every natural step whose arithmetic is not derived (``evomath.arithmetic``)
    marked as failing, as ``search.check_arithmetic`` marks it while searching: labels read off them
    afterwards (``tree_step_rows``) count no answer reached through such a step as a success, so a
    chain right only by luck stops teaching the PRM that its steps are good. Gold-free, like the rule."""
    from evomath.arithmetic import derivation_error

    for tree in trees:
        for node in tree.nodes:
            if node.parent is not None and derivation_error(tree.question, tree.steps_text(node)) is not None:
                node.code_error = True
        yield tree


def checked_step_rows(trees: Iterable[Tree], fmt, problems: Mapping[str, Problem]) -> list[dict]:
    """Labels from an exact step checker instead of the gold answer's Monte-Carlo estimate (the
    demo generator's, ``evomath.demo_data.first_error``; PRM800K's human labels play this part on
    MATH): every answered trajectory of the trees, step k labelled 1 iff steps 0..k are all right.
    The ceiling automatic annotation is measured against: the same PRM, the same trajectories, the
    labels without the policy's Monte-Carlo noise. A tree whose problem is not in ``problems`` is an
    error naming it (its known values are what the checker reads)."""
    from evomath.demo_data import first_error

    rows = []
    for tree in trees:
        problem = problems.get(tree.problem_id)
        if problem is None:
            raise TrainingInputError(f"tree of problem {tree.problem_id!r}: not among the problems given, so its "
                                     "steps cannot be checked (give the benchmark its trees were searched on)")
        if "values" not in problem.meta:
            raise TrainingInputError(f"problem {tree.problem_id!r}: not a generated demo problem, so there is no "
                                     "exact step checker for it (checked labels need demo problems)")
        for path in answered_paths(tree):
            steps = [n.text for n in path]
            wrong_from = first_error(problem, steps)
            labels = [float(wrong_from is None or k < wrong_from) for k in range(len(steps))]
            rows.append(step_row(fmt, tree.question, steps, labels, tree.problem_id))
    return rows


def annotation_rows(records: Iterable[dict], fmt, labels: str) -> list[dict]:
    """PRM rows from the completer's records (``evomath.search.annotate``, or ``read_annotations``):
    its hard or soft estimates."""
    return [step_row(fmt, r["question"], r["steps"], r[labels], r["problem_id"]) for r in records]


def read_annotations(path: str | Path, labels: str) -> list[dict]:
    """The completer's records from a file (``evomath annotate``), each checked for what
    ``annotation_rows`` reads; an error names the file, the line and the field."""
    fields = {"question": str, "steps": list, labels: list, "problem_id": str}
    return [row for _, row in read_records(path, fields)]


def read_step_rows(path: str | Path, kind: str) -> list[dict]:
    """Step-label rows, each checked: text fields, as many labels as steps, labels in range. An error
    names the file, the line and the field."""
    path = Path(path)
    if not path.is_file():
        raise TrainingInputError(f"step labels file {path} does not exist")
    rows = []
    for where, row in read_records(path, {"prompt": str, "steps": list, "labels": list}):
        _check_steps(row, where, kind)
        rows.append(row)
    if not rows:
        raise TrainingInputError(f"step labels file {path} is empty: nothing to train on")
    return rows


def _check_steps(row: dict, where: str, kind: str) -> None:
    steps, labels = row["steps"], row["labels"]
    if not steps or not all(isinstance(s, str) for s in steps):
        raise ArtifactError(f"{where}: steps: expected a non-empty list of texts")
    if len(labels) != len(steps):
        raise ArtifactError(f"{where}: labels: {len(labels)} for {len(steps)} steps (one number per step)")
    low, high = LABEL_RANGE[kind]
    for i, value in enumerate(labels):
        if not has_type(value, float) or not math.isfinite(value) or not low <= value <= high:
            raise ArtifactError(f"{where}: labels[{i}]: {value!r} is outside [{low:g}, {high:g}] for a {kind.upper()}")


def encode_row(tokenizer, row: dict, max_length: int) -> dict | None:
    """Token ids of the whole solution and the position that ends each step (steps whose tokens do
    not start the whole solution's, a merge across a boundary, are left unlabelled); None if nothing
    is left within ``max_length``."""
    prefixes = [row["prompt"] + "".join(row["steps"][: k + 1]) for k in range(len(row["steps"]))]
    ids = encode(tokenizer, prefixes)
    full = ids[-1][:max_length]
    positions, targets = [], []
    for prefix, label in zip(ids, row["labels"]):
        if len(prefix) <= len(full) and full[: len(prefix)] == prefix:
            positions.append(len(prefix) - 1)
            targets.append(float(label))
    return {"input_ids": full, "positions": positions, "targets": targets} if positions else None


def _step_trainer_class():
    """Built on first use so importing this module does not import transformers (slow)."""
    import torch
    from transformers import Trainer

    class StepHeadTrainer(Trainer):
        """The head at every step end, against a per-step label: BCE on logits or MSE on tanh."""

        loss_kind = "bce"

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            positions, targets = inputs.pop("positions"), inputs.pop("targets")
            body = getattr(model, model.base_model_prefix)
            hidden = body(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
            raw = model.score(hidden)[..., 0]  # batch x tokens
            mask = positions >= 0
            read = raw.gather(1, positions.clamp(min=0))[mask].float()
            wanted = targets[mask].float()
            if self.loss_kind == "bce":
                loss = torch.nn.functional.binary_cross_entropy_with_logits(read, wanted)
            else:
                loss = torch.nn.functional.mse_loss(torch.tanh(read), wanted)
            return (loss, raw) if return_outputs else loss

    return StepHeadTrainer


def collate(pad_id: int):
    """Right-padded ids and mask; positions padded with -1 (no label), targets with 0."""
    import torch

    def batch(rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        labels = max(len(r["positions"]) for r in rows)
        out = {
            "input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
            "positions": torch.full((len(rows), labels), -1, dtype=torch.long),
            "targets": torch.zeros((len(rows), labels), dtype=torch.float),
        }
        for i, row in enumerate(rows):
            out["input_ids"][i, : len(row["input_ids"])] = torch.tensor(row["input_ids"])
            out["attention_mask"][i, : len(row["input_ids"])] = 1
            out["positions"][i, : len(row["positions"])] = torch.tensor(row["positions"])
            out["targets"][i, : len(row["targets"])] = torch.tensor(row["targets"])
        return out

    return batch


def build_trainer(kind: str):
    def build(rows: list[dict], base: Path, scratch: Path, config, progress: bool, max_steps):
        from datasets import Dataset
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

        tokenizer = AutoTokenizer.from_pretrained(str(base))
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        encoded = [e for e in (encode_row(tokenizer, r, config.max_length) for r in rows) if e is not None]
        model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1, pad_token_id=pad_id,
                                                                   **_dtype(config))
        if config.lora:
            from peft import get_peft_model

            model = get_peft_model(model, lora_config(config, "SEQ_CLS"))
        args = {k: v for k, v in common_trainer_args(config, scratch, progress, max_steps).items() if k != "max_length"}
        trainer = _step_trainer_class()(
            model=model, args=TrainingArguments(**args, remove_unused_columns=False),
            train_dataset=Dataset.from_list(encoded) if encoded else Dataset.from_dict({"input_ids": []}),
            data_collator=collate(pad_id), processing_class=tokenizer,
        )
        trainer.loss_kind = LOSSES[kind]
        return prepare(trainer, progress, f"no labelled step fits within max_length={config.max_length} tokens")

    return build


def _dtype(config) -> dict:
    import torch

    dtype = model_init_kwargs(config)["dtype"]
    return {"dtype": dtype if dtype == "auto" else getattr(torch, dtype)}


RECIPES = {kind: Recipe(what="step labels", fields=("prompt",), auto_class="AutoModelForSequenceClassification",
                        peft_task="SEQ_CLS", build=build_trainer(kind), head_labels=1) for kind in LOSSES}


def train_step_reward(
    rows_path: str | Path,
    base_model_dir: str | Path,
    out_dir: str | Path,
    config: PRMConfig,
    kind: str = "prm",
    progress: bool = True,
    *,
    overwrite: bool = False,
    max_steps: int | None = None,
    callbacks: list | None = None,
    step_format: str | None = None,
) -> dict:
    """Train a PRM (``kind="prm"``) or PQM (``"pqm"``) from the policy in ``base_model_dir``; returns
    the loss and, on held-out problems, how often the served score's sign agrees with the label's."""
    if kind not in LOSSES:
        raise TrainingInputError(f"kind must be one of {', '.join(LOSSES)}, not {kind!r}")
    rows = read_step_rows(rows_path, kind)
    fmt_name = step_format or rows[0].get("format")
    if not fmt_name:
        raise TrainingInputError(f"{rows_path}: the rows name no step format; pass step_format")
    base = check_base_model(base_model_dir)
    train_rows, heldout = split_heldout(rows, config.heldout_fraction, config.seed)

    def mark_and_measure(stage: Path, trainer) -> dict:
        mark_reward_model(stage, kind, fmt_name)
        return {"heldout_step_accuracy": step_accuracy(stage, heldout, kind) if heldout else None}

    metrics, trainer = train(RECIPES[kind], train_rows, base, out_dir, config, progress, overwrite=overwrite,
                             max_steps=max_steps, callbacks=callbacks, on_saved=mark_and_measure)
    return metrics | {"solutions": len(train_rows), "heldout_solutions": len(heldout),
                      "labelled_steps": sum(len(r["steps"]) for r in train_rows)}


def step_accuracy(model_dir: Path, rows: list[dict], kind: str) -> float:
    """Share of held-out steps whose score's sign matches the label's (PRM: label above 1/2)."""
    from evomath.scoring import RewardScorer

    scorer = RewardScorer(model_dir, backend="transformers", kind=kind)
    try:
        texts = [row["prompt"] + "".join(row["steps"][: k + 1]) for row in rows for k in range(len(row["steps"]))]
        scores = scorer.score_texts(texts)
    finally:
        scorer.close()
    middle = 0.5 if kind == "prm" else 0.0
    labels = [label for row in rows for label in row["labels"]]
    return sum((s > 0) == (label > middle) for s, label in zip(scores, labels, strict=True)) / len(labels)


def write_step_rows(path: str | Path, rows: Sequence[dict]) -> None:
    from evomath.files import write_jsonl

    if not rows:
        raise TrainingInputError(f"{path}: no labelled solution to write")
    write_jsonl(path, rows)


def label_summary(rows: Sequence[dict]) -> dict:
    labels = [v for r in rows for v in r["labels"]]
    return {"solutions": len(rows), "steps": len(labels), "mean_label": sum(labels) / len(labels) if labels else 0.0,
            "problems": len({r.get("problem_id") for r in rows})}
