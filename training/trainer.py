"""The one training skeleton every model evomath trains goes through.

A model kind is a `Recipe`: which rows it reads, how it builds its transformers ``Trainer`` (TRL's
``SFTTrainer`` for the policy, a ``RewardTrainer`` subclass for the PPM, ...) and which auto class
its checkpoint loads with. Everything else is shared and lives here: inputs checked before anything
is written, the model directory staged and renamed into place only when complete, fp32 trainable
weights, progress bars, LoRA adapters merged back, the checkpoint stored in the base's dtype.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evomath import faults
from training import TrainingInputError
from training.model_io import (
    base_dtype,
    is_main_process,
    progress_bars,
    staged_model_dir,
    store_in_dtype,
    upcast_trainable,
)

BuildFn = Callable[[list[dict], Path, Path, Any, bool, "int | None"], Any]


@dataclass(frozen=True)
class Recipe:
    """What one kind of trained model adds to the skeleton."""

    what: str  # "SFT data", "PPM pairs": how errors name the input
    fields: tuple[str, ...]  # text fields every row must carry
    auto_class: str  # the transformers class its checkpoint loads with (to merge a LoRA adapter)
    peft_task: str  # LoRA task type: CAUSAL_LM, SEQ_CLS
    build: BuildFn  # (rows, base, scratch, config, progress, max_steps) -> a transformers Trainer
    head_labels: int | None = None  # num_labels of a scalar head (sequence classification)
    after_train: Callable[[Any], None] | None = None  # (trainer) after training, before saving; raising discards


def prepare(trainer, progress: bool, empty: str):
    """The checks and settings every built trainer gets: refuse an empty dataset (``empty`` says
    why), fp32 trainable weights, no per-step prints without progress."""
    from transformers import PrinterCallback

    if len(trainer.train_dataset) == 0:
        raise TrainingInputError(empty)
    upcast_trainable(trainer.model)
    if not progress:
        trainer.remove_callback(PrinterCallback)
    return trainer


def train(
    recipe: Recipe,
    rows: list[dict],
    base: Path,
    out_dir: str | Path,
    config,
    progress: bool = True,
    *,
    overwrite: bool = False,
    max_steps: int | None = None,
    callbacks: list | None = None,
    on_saved: Callable[[Path, Any], dict] | None = None,
    save: Callable[[Any, Path], None] | None = None,
) -> tuple[dict, Any]:
    """Train ``base`` on ``rows`` into ``out_dir``; returns (metrics, trainer).

    ``on_saved(stage_dir, trainer)`` runs on the main process after the model is written but
    before it is renamed into place (held-out accuracy of the saved PPM, say); its metrics join
    the result. ``save(trainer, stage_dir)`` replaces the standard save (a model that is more than
    one transformers checkpoint). ``callbacks`` are transformers ``TrainerCallback``s.
    """
    with (
        progress_bars(progress),
        staged_model_dir(out_dir, overwrite) as stage,
        tempfile.TemporaryDirectory() as scratch,
    ):
        seed_everything(config.seed)
        trainer = recipe.build(rows, base, Path(scratch), config, progress, max_steps)
        for callback in callbacks or []:
            trainer.add_callback(callback)
        if faults.armed("train:step"):
            trainer.add_callback(_fault_callback())
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
        if recipe.after_train is not None:
            recipe.after_train(trainer)
        if save is not None:
            save(trainer, stage)
        else:
            save_trained(recipe, trainer, base, stage, Path(scratch), config.lora)
        extra = on_saved(stage, trainer) if on_saved and is_main_process() else {}
    metrics = {"train_loss": result.training_loss, "steps": result.global_step, "seconds": seconds,
               "lora": config.lora, "out_dir": str(out_dir)}
    return metrics | extra, trainer


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch before the trainer is built. TRL's trainers seed before they load
    the model, but the PRM/PQM and value-head recipes load theirs (with a new head) before a plain
    transformers Trainer seeds, so the head was drawn from whatever the process did before: a round
    resumed in a fresh process trained another reward model than the uninterrupted one."""
    from transformers import set_seed

    set_seed(seed)


def _fault_callback():
    """A transformers callback that reaches the ``train:step`` fault point after every optimizer step."""
    from transformers import TrainerCallback

    class FaultAtStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            faults.fault_point("train:step")

    return FaultAtStep()


def save_trained(recipe: Recipe, trainer, base: Path, stage: Path, scratch: Path, lora: bool) -> None:
    """Write the trained model into ``stage`` as a plain checkpoint in the base's dtype.

    A LoRA adapter goes through ``save_model`` (which gathers FSDP shards) and is merged into the
    base on the main process, so the same code serves one device and several.
    """
    if not lora:
        trainer.save_model(str(stage))
        if is_main_process():
            store_in_dtype(stage, base_dtype(base))
        return
    adapter = scratch / "adapter"
    trainer.save_model(str(adapter))
    if is_main_process():
        merged = merge_adapter(recipe, base, adapter, trainer.model.config.pad_token_id)
        merged.save_pretrained(str(stage))
        trainer.processing_class.save_pretrained(str(stage))


def merge_adapter(recipe: Recipe, base: Path, adapter: Path, pad_token_id: int | None = None):
    """The base (in its dtype) with the adapter folded in; a scalar head comes from the adapter."""
    import transformers
    from peft import PeftModel

    kwargs: dict = {"dtype": "auto"}
    if recipe.head_labels is not None:
        kwargs |= {"num_labels": recipe.head_labels, "pad_token_id": pad_token_id}
    model = getattr(transformers, recipe.auto_class).from_pretrained(str(base), **kwargs)
    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
