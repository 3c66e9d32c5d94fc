"""Which split each default was fixed on: the entries a run uses, and the report section they make."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from corekd.config import load_config, validate_config
from corekd.evaluation.provenance import (
    DEFAULT_CHOICES,
    defaults_in_effect,
)
from corekd.reporting.blocks import render_markdown
from corekd.reporting.run import provenance_section, render_report


def _options(entries):
    return {e["option"]: e for e in entries}


def test_the_quickstart_uses_every_recorded_default():
    entries = _options(defaults_in_effect(load_config("configs/quickstart.yaml")))
    assert set(entries) == {c.option for c in DEFAULT_CHOICES}
    assert entries["methods[corekd].options.nce_targets"]["chosen_on"] == "test"  # the disclosed one
    assert entries["model.context_over"]["chosen_on"] == "dev"


def test_a_changed_option_is_not_listed():
    cfg = validate_config(
        {
            "model": {"context": "attention"},
            "teacher": {"input_dropout": 0.0},
            "methods": [{"name": "teacher"}, {"name": "corekd", "options": {"nce_mode": "inline"}}],
        }
    )
    entries = _options(defaults_in_effect(cfg))
    assert "model.context" not in entries and "teacher.input_dropout" not in entries
    assert "methods[corekd].options.nce_mode" not in entries
    assert "methods[corekd].options.nce_targets" in entries  # still at its default
    no_corekd = validate_config({"methods": [{"name": "teacher"}, {"name": "no_kd"}]})
    assert not any(e["option"].startswith("methods[") for e in defaults_in_effect(no_corekd))


def test_section_rendering_and_old_results_without_it():
    entries = [{"option": "model.fusion", "value": "observed_mean", "chosen_on": "dev", "how": "study"}]
    lines = render_markdown(provenance_section(entries)).split("\n")
    assert lines[0] == "## Defaults this run used, and the split each was fixed on"
    assert "| `model.fusion` | `observed_mean` | dev | study |" in lines
    assert provenance_section(None) == [] and provenance_section([]) == []
    meta = {"corpus": "c", "seeds": [0], "methods": ["no_kd"], "mask_seed": 0, "random_scheme": "calibrated"}
    records = [
        {
            "method": "no_kd",
            "variant": "no_kd",
            "seed": 0,
            "condition": "complete",
            "accuracy": 0.5,
            "weighted_f1": 0.5,
            "macro_f1": 0.5,
            "uar": 0.5,
            "per_class_f1": {"x": 0.5},
            "missing_rate": 0.0,
        }
    ]
    plain = render_report(meta, records, [])
    assert "Defaults this run used" not in plain
    with_entries = render_report({**meta, "defaults_provenance": entries}, records, [])
    assert (
        with_entries.startswith(plain.rstrip("\n"))
        and "| `model.fusion` | `observed_mean` | dev | study |" in with_entries
    )


PLAIN = [c for c in DEFAULT_CHOICES if not c.option.startswith("methods[")]


# A non-default value for every plain (non-method) option, each valid for the config.
CHANGED = {
    "data.standardize": False,
    "model.context": "attention",
    "model.fusion": "token",
    "training.schedule": "cosine",
    "training.ema": 0.5,
    "model.context_over": "modality",
    "model.input_norm": True,
    "teacher.input_dropout": 0.0,
    "training.patience": 3,
    "training.bucket": 0,
    "training.batch_size": 8,
    "model.modality_state": "context",
}


# Options whose non-default value takes another recorded default with it: context_over 'modality' gives each modality
# its own context, so the modality_state default (which builds on 'fused') does not apply there.
COUPLED = {"model.context_over": {"model.modality_state"}}


def _nested(option: str, value) -> dict:
    section, key = option.split(".")
    return {section: {key: value}}


class _Dumped:
    """Stands in for a RunConfig whose dump is ``tree`` (no methods): what defaults_in_effect reads of a config."""

    def __init__(self, tree):
        self.tree = tree
        self.methods: list = []

    def model_dump(self, mode):
        return self.tree


def test_defaults_are_found_along_their_dotted_paths():
    tree: dict = {"extra": {"x": 5}}
    for c in PLAIN:
        section, key = c.option.split(".")
        tree.setdefault(section, {})[key] = c.value
    assert defaults_in_effect(_Dumped(tree)) == [asdict(c) for c in PLAIN]


def test_a_missing_option_or_a_path_through_a_leaf_is_not_in_effect():
    c = PLAIN[0]
    section, key = c.option.split(".")
    assert defaults_in_effect(_Dumped({})) == []  # no section
    assert defaults_in_effect(_Dumped({section: {}})) == []  # no key
    assert defaults_in_effect(_Dumped({section: 5})) == []  # the section is a leaf, not a mapping
    assert defaults_in_effect(_Dumped({section: {key: {"deeper": c.value}}})) == []  # a mapping, not the value
    assert defaults_in_effect(_Dumped(_nested(c.option, c.value))) == [asdict(c)]


def test_every_recorded_default_is_in_effect_for_the_default_config_in_order():
    cfg = validate_config({})  # teacher, no_kd, vanilla_kd, corekd at their defaults
    assert [s.name for s in cfg.methods][-1] == "corekd"
    assert defaults_in_effect(cfg) == [asdict(c) for c in DEFAULT_CHOICES]
    assert defaults_in_effect(cfg)[0] == {
        "option": "data.standardize",
        "value": True,
        "chosen_on": "dev",
        "how": DEFAULT_CHOICES[0].how,
    }


def test_the_changed_values_are_valid_and_not_the_defaults():
    assert set(CHANGED) == {c.option for c in PLAIN}
    for c in PLAIN:
        assert CHANGED[c.option] != c.value


@pytest.mark.parametrize("option", sorted(CHANGED))
def test_one_plain_option_off_its_default_drops_exactly_that_entry(option):
    cfg = validate_config(_nested(option, CHANGED[option]))
    dropped = {option} | COUPLED.get(option, set())
    assert [e["option"] for e in defaults_in_effect(cfg)] == [
        c.option for c in DEFAULT_CHOICES if c.option not in dropped
    ]


def test_method_options_count_when_any_entry_of_the_method_keeps_the_default():
    both = validate_config(
        {
            "methods": [
                {"name": "teacher"},
                {"name": "corekd", "variant": "a", "options": {"nce_targets": "all", "nce_mode": "inline"}},
                {"name": "corekd", "variant": "b", "options": {"nce_mode": "inline"}},
            ]
        }
    )
    options = [e["option"] for e in defaults_in_effect(both)]
    targets, average = "methods[corekd].options.nce_targets", "methods[corekd].options.nce_average"
    assert options == [c.option for c in PLAIN] + [targets, average]
    assert defaults_in_effect(both)[-2] == {
        "option": targets,
        "value": "language_observed",
        "chosen_on": "test",
        "how": next(c.how for c in DEFAULT_CHOICES if c.option == targets),
    }
    none = validate_config(
        {
            "methods": [
                {"name": "teacher"},
                {"name": "corekd", "options": {"nce_targets": "all", "nce_mode": "inline", "nce_average": "targets"}},
            ]
        }
    )
    assert [e["option"] for e in defaults_in_effect(none)] == [c.option for c in PLAIN]


def test_a_run_without_the_method_lists_none_of_its_options():
    cfg = validate_config({"methods": [{"name": "teacher"}, {"name": "no_kd"}]})
    assert [e["option"] for e in defaults_in_effect(cfg)] == [c.option for c in PLAIN]
