"""AlphaMath's value head: the policy and a scalar head on its last hidden state, trained jointly.

Loss (AlphaMath, Chen et al. 2024): the SFT loss on correct solutions + beta * MSE between
tanh(head) at each step's end and that step's Q from the trees, over positive and negative steps
alike (beta = 0.1). The SFT part reads the policy's own prompt and solution; the value part reads
``ppm_text`` (the bare question and the steps), the text every reward model of evomath is scored on,
so the value head serves through the same scorer as the PPM and PRM. Both parts run through the
same body in one forward pass per batch.

The result is one checkpoint: the policy, which vLLM loads and generates from as it is, and the head
in ``value_head/head.safetensors`` beside it (vLLM reads only the directory's top-level weights).
"""

from __future__ import annotations

import json
from pathlib import Path

from evomath.config import ValueHeadConfig
from evomath.scoring import HEADS, MARKER_KEY, VALUE_HEAD_DIR
from training import TrainingInputError
from training.model_io import (
    base_dtype,
    check_base_model,
    common_trainer_args,
    is_main_process,
    model_init_kwargs,
    read_rows,
    store_in_dtype,
)
from training.step_rewards import encode_row, read_step_rows
from training.trainer import Recipe, prepare, train


def encode_sft(tokenizer, row: dict, max_length: int) -> dict | None:
    """prompt + completion + EOS, the loss on the completion only (as the policy's SFT)."""
    prompt = tokenizer(row["prompt"], add_special_tokens=True)["input_ids"]
    full = tokenizer(row["prompt"] + row["completion"], add_special_tokens=True)["input_ids"]
    full = (full + [tokenizer.eos_token_id])[:max_length]
    start = len(prompt) if full[: len(prompt)] == prompt else len(prompt) - 1
    labels = [-100] * start + full[start:]
    return {"input_ids": full, "lm_labels": labels, "positions": [], "targets": []} if start < len(full) else None


def _joint_model_class():
    import torch

    class PolicyWithValueHead(torch.nn.Module):
        """The causal LM and ``value_head`` (hidden -> 1) on its last hidden state."""

        def __init__(self, lm):
            super().__init__()
            self.lm = lm
            self.value_head = torch.nn.Linear(lm.config.hidden_size, 1)
            torch.nn.init.zeros_(self.value_head.weight)  # starts at value 0: no opinion
            torch.nn.init.zeros_(self.value_head.bias)
            self.config = lm.config

        def forward(self, input_ids, attention_mask):
            hidden = self.lm.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return hidden

    return PolicyWithValueHead


def _joint_trainer_class():
    import torch
    from transformers import Trainer

    class JointTrainer(Trainer):
        beta = 0.1

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            hidden = model(inputs["input_ids"], inputs["attention_mask"])
            inner = getattr(model, "module", model)
            lm_labels, positions, targets = inputs["lm_labels"], inputs["positions"], inputs["targets"]
            loss = hidden.new_zeros(())
            sft_rows = (lm_labels != -100).any(dim=1)
            if sft_rows.any():
                logits = inner.lm.lm_head(hidden[sft_rows])[:, :-1].float()
                loss = loss + torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), lm_labels[sft_rows][:, 1:].reshape(-1), ignore_index=-100)
            mask = positions >= 0
            if mask.any():
                values = torch.tanh(inner.value_head(hidden)[..., 0]).gather(1, positions.clamp(min=0))
                loss = loss + self.beta * torch.nn.functional.mse_loss(values[mask].float(), targets[mask].float())
            return (loss, hidden) if return_outputs else loss

    return JointTrainer


