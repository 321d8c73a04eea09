"""The memory plan: where the policy engine, the reward model and training live on 1..N GPUs, at what
vLLM memory fraction, and what a round costs, decided from the config and the models' shapes before
any work starts.

Model sizes come from each model's ``config.json`` (a local directory, the Hugging Face cache, or the
hub's config file alone: never the weights). The estimates are deliberately simple and stated:

* **Engine** (vLLM, one per ``tensor_parallel_size`` GPUs): bf16 weights / TP, a fixed reserve for
  activations and CUDA graphs (``ENGINE_RESERVE``), and the KV cache in what is left of its fraction;
  the cache must hold at least one ``max_model_len`` sequence.
* **Reward model during search and evaluation** (the PPM in transformers, bf16): its weights plus
  one scoring batch's activations. With a GPU beside the engine's it goes there and the engine keeps
  its configured fraction; otherwise it shares the engine's GPU and the engine's fraction shrinks
  by the PPM's share (vLLM would otherwise take 0.9 and leave the PPM no room).
* **Training** (after the engine is shut down): full fine-tuning keeps fp32 master weights, fp32
  gradients and AdamW's two fp32 moments, 16 bytes a parameter, sharded over all GPUs by FSDP;
  LoRA keeps the frozen base in bf16. Activations with gradient checkpointing: one checkpoint per
  layer, one layer recomputed, and the logits (bf16, their fp32 copy for the loss and its gradient).

A plan that cannot fit is refused with the numbers (``PlanError``) and what to change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evomath.config import ExperimentConfig
from evomath.errors import InputError

GiB = 2**30
ENGINE_RESERVE = 3 * GiB  # vLLM's activation profile and CUDA graphs, beyond weights and KV cache
DEVICE_RESERVE = 1 * GiB  # the CUDA context and allocator slack on every GPU
SCORER_BATCH = 16  # sequences a PPM scores per forward pass (evomath.scoring.RewardScorer)
BF16, FP32 = 2, 4
FULL_FT_BYTES_PER_PARAM = 16  # fp32 weights, fp32 gradients, AdamW's m and v in fp32
PAPER_PROBLEMS = 747_000  # rStar-Math's training set
PAPER_ROLLOUTS = 16
# Assumed sustained generation throughput: effective FLOP/s of batched vLLM decoding on one
# 80 GB-class GPU (~15% of an H100's bf16 peak), at 2 FLOP per parameter per generated token.
ASSUMED_EFFECTIVE_FLOPS = 1.5e14


class PlanError(InputError):
    """The config cannot run on these GPUs; the message gives the numbers and what to change."""


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs to know of a decoder-only transformer, from its config."""

    name: str
    params: int
    layers: int
    hidden: int
    intermediate: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def from_config(cls, name: str, config: dict) -> ModelShape:
        text = config.get("text_config", config)  # multimodal wrappers keep the decoder's inside
        try:
            hidden, layers, vocab = text["hidden_size"], text["num_hidden_layers"], text["vocab_size"]
            heads = text["num_attention_heads"]
        except KeyError as err:
            raise PlanError(f"{name}: config.json has no {err.args[0]}; not a decoder-only transformer") from None
        kv_heads = text.get("num_key_value_heads") or heads
        head_dim = text.get("head_dim") or hidden // heads
        intermediate = text.get("intermediate_size") or 4 * hidden
        attention = hidden * head_dim * (heads + 2 * kv_heads) + heads * head_dim * hidden
        gated = 3 if text.get("hidden_act", "silu") in ("silu", "swiglu", "gelu_pytorch_tanh") else 2
        per_layer = attention + gated * hidden * intermediate + 2 * hidden
        embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", text.get("tie_word_embeddings")) else 2)
        params = layers * per_layer + embeddings + hidden
        return cls(name, params, layers, hidden, intermediate, kv_heads, head_dim, vocab)

    def kv_bytes_per_token(self, dtype_bytes: int = BF16) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


