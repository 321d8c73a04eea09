"""GPU check of the training path: a few steps of each of evomath's real trainers in bf16 autocast on CUDA.

For a machine with CUDA, torch and transformers (and TRL, datasets, pydantic: carry them as wheels
where they are missing) but no vLLM. It builds a randomly initialised model with the shape of a
model the GPU configs train (Qwen2.5-Math-1.5B by default; ``--shape 7b``, or ``--model DIR`` for a
real checkpoint), saved in bf16 like the hub's checkpoints, and runs a few optimizer steps of each
trainer with its GPU config's section: the policy's SFT and rStar's PPM (``--config``, rStar's
lr 7e-6), Math-Shepherd's PRM (``gpu_math_shepherd_7b.yaml``'s ``prm``) and AlphaMath's joint
policy + value head (``gpu_alphamath_7b.yaml``'s ``value``). It checks that the weights are fp32
master copies and that nearly all of them move, and reports tokens/s, pairs/s and peak GPU memory
against the memory plan's estimate. The result is printed as JSON (and written to
``$OUT/gpu_check.json`` when OUT is set, after each trainer, so a run cut short keeps what it did).

    python benchmarks/gpu_check.py                      # on the GPU
    python benchmarks/gpu_check.py --device cpu --shape tiny --steps 2 --batch-size 8   # a CPU smoke run
    python benchmarks/gpu_check.py --shape 7b --config configs/gpu_rstar_7b.yaml --trainers sft --batch-size 16
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

# Which config section trains each model (None: the --config's own) and what it reads: the plan's
# lm_head (the vocabulary's logits in the loss) and pairs (two sequences a row).
TRAINERS = {
    "sft": dict(section="sft", config=None, lm_head=True, pairs=False),
    "ppm": dict(section="ppm", config=None, lm_head=False, pairs=True),
    "prm": dict(section="prm", config=REPO / "configs" / "gpu_math_shepherd_7b.yaml", lm_head=False, pairs=False),
    "value": dict(section="value", config=REPO / "configs" / "gpu_alphamath_7b.yaml", lm_head=True, pairs=False),
}
STEPS_PER_SOLUTION = 8

SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=False, hidden_act="silu"),
}
WORDS = [f"w{i}" for i in range(400)]


def shapes() -> dict:
    from evomath.plan import KNOWN_CONFIGS

    return SHAPES | {"1.5b": KNOWN_CONFIGS["Qwen/Qwen2.5-Math-1.5B"], "7b": KNOWN_CONFIGS["Qwen/Qwen2.5-Math-7B"]}


def random_model(out: Path, shape: dict, device: str) -> Path:
    """A random decoder with ``shape`` (Llama modules: Qwen2's are the same blocks, and its own BPE
    tokenizer class would misread a word-level vocabulary) and a word-level tokenizer, saved in bf16.
    Initialised on ``device`` in bf16: a 7B model's fp32 init on the CPU takes minutes."""
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
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(out)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
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


