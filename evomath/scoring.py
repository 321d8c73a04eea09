"""Reward models as value functions: (question, steps so far) -> score in [-1, 1].

Five kinds, one interface (``RewardScorer``), so every search and selection method takes any of them:

* ``ppm``: rStar's process preference model, a tanh-bounded scalar head trained with the pairwise
  Bradley-Terry loss over same-prefix step pairs.
* ``orm``: the same head and loss over whole-solution pairs (rStar's Table 8 outcome baseline).
* ``pqm``: the same head regressing each step's Q value with MSE (rStar's Table 8 Q baseline).
* ``prm``: Math-Shepherd's process reward model, a sigmoid head trained with per-step
  cross-entropy on completer labels; its probability p is served as 2p - 1.
* ``value``: AlphaMath's value head on the policy itself (the policy's checkpoint, which vLLM still
  generates from, plus ``value_head/``), tanh-bounded, regressing step Q.

A reward-model directory carries ``"evomath_reward_model": {"kind", "head", "format"}`` in its
``config.json`` (older PPMs: ``"evomath_ppm"``); any other directory is refused, so a policy is never
mistaken for a reward model, nor a PRM for a PPM. Every kind reads ``ppm_text`` (the bare question,
a blank line, the steps) and is read at the token that ends a step, so one forward pass over a chain
scores all its steps (``score_prefixes``).

Two serving backends give the same scores (to 3e-6 in fp32): transformers in this process, or
vLLM's pooling runner (``LLM(runner="pooling")``, the sequence-classification kinds). Both read token
ids from ``encode``, the tokenisation training used. transformers is the default: on a few CPU cores
it scores as fast as vLLM's pooling engine or faster, starts in about a second instead of tens, and
adds no second engine (processes, KV cache) beside the policy's (``benchmarks/training_throughput.py``
measures both). vLLM stays available for GPUs and servers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from evomath.config import EngineConfig
from evomath.errors import InputError

MARKER_KEY = "evomath_reward_model"
LEGACY_PPM_KEY = "evomath_ppm"  # PPMs saved before the other kinds existed
KINDS = ("ppm", "prm", "value", "orm", "pqm")
HEADS = {"ppm": "tanh", "orm": "tanh", "pqm": "tanh", "value": "tanh", "prm": "sigmoid"}
HEAD = HEADS["ppm"]
VALUE_HEAD_DIR = "value_head"  # beside the policy's weights, where vLLM does not look
Backend = Literal["transformers", "vllm"]
DEFAULT_BACKEND: Backend = "transformers"
# A scorer engine shares the machine with the policy's: a small CPU KV cache (on GPUs: ``_default_engine``).
DEFAULT_ENGINE = EngineConfig(dtype="float32", gpu_memory_utilization=0.2, cpu_kv_cache_gb=0.5)


class NotARewardModelError(InputError):
    """A directory given as a reward model (of some kind) is not one; the message says what it is."""


def ppm_text(question: str, trajectory: str) -> str:
    """What the PPM reads: the bare question (no few-shot prompt), a blank line, the solution so far.

    Trailing whitespace is dropped: a step's closing newlines tokenise differently before the next
    step, so without them a prefix's tokens start the longer chain's and ``score_prefixes`` can
    read every step from one pass.
    """
    return f"{question.strip()}\n\n{trajectory.rstrip()}"


def encode(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of PPM texts; training and both backends all go through here."""
    return tokenizer(list(texts), add_special_tokens=True)["input_ids"]