def collate(pad_id: int):
    import torch

    def batch(rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        labels = max([len(r["positions"]) for r in rows] + [1])
        out = {
            "input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
            "lm_labels": torch.full((len(rows), width), -100, dtype=torch.long),
            "positions": torch.full((len(rows), labels), -1, dtype=torch.long),
            "targets": torch.zeros((len(rows), labels), dtype=torch.float),
        }
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            out["input_ids"][i, :n] = torch.tensor(row["input_ids"])
            out["attention_mask"][i, :n] = 1
            out["lm_labels"][i, :n] = torch.tensor(row["lm_labels"] or [-100] * n)
            if row["positions"]:
                out["positions"][i, : len(row["positions"])] = torch.tensor(row["positions"])
                out["targets"][i, : len(row["targets"])] = torch.tensor(row["targets"])
        return out

    return batch


def build_trainer(rows: list[dict], base: Path, scratch: Path, config: ValueHeadConfig, progress: bool, max_steps):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = []
    for row in rows:
        if "completion" in row:
            item = encode_sft(tokenizer, row, config.max_length)
        else:
            item = encode_row(tokenizer, row, config.max_length)
            item = item and {**item, "lm_labels": []}
        if item is not None:
            encoded.append(item)
    dtype = model_init_kwargs(config)["dtype"]
    lm = AutoModelForCausalLM.from_pretrained(str(base), dtype=getattr(torch, dtype) if dtype != "auto" else dtype)
    model = _joint_model_class()(lm)
    args = {k: v for k, v in common_trainer_args(config, scratch, progress, max_steps).items() if k != "max_length"}
    trainer = _joint_trainer_class()(
        model=model, args=TrainingArguments(**args, remove_unused_columns=False),
        train_dataset=Dataset.from_list(encoded) if encoded else Dataset.from_dict({"input_ids": []}),
        data_collator=collate(pad_id), processing_class=tokenizer,
    )
    trainer.beta = config.beta
    return prepare(trainer, progress, f"no example fits within max_length={config.max_length} tokens")


def save(trainer, base: Path, stage: Path, fmt_name: str) -> None:
    """The policy as a plain checkpoint in the base's dtype, the head beside it, the marker in config."""
    from safetensors.torch import save_file

    state = trainer.accelerator.get_state_dict(trainer.model)  # gathers FSDP shards
    if not is_main_process():
        return
    inner = trainer.accelerator.unwrap_model(trainer.model)
    lm_state = {k.removeprefix("lm."): v for k, v in state.items() if k.startswith("lm.")}
    inner.lm.save_pretrained(str(stage), state_dict=lm_state)
    trainer.processing_class.save_pretrained(str(stage))
    store_in_dtype(stage, base_dtype(base))
    (stage / VALUE_HEAD_DIR).mkdir()
    head = {k.removeprefix("value_head."): v.float().contiguous() for k, v in state.items() if k.startswith("value_head.")}
    save_file(head, str(stage / VALUE_HEAD_DIR / "head.safetensors"))
    config_path = stage / "config.json"
    config = json.loads(config_path.read_text())
    config[MARKER_KEY] = {"kind": "value", "head": HEADS["value"], "format": fmt_name}
    config_path.write_text(json.dumps(config, indent=2) + "\n")


VALUE = Recipe(what="value-head data", fields=("prompt",), auto_class="AutoModelForCausalLM", peft_task="CAUSAL_LM",
               build=build_trainer)


def train_value_head(
    sft_path: str | Path,
    steps_path: str | Path,
    base_model_dir: str | Path,
    out_dir: str | Path,
    config: ValueHeadConfig,
    progress: bool = True,
    *,
    overwrite: bool = False,
    max_steps: int | None = None,
    callbacks: list | None = None,
    step_format: str | None = None,
) -> dict:
    """Fine-tune the policy on its SFT data and, jointly, a value head on step-Q rows (``q`` labels
    from ``training.step_rewards.tree_step_rows``); returns the losses' sum and sizes."""
    if config.lora:
        raise TrainingInputError("the value head trains the whole policy with it (AlphaMath); set lora: false")
    sft = read_rows(sft_path, ("prompt", "completion"), "SFT data")
    steps = read_step_rows(steps_path, "pqm")  # Q labels in [-1, 1]
    fmt_name = step_format or steps[0].get("format")
    if not fmt_name:
        raise TrainingInputError(f"{steps_path}: the rows name no step format; pass step_format")
    base = check_base_model(base_model_dir)
    metrics, _ = train(VALUE, [*sft, *steps], base, out_dir, config, progress, overwrite=overwrite,
                       max_steps=max_steps, callbacks=callbacks,
                       save=lambda trainer, stage: save(trainer, base, stage, fmt_name))
    return metrics | {"sft_examples": len(sft), "value_solutions": len(steps),
                      "labelled_steps": sum(len(r["steps"]) for r in steps)}
