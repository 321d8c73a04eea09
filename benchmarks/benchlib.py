"""What the speed benchmarks share: a meter around ``LLM.generate``, the machine's load, a PPM-shaped
scorer for cost measurements, and vLLM's prefix-cache counters. Imported by the scripts beside it
(``python benchmarks/<script>.py`` puts this folder on ``sys.path``)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path


def load() -> str:
    """The 1/5/15-minute load averages: other jobs on a shared machine show up here."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _machine_busy_s() -> float:
    """CPU seconds all processes have used since boot (every core), from /proc/stat."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process (all its threads) and of the children it has waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OtherCPU:
    """Cores' worth of CPU that other processes used during a ``with`` block: machine busy time minus
    this process's (and its waited-for children's), over the wall time. On a shared 2-core machine a
    measurement is only clean when this stays near 0; long-lived helpers of our own that are never
    waited for (the grader's workers) count as "other" too."""

    def __enter__(self) -> OtherCPU:
        self.wall0, self.busy0, self.own0 = time.perf_counter(), _machine_busy_s(), _own_cpu_s()
        self.cores = None
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self.wall0
        other = (_machine_busy_s() - self.busy0) - (_own_cpu_s() - self.own0)
        self.cores = max(0.0, other / wall) if wall > 0 else 0.0


def wait_until_idle(max_wait_s: float = 600, window_s: float = 5.0, threshold: float = 0.2) -> float:
    """Block until other processes used under ``threshold`` cores for ``window_s``; returns the
    seconds waited (gives up after ``max_wait_s``)."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait_s:
        busy0, own0 = _machine_busy_s(), _own_cpu_s()
        time.sleep(window_s)
        if ((_machine_busy_s() - busy0) - (_own_cpu_s() - own0)) / window_s < threshold:
            break
    return time.perf_counter() - start


@dataclass
class Call:
    start: float
    end: float
    requests: int
    sequences: int
    prompt_tokens: int
    generated_tokens: int
    longest: int = 0  # the longest sequence's tokens: the call lasts until it is done

    @property
    def fill(self) -> float:
        """Generated tokens over sequences x longest: how full the batch stayed as sequences ended."""
        return self.generated_tokens / (self.sequences * self.longest) if self.sequences and self.longest else 0.0


@dataclass
class GenerateMeter:
    """Wraps one ``vllm.LLM`` instance's ``generate``: every call's wall time, requests, sequences
    (``n`` per request), prompt tokens (once per request) and generated tokens."""

    calls: list[Call] = field(default_factory=list)

    def attach(self, llm) -> GenerateMeter:
        inner = llm.generate
        self._detach = (llm, inner, "generate" in vars(llm))

        def generate(prompts, sampling_params=None, *args, **kwargs):
            start = time.perf_counter()
            outputs = inner(prompts, sampling_params, *args, **kwargs)
            end = time.perf_counter()
            self.calls.append(Call(
                start, end, len(outputs), sum(len(o.outputs) for o in outputs),
                sum(len(o.prompt_token_ids or []) for o in outputs),
                sum(len(c.token_ids) for o in outputs for c in o.outputs),
                max((len(c.token_ids) for o in outputs for c in o.outputs), default=0),
            ))
            return outputs

        llm.generate = generate
        return self

    def detach(self) -> None:
        llm, inner, own = self._detach
        if own:
            llm.generate = inner
        else:
            del llm.generate

    def totals(self) -> dict:
        return {
            "generate_calls": len(self.calls),
            "generate_s": sum(c.end - c.start for c in self.calls),
            "requests": sum(c.requests for c in self.calls),
            "sequences": sum(c.sequences for c in self.calls),
            "prompt_tokens": sum(c.prompt_tokens for c in self.calls),
            "generated_tokens": sum(c.generated_tokens for c in self.calls),
            # time-weighted: the share of the batch still generating, on average over the calls' time
            "batch_fill": (sum(c.fill * (c.end - c.start) for c in self.calls)
                           / max(1e-9, sum(c.end - c.start for c in self.calls))),
        }


def fresh_ppm(policy_dir: str | Path, out_dir: str | Path, fmt_name: str) -> Path:
    """A PPM directory with the policy's body and a fresh one-output head: the shape (and so the
    cost) of a trained PPM, not its judgement. Built once; reused when ``out_dir`` has one."""
    from evomath.scoring import HEAD, MARKER_KEY, is_ppm_dir

    out = Path(out_dir)
    if is_ppm_dir(out):
        return out
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model = AutoModelForSequenceClassification.from_pretrained(str(policy_dir), num_labels=1, pad_token_id=pad)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    config[MARKER_KEY] = {"head": HEAD, "format": fmt_name}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def enable_engine_stats() -> None:
    """Build evomath's engines with vLLM's statistics on (``disable_log_stats=False``), so
    ``prefix_cache`` can read the prefix-cache counters; everything else is the stages' settings."""
    from evomath.backends import vllm_backend

    inner = vllm_backend.engine_kwargs
    if getattr(inner, "with_stats", False):
        return

    def engine_kwargs(model_path, config):
        return inner(model_path, config) | {"disable_log_stats": False}

    engine_kwargs.with_stats = True
    vllm_backend.engine_kwargs = engine_kwargs


def prefix_cache(llm) -> dict | None:
    """Prompt tokens looked up in vLLM's prefix cache and those found, so far (None when the
    engine keeps no statistics)."""
    try:
        metrics = llm.get_metrics()
    except Exception:  # noqa: BLE001 - statistics off, or an engine without them
        return None
    values = {m.name: getattr(m, "value", None) for m in metrics}
    queries, hits = values.get("vllm:prefix_cache_queries"), values.get("vllm:prefix_cache_hits")
    if queries is None or hits is None:
        return None
    return {"queries": int(queries), "hits": int(hits)}


def hit_rate(before: dict | None, after: dict | None) -> float | None:
    if not before or not after or after["queries"] == before["queries"]:
        return None
    return (after["hits"] - before["hits"]) / (after["queries"] - before["queries"])