def reward_marker(path: str | Path, kind: str | None = None) -> dict:
    """The directory's reward-model marker ({"kind", "head", "format"}); raises
    ``NotARewardModelError`` naming what the directory is instead (no model, a policy, another kind)."""
    wanted = (kind or "reward model").upper() if kind != "value" else "value head"
    config_path = Path(path) / "config.json"
    if not config_path.is_file():
        raise NotARewardModelError(f"{path} is not a model directory (no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise NotARewardModelError(f"{config_path} is not valid JSON ({err.msg})") from None
    marker = config.get(MARKER_KEY)
    if marker is None and isinstance(config.get(LEGACY_PPM_KEY), dict):
        marker = {"kind": "ppm", **config[LEGACY_PPM_KEY]}
    if not isinstance(marker, dict):
        what = ", ".join(config.get("architectures") or ["unknown architecture"])
        raise NotARewardModelError(f"{path} is not an evomath {wanted} ({what}, no '{MARKER_KEY}' marker in "
                                   "config.json)")
    marker = {"kind": "ppm", **marker}
    if marker["kind"] not in KINDS or marker.get("head") != HEADS[marker["kind"]]:
        raise NotARewardModelError(f"{config_path}: field {MARKER_KEY}: kind {marker['kind']!r} with head "
                                   f"{marker.get('head')!r} is not one of {', '.join(KINDS)} with its head")
    if kind is not None and marker["kind"] != kind:
        raise NotARewardModelError(f"{path} is a {marker['kind'].upper()}, not a {wanted} (its marker: "
                                   f"{MARKER_KEY}.kind = {marker['kind']!r})")
    return marker


def ppm_marker(path: str | Path) -> dict:
    """The marker of a reward model used where a PPM is expected."""
    return reward_marker(path, "ppm")


def is_reward_dir(path: str | Path, kind: str | None = None) -> bool:
    try:
        reward_marker(path, kind)
    except NotARewardModelError:
        return False
    return True


def is_ppm_dir(path: str | Path) -> bool:
    return is_reward_dir(path, "ppm")


def squash(raw: float, head: str) -> float:
    """A head's raw output as a score in [-1, 1]: tanh, or a probability p as 2p - 1."""
    if head == "sigmoid":
        return 2.0 / (1.0 + math.exp(-max(min(raw, 60.0), -60.0))) - 1.0
    return math.tanh(raw)


class RewardScorer:
    """Scores partial solutions with a reward model of any kind; an instance is a ``ValueFn`` for
    MCTS, beam search, best-of-N and the weighted vote. ``kind`` (when given) must match the
    directory's marker."""

    def __init__(
        self,
        model_dir: str | Path,
        backend: Backend = DEFAULT_BACKEND,
        batch_size: int = 16,
        fmt=None,
        engine: EngineConfig | None = None,
        device: str | None = None,
        kind: str | None = None,
    ):
        self.model_dir = str(model_dir)
        self.marker = reward_marker(model_dir, kind)
        self.kind, self.head = self.marker["kind"], self.marker["head"]
        self._fmt = fmt
        self.batch_size = batch_size
        self.backend = backend
        if backend == "transformers":
            self._impl = _TransformersScorer(self.model_dir, self.kind, device)
        elif backend == "vllm" and self.kind != "value":
            self._impl = _VLLMScorer(self.model_dir, engine or _default_engine(self.model_dir))
        elif backend == "vllm":
            raise InputError(f"{model_dir}: a value head is served by transformers (vLLM's pooling runner reads "
                             "sequence-classification models)")
        else:
            raise InputError(f"unknown scorer backend {backend!r}: use 'transformers' or 'vllm'")

    @property
    def fmt(self):
        """The step format the PPM was trained with (from its marker) unless one was given."""
        if self._fmt is None:
            self._fmt = _format_named(self.marker.get("format"))
        return self._fmt

    def __call__(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[float]:
        return self.score(items)

    def score(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[float]:
        texts = [ppm_text(question, self.fmt.trajectory(list(steps))) for question, steps in items]
        return self.score_texts(texts)

    def score_prefixes(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """The score after each step of each (question, steps) chain, the same values ``score`` gives
        each prefix. A causal PPM's head at the token that ends a step reads only that prefix, so one
        forward pass over the whole chain scores all its steps; a prefix whose tokens are not the
        start of the chain's tokens (a merge across a step boundary) gets its own pass."""
        reads, bounds = [], [0]
        for question, steps in items:
            texts = [ppm_text(question, self.fmt.trajectory(list(steps[: k + 1]))) for k in range(len(steps))]
            reads += _reads(encode(self._impl.tokenizer, texts)) if texts else []
            bounds.append(len(reads))
        raw = self._impl.raw_scores_at(reads, self.batch_size)
        return [[squash(r, self.head) for r in raw[a:b]] for a, b in zip(bounds, bounds[1:])]

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """The squashed head output (``squash``) for texts already built with ``ppm_text``."""
        if not texts:
            return []
        ids = encode(self._impl.tokenizer, texts)
        return [squash(raw, self.head) for raw in self._impl.raw_scores(ids, self.batch_size)]

    def close(self) -> None:
        self._impl.close()


def _reads(prefix_ids: list[list[int]]) -> list[tuple[list[int], int]]:
    """(token ids, position to read) per prefix: the full chain's ids wherever a prefix's ids start them."""
    full = prefix_ids[-1]
    return [(full, len(ids) - 1) if full[: len(ids)] == ids else (ids, len(ids) - 1) for ids in prefix_ids]


def prefix_scores(value_fn, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
    """Every prefix's score of each chain: a ``RewardScorer`` in one pass per chain, any other ValueFn
    called once on all the prefixes."""
    if isinstance(value_fn, RewardScorer):
        return value_fn.score_prefixes(items)
    flat = value_fn([(question, list(steps[: k + 1])) for question, steps in items for k in range(len(steps))])
    out, start = [], 0
    for _, steps in items:
        out.append([float(v) for v in flat[start : start + len(steps)]])
        start += len(steps)
    return out


def load_scorer(path: str | Path, backend: Backend = DEFAULT_BACKEND, kind: str | None = "ppm",
                **kwargs) -> RewardScorer:
    """A scorer for a reward-model directory of ``kind`` (a PPM by default; None: any kind); anything
    else is refused with the reason (``NotARewardModelError``)."""
    return RewardScorer(path, backend=backend, kind=kind, **kwargs)


def _default_engine(model_dir: str) -> EngineConfig:
    """A PPM engine shares the machine with the policy's: on a GPU, the share its size needs
    (``evomath.plan.vllm_scorer_fraction``); on a CPU, a small KV cache."""
    import torch

    if not torch.cuda.is_available():
        return DEFAULT_ENGINE
    from evomath.plan import model_shape, vllm_scorer_fraction

    fraction = vllm_scorer_fraction(model_shape(model_dir), torch.cuda.get_device_properties(0).total_memory)
    return DEFAULT_ENGINE.model_copy(update={"gpu_memory_utilization": round(fraction, 3)})


def _format_named(name: str | None):
    from evomath.formats import make_format

    return make_format(name or "code")


def load_value_head(model_dir: str | Path, hidden_size: int):
    """The value head saved beside a policy: a ``Linear(hidden, 1)``."""
    import torch
    from safetensors.torch import load_file

    head = torch.nn.Linear(hidden_size, 1)
    head.load_state_dict(load_file(str(Path(model_dir) / VALUE_HEAD_DIR / "head.safetensors")))
    return head


class _TransformersScorer:
    """A reward model in this process, in the dtype it was saved in, on ``device`` (default: the first
    GPU, else the CPU; the memory plan may put it on a GPU of its own). ``body`` maps token ids to
    hidden states, ``head`` hidden states to the raw score at every token."""

    def __init__(self, model_dir: str, kind: str = "ppm", device: str | None = None):
        import torch
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if kind == "value":  # the policy's own body (its LM head unused) and the head saved beside it
            self.body = AutoModel.from_pretrained(model_dir).to(self.device).eval()
            self.head = load_value_head(model_dir, self.body.config.hidden_size).to(self.device, self.body.dtype)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(self.device).eval()
            self.body, self.head = getattr(model, model.base_model_prefix), model.score
        self.pad_id = self.body.config.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def raw_scores(self, ids: list[list[int]], batch_size: int) -> list[float]:
        """The head at each sequence's last token: what the classifier pools."""
        return self.raw_scores_at([(seq, len(seq) - 1) for seq in ids], batch_size)

    def raw_scores_at(self, reads: list[tuple[list[int], int]], batch_size: int) -> list[float]:
        """The head's output at given positions, in batches of similar length (less padding); a
        sequence read at several positions is run once."""
        unique: dict[tuple[int, ...], int] = {}
        for ids, _ in reads:
            unique.setdefault(tuple(ids), len(unique))
        sequences = [list(ids) for ids in unique]
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        heads: list = [None] * len(sequences)
        with self.torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                for i, row in zip(chunk, self._token_heads([sequences[i] for i in chunk]), strict=True):
                    heads[i] = row
        return [float(heads[unique[tuple(ids)]][position]) for ids, position in reads]

    def _batch(self, batch: list[list[int]]):
        """Right-padded ids and attention mask on the model's device."""
        torch = self.torch
        width = max(len(x) for x in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        return input_ids.to(self.device), mask.to(self.device)

    def _token_heads(self, batch: list[list[int]]) -> list:
        """The head at every token (what a classifier pools at the last one), per sequence."""
        input_ids, mask = self._batch(batch)
        hidden = self.body(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return self.head(hidden)[..., 0].float().cpu().tolist()

    def close(self) -> None:
        """Free the weights now (and the GPU's cached blocks), so training or the next engine gets them."""
        import gc

        self.body = self.head = None
        gc.collect()
        if self.torch.cuda.is_available():
            self.torch.cuda.empty_cache()


class _VLLMScorer:
    """vLLM's pooling runner. Build it under ``if __name__ == "__main__":`` or in a worker process."""

    def __init__(self, model_dir: str, engine: EngineConfig):
        from evomath.backends.vllm_backend import engine_kwargs, prepare_environment

        prepare_environment()
        from vllm import LLM

        self.llm = LLM(**engine_kwargs(model_dir, engine), runner="pooling")
        self.tokenizer = self.llm.get_tokenizer()

    def raw_scores(self, ids: list[list[int]], batch_size: int) -> list[float]:
        from vllm import PoolingParams

        prompts = [{"prompt_token_ids": seq} for seq in ids]
        outputs = self.llm.classify(prompts, pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
        return [float(out.outputs.probs[0]) for out in outputs]

    def raw_scores_at(self, reads: list[tuple[list[int], int]], batch_size: int) -> list[float]:
        """The pooling runner reads the last token only: each position is its own prefix."""
        return self.raw_scores([ids[: position + 1] for ids, position in reads], batch_size)

    def close(self) -> None:
        from evomath.backends.vllm_backend import shutdown_llm

        shutdown_llm(self.llm)
        self.llm = None
