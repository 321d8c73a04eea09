"""The memory plan on imagined GPUs: placements, the engine's fraction beside the PPM, refusals with
numbers, and the round budget; read from model configs (no weights, no GPU)."""

from __future__ import annotations

import json

import pytest

from evomath import plan as planning
from evomath.config import apply_overrides, load_config
from evomath.plan import Devices, GiB, ModelShape, PlanError, make_plan

QWEN_7B = ModelShape.from_config("qwen-7b", planning.KNOWN_CONFIGS["Qwen/Qwen2.5-Math-7B"])
QWEN_15B = ModelShape.from_config("qwen-1.5b", planning.KNOWN_CONFIGS["Qwen/Qwen2.5-Math-1.5B"])


def gpus(n: int, gib: float = 80) -> Devices:
    return Devices(n, int(gib * GiB), "H100")


def test_parameter_counts_match_the_published_sizes():
    assert QWEN_7B.params == pytest.approx(7.62e9, rel=0.01)
    assert QWEN_15B.params == pytest.approx(1.54e9, rel=0.01)
    assert QWEN_7B.kv_bytes_per_token() == 2 * 28 * 4 * 128 * 2


def test_7b_full_fine_tuning_is_refused_on_one_80gb_gpu_with_the_numbers():
    config = load_config("configs/gpu_rstar_7b.yaml")
    plan = make_plan(config, gpus(1), QWEN_7B, QWEN_7B)
    with pytest.raises(PlanError, match=r"SFT \(policy\): needs 1[23]\d\.\d GiB per GPU on 1 x 80 GiB.*lora"):
        plan.check()
    lora = apply_overrides(config, ["sft.lora=true", "ppm.lora=true"])
    make_plan(lora, gpus(1), QWEN_7B, QWEN_7B).check()  # LoRA keeps a frozen bf16 base: it fits
    make_plan(config, gpus(8), QWEN_7B, QWEN_7B).check()  # FSDP shards 16 B/param over 8 GPUs


def test_the_engine_shrinks_beside_a_ppm_on_its_gpu_and_keeps_its_fraction_with_a_gpu_to_spare():
    config = load_config("configs/gpu_rstar_7b.yaml")
    shared = make_plan(config, gpus(1), QWEN_7B, QWEN_7B)
    assert shared.scorer_device == "cuda:0"
    ppm = planning._scorer_bytes(QWEN_7B, config, 80 * GiB)
    assert shared.engine_fraction == pytest.approx((80 * GiB - ppm - planning.DEVICE_RESERVE) / (80 * GiB))
    assert shared.engine_fraction * 80 * GiB + ppm <= 80 * GiB  # the two never ask for more than the GPU
    spare = make_plan(config, gpus(2), QWEN_7B, QWEN_7B)
    assert (spare.scorer_device, spare.engine_fraction) == ("cuda:1", 0.9)
    alone = make_plan(config, gpus(1), QWEN_7B, None)  # no reward model used: vLLM keeps its 0.9
    assert (alone.scorer_device, alone.engine_fraction) == (None, 0.9)
    applied = planning.apply_plan(config, shared)
    assert applied.engine.gpu_memory_utilization == pytest.approx(shared.engine_fraction, abs=1e-3)


def test_an_engine_without_room_for_one_sequence_is_refused():
    config = apply_overrides(load_config("configs/gpu_rstar_7b.yaml"), ["engine.gpu_memory_utilization=0.3"])
    with pytest.raises(PlanError, match=r"KV for [\d,]+ tokens, less than one max_model_len 4096 sequence"):
        make_plan(config, gpus(1, 48), QWEN_7B, None).check()
    tp = apply_overrides(config, ["engine.tensor_parallel_size=4"])
    with pytest.raises(PlanError, match="tensor_parallel_size 4 needs 4 GPUs, 2 visible"):
        make_plan(tp, gpus(2), QWEN_7B, None).check()


def test_the_cpu_plan_checks_the_engine_fits_in_ram():
    config = load_config("configs/cpu_demo.yaml")
    small = ModelShape.from_config("m", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                             num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                             tie_word_embeddings=True))
    make_plan(config, Devices(0, 24 * GiB, "CPU"), small, small).check()
    with pytest.raises(PlanError, match="engine needs 2.5 GiB, the machine has 1.0"):
        make_plan(config, Devices(0, GiB, "CPU"), small, small).check()


def test_model_shapes_are_read_from_config_json_only(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(planning.KNOWN_CONFIGS["Qwen/Qwen2.5-Math-1.5B"]))
    assert planning.model_shape(str(tmp_path)) == ModelShape.from_config(str(tmp_path), json.loads(
        (tmp_path / "config.json").read_text()))  # no weights in the directory: none are needed
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(PlanError, match="no hidden_size"):
        planning.model_shape(str(tmp_path))


