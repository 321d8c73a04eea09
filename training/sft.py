"""Policy fine-tuning (rStar step 5): TRL's SFTTrainer on prompt/completion rows, loss on the completion.

Full fine-tuning or LoRA; a LoRA run is merged back into the base weights, so either way the result
is a plain model directory (weights + tokenizer) that vLLM and the next round load as they are.
With more than one GPU the same function runs under ``accelerate launch`` with an FSDP config
(``sft_command`` builds that command line); on one device it runs in-process.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from evomath.config import SFTConfig
from training import TrainingInputError
from training.model_io import (
    accelerate_command,
    base_dtype,
    check_base_model,
    common_trainer_args,
    is_main_process,
    lora_config,
    model_init_kwargs,
    progress_bars,
    read_rows,
    staged_model_dir,
    store_in_dtype,
    upcast_trainable,
)


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
    rows = read_rows(data_path, ("prompt", "completion"), "SFT data")
    base = check_base_model(base_model_dir)
    with (
        progress_bars(progress),
        staged_model_dir(out_dir, overwrite) as stage,
        tempfile.TemporaryDirectory() as scratch,
    ):
        trainer = build_trainer(rows, base, Path(scratch), config, progress, max_steps)
        for callback in callbacks or []:
            trainer.add_callback(callback)
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
        save_policy(trainer, base, stage, Path(scratch), config.lora)
    tokens = max((log.get("num_tokens", 0) for log in trainer.state.log_history), default=0)
    return {
        "train_loss": result.training_loss,
        "steps": result.global_step,
        "examples": len(rows),
        "tokens": int(tokens),
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds else 0.0,
        "lora": config.lora,
        "out_dir": str(out_dir),
    }


def build_trainer(rows: list[dict], base: Path, scratch: Path, config: SFTConfig, progress: bool, max_steps):
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    args = TRLSFTConfig(
        **common_trainer_args(config, scratch, progress, max_steps),
        completion_only_loss=True,  # rStar: the loss is on the solution only, never the prompt
        model_init_kwargs=model_init_kwargs(config),
    )
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    trainer = SFTTrainer(
        model=str(base),
        args=args,
        train_dataset=data,
        peft_config=lora_config(config, "CAUSAL_LM") if config.lora else None,
    )
    if len(trainer.train_dataset) == 0:
        raise TrainingInputError(f"no SFT example has a completion token within max_length={config.max_length}")
    upcast_trainable(trainer.model)
    if not progress:
        trainer.remove_callback(PrinterCallback)
    return trainer


def save_policy(trainer, base: Path, stage: Path, scratch: Path, lora: bool) -> None:
    """Write the trained policy into ``stage``; a LoRA adapter is merged into the base weights first.

    The adapter goes through ``save_model`` (which gathers FSDP shards) and is merged on the main
    process, so the same code serves one device and several.
    """
    if not lora:
        trainer.save_model(str(stage))
        if is_main_process():
            store_in_dtype(stage, base_dtype(base))
        return
    adapter = scratch / "adapter"
    trainer.save_model(str(adapter))
    if is_main_process():
        merged = merge_adapter(base, adapter)
        merged.save_pretrained(str(stage))
        trainer.processing_class.save_pretrained(str(stage))


def merge_adapter(base: Path, adapter: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype="auto")
    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()


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
