"""What both trainers share: checked inputs, precision per device, and all-or-nothing model directories.

A model directory is written under a staging name beside its destination and renamed into place
only when complete, so a crash or a refused input never leaves an empty or half-written model
where evaluation, vLLM or the next round would pick it up.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from evomath.faults import fault_point
from evomath.files import read_records
from training import TrainingInputError


def read_rows(path: str | Path, required: Sequence[str], what: str) -> list[dict]:
    """All rows of a JSONL data file, refusing a missing or empty file and rows without ``required`` text fields."""
    path = Path(path)
    if not path.is_file():
        raise TrainingInputError(f"{what} file {path} does not exist")
    rows = [row for _, row in read_records(path, dict.fromkeys(required, str))]
    if not rows:
        raise TrainingInputError(f"{what} file {path} is empty: nothing to train on")
    return rows


def check_base_model(spec: str | Path) -> Path:
    """The base model's complete local directory: a directory as it is, a hub id (or embedded name,
    MLflow URI) through the model store, which finds or fetches its snapshot."""
    from evomath.models import ModelError, resolve_model

    try:
        return Path(resolve_model(str(spec)))
    except ModelError as err:
        raise TrainingInputError(f"base model: {err}") from None


def has_model(path: Path) -> bool:
    return (path / "config.json").is_file()


def check_out_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """Refuse to replace a model unless asked, and never to replace a directory holding something else."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TrainingInputError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not has_model(out):
            raise TrainingInputError(f"output directory {out} is not empty and holds no model; refusing to replace it")
        if not overwrite:
            raise TrainingInputError(f"output directory {out} already holds a model (overwrite=True / --overwrite)")
    return out


def is_main_process() -> bool:
    """Rank 0 under ``accelerate launch``/``torchrun`` (which set RANK), or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def staged_model_dir(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging directory beside ``out_dir``; on success it replaces ``out_dir``, on failure it is removed.

    The staging name is fixed (not random) so that every process of a multi-GPU run agrees on it.
    """
    out = check_out_dir(out_dir, overwrite)
    stage = out.parent / f".{out.name}.partial"
    main = is_main_process()
    if main:
        shutil.rmtree(stage, ignore_errors=True)  # left by a run that was killed
        stage.mkdir(parents=True)
    try:
        yield stage
    except BaseException:
        if main:
            shutil.rmtree(stage, ignore_errors=True)
        raise
    if main:
        _replace_dir(stage, out)


def _replace_dir(stage: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    fault_point("model:before_rename")  # the crash test: complete in stage, out moved aside
    stage.rename(out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """Silence datasets' and transformers' own bars (tokenising, loading) when progress is off."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets_on, hf_on = datasets.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled()
    if not enabled:
        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if datasets_on:
            datasets.enable_progress_bars()
        if hf_on:
            hf_logging.enable_progress_bar()


def precision_args(bf16: bool | None = None) -> dict:
    """bf16 mixed precision, gradient checkpointing and pinned memory on GPUs; on CPUs, bf16 autocast
    where the CPU computes bf16 natively (AVX512-BF16 or AMX: x1.2 for SFT there) and fp32 elsewhere
    (emulated bf16 on an AVX2 CPU: SFT 7 tokens/s against fp32's 88, ``benchmarks/training_throughput.py``).
    ``bf16`` True or False decides instead.

    TRL turns bf16 and gradient checkpointing on by default, which only slows a CPU down.
    """
    import torch

    from evomath.hardware import native_bf16

    gpu = torch.cuda.is_available()
    return {
        "bf16": native_bf16(on_gpu=gpu) if bf16 is None else bf16,
        "use_cpu": not gpu,  # transformers refuses bf16 without a GPU unless told the CPU is meant
        "gradient_checkpointing": gpu,
        "dataloader_pin_memory": gpu,
    }


def model_init_kwargs(config) -> dict:
    """How the trainers load the base model: fp32 master weights for full fine-tuning.

    ``dtype="auto"`` loads a bf16 checkpoint (every Qwen model) in bf16 and the Trainer then keeps
    bf16 master weights: at rStar's lr 7e-6 one AdamW step moves a bf16 weight of size ~0.02 by
    less than half its ulp, so ~92% of the weights do not change at all. In fp32, with bf16
    autocast for the matmuls (``precision_args``), every weight moves. LoRA keeps the frozen base
    in its own dtype (half the memory); its trainable parameters are upcast (``upcast_trainable``).
    """
    return {"dtype": "auto" if config.lora else "float32"}


def upcast_trainable(model) -> int:
    """Make every trainable parameter fp32 (LoRA's ``modules_to_save`` copies, e.g. the PPM's head,
    keep the base's bf16 otherwise); returns how many were cast. Call before ``train()``: the
    optimizer is built there."""
    import torch

    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += 1
    return cast


def base_dtype(base: Path) -> str:
    """The dtype a base checkpoint is stored in (its config's ``dtype``, formerly ``torch_dtype``)."""
    import json

    config = json.loads((base / "config.json").read_text())
    return config.get("dtype") or config.get("torch_dtype") or "float32"


def store_in_dtype(model_dir: Path, dtype: str) -> None:
    """Rewrite a saved model's floating-point weights in ``dtype`` (the base's): training keeps fp32
    master weights, but a 7B policy saved in fp32 would take 28 GB a round instead of 14, and vLLM
    serves it in bf16 anyway. The whole run's update, unlike one step's, survives the rounding."""
    import json

    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from evomath.models import weight_files

    target = getattr(torch, dtype)
    for name in weight_files(model_dir):
        path = model_dir / name
        if path.suffix != ".safetensors":
            continue
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {"format": "pt"}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}
        if all(not t.is_floating_point() or t.dtype == target for t in tensors.values()):
            continue
        tensors = {k: t.to(target) if t.is_floating_point() else t for k, t in tensors.items()}
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(path)
        del tensors
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["dtype"] = dtype
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def common_trainer_args(config, scratch: Path, progress: bool, max_steps: int | None) -> dict:
    """TrainingArguments fields every trainer shares, from a ``TrainingConfig``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accumulation = max(1, config.batch_size // (config.per_device_batch_size * world))
    return {
        "output_dir": str(scratch),
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.epochs,
        "max_steps": max_steps if max_steps is not None else -1,
        "per_device_train_batch_size": config.per_device_batch_size,
        "gradient_accumulation_steps": accumulation,
        "warmup_steps": config.warmup_ratio,  # below 1: transformers reads a fraction of the steps
        "max_length": config.max_length,
        "seed": config.seed,
        "save_strategy": "no",
        "report_to": "none",
        "logging_steps": 1,
        "disable_tqdm": not progress,
        "dataloader_num_workers": 0,
        **precision_args(config.bf16),
    }


FSDP_CONFIG = Path(__file__).with_name("accelerate_fsdp.yaml")


def accelerate_command(cli_args: Sequence[str], num_gpus: int) -> list[str]:
    """``accelerate launch`` with the shipped FSDP config, one process per GPU, running ``training.cli``."""
    launch = ["accelerate", "launch", "--config_file", str(FSDP_CONFIG), "--num_processes", str(num_gpus)]
    return [*launch, "-m", "training.cli", *cli_args]


def lora_config(config, task_type: str):
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type=task_type,
    )
