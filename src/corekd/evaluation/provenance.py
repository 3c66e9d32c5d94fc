"""Which split each project default was fixed on: the note every report carries about its own defaults.

The field's habit of picking settings on the test set is invisible in a results table. Each entry
below names a default of corekd, its value, the split whose figures it was fixed on (``dev``;
``test`` where a test figure was seen before the choice; ``none`` where no figure decided it),
and how. A run lists the entries whose option it uses at the default value
(:func:`defaults_in_effect`, stored in ``results.json`` meta as ``defaults_provenance``), so a
reader sees which of a report's settings were chosen on which split.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

STUDY_1 = "backbone study, stage 1 (configs/backbone_study.yaml): best on the dev criterion"
STUDY_2 = (
    "backbone study, stage 2 (configs/backbone_study_stage2.yaml): best on the dev criterion; a printout "
    'of that study showed its test rows before its last candidate was added (README, "Backbone study")'
)
# The speed stages' rule (stages 3 and 6), written in each study file before its run.
FASTEST_WITHIN_DEV = (
    "the fastest candidate within 0.5 of the defaults' dev criterion and dev teacher complete, by a "
    "rule fixed before the run; only dev tables were printed"
)
STUDY_3 = f"backbone study, stage 3 (configs/backbone_study_stage3.yaml): {FASTEST_WITHIN_DEV}"
STUDY_6 = f"backbone study, stage 6 (configs/backbone_study_stage6.yaml): {FASTEST_WITHIN_DEV}"
STUDY_8 = (
    "backbone study, stage 8 (configs/backbone_study_stage8.yaml): the view-dependent modality states with the "
    "best dev criterion, by a rule fixed before the run; only dev tables were printed (the plain model's test "
    "table, configs/plain.yaml, was seen before its step B, whose rule was already written)"
)
STUDY_9 = (
    "backbone study, stage 9 (configs/backbone_study_stage9.yaml): CoRe-KD's dev criterion, by a rule fixed "
    "before the run; only dev tables were printed"
)


@dataclass(frozen=True)
class DefaultChoice:
    option: str  # dotted config path; "methods[corekd].options.X" for a method option
    value: Any
    chosen_on: str  # dev | test | none
    how: str


DEFAULT_CHOICES: tuple[DefaultChoice, ...] = (
    DefaultChoice("data.standardize", True, "dev", STUDY_1),
    DefaultChoice("model.context", "gru", "dev", STUDY_1),
    DefaultChoice("model.fusion", "observed_mean", "dev", STUDY_1),
    DefaultChoice("training.schedule", "constant", "dev", STUDY_1),
    DefaultChoice("training.ema", 0.0, "dev", STUDY_1),
    DefaultChoice("model.context_over", "fused", "dev", STUDY_2),
    DefaultChoice("model.input_norm", False, "dev", STUDY_2),
    DefaultChoice("teacher.input_dropout", 0.2, "dev", STUDY_2),
    DefaultChoice("training.patience", 8, "dev", STUDY_3),
    DefaultChoice("training.bucket", 8, "dev", STUDY_6),
    DefaultChoice("model.modality_state", "crossmodal", "dev", STUDY_8),
    DefaultChoice("training.batch_size", 16, "none", "set with the study's base recipe, not varied"),
    DefaultChoice(
        "methods[corekd].options.nce_targets",
        "language_observed",
        "test",
        'changed from `all` after the first quickstart run\'s test tables (README, "What the numbers say")',
    ),
    DefaultChoice("methods[corekd].options.nce_average", "utterances", "dev", STUDY_9),
    DefaultChoice(
        "methods[corekd].options.nce_mode",
        "separate",
        "none",
        "METHOD.md's objective; the `inline` approximation's test and dev figures were known when it changed",
    ),
)


def _lookup(tree: Any, path: list[str]) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return False, None
        tree = tree[key]
    return True, tree


def defaults_in_effect(cfg) -> list[dict]:
    """The :data:`DEFAULT_CHOICES` a run config (``RunConfig``) uses at their default value, as dicts.

    A method option counts when any entry of that method in ``cfg.methods`` has the default value.
    """
    tree = cfg.model_dump(mode="json")
    method_options: dict[str, list[dict]] = {}
    for spec in cfg.methods:
        method_options.setdefault(spec.name, []).append(cfg.method_options(spec).model_dump(mode="json"))
    out = []
    for choice in DEFAULT_CHOICES:
        if choice.option.startswith("methods["):
            method, key = choice.option[len("methods[") :].split("].options.")
            used = any(options.get(key) == choice.value for options in method_options.get(method, []))
        else:
            found, value = _lookup(tree, choice.option.split("."))
            used = found and value == choice.value
        if used:
            out.append(asdict(choice))
    return out
