"""Every shipped config parses, and the GPU configs carry the papers' settings."""

from pathlib import Path

import pytest

from evomath.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_parses(path):
    assert load_config(path).rounds >= 1


@pytest.mark.parametrize("name", ["gpu_rstar_7b.yaml", "gpu_rstar_1.5b.yaml"])
def test_gpu_configs_match_rstar(name):
    config = load_config(Path(CONFIGS[0]).parent / name)
    assert (config.search.rollouts, config.search.n_candidates, config.search.c_puct) == (16, 12, 2.0)
    assert config.search.unvisited_bonus == 0.0 and config.search.max_depth == 16
    assert (config.sft.learning_rate, config.sft.epochs, config.sft.batch_size) == (7e-6, 2, 128)
    assert (config.ppm.learning_rate, config.ppm.batch_size) == (7e-6, 512)
    assert config.hard_extra_rollouts[4] == [64, 128] and config.eval_search.n_candidates == 32


def test_bad_field_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("search:\n  rollouts: many\n")
    with pytest.raises(ValueError, match="bad.yaml: search.rollouts: "):
        load_config(bad)


def test_gpu_configs_match_alphamath_and_math_shepherd():
    from evomath.plan import KNOWN_CONFIGS

    alpha = load_config(Path(CONFIGS[0]).parent / "gpu_alphamath_7b.yaml")
    search = alpha.eval_search
    assert (search.selection, search.simulation, search.value_backup) == ("puct", "expansion", True)
    assert (search.c_puct, search.rollouts, search.max_depth, search.n_candidates) == (1.25, 40, 8, 5)
    assert (alpha.search.temperature, search.temperature) == (1.0, 0.6)
    assert alpha.reward_model == "value" and alpha.value.beta == 0.1
    shepherd = load_config(Path(CONFIGS[0]).parent / "gpu_math_shepherd_7b.yaml")
    assert shepherd.reward_model == "prm" and shepherd.search.step_format == "natural"
    assert (shepherd.prm.completions, shepherd.prm.labels, shepherd.prm.label_source) == (8, "hard", "completer")
    assert {alpha.policy, shepherd.policy} <= set(KNOWN_CONFIGS)  # `evomath plan` works offline for them
