"""Policy fine-tuning (rStar step 5): TRL's SFTTrainer on prompt/completion rows, loss on the completion.

Full fine-tuning or LoRA; a LoRA run is merged back into the base weights, so either way the result
is a plain model directory (weights + tokenizer) that vLLM and the next round load as they are.
With more than one GPU the same function runs under ``accelerate launch`` with an FSDP config
(``sft_command`` builds that command line); on one device it runs in-process.
"""

from __future__ import annotations

import sys
from pathlib import Path

from evomath.config import SFTConfig
from training.model_io import (
    accelerate_command,
    check_base_model,
    common_trainer_args,
    lora_config,
    model_init_kwargs,
    read_rows,
)
from training.trainer import Recipe, prepare, train


def train_sft(
    data_path: str | Path,
    base_model_dir: str | Path,
    out_dir: str | Path,
    config: SFTConfig,
    progress: bool = True,
    *,
    overwrite: bool = False,
    max_steps: int | None = None,
    callbacks: list | None = None,
) -> dict:
    """Fine-tune ``base_model_dir`` on the SFT JSONL into ``out_dir``; returns loss, steps and throughput.

    ``callbacks``: transformers ``TrainerCallback``s, e.g. to forward per-step logs to a tracker.
    """
    rows = read_rows(data_path, SFT.fields, SFT.what)
    base = check_base_model(base_model_dir)
    metrics, trainer = train(SFT, rows, base, out_dir, config, progress, overwrite=overwrite, max_steps=max_steps,
                             callbacks=callbacks)
    tokens = max((log.get("num_tokens", 0) for log in trainer.state.log_history), default=0)
    seconds = metrics["seconds"]
    return metrics | {"examples": len(rows), "tokens": int(tokens), "tokens_per_s": tokens / seconds if seconds else 0.0}


def build_trainer(rows: list[dict], base: Path, scratch: Path, config: SFTConfig, progress: bool, max_steps):
    import trl
    from datasets import Dataset

    args = trl.SFTConfig(
        **common_trainer_args(config, scratch, progress, max_steps),
        completion_only_loss=True,  # rStar: the loss is on the solution only, never the prompt
        model_init_kwargs=model_init_kwargs(config),
    )
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    trainer = trl.SFTTrainer(
        model=str(base),
        args=args,
        train_dataset=data,
        peft_config=lora_config(config, SFT.peft_task) if config.lora else None,
    )
    return prepare(trainer, progress, f"no SFT example has a completion token within max_length={config.max_length}")


SFT = Recipe(what="SFT data", fields=("prompt", "completion"), auto_class="AutoModelForCausalLM",
             peft_task="CAUSAL_LM", build=build_trainer)


def sft_command(
    data_path: str | Path,
    base_model_dir: str | Path,
    out_dir: str | Path,
    config_path: str | Path | None = None,
    num_gpus: int = 1,
    extra: list[str] | None = None,
) -> list[str]:
    """The SFT command line: ``python -m training.cli`` on one device, else ``accelerate launch`` with FSDP."""
    train = ["train", "sft", "--data", str(data_path), "--base", str(base_model_dir), "--out", str(out_dir)]
    if config_path:
        train += ["--config", str(config_path)]
    train += extra or []
    if num_gpus <= 1:
        return [sys.executable, "-m", "training.cli", *train]
    return accelerate_command(train, num_gpus)
