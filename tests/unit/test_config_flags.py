"""Command-line flags are generated from the config models: one spelling for YAML, CLI and forms."""

from __future__ import annotations

import argparse

import pytest

from deployments.cli import build_parser
from evomath.config import (
    ExperimentConfig,
    SearchConfig,
    SFTConfig,
    add_section_flags,
    add_set_flag,
    config_from_args,
    load_config,
)


def parse(section: str, argv: list[str]):
    parser = argparse.ArgumentParser()
    add_section_flags(parser, section)
    add_set_flag(parser)
    return parser.parse_args(argv)


def test_every_scalar_field_has_a_flag_spelled_like_it():
    parser = argparse.ArgumentParser()
    add_section_flags(parser, "search")
    flags = {a.option_strings[0] for a in parser._actions if a.option_strings and a.dest.startswith("config:")}
    assert flags == {f"--{name.replace('_', '-')}" for name in SearchConfig.model_fields}


def test_given_flags_and_set_override_the_config_file_and_nothing_else():
    config = load_config("configs/cpu_demo.yaml")
    args = parse("sft", ["--learning-rate", "3e-5", "--no-bf16", "--set", "engine.max_model_len=512"])
    updated = config_from_args(args, config)
    assert (updated.sft.learning_rate, updated.sft.bf16, updated.engine.max_model_len) == (3e-5, False, 512)
    assert updated.sft.epochs == config.sft.epochs and updated.search == config.search  # untouched
    assert config_from_args(parse("sft", []), config) == config


def test_a_bad_flag_value_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="sft.learning_rate: Input should be greater than 0"):
        config_from_args(parse("sft", ["--learning-rate", "-1"]), ExperimentConfig())
    with pytest.raises(SystemExit):
        parse("search", ["--step-format", "latex"])  # choices come from the Literal


def test_the_commands_speak_the_fields_names():
    parser = build_parser()
    args = parser.parse_args(["search", "--problems", "demo_test", "--out", "o", "--step-format", "natural",
                              "--n-candidates", "3", "--beam-width", "2", "--beam-expand", "4"])
    search = config_from_args(args, ExperimentConfig()).search
    assert (search.step_format, search.n_candidates, search.beam_width, search.beam_expand) == ("natural", 3, 2, 4)
    args = parser.parse_args(["train", "ppm", "--pairs", "p", "--base", "b", "--out", "o", "--heldout-fraction",
                              "0", "--learning-rate", "1e-4"])
    ppm = config_from_args(args, ExperimentConfig()).ppm
    assert (ppm.heldout_fraction, ppm.learning_rate) == (0.0, 1e-4)
    args = parser.parse_args(["evaluate", "--step-format", "natural", "--limit", "5", "--seed", "3"])
    config = config_from_args(args, ExperimentConfig())
    assert (config.eval_search.step_format, config.eval.limit, config.eval.seed) == ("natural", 5, 3)
    for old in (["train", "sft", "--data", "d", "--base", "b", "--out", "o", "--lr", "1e-4"],
                ["search", "--problems", "p", "--out", "o", "--format", "code"]):
        with pytest.raises(SystemExit):  # the drifted spellings are gone
            parser.parse_args(old)
    assert SFTConfig.model_fields["learning_rate"].description  # help comes from the field