# The decoder shapes of the models the shipped GPU configs name (their hub config.json files), for
# planning on a machine that cannot reach the hub: a config.json found locally or online wins.
KNOWN_CONFIGS: dict[str, dict] = {
    "Qwen/Qwen2.5-Math-7B": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                 num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                                 tie_word_embeddings=False, hidden_act="silu"),
    "Qwen/Qwen2.5-Math-1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                   num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                                   tie_word_embeddings=True, hidden_act="silu"),
    "deepseek-ai/deepseek-math-7b-base": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=30,
                                              num_attention_heads=32, num_key_value_heads=32, vocab_size=102400,
                                              tie_word_embeddings=False, hidden_act="silu"),
    "mistralai/Mistral-7B-v0.1": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                      num_attention_heads=32, num_key_value_heads=8, vocab_size=32000,
                                      tie_word_embeddings=False, hidden_act="silu"),
}


def read_model_config(spec: str) -> dict:
    """A model's config.json without its weights: a local directory, an embedded model, the HF cache,
    the hub's config file alone, else (offline) the built-in shape of a shipped config's model."""
    from evomath.models import EMBEDDED_MODELS, HUB_ID, ModelError, pull

    path = Path(spec).expanduser()
    if spec in EMBEDDED_MODELS:
        path = pull(spec, verify=False)
    elif not path.is_dir() and HUB_ID.fullmatch(spec):
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(spec, allow_patterns=["config.json"]))
        except Exception as err:
            if spec in KNOWN_CONFIGS:
                return KNOWN_CONFIGS[spec]
            raise ModelError(f"{spec}: cannot read its config.json from the Hugging Face cache or hub "
                             f"({str(err).splitlines()[0]}); `hf download {spec} config.json` fetches only that file"
                             ) from None
    config = path / "config.json"
    if not config.is_file():
        raise ModelError(f"{spec}: no config.json (not a model directory, embedded name or hub id)")
    return json.loads(config.read_text())


def model_shape(spec: str) -> ModelShape:
    return ModelShape.from_config(spec, read_model_config(spec))


@dataclass(frozen=True)
class Devices:
    """The GPUs a plan is made for (or the CPU, ``count == 0``)."""

    count: int
    bytes_each: int
    name: str = "GPU"

    @classmethod
    def detect(cls) -> Devices:
        import torch

        if not torch.cuda.is_available():
            return cls(0, _ram_bytes(), "CPU")
        props = torch.cuda.get_device_properties(0)
        return cls(torch.cuda.device_count(), props.total_memory, props.name)

    def describe(self) -> str:
        if not self.count:
            return f"CPU only ({self.bytes_each / GiB:.0f} GiB RAM)"
        return f"{self.count} x {self.name} ({self.bytes_each / GiB:.0f} GiB each)"


def _ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass
class Phase:
    """One phase of a round: what runs, on which devices, with how many bytes per device."""

    name: str
    placements: list[tuple[str, str, float]] = field(default_factory=list)  # (what, where, GiB)
    problems: list[str] = field(default_factory=list)


@dataclass
class MemoryPlan:
    devices: Devices
    engine_fraction: float  # the policy engine's gpu_memory_utilization
    scorer_device: str | None  # where the PPM runs during search/evaluation ("cuda:1"), None: not on a GPU
    kv_tokens: int  # KV-cache capacity of one engine
    phases: list[Phase]

    @property
    def problems(self) -> list[str]:
        return [f"{phase.name}: {problem}" for phase in self.phases for problem in phase.problems]

    def check(self) -> MemoryPlan:
        if self.problems:
            raise PlanError(f"the config does not fit on {self.devices.describe()}: " + "; ".join(self.problems))
        return self

    def table(self) -> str:
        lines = [f"memory plan on {self.devices.describe()}"]
        for phase in self.phases:
            lines.append(f"  {phase.name}")
            for what, where, gib in phase.placements:
                lines.append(f"    {what:44s} {where:10s} {gib:8.1f} GiB")
            lines += [f"    DOES NOT FIT: {p}" for p in phase.problems]
        if self.devices.count:
            lines.append(f"  vLLM gpu_memory_utilization {self.engine_fraction:.2f}, KV cache {self.kv_tokens:,} tokens; "
                         f"reward model on {self.scorer_device or 'the engine GPU'}")
        return "\n".join(lines)


