"""Preparing a run: the configuration with the command line's overrides applied."""

from __future__ import annotations

from corekd.config import RunConfig
from corekd.experiments.setup import resolve_config


def test_seed_and_device_overrides_keep_defaults_apart_from_choices(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: c\nevaluation: {random_rates: [0.0, 0.5]}\ntraining: {epochs: 3}\n")
    config, source = resolve_config(path, seeds=[4, 5], device="cpu")
    assert source == path
    assert config.seeds == [4, 5] and config.device == "cpu"
    assert config.training.epochs == 3 and config.evaluation.random_rates == [0.0, 0.5]
    # a setting the file left out is still a default (setup warns only about settings a user chose)
    assert "frame_rates" not in config.evaluation.model_fields_set
    assert "random_rates" in config.evaluation.model_fields_set
    assert config.evaluation.frame_rates == RunConfig().evaluation.frame_rates


def test_a_validator_s_choice_survives_the_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: c\ndata: {synth: {task: regression}}\n")
    config, _ = resolve_config(path, seeds=[1])
    assert config.task == "regression" and config.training.select_metric == "mae"
