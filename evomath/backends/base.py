"""The policy-backend contract: batched prompts in, sampled completions out.

Search, training and evaluation only ever talk to this interface, so the same code runs on the
in-process vLLM engine (CPU or GPU) and on a remote OpenAI-compatible server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from evomath.errors import InputError


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to sample ``n`` continuations of."""

    prompt: str
    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Keep the matched stop string at the end of the text (rStar's markers carry meaning).
    include_stop: bool = True
    # Return each completion's log-probability (AlphaMath's PUCT priors).
    logprobs: bool = False


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" | "length"
    stop_reason: str | None = None  # the stop string that ended it, if any
    logprob: float | None = None  # sum of its tokens' log-probabilities, when asked for


@dataclass
class GenerationResult:
    """The completions of one request, plus its prompt size (for throughput accounting).

    ``prompt_too_long``: the prompt leaves no room in the model's context (``max_model_len``), so
    nothing was generated; the search makes that node a ``length`` dead end and the batch goes on.
    """

    completions: list[Completion]
    prompt_tokens: int = 0
    prompt_too_long: bool = False
    extra: dict = field(default_factory=dict)


def render_chat(tokenizer, user_text: str, system: str | None = None, *, source: str = "the model") -> str:
    """One user turn (after an optional system turn) through the tokenizer's chat template, ending
    with the assistant's generation prompt: what every "chat" prompt style sends."""
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(
            f"{source}: the tokenizer has no chat template, which the 'chat' prompt styles need "
            "(use prompt style 'few_shot' or 'bare', or a model with a chat template)"
        )
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user_text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class GenerationStream(Protocol):
    """Requests in at any time, results out as each finishes: what keeps an engine full while a
    search waits on some trees and others are ready for their next step."""

    def submit(self, requests: Sequence[GenerationRequest]) -> list[int]:
        """Queue requests; returns one ticket per request."""
        ...

    def poll(self) -> list[tuple[int, GenerationResult]]:
        """Block until at least one submitted request has finished (none if nothing is in flight);
        returns the finished ones with their tickets."""
        ...

    def close(self) -> None:
        """Drop what is still in flight (a search that stops early or dies)."""
        ...


class WaveStream:
    """Any backend's batched ``generate`` as a stream: what was submitted is generated in one call
    at the next poll, so a search advances in lock-step waves (each waits for the batch's longest
    sequence). The fallback for backends without a stream of their own, and ``feed: waves``."""

    def __init__(self, backend: PolicyBackend) -> None:
        self.backend = backend
        self.queued: list[tuple[int, GenerationRequest]] = []
        self.tickets = 0

    def submit(self, requests: Sequence[GenerationRequest]) -> list[int]:
        tickets = list(range(self.tickets, self.tickets + len(requests)))
        self.tickets += len(requests)
        self.queued += zip(tickets, requests)
        return tickets

    def poll(self) -> list[tuple[int, GenerationResult]]:
        queued, self.queued = self.queued, []
        if not queued:
            return []
        results = self.backend.generate([r for _, r in queued])
        return [(ticket, result) for (ticket, _), result in zip(queued, results, strict=True)]

    def close(self) -> None:
        self.queued = []


def open_stream(backend: PolicyBackend, feed: str) -> GenerationStream:
    """``continuous``: the backend's own stream when it has one (vLLM's engine steps, a server's
    concurrent requests); ``waves`` (or a backend without one): lock-step batches."""
    stream = getattr(backend, "stream", None)
    return stream() if feed == "continuous" and stream is not None else WaveStream(backend)


class PolicyBackend(Protocol):
    def generate(self, requests: Sequence[GenerationRequest], progress: bool = False) -> list[GenerationResult]:
        """Sample every request in one batch; results come back in request order."""
        ...

    def chat_prompt(self, user_text: str, system: str | None = None) -> str:
        """``user_text`` through the policy's chat template (``render_chat``)."""
        ...

    def close(self) -> None: ...
