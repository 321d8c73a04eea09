"""The embedded model through the real vLLM engine, and the OpenAI-compatible backend against it."""

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from evomath.backends import GenerationRequest
from evomath.config import EngineConfig

pytestmark = pytest.mark.slow


def _cold_generate(backend, requests):
    """generate from an empty prefix cache. A seeded sample is reproducible only when it is computed
    the same way: in bf16 (GPUs, and CPUs with AMX or AVX512-BF16) vLLM's kernels are not
    batch-invariant, so the same seeded request gives other text beside other requests in its batch,
    or when its prompt comes from the prefix cache instead of a prefill (fp32 on AVX2 hides this)."""
    backend.llm.reset_prefix_cache()
    return backend.generate(requests)


def test_samples_with_counts_stops_and_seeds(policy_backend):
    prompt = policy_backend.chat_prompt("Tom has 12 pens and gets 5 more. How many pens does Tom have now?")
    request = GenerationRequest(prompt=prompt, n=4, temperature=0.8, max_tokens=48, stop=("\n\n",), seed=7)
    first, again = (_cold_generate(policy_backend, [request])[0] for _ in range(2))
    assert len(first.completions) == 4 and first.prompt_tokens > 10
    assert [c.text for c in first.completions] == [c.text for c in again.completions]  # seeded
    for completion in first.completions:
        assert 0 < completion.num_tokens <= 48
        assert completion.finish_reason in ("stop", "length")
        if completion.stop_reason == "\n\n":
            assert completion.text.endswith("\n\n") and "\n\n" not in completion.text[:-2]


# Runs in a fresh process: the stages' in-process engine, whose sampler this process can swap.
PARTIAL_TOP_P_CHECK = """
import json, sys
from evomath.backends import GenerationRequest, cpu_sampler, vllm_backend
from evomath.config import EngineConfig
backend = vllm_backend.VLLMBackend(sys.argv[1], EngineConfig(cpu_kv_cache_gb=1.0, cpu_partial_top_p=True),
                                   in_process=True)
calls = []
partial = cpu_sampler.partial_top_p
cpu_sampler.partial_top_p = lambda *a: calls.append(1) or partial(*a)
prompts = [backend.chat_prompt(f"Ann has {a} pens and gets {a + 3} more. How many pens now?") for a in (2, 7, 12)]
requests = [GenerationRequest(prompt=p, n=4, temperature=0.8, top_p=0.95, max_tokens=32, seed=11) for p in prompts]
def sample():
    backend.llm.reset_prefix_cache()  # both runs compute the same way, from cold prompts
    return [[c.text for c in r.completions] for r in backend.generate(requests)]
ours = sample()
used = len(calls)
cpu_sampler.uninstall()
theirs = sample()
backend.close()
print("RESULT " + json.dumps({"calls": used, "ours": ours, "theirs": theirs}))
"""


