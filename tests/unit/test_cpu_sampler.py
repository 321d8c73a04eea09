"""The partial top-p keeps vLLM's nucleus (up to ties at its edge) without sorting the vocabulary."""

from __future__ import annotations

import pytest
import torch

from evomath.backends import cpu_sampler

sampler = pytest.importorskip("vllm.v1.sample.ops.topk_topp_sampler")


def vllm_sort(logits, k, p):
    original = getattr(sampler.apply_top_k_top_p_pytorch, "original", sampler.apply_top_k_top_p_pytorch)
    return original(logits, k, p, allow_cpu_sync=True)


def lm_like_logits(batch: int, vocab: int, seed: int) -> torch.Tensor:
    """Zipf-shaped rows (a language model's: a few likely tokens, a long tail) at random token
    positions, rounded through bf16 as vLLM's logits are (many exact ties)."""
    generator = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, vocab + 1, dtype=torch.float32)
    rows = [(-3.0 * ranks.log())[torch.randperm(vocab, generator=generator)] for _ in range(batch)]
    return (torch.stack(rows) + 0.3 * torch.randn(batch, vocab, generator=generator)).bfloat16().float()


def kept(logits: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(logits)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_nucleus_is_vllms_but_for_ties_with_its_last_token(seed):
    logits = lm_like_logits(24, 5000, seed)
    logits[3] = 0.01 * torch.randn(5000)  # flat: no partial size covers it, vLLM's sort does
    p = torch.tensor([0.95] * 20 + [0.5, 0.99, 1.0, 0.01])
    ours = cpu_sampler.partial_top_p(logits.clone(), p, vllm_sort)
    theirs = vllm_sort(logits.clone(), None, p.clone())
    differ = kept(ours) != kept(theirs)
    assert torch.equal(ours[kept(theirs) & kept(ours)], logits[kept(theirs) & kept(ours)])
    for row in differ.any(dim=1).nonzero().flatten().tolist():
        edge = theirs[row][kept(theirs[row])].min()
        assert (logits[row][differ[row]] == edge).all(), "only tokens tied with the last kept one may differ"
        assert kept(ours[row])[differ[row]].all(), "ties are kept, never dropped"
    assert kept(ours[22]).all(), "p = 1 keeps every token"
    assert kept(ours[23]).sum() == 1, "a tiny p keeps the most likely token"
    assert kept(ours).sum(dim=1)[:20].max() < 5000


def test_install_routes_top_p_only_and_uninstall_restores_vllms_sort():
    before = sampler.apply_top_k_top_p_pytorch
    try:
        cpu_sampler.install()
        installed = sampler.apply_top_k_top_p_pytorch
        assert installed.evomath_partial_top_p
        cpu_sampler.install()
        assert sampler.apply_top_k_top_p_pytorch is installed  # installed once only
        logits = lm_like_logits(4, 1000, 3)
        k = torch.tensor([5, 5, 5, 5])
        assert torch.equal(kept(installed(logits.clone(), k, None, allow_cpu_sync=True)),
                           kept(vllm_sort(logits.clone(), k, None)))  # top-k: vLLM's own path
        cpu_sampler.uninstall()
        assert not getattr(sampler.apply_top_k_top_p_pytorch, "evomath_partial_top_p", False)
    finally:
        sampler.apply_top_k_top_p_pytorch = before
