"""The policy behind an OpenAI-compatible completions server (``vllm serve`` on other machines).

This is how generation scales past one box: the search stays here, the engines run elsewhere.
Requests go out concurrently; vLLM's server batches them on its side.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from evomath.backends.base import Completion, GenerationRequest, GenerationResult, render_chat
from evomath.config import EngineConfig
from evomath.errors import InputError


class OpenAIBackend:
    def __init__(self, model: str, config: EngineConfig | None = None, max_concurrency: int = 64):
        from openai import OpenAI

        self.config = config or EngineConfig(backend="openai")
        if not self.config.base_url:
            raise InputError("the openai backend needs engine.base_url, e.g. http://gpu-host:8000/v1")
        self.model = self.config.served_model_name or model
        self.tokenizer_source = model
        self.client = OpenAI(base_url=self.config.base_url, api_key=self.config.api_key)
        self.pool = ThreadPoolExecutor(max_workers=max_concurrency)
        self._tokenizer = None

    def generate(self, requests: Sequence[GenerationRequest], progress: bool = False) -> list[GenerationResult]:
        return list(self.pool.map(self._complete, requests))

    def _complete(self, request: GenerationRequest) -> GenerationResult:
        from openai import BadRequestError

        try:
            return self._create(request)
        except BadRequestError as err:
            if _is_context_overflow(err):  # that request only: the others of the batch go on
                return GenerationResult([], prompt_too_long=True)
            raise

    def _create(self, request: GenerationRequest) -> GenerationResult:
        response = self.client.completions.create(
            model=self.model,
            prompt=request.prompt,
            n=request.n,
            temperature=request.temperature,
            top_p=request.top_p if request.temperature > 0 else 1.0,
            max_tokens=request.max_tokens,
            stop=list(request.stop) or None,
            seed=request.seed,
            logprobs=0 if request.logprobs else None,
            extra_body={"include_stop_str_in_output": request.include_stop, "return_token_ids": True},
        )
        choices = sorted(response.choices, key=lambda c: c.index)
        fallback_tokens = (response.usage.completion_tokens // max(len(choices), 1)) if response.usage else 0
        completions = [
            Completion(
                text=c.text,
                num_tokens=len(getattr(c, "token_ids", None) or []) or fallback_tokens,
                finish_reason=c.finish_reason or "stop",
                stop_reason=getattr(c, "stop_reason", None) if isinstance(getattr(c, "stop_reason", None), str) else None,
                logprob=sum(c.logprobs.token_logprobs) if request.logprobs and c.logprobs else None,
            )
            for c in choices
        ]
        prompt_tokens = response.usage.prompt_tokens if response.usage else 0
        return GenerationResult(completions=completions, prompt_tokens=prompt_tokens)

    def chat_prompt(self, user_text: str, system: str | None = None) -> str:
        """Apply the model's chat template locally, so the server sees plain completions."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from evomath.models import resolve_model

            self._tokenizer = AutoTokenizer.from_pretrained(resolve_model(self.tokenizer_source))
        return render_chat(self._tokenizer, user_text, system, source=self.tokenizer_source)

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.client.close()


def _is_context_overflow(err: Exception) -> bool:
    """vLLM's server (and OpenAI's) answer 400 for a prompt longer than the context."""
    text = str(err).lower()
    return "maximum model length" in text or "maximum context length" in text or "context length" in text