def training_rows(name: str, n: int, words: int) -> list[dict]:
    """``n`` random rows in the shape each trainer reads: prompt + completion (SFT), a chosen and a
    rejected completion (PPM), a solution cut into steps with a label per step (PRM: in [0, 1]), and
    for the value head both SFT rows and steps labelled with a Q in [-1, 1]."""
    import random

    rng = random.Random(7)
    prompts, first, second = texts(n, words, 0), texts(n, words, 1), texts(n, words, 2)
    if name == "sft":
        return [{"prompt": p, "completion": c} for p, c in zip(prompts, first)]
    if name == "ppm":
        return [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(prompts, first, second)]

    def steps(text: str) -> list[str]:
        tokens = text.split(" ")[1:]
        size = max(1, len(tokens) // STEPS_PER_SOLUTION)
        return [" " + " ".join(tokens[i:i + size]) for i in range(0, len(tokens), size)]

    low = 0.0 if name == "prm" else -1.0
    stepped = [{"prompt": p, "steps": (cut := steps(c)), "labels": [rng.uniform(low, 1.0) for _ in cut]}
               for p, c in zip(prompts, first)]
    if name == "prm":
        return stepped
    half = n // 2
    return [{"prompt": p, "completion": c} for p, c in zip(prompts[:half], first[:half])] + stepped[half:]


def build(name: str, rows: list[dict], base: Path, scratch: Path, section, steps: int):
    from training.ppm import build_trainer as ppm_trainer
    from training.sft import build_trainer as sft_trainer
    from training.step_rewards import RECIPES
    from training.value_head import VALUE

    builders = {"sft": sft_trainer, "ppm": ppm_trainer, "prm": RECIPES["prm"].build, "value": VALUE.build}
    return builders[name](rows, base, scratch / name, section, progress=False, max_steps=steps)


def serve(name: str, trainer, base: Path, stage: Path, scratch: Path, device: str, solutions: list[dict]) -> dict:
    """Save a trained reward model the way its stage does (plain checkpoint in the base's dtype, the
    marker; the value head beside the policy) and score every prefix of ``solutions`` through the
    transformers scorer on ``device``, as PPM-guided search and best-of-N serve it: reads/s, and that
    the scores are finite and not all alike."""
    import math

    from evomath.scoring import RewardScorer
    from training.ppm import PPM, mark_reward_model
    from training.step_rewards import RECIPES
    from training.trainer import save_trained
    from training.value_head import save as save_value_head

    if name == "value":
        save_value_head(trainer, base, stage, "natural")
    else:
        save_trained({"ppm": PPM, "prm": RECIPES["prm"]}[name], trainer, base, stage, scratch, lora=False)
        mark_reward_model(stage, name, "natural")
    scorer = RewardScorer(stage, backend="transformers", batch_size=16, device=device, kind=name)
    items = [(row["prompt"], row["steps"]) for row in solutions]
    started = time.perf_counter()
    scores = [v for chain in scorer.score_prefixes(items) for v in chain]
    seconds = time.perf_counter() - started
    scorer.close()
    return {"prefixes_scored": len(scores), "prefixes_per_s": round(len(scores) / seconds, 1),
            "scores_finite_and_varied": all(map(math.isfinite, scores)) and len({round(v, 6) for v in scores}) > 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1.5b", help="random model shape: tiny, 1.5b, 7b (default 1.5b)")
    parser.add_argument("--model", type=Path, help="a real model directory instead of a random one")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "gpu_rstar_1.5b.yaml",
                        help="its sft/ppm sections set lr, batch and length (default: the 1.5B rStar config); "
                             "prm and value read Math-Shepherd's and AlphaMath's 7B configs")
    parser.add_argument("--trainers", default=",".join(TRAINERS),
                        help=f"comma-separated, in order (default {','.join(TRAINERS)})")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per trainer (default 3)")
    parser.add_argument("--batch-size", type=int, help="effective batch (rows, PPM pairs); default: each config's")
    parser.add_argument("--max-length", type=int, default=1024, help="tokens per sequence (default 1024)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args(argv)
    chosen = [t for t in args.trainers.split(",") if t]
    if unknown := [t for t in chosen if t not in TRAINERS]:
        parser.error(f"--trainers: {', '.join(unknown)} unknown (choose from {', '.join(TRAINERS)})")

    import torch

    from evomath.config import load_config
    from evomath.plan import Devices, ModelShape, _training_phase

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device visible (use --device cpu for a smoke run)")
    words = max(8, args.max_length // 2 - 4)  # prompt and completion share the length
    common = {"max_length": args.max_length, "bf16": True if args.device == "cpu" else None}
    if args.batch_size:
        common |= {"batch_size": args.batch_size, "per_device_batch_size": min(args.batch_size, 4)}
    report = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
              "torch": torch.__version__, "model": str(args.model or f"random {args.shape} (bf16 checkpoint)")}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        base = args.model or random_model(scratch / "model", shapes()[args.shape], args.device)
        report["model_build_s"] = round(time.perf_counter() - started, 1)
        shape = ModelShape.from_config("checked", json.loads((Path(base) / "config.json").read_text()))
        for name in chosen:
            spec = TRAINERS[name]
            config = load_config(spec["config"] or args.config)
            section = getattr(config, spec["section"]).model_copy(update=common | (
                {"warmup_ratio": 0.0} if name == "sft" else {}))  # no lr-0 warm-up step in a short check
            trainer = build(name, training_rows(name, section.batch_size * args.steps, words), base, scratch,
                            section, args.steps)
            result = run_trainer(trainer, args.device, args.steps)
            result |= {"config": Path(spec["config"] or args.config).name, "lr": section.learning_rate,
                       "batch_size": section.batch_size, "per_device_batch_size": section.per_device_batch_size}
            if name == "ppm":
                result["pairs_per_s"] = round(trainer.pairs_seen / result["seconds"], 2)
            else:
                result["tokens_per_s"] = round(result["steps"] * section.batch_size * 2 * words / result["seconds"], 1)
            if name != "sft":
                solutions = training_rows("prm", 64, words)
                result["served"] = serve(name, trainer, base, scratch / f"{name}-stage", scratch, args.device, solutions)
            if args.device == "cuda":
                devices = Devices(1, torch.cuda.get_device_properties(0).total_memory)
                phase = _training_phase(name, section, shape, devices, lm_head=spec["lm_head"], pairs=spec["pairs"])
                result["plan_estimate_gib"] = round(sum(gib for _, _, gib in phase.placements), 2)
                result["plan_problems"] = phase.problems
            report[name] = result
            write(report)
            del trainer
            torch.cuda.empty_cache() if args.device == "cuda" else None
    report["ok"] = all(report[k]["fraction_of_weights_moved"] > 0.9 and report[k]["trainable_dtypes"] == ["torch.float32"]
                       and report[k].get("served", {}).get("scores_finite_and_varied", True) for k in chosen)
    print(json.dumps(report, indent=2))
    write(report)
    return 0 if report["ok"] else 1


def write(report: dict) -> None:
    if os.environ.get("OUT"):
        name = os.environ.get("GPU_CHECK_NAME", "gpu_check")
        Path(os.environ["OUT"], f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
