"""Training in a fresh process draws what it would after other work: a resumed round trains the
model an uninterrupted one did."""

from __future__ import annotations

import pytest


def test_training_draws_its_new_weights_alike_whatever_the_process_did_before(tmp_path):
    """The PRM/PQM and value-head recipes build their model (a new head) before transformers seeds:
    ``train`` seeds first, so a round resumed in a fresh process trains what the uninterrupted one did."""
    import torch

    from evomath.config import SFTConfig
    from training import trainer

    drawn = []

    class Built(Exception):
        pass

    def build(rows, base, scratch, config, progress, max_steps):
        drawn.append(torch.rand(3).tolist())
        raise Built

    recipe = trainer.Recipe("rows", ("prompt",), "AutoModelForCausalLM", "CAUSAL_LM", build)
    for used in (0, 5):
        torch.rand(used)  # some earlier work of the process
        with pytest.raises(Built):
            trainer.train(recipe, [], tmp_path, tmp_path / "out", SFTConfig(), progress=False)
    assert drawn[0] == drawn[1]
    assert not (tmp_path / "out").exists()
