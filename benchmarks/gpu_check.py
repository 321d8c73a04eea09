"""GPU check of the training path: SFT and PPM steps of evomath's real trainers in bf16 autocast on CUDA.

For a machine with CUDA, torch and transformers (and TRL, datasets, pydantic: carry them as wheels
where they are missing) but no vLLM. It builds a randomly initialised model with the shape of a
model the GPU configs train (Qwen2.5-Math-1.5B by default; ``--shape 7b``, or ``--model DIR`` for a
real checkpoint), saved in bf16 like the hub's checkpoints, and runs a few optimizer steps of
``training.sft.build_trainer`` and ``training.ppm.build_trainer`` with the config's training section
(rStar's lr 7e-6). It checks that the weights are fp32 master copies and that nearly all of them
move, and reports tokens/s (SFT), pairs/s (PPM) and peak GPU memory against the memory plan's
estimate. The result is printed as JSON (and written to ``$OUT/gpu_check.json`` when OUT is set).

    python benchmarks/gpu_check.py                      # on the GPU
    python benchmarks/gpu_check.py --device cpu --shape tiny --steps 2 --batch-size 8   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=False, hidden_act="silu"),
}
WORDS = [f"w{i}" for i in range(400)]


def shapes() -> dict:
    from evomath.plan import KNOWN_CONFIGS

    return SHAPES | {"1.5b": KNOWN_CONFIGS["Qwen/Qwen2.5-Math-1.5B"], "7b": KNOWN_CONFIGS["Qwen/Qwen2.5-Math-7B"]}


def random_model(out: Path, shape: dict) -> Path:
    """A random decoder with ``shape`` (Llama modules: Qwen2's are the same blocks, and its own BPE
    tokenizer class would misread a word-level vocabulary) and a word-level tokenizer, saved in bf16."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>")
    config = LlamaConfig(**shape, pad_token_id=0, bos_token_id=1, eos_token_id=2, max_position_embeddings=4096)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # a plain fast tokenizer: the model type's own tokenizer class (Qwen2's BPE) would misread this vocab
    settings = json.loads((Path(out) / "tokenizer_config.json").read_text())
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    (Path(out) / "tokenizer_config.json").write_text(json.dumps(settings))
    return out


def texts(n: int, words: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" " + " ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(n)]  # a space starts a word


def watched(model, count: int = 6) -> dict:
    """A few decoder matrices (first and last layers), copied to the CPU, to see whether they move."""
    names = [n for n, p in model.named_parameters() if ".layers." in n and p.dim() == 2]
    chosen = names[:count // 2] + names[-(count // 2):]
    params = dict(model.named_parameters())
    return {n: params[n].detach().float().cpu().clone() for n in chosen}


def run_trainer(trainer, device: str, steps: int) -> dict:
    import torch

    dtypes = {str(p.dtype) for p in trainer.model.parameters() if p.requires_grad}
    before = watched(trainer.model)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = trainer.train()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    after = watched(trainer.model)
    moved = sum((after[k] != before[k]).sum().item() for k in before) / sum(t.numel() for t in before.values())
    report = {"steps": result.global_step, "seconds": round(seconds, 2), "train_loss": result.training_loss,
              "trainable_dtypes": sorted(dtypes), "fraction_of_weights_moved": round(moved, 4),
              "bf16_autocast": bool(trainer.args.bf16)}
    if device == "cuda":
        report["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1.5b", help="random model shape: tiny, 1.5b, 7b (default 1.5b)")
    parser.add_argument("--model", type=Path, help="a real model directory instead of a random one")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "gpu_rstar_1.5b.yaml",
                        help="its sft/ppm sections set lr, batch and length (default: the 1.5B rStar config)")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per trainer (default 3)")
    parser.add_argument("--batch-size", type=int, help="effective batch (SFT rows, PPM pairs); default: the config's")
    parser.add_argument("--max-length", type=int, default=1024, help="tokens per sequence (default 1024)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args(argv)

    import torch

    from evomath.config import load_config
    from evomath.plan import Devices, ModelShape, _training_phase
    from training.ppm import build_trainer as ppm_trainer
    from training.sft import build_trainer as sft_trainer

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device visible (use --device cpu for a smoke run)")
    config = load_config(args.config)
    words = max(8, args.max_length // 2 - 4)  # prompt and completion share the length
    common = {"max_length": args.max_length, "bf16": True if args.device == "cpu" else None}
    if args.batch_size:
        common |= {"batch_size": args.batch_size, "per_device_batch_size": min(args.batch_size, 4)}
    sft = config.sft.model_copy(update=common | {"warmup_ratio": 0.0})  # no lr-0 warm-up step in a short check
    ppm = config.ppm.model_copy(update=common)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        base = args.model or random_model(scratch / "model", shapes()[args.shape])
        batch = sft.batch_size
        rows = [{"prompt": p, "completion": c} for p, c in zip(texts(batch * args.steps, words, 0),
                                                               texts(batch * args.steps, words, 1))]
        report = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
                  "torch": torch.__version__, "model": str(args.model or f"random {args.shape} (bf16 checkpoint)"),
                  "lr": sft.learning_rate}
        trainer = sft_trainer(rows, base, scratch / "sft", sft, progress=False, max_steps=args.steps)
        report["sft"] = run_trainer(trainer, args.device, args.steps)
        report["sft"]["tokens_per_s"] = round(report["sft"]["steps"] * sft.batch_size * 2 * words
                                              / report["sft"]["seconds"], 1)
        del trainer
        torch.cuda.empty_cache() if args.device == "cuda" else None
        pairs = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(
            texts(ppm.batch_size * args.steps, words, 2), texts(ppm.batch_size * args.steps, words, 3),
            texts(ppm.batch_size * args.steps, words, 4))]
        trainer = ppm_trainer(pairs, base, scratch / "ppm", ppm, progress=False, max_steps=args.steps)
        report["ppm"] = run_trainer(trainer, args.device, args.steps)
        report["ppm"]["pairs_per_s"] = round(trainer.pairs_seen / report["ppm"]["seconds"], 2)
        shape = ModelShape.from_config("checked", json.loads((Path(base) / "config.json").read_text()))
        if args.device == "cuda":
            devices = Devices(1, torch.cuda.get_device_properties(0).total_memory)
            for name, section, head in (("sft", sft, True), ("ppm", ppm, False)):
                phase = _training_phase(name, section, shape, devices, lm_head=head, pairs=not head)
                report[name]["plan_estimate_gib"] = round(sum(gib for _, _, gib in phase.placements), 2)
    ok = all(report[k]["fraction_of_weights_moved"] > 0.9 and report[k]["trainable_dtypes"] == ["torch.float32"]
             for k in ("sft", "ppm"))
    report["ok"] = ok
    text = json.dumps(report, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
