"""Training keeps fp32 master weights: one optimizer step at rStar's lr 7e-6 moves nearly every
weight of a bf16 checkpoint, where bf16 master weights (the old ``dtype="auto"``) leave most of
them bit-identical. Real TRL trainers on a tiny random bf16 Llama; no vLLM, a few seconds."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_model import make_tiny_model

from evomath.config import PPMConfig, SFTConfig
from evomath.files import write_jsonl

LR = 7e-6
SFT = SFTConfig(learning_rate=LR, batch_size=4, per_device_batch_size=4, max_length=64, warmup_ratio=0.0, bf16=True)
PPM = PPMConfig(learning_rate=LR, batch_size=4, per_device_batch_size=4, max_length=64, bf16=True)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", dtype="bfloat16")


def sft_rows():
    return [{"prompt": f"tom has {a} pens and gets {b} more . how many pens does he have ?",
             "completion": f" the answer is {(a + b) % 10} ."} for a, b in [(1, 2), (3, 4), (5, 1), (2, 2)]]


def pair_rows():
    return [{"prompt": f"tom has {a} pens .", "chosen": f" he has {a} pens .", "rejected": f" he has {b} pens ."}
            for a, b in [(1, 2), (3, 4), (5, 1), (2, 7)]]


def layer_weights(model) -> dict[str, torch.Tensor]:
    """The decoder layers' matrices (embedding rows of tokens absent from the batch get no gradient)."""
    return {name: p.detach().float().clone() for name, p in model.named_parameters()
            if ".layers." in name and p.dim() == 2}


def fraction_moved(trainer) -> float:
    before = layer_weights(trainer.model)
    trainer.train()
    after = layer_weights(trainer.model)
    moved = sum((after[k] != before[k]).sum().item() for k in before)
    return moved / sum(t.numel() for t in before.values())


def build(kind: str, base, tmp_path):
    if kind == "sft":
        from training.sft import build_trainer

        return build_trainer(sft_rows(), base, tmp_path, SFT, progress=False, max_steps=1)
    from training.ppm import build_trainer

    return build_trainer(pair_rows(), base, tmp_path, PPM, progress=False, max_steps=1)


@pytest.mark.parametrize("kind", ["sft", "ppm"])
def test_one_step_at_7e6_moves_nearly_every_weight(kind, base, tmp_path):
    trainer = build(kind, base, tmp_path)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters() if p.requires_grad)
    assert trainer.args.bf16  # the matmuls still run under bf16 autocast
    assert fraction_moved(trainer) > 0.95


@pytest.mark.parametrize("kind", ["sft", "ppm"])
def test_bf16_master_weights_barely_move(kind, base, tmp_path, monkeypatch):
    """The old path, kept as the control that shows the test above can fail."""
    import training.ppm
    import training.sft
    import training.trainer

    for module in (training.sft, training.ppm):
        monkeypatch.setattr(module, "model_init_kwargs", lambda config: {"dtype": "auto"})
    monkeypatch.setattr(training.trainer, "upcast_trainable", lambda model: 0)
    trainer = build(kind, base, tmp_path)
    assert next(trainer.model.parameters()).dtype == torch.bfloat16
    assert fraction_moved(trainer) < 0.3


def test_saved_policy_keeps_the_base_dtype(base, tmp_path):
    """fp32 master weights in training, the checkpoint's own bf16 on disk (half the size a round)."""
    from safetensors import safe_open

    from training.sft import train_sft

    write_jsonl(tmp_path / "sft.jsonl", sft_rows())
    out = tmp_path / "policy"
    train_sft(tmp_path / "sft.jsonl", base, out, SFT, progress=False, max_steps=1)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(str(out / "model.safetensors"), "pt") as saved:
        assert {saved.get_tensor(k).dtype for k in saved.keys()} == {torch.bfloat16}


def test_lora_upcasts_its_trainable_parameters(base, tmp_path):
    from training.ppm import build_trainer

    trainer = build_trainer(pair_rows(), base, tmp_path, PPM.model_copy(update={"lora": True}), progress=False,
                            max_steps=1)
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    frozen = [p for p in trainer.model.parameters() if not p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)  # adapters and the score head
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)  # the base stays in its own dtype


@pytest.mark.parametrize(("native", "asked", "expected"), [(True, None, True), (False, None, False),
                                                          (False, True, True), (True, False, False)])
def test_unset_bf16_follows_what_the_cpu_computes_natively(monkeypatch, native, asked, expected):
    """Emulated bf16 autocast on an AVX2-only CPU made SFT 13x slower than fp32; unset, it is off there."""
    from evomath import hardware
    from training.model_io import precision_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "native_bf16", lambda on_gpu: native)
    assert precision_args(asked)["bf16"] is expected