def make_plan(config: ExperimentConfig, devices: Devices, policy: ModelShape, ppm: ModelShape | None) -> MemoryPlan:
    """Place the engine, the PPM and training on ``devices``; ``ppm`` None: no reward model is used."""
    if not devices.count:
        return _cpu_plan(config, devices, policy)
    total = devices.bytes_each
    tp = config.engine.tensor_parallel_size
    search = Phase("search and evaluation")
    if tp > devices.count:
        search.problems.append(f"engine.tensor_parallel_size {tp} needs {tp} GPUs, {devices.count} visible")
        tp = devices.count
    weights = policy.params * BF16 / tp
    scorer_bytes = _scorer_bytes(ppm, config, total) if ppm else 0
    fraction, scorer_device = config.engine.gpu_memory_utilization, None
    scorer = f"{config.reward_model.upper()} {ppm.name} (bf16, scoring batch)" if ppm else ""
    if ppm and devices.count > tp:
        scorer_device = f"cuda:{tp}"
        search.placements.append((scorer, scorer_device, scorer_bytes / GiB))
        if scorer_bytes + DEVICE_RESERVE > total:
            search.problems.append(f"the {config.reward_model.upper()} needs {scorer_bytes / GiB:.1f} GiB on one {total / GiB:.0f} GiB GPU")
    elif ppm:
        scorer_device = "cuda:0"
        fraction = min(fraction, (total - scorer_bytes - DEVICE_RESERVE) / total)
        search.placements.append((scorer, "cuda:0", scorer_bytes / GiB))
    engine_bytes = fraction * total
    kv_bytes = engine_bytes - weights - ENGINE_RESERVE
    kv_tokens = max(0, int(kv_bytes // (policy.kv_bytes_per_token() / tp)))
    where = "cuda:0" if tp == 1 else f"cuda:0-{tp - 1}"
    search.placements += [
        (f"policy {policy.name} weights (bf16 / TP {tp})", where, weights / GiB),
        ("vLLM reserve (activations, CUDA graphs)", where, ENGINE_RESERVE / GiB),
        (f"KV cache ({kv_tokens:,} tokens)", where, max(kv_bytes, 0) / GiB),
    ]
    if kv_tokens < config.engine.max_model_len:
        search.problems.append(
            f"vLLM at gpu_memory_utilization {fraction:.2f} has {engine_bytes / GiB:.1f} GiB: weights "
            f"{weights / GiB:.1f} + reserve {ENGINE_RESERVE / GiB:.0f} leave KV for {kv_tokens:,} tokens, less than one "
            f"max_model_len {config.engine.max_model_len} sequence (raise tensor_parallel_size, or use more GPUs)")
    policy_phase = "policy + value head" if config.reward_model == "value" else "SFT (policy)"
    phases = [search, _training_phase(policy_phase, config.policy_training(), policy, devices, lm_head=True)]
    if ppm and (section := config.reward_training()) is not None:
        phases.append(_training_phase(f"{config.reward_model.upper()} training", section, ppm, devices, lm_head=False,
                                      pairs=config.reward_learns_from_pairs))
    if config.rl.enabled:
        phases.append(_rl_phase(config, policy, devices))
    return MemoryPlan(devices, fraction, scorer_device, kv_tokens, phases)


def _rl_phase(config: ExperimentConfig, policy: ModelShape, devices: Devices) -> Phase:
    """GRPO after the policy's SFT (``training.rl``), on every GPU at once: the policy's training states
    (as SFT's) and activations over prompt + completion, the frozen reference policy the KL penalty
    reads (loaded as the policy is, sharded the same way), the colocated vLLM engine's fraction when
    it generates, and the reward model (the policy's shape) scoring steps in bf16 when the rewards
    are per step."""
    rl = config.rl
    phase = _training_phase("RL (GRPO)", rl, policy, devices, lm_head=True)
    n, where = devices.count, ("each GPU" if devices.count > 1 else "cuda:0")
    extra = []
    if rl.beta > 0:
        per_param = BF16 if rl.lora else FP32
        extra.append((f"reference policy for the KL penalty ({'bf16' if rl.lora else 'fp32'}, sharded)",
                      policy.params * per_param / n))
    if rl.use_vllm:
        extra.append((f"colocated vLLM (rl.vllm_gpu_memory_utilization {rl.vllm_gpu_memory_utilization})",
                      rl.vllm_gpu_memory_utilization * devices.bytes_each))
    if rl.rewards == "process":
        extra.append((f"{rl.reward_kind.upper()} {policy.name} scoring steps (bf16)",
                      policy.params * BF16 + _scoring_activations(policy, rl.max_length)))
    phase.placements += [(what, where, b / GiB) for what, b in extra]
    need = sum(gib for _, _, gib in phase.placements) * GiB + DEVICE_RESERVE
    phase.problems = [] if need <= devices.bytes_each else [
        f"needs {need / GiB:.1f} GiB per GPU on {n} x {devices.bytes_each / GiB:.0f} GiB (policy states, reference, "
        f"colocated engine and reward model together); use more GPUs, rl.lora: true, a smaller "
        f"rl.vllm_gpu_memory_utilization, or lower rl.per_device_batch_size / max_length"]
    return phase


def vllm_scorer_fraction(ppm: ModelShape, device_bytes: int) -> float:
    """The GPU fraction a vLLM pooling engine serving the PPM needs: bf16 weights, vLLM's reserve and
    a small KV cache (scoring reads prefixes once); a fixed 0.2 beside a 0.9 policy engine asked
    for more than the GPU, and is too little for a 7B PPM on a 48 GB card."""
    return min(1.0, (ppm.params * BF16 + ENGINE_RESERVE + GiB) / device_bytes)


def _scoring_activations(model: ModelShape, tokens: int) -> float:
    """One scoring batch's hidden states in transformers (inference keeps a few layers' worth alive)."""
    return SCORER_BATCH * tokens * model.hidden * BF16 * 4


def _scorer_bytes(ppm: ModelShape, config: ExperimentConfig, device_bytes: int) -> float:
    """What the PPM takes beside the engine, served either way: in transformers, bf16 weights and one
    batch's hidden states (inference keeps a few layers' worth alive); in vLLM, its own fraction."""
    activations = _scoring_activations(ppm, config.engine.max_model_len)
    return max(ppm.params * BF16 + activations, vllm_scorer_fraction(ppm, device_bytes) * device_bytes)


def _training_phase(name: str, train, shape: ModelShape, devices: Devices, *, lm_head: bool, pairs: bool = False) -> Phase:
    phase = Phase(name)
    n = devices.count
    sequences = train.per_device_batch_size * (2 if pairs else 1)  # a pair is two sequences
    tokens = sequences * train.max_length
    if train.lora:
        states, what = shape.params * BF16 / n, "frozen bf16 base (LoRA), FSDP-sharded"
    else:
        states, what = shape.params * FULL_FT_BYTES_PER_PARAM / n, "fp32 weights, grads, AdamW (16 B/param) / FSDP"
    checkpoints = tokens * shape.hidden * shape.layers * BF16
    layer = tokens * (4 * shape.hidden + 3 * shape.intermediate) * BF16 * 2
    logits = tokens * shape.vocab * (BF16 + 2 * FP32) if lm_head else 0
    where = "each GPU" if n > 1 else "cuda:0"
    phase.placements += [
        (f"{shape.name}: {what}", where, states / GiB),
        (f"activations ({sequences} x {train.max_length} tokens, checkpointed)", where, (checkpoints + layer) / GiB),
    ]
    if logits:
        phase.placements.append(("logits (bf16 + fp32 loss and grad)", where, logits / GiB))
    need = states + checkpoints + layer + logits + DEVICE_RESERVE
    if need > devices.bytes_each:
        hint = "train with lora: true, " if not train.lora else ""
        phase.problems.append(
            f"needs {need / GiB:.1f} GiB per GPU on {n} x {devices.bytes_each / GiB:.0f} GiB "
            f"(fp32 master weights for {shape.params / 1e9:.2f}B parameters); {hint}use more GPUs "
            f"(FSDP shards the states), or lower per_device_batch_size / max_length")
    return phase


def _cpu_plan(config: ExperimentConfig, devices: Devices, policy: ModelShape) -> MemoryPlan:
    """On a CPU vLLM gets an explicit KV-cache size; the check is that it and the model fit in RAM."""
    phase = Phase("search and evaluation (CPU)")
    kv = config.engine.cpu_kv_cache_gb * GiB
    weights = policy.params * FP32
    phase.placements += [(f"policy {policy.name} weights", "RAM", weights / GiB), ("KV cache", "RAM", kv / GiB)]
    if weights + kv > devices.bytes_each:
        phase.problems.append(f"engine needs {(weights + kv) / GiB:.1f} GiB, the machine has {devices.bytes_each / GiB:.1f}")
    return MemoryPlan(devices, config.engine.gpu_memory_utilization, None, int(kv // policy.kv_bytes_per_token()), [phase])


def plan_for(config: ExperimentConfig, uses_ppm: bool, devices: Devices | None = None) -> MemoryPlan:
    """The plan for this machine (or ``devices``), from the models the config names; ``uses_ppm``:
    some search or evaluation scores with the PPM beside the engine (it has the policy's shape: the
    PPM is initialised from the policy)."""
    policy = model_shape(config.policy)
    return make_plan(config, devices or Devices.detect(), policy, policy if uses_ppm else None)


def apply_plan(config: ExperimentConfig, plan: MemoryPlan) -> ExperimentConfig:
    """The config with the engine's memory fraction the plan chose (unchanged on a CPU)."""
    if not plan.devices.count:
        return config
    engine = config.engine.model_copy(update={"gpu_memory_utilization": round(plan.engine_fraction, 3)})
    return config.model_copy(update={"engine": engine})


# --------------------------------------------------------------------------- the budget of a round


def tokens_per_rollout(config: ExperimentConfig, trees: Sequence = ()) -> tuple[float, str]:
    """Generated tokens per rollout: measured over saved trees (their ``meta``) when given, else
    assumed from the settings (each of half max_depth expansions samples n_candidates steps of half
    max_step_tokens). Returns the figure and where it comes from."""
    tokens = sum(t.meta.get("tokens", 0) for t in trees)
    rollouts = sum(t.meta.get("rollouts", 0) for t in trees)
    if rollouts:
        return tokens / rollouts, f"measured: {rollouts:,} rollouts of {len(trees):,} saved trees"
    search = config.search
    assumed = search.n_candidates * (search.max_step_tokens / 2) * (search.max_depth / 2)
    return assumed, (f"assumed: {search.n_candidates} candidates x {search.max_step_tokens // 2} tokens "
                     f"x {search.max_depth // 2} expansions")


def round_rollouts(config: ExperimentConfig, round_number: int, problems: int, rollouts: int, hard_share: float) -> float:
    """Every problem's rollouts plus the extra ones the hard share gets in that round."""
    return problems * (rollouts + hard_share * sum(config.hard_extra_rollouts.get(round_number, [])))


def assumed_tokens_per_s(policy: ModelShape) -> float:
    return ASSUMED_EFFECTIVE_FLOPS / (2 * policy.params)


def describe_budget(config: ExperimentConfig, policy: ModelShape, problems: int, per_rollout: tuple[float, str],
                    hard_share: float, tokens_per_s: float | None) -> str:
    """Each round's rollouts, tokens and GPU-hours for this config and at rStar-Math's scale (747k
    problems x 16 rollouts, the config's extra rollouts for hard problems), every assumption printed."""
    speed = tokens_per_s or assumed_tokens_per_s(policy)
    speed_source = "given" if tokens_per_s else (
        f"assumed: {ASSUMED_EFFECTIVE_FLOPS:.1e} effective FLOP/s of batched vLLM decoding per GPU, "
        f"2 FLOP per parameter ({policy.params / 1e9:.2f}B) per token; measure yours and pass --gpu-tokens-per-s")
    tokens, source = per_rollout
    lines = [f"round budget ({policy.name}, {config.search.step_format} steps)",
             f"  tokens per rollout: {tokens:,.0f} ({source})",
             f"  generation: {speed:,.0f} tokens/s per GPU ({speed_source})",
             f"  hard problems getting the extra rollouts: {hard_share:.0%} (assumed)"]
    for label, count, rollouts in (("this config", problems, config.search.rollouts),
                                   ("rStar-Math's scale", PAPER_PROBLEMS, PAPER_ROLLOUTS)):
        total_hours = 0.0
        for k in range(1, config.rounds + 1):
            n = round_rollouts(config, k, count, rollouts, hard_share)
            hours = n * tokens / speed / 3600
            total_hours += hours
            lines.append(f"  {label}, round {k}: {count:,} problems x {rollouts} rollouts (+ extra) = {n:,.0f} "
                         f"rollouts, {n * tokens / 1e9:,.3f}B tokens, {hours:,.1f} GPU-hours")
        lines.append(f"  {label}, {config.rounds} rounds: {total_hours:,.1f} GPU-hours ({total_hours / 24:,.1f} GPU-days)")
    return "\n".join(lines)