def test_budget_measures_tokens_per_rollout_on_trees_and_prints_its_assumptions():
    from evomath.tree import Tree

    config = load_config("configs/gpu_rstar_1.5b.yaml")
    trees = [Tree("a", "q", "1", meta={"tokens": 3000, "rollouts": 2}), Tree("b", "q", "1", meta={"tokens": 1000, "rollouts": 2})]
    assert planning.tokens_per_rollout(config, trees)[0] == 1000
    assumed, source = planning.tokens_per_rollout(config, [])
    assert assumed == 12 * 256 * 8 and source.startswith("assumed")
    # round 4 adds 64 + 128 extra rollouts for the hard share
    assert planning.round_rollouts(config, 4, 100, 16, 0.5) == 100 * (16 + 0.5 * 192)
    text = planning.describe_budget(config, QWEN_15B, 100, (1000.0, "measured"), 0.3, 2000.0)
    paper_round_1 = 747_000 * (16 + 0.3 * 16) * 1000 / 2000 / 3600
    assert f"{paper_round_1:,.1f} GPU-hours" in text and "747,000 problems x 16 rollouts" in text
    assert "tokens/s per GPU (given)" in text and "30% (assumed)" in text


def test_overrides_name_a_bad_field():
    config = load_config("configs/tiny.yaml")
    assert apply_overrides(config, ["search.rollouts=5", "policy=owner/model"]).search.rollouts == 5
    with pytest.raises(ValueError, match=r"'search.rolouts=5': no field 'rolouts'"):
        apply_overrides(config, ["search.rolouts=5"])
    with pytest.raises(ValueError, match="expected FIELD=VALUE"):
        apply_overrides(config, ["search.rollouts"])
    with pytest.raises(ValueError, match="search.rollouts: Input should be a valid integer"):
        apply_overrides(config, ["search.rollouts=many"])


def test_a_vllm_served_ppm_asks_for_what_its_size_needs():
    seven = planning.vllm_scorer_fraction(QWEN_7B, 80 * GiB)
    assert 0.2 < seven < 0.3 and seven * 80 * GiB > QWEN_7B.params * 2  # 0.2 could not hold a 7B PPM
    assert planning.vllm_scorer_fraction(QWEN_15B, 80 * GiB) < 0.1


def test_each_reward_model_is_planned_with_the_section_that_trains_it():
    """Math-Shepherd's PRM trains on its prm section, one sequence a row (no pairs); AlphaMath's value
    head trains with the policy on the value section, and no separate reward model is planned."""
    def training(plan):
        return {p.name: p for p in plan.phases if "training" in p.name or "policy" in p.name}

    shepherd = load_config("configs/gpu_math_shepherd_7b.yaml")
    phases = training(make_plan(shepherd, gpus(8), QWEN_7B, QWEN_7B))
    assert set(phases) == {"SFT (policy)", "PRM training"}
    prm = shepherd.prm
    assert f"activations ({prm.per_device_batch_size} x {prm.max_length} tokens" in str(phases["PRM training"].placements)
    wider = apply_overrides(shepherd, ["prm.max_length=4096", "ppm.max_length=64"])
    activations = [g for w, _, g in training(make_plan(wider, gpus(8), QWEN_7B, QWEN_7B))["PRM training"].placements
                   if w.startswith("activations")]
    assert activations[0] > [g for w, _, g in phases["PRM training"].placements if w.startswith("activations")][0]

    alphamath = load_config("configs/gpu_alphamath_7b.yaml")
    phases = training(make_plan(alphamath, gpus(8), QWEN_7B, QWEN_7B))
    assert set(phases) == {"policy + value head"}
    value = alphamath.value
    assert f"({value.per_device_batch_size} x {value.max_length} tokens" in str(phases["policy + value head"].placements)

    rstar = load_config("configs/gpu_rstar_7b.yaml")
    ppm = training(make_plan(rstar, gpus(8), QWEN_7B, QWEN_7B))["PPM training"]
    assert f"({2 * rstar.ppm.per_device_batch_size} x {rstar.ppm.max_length} tokens" in str(ppm.placements)  # pairs


def test_rl_is_planned_with_its_reference_colocated_engine_and_reward_model():
    """Math-Shepherd's step-level RL holds the policy's training states, the KL reference, TRL's
    colocated vLLM and the PRM on every GPU at once: it fits on 8 x 80 GB and is refused on 2."""
    config = load_config("configs/gpu_math_shepherd_7b.yaml")
    mistral = ModelShape.from_config("mistral-7b", planning.KNOWN_CONFIGS["mistralai/Mistral-7B-v0.1"])
    plan = make_plan(config, gpus(8), mistral, None)  # the search uses no reward model; RL still does
    rl = next(p for p in plan.phases if p.name == "RL (GRPO)")
    what = " | ".join(w for w, _, _ in rl.placements)
    assert "reference policy" in what and "colocated vLLM" in what and "PRM" in what
    assert dict((w[:9], g) for w, _, g in rl.placements)["colocated"] == pytest.approx(0.3 * 80)
    plan.check()
    with pytest.raises(PlanError, match=r"RL \(GRPO\): needs \d+\.\d GiB per GPU on 2 x 80 GiB"):
        make_plan(config, gpus(2), mistral, None).check()
    outcome_only = apply_overrides(config, ["rl.rewards=outcome", "rl.beta=0", "rl.use_vllm=false"])
    lean = next(p for p in make_plan(outcome_only, gpus(8), mistral, None).phases if p.name == "RL (GRPO)")
    assert not any(w.startswith(("reference", "colocated", "PRM")) for w, _, _ in lean.placements)
    assert "RL (GRPO)" not in [p.name for p in make_plan(load_config("configs/gpu_rstar_7b.yaml"), gpus(8), QWEN_7B,
                                                          QWEN_7B).phases]
