"""The process preference model as a value function: (question, steps so far) -> score in [-1, 1].

A PPM directory is a plain ``AutoModelForSequenceClassification`` (one label) whose ``config.json``
carries ``"evomath_ppm": {"head": "tanh", "format": ...}``. The raw score is the linear head's output
at the last token; the PPM's score is its tanh, the same bounded value its Bradley-Terry loss was
trained on. Any other directory is refused, so a policy can never be mistaken for a PPM.

Two serving backends give the same scores (to 3e-6 in fp32): transformers in this process, or
vLLM's pooling runner (``LLM(runner="pooling")``). Both read token ids from ``encode``, the
tokenisation training used. transformers is the default: on a few CPU cores it scores as fast as
vLLM's pooling engine or faster, starts in about a second instead of tens, and adds no second
engine (processes, KV cache) beside the policy's (``benchmarks/training_throughput.py`` measures
both). vLLM stays available for GPUs and servers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from evomath.config import EngineConfig

MARKER_KEY = "evomath_ppm"
HEAD = "tanh"
Backend = Literal["transformers", "vllm"]
DEFAULT_BACKEND: Backend = "transformers"
# A PPM engine shares the machine with the policy's: a small CPU KV cache (on GPUs: ``_default_engine``).
DEFAULT_ENGINE = EngineConfig(dtype="float32", gpu_memory_utilization=0.2, cpu_kv_cache_gb=0.5)


class NotAPPMError(ValueError):
    """A directory given as a PPM is not one; the message says what is wrong."""


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


def ppm_marker(path: str | Path) -> dict:
    """The directory's PPM marker; raises ``NotAPPMError`` naming what is missing."""
    config_path = Path(path) / "config.json"
    if not config_path.is_file():
        raise NotAPPMError(f"{path} is not a model directory (no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise NotAPPMError(f"{config_path} is not valid JSON ({err.msg})") from None
    marker = config.get(MARKER_KEY)
    if not isinstance(marker, dict) or marker.get("head") != HEAD:
        kind = ", ".join(config.get("architectures") or ["unknown architecture"])
        raise NotAPPMError(f"{path} is not an evomath PPM ({kind}, no '{MARKER_KEY}' marker in config.json)")
    return marker


def is_ppm_dir(path: str | Path) -> bool:
    try:
        ppm_marker(path)
    except NotAPPMError:
        return False
    return True


class PPMScorer:
    """Scores partial solutions; an instance is a ``ValueFn`` for MCTS, beam search and best-of-N."""

    def __init__(
        self,
        model_dir: str | Path,
        backend: Backend = DEFAULT_BACKEND,
        batch_size: int = 16,
        fmt=None,
        engine: EngineConfig | None = None,
        device: str | None = None,
    ):
        self.model_dir = str(model_dir)
        self.marker = ppm_marker(model_dir)
        self._fmt = fmt
        self.batch_size = batch_size
        self.backend = backend
        if backend == "transformers":
            self._impl = _TransformersPPM(self.model_dir, device)
        elif backend == "vllm":
            self._impl = _VLLMPPM(self.model_dir, engine or _default_engine(self.model_dir))
        else:
            raise ValueError(f"unknown PPM backend {backend!r}: use 'transformers' or 'vllm'")

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
        return [[math.tanh(r) for r in raw[a:b]] for a, b in zip(bounds, bounds[1:])]

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """tanh of the raw head output, for texts already built with ``ppm_text``."""
        if not texts:
            return []
        ids = encode(self._impl.tokenizer, texts)
        return [math.tanh(raw) for raw in self._impl.raw_scores(ids, self.batch_size)]

    def close(self) -> None:
        self._impl.close()


def _reads(prefix_ids: list[list[int]]) -> list[tuple[list[int], int]]:
    """(token ids, position to read) per prefix: the full chain's ids wherever a prefix's ids start them."""
    full = prefix_ids[-1]
    return [(full, len(ids) - 1) if full[: len(ids)] == ids else (ids, len(ids) - 1) for ids in prefix_ids]


def prefix_scores(value_fn, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
    """Every prefix's score of each chain: a ``PPMScorer`` in one pass per chain, any other ValueFn
    called once on all the prefixes."""
    if isinstance(value_fn, PPMScorer):
        return value_fn.score_prefixes(items)
    flat = value_fn([(question, list(steps[: k + 1])) for question, steps in items for k in range(len(steps))])
    out, start = [], 0
    for _, steps in items:
        out.append([float(v) for v in flat[start : start + len(steps)]])
        start += len(steps)
    return out


def load_scorer(path: str | Path, backend: Backend = DEFAULT_BACKEND, **kwargs) -> PPMScorer:
    """A scorer for a PPM directory; anything else is refused with the reason (``NotAPPMError``)."""
    return PPMScorer(path, backend=backend, **kwargs)


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


class _TransformersPPM:
    """The PPM in this process, in the dtype it was saved in, on ``device`` (default: the first GPU,
    else the CPU; the memory plan may put it on a GPU of its own)."""

    def __init__(self, model_dir: str, device: str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(self.device).eval()
        self.pad_id = self.model.config.pad_token_id
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
        """The score head at every token (what the classifier pools at the last one), per sequence."""
        input_ids, mask = self._batch(batch)
        body = getattr(self.model, self.model.base_model_prefix)
        hidden = body(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return self.model.score(hidden)[..., 0].float().cpu().tolist()

    def close(self) -> None:
        """Free the weights now (and the GPU's cached blocks), so training or the next engine gets them."""
        import gc

        self.model = None
        gc.collect()
        if self.torch.cuda.is_available():
            self.torch.cuda.empty_cache()


class _VLLMPPM:
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
