"""Which split each default was fixed on: the entries a run uses, and the report section they make."""

from corekd.config import load_config, validate_config
from corekd.evaluation.provenance import DEFAULT_CHOICES, defaults_in_effect
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
    cfg = validate_config({
        "model": {"context": "attention"}, "teacher": {"input_dropout": 0.0},
        "methods": [{"name": "teacher"}, {"name": "corekd", "options": {"nce_mode": "inline"}}],
    })
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
    records = [{"method": "no_kd", "variant": "no_kd", "seed": 0, "condition": "complete", "accuracy": 0.5,
                "weighted_f1": 0.5, "macro_f1": 0.5, "uar": 0.5, "per_class_f1": {"x": 0.5}, "missing_rate": 0.0}]
    plain = render_report(meta, records, [])
    assert "Defaults this run used" not in plain
    with_entries = render_report({**meta, "defaults_provenance": entries}, records, [])
    assert with_entries.startswith(plain.rstrip("\n")) and "| `model.fusion` | `observed_mean` | dev | study |" in with_entries