def test_the_partial_top_p_samples_what_vllms_sort_samples(embedded_model_dir):
    """On CPUs, with engine.cpu_partial_top_p, the in-process engine's top-p runs through
    evomath.backends.cpu_sampler, and its seeded samples are vLLM's own sort's: all but those where
    a nucleus' edge ties (vLLM keeps an arbitrary part of the tokens tied with its last kept one,
    its sort is not stable; the partial top-p keeps them all), at the search's T 0.8 / top-p 0.95
    rare."""
    import subprocess
    import sys

    from evomath.backends import vllm_backend

    if not vllm_backend._on_cpu():
        pytest.skip("GPUs keep vLLM's sampler")
    done = subprocess.run([sys.executable, "-c", PARTIAL_TOP_P_CHECK, str(embedded_model_dir)],
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-2000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["calls"] > 0, "the engine's sampler did not go through the partial top-p"
    pairs = [(a, b) for ours, theirs in zip(result["ours"], result["theirs"]) for a, b in zip(ours, theirs)]
    assert len(pairs) == 12 and sum(a == b for a, b in pairs) >= 9, pairs
    assert all(len(set(texts)) > 1 for texts in result["ours"])  # really sampled


def test_greedy_is_deterministic_and_batched_in_order(policy_backend):
    prompts = [f"{a} + {a} =" for a in range(1, 6)]
    requests = [GenerationRequest(prompt=p, temperature=0.0, max_tokens=6) for p in prompts]
    once = [r.completions[0].text for r in policy_backend.generate(requests)]
    twice = [r.completions[0].text for r in policy_backend.generate(list(reversed(requests)))]
    assert once == list(reversed(twice))
    assert all(text.strip() for text in once)


def test_an_over_long_prompt_fails_alone_and_the_batch_goes_on(policy_backend):
    """vLLM raises on a prompt of max_model_len tokens or more and would abort the whole batch."""
    limit = policy_backend.config.max_model_len
    tokenizer = policy_backend.tokenizer
    at_limit = tokenizer.decode(tokenizer(" 7" * limit, add_special_tokens=False)["input_ids"][:limit])
    assert len(tokenizer(at_limit)["input_ids"]) >= limit
    ok = GenerationRequest(prompt="1 + 1 =", temperature=0.0, max_tokens=4)
    first, long, last = policy_backend.generate([ok, GenerationRequest(prompt=at_limit, max_tokens=4), ok])
    assert long.prompt_too_long and long.completions == []
    assert not first.prompt_too_long and first.completions[0].text == last.completions[0].text != ""
    just_fits = tokenizer.decode(tokenizer(" 7" * limit, add_special_tokens=False)["input_ids"][: limit - 8])
    (fitting,) = policy_backend.generate([GenerationRequest(prompt=just_fits, temperature=0.0, max_tokens=32)])
    assert not fitting.prompt_too_long and fitting.completions[0].finish_reason == "length"


def test_the_stream_feeds_requests_as_they_come_and_answers_as_generate_does(policy_backend):
    """Requests come back by ticket with generate's completions (seeded, n > 1) for the same batch;
    one submitted after the first poll joins the running engine and is answered before a longer one
    that came first; a prompt beyond the context is answered at once."""
    prompt = policy_backend.chat_prompt("Ann has 3 cats and gets 4 more. How many cats does Ann have?")
    sampled = GenerationRequest(prompt=prompt, n=3, temperature=0.8, max_tokens=24, stop=("\n\n",), seed=11)
    short = GenerationRequest(prompt="2 + 2 =", temperature=0.0, max_tokens=2)
    too_long = GenerationRequest(prompt=" 7" * (policy_backend.config.max_model_len + 8), max_tokens=4)
    expected = _cold_generate(policy_backend, [sampled, short, short])
    policy_backend.llm.reset_prefix_cache()
    stream = policy_backend.stream()
    tickets = stream.submit([sampled, short, short])
    got = {}
    while len(got) < 3:
        got.update(stream.poll())
    assert sorted(got) == sorted(tickets) and len(set(tickets)) == 3
    results = [got[t] for t in tickets]
    assert [c.text for c in results[0].completions] == [c.text for c in expected[0].completions]
    assert len(results[0].completions) == 3 and results[0].prompt_tokens == expected[0].prompt_tokens
    assert [r.completions[0].text for r in results[1:]] == [r.completions[0].text for r in expected[1:]]

    unstopped = dataclasses.replace(sampled, stop=())  # 24 tokens each, surely longer than the short
    long_ticket, first_short = stream.submit([unstopped, short])
    late = dict(stream.poll())  # returns once the short one is done, the long one still running
    assert list(late) == [first_short]
    arrived = list(late)
    short_ticket, too_long_ticket = stream.submit([short, too_long])
    while long_ticket not in arrived:
        for ticket, result in stream.poll():
            arrived.append(ticket)
            late[ticket] = result
    assert arrived.index(short_ticket) < arrived.index(long_ticket)  # joined, not queued behind it
    assert late[short_ticket].completions[0].text == expected[1].completions[0].text  # greedy: robust
    assert late[too_long_ticket].prompt_too_long and late[too_long_ticket].completions == []
    assert len(late[long_ticket].completions) == 3
    assert stream.poll() == []  # nothing in flight: returns at once
    abandoned = policy_backend.stream()
    abandoned.submit([sampled])
    abandoned.close()  # what a dead search leaves is aborted: the engine is empty for the next caller
    assert not policy_backend.llm.llm_engine.has_unfinished_requests()
    assert policy_backend.generate([short])[0].completions[0].text == expected[1].completions[0].text


def test_embedded_model_verifies_in_a_fresh_vllm_process(embedded_model_dir):
    from evomath.models import verify_model

    assert verify_model(embedded_model_dir).startswith("ok: greedy completion")


def test_sample_command_prints_samples(policy_backend, monkeypatch, capsys):
    import evomath.backends as backends
    from deployments.cli import main

    monkeypatch.setattr(policy_backend, "close", lambda: None)
    monkeypatch.setattr(backends, "make_backend", lambda model, config=None, in_process=None: policy_backend)
    assert main(["sample", "What is 2 + 3?", "-n", "3", "--max-tokens", "24"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- sample") == 3


class _ForwardingServer(BaseHTTPRequestHandler):
    """A minimal /v1/completions server in front of the session's engine (vllm serve's wire format).

    ``LLM`` is not thread-safe, so concurrent requests take turns (vllm serve batches them instead)."""

    backend = None
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = GenerationRequest(
            prompt=body["prompt"], n=body.get("n", 1), temperature=body.get("temperature", 1.0),
            top_p=body.get("top_p", 1.0), max_tokens=body.get("max_tokens", 16),
            stop=tuple(body.get("stop") or ()), seed=body.get("seed"),
            include_stop=body.get("include_stop_str_in_output", False),
        )
        with self.lock:
            result = self.backend.generate([request])[0]
        choices = [
            {"index": i, "text": c.text, "finish_reason": c.finish_reason, "stop_reason": c.stop_reason,
             "token_ids": list(range(c.num_tokens)), "logprobs": None}
            for i, c in enumerate(result.completions)
        ]
        usage = {"prompt_tokens": result.prompt_tokens,
                 "completion_tokens": sum(c.num_tokens for c in result.completions),
                 "total_tokens": 0}
        payload = json.dumps({"id": "cmpl-1", "object": "text_completion", "created": 0,
                              "model": body["model"], "choices": choices, "usage": usage}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_openai_backend_matches_in_process_engine(policy_backend, embedded_model_dir):
    from evomath.backends.openai_backend import OpenAIBackend

    handler = type("Handler", (_ForwardingServer,), {"backend": policy_backend})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = EngineConfig(backend="openai", base_url=f"http://127.0.0.1:{server.server_port}/v1")
        remote = OpenAIBackend(str(embedded_model_dir), config, max_concurrency=4)
        requests = [GenerationRequest(prompt=f"{a} times 2 is", n=2, temperature=0.7, max_tokens=12,
                                      stop=(".",), seed=a) for a in range(3)]
        over_http = remote.generate(requests)
        direct = policy_backend.generate(requests)
        assert [[c.text for c in r.completions] for r in over_http] == [[c.text for c in r.completions] for r in direct]
        assert [[c.num_tokens for c in r.completions] for r in over_http] == [[c.num_tokens for c in r.completions] for r in direct]
        assert remote.chat_prompt("hi") == policy_backend.chat_prompt("hi")
        remote.close()
    finally:
        server.shutdown()
