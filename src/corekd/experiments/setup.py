"""What an experiment prepares once per corpus before training: the corpus (checked against the methods), its
splits, the evaluation masks, the methods in training order and the run's meta."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from corekd.config import QUICKSTART_MISSINGNESS, EvaluationConfig, MethodSpec, RunConfig, load_config
from corekd.data.batching import SplitTensors
from corekd.data.corpus import Corpus, load_corpus
from corekd.data.protocols import standard_conditions
from corekd.data.splits import carve_dev, describe
from corekd.data.standardize import train_statistics
from corekd.data.synth import generate
from corekd.errors import CorekdError, from_validation_error
from corekd.evaluation.conditions import ConditionMasks, evaluation_masks, method_masks
from corekd.evaluation.provenance import defaults_in_effect
from corekd.experiments.folder import corpus_fingerprint
from corekd.features.extract import features_record
from corekd.methods import method_class
from corekd.models.model import ERCModel
from corekd.models.stacked import stack_problem

DEFAULT_CONFIG = Path("configs/quickstart.yaml")


def load_data(cfg: RunConfig, source: str | Path | None = None) -> Corpus:
    """The run's corpus, checked against the configured methods (``source``: the config file, for errors)."""
    if cfg.data.source == "meld":
        from corekd.features.meld import meld_source_corpus  # lazily: it loads the text model's packages

        corpus = meld_source_corpus(
            _required(cfg.data.meld_root, "data.meld_root", source),
            _required(cfg.data.path, "data.path", source),
            target=cfg.data.meld_target,
        )
    elif cfg.data.source == "synthetic":
        corpus = generate(cfg.data.synth)
    else:
        corpus = load_corpus(_required(cfg.data.path, "data.path", source))
    where = cfg.data.path if cfg.data.source in ("corpus", "meld") else source
    if cfg.data.dev == "carve" and not corpus.split("dev") and corpus.split("train"):
        try:
            carve_dev(corpus, cfg.data.dev_fraction, cfg.data.dev_seed)
        except CorekdError as exc:
            raise CorekdError(exc.detail, path=source, field="data.dev") from None
    for split in ("train", "dev", "test"):
        if not corpus.split(split):
            hint = " or set data.dev: carve to carve one from train" if split == "dev" else ""
            raise CorekdError(
                f"corpus '{corpus.name}' has no dialogues in split '{split}' (train, dev and test are needed{hint})",
                path=where,
                field="dialogues[].split" if cfg.data.source != "synthetic" else "data.synth",
            )
    task = settle_task(cfg, corpus.task, source) or corpus.task
    if task == "regression":
        lacking = next((d for d in corpus.dialogues if d.sentiment is None or bool(np.isnan(d.sentiment).any())), None)
        if lacking is not None:
            raise CorekdError(
                f"task 'regression' needs a sentiment on every utterance; corpus '{corpus.name}' has none "
                f"on some utterance of dialogue '{lacking.id}'",
                path=source,
                field="task" if cfg.data.source != "synthetic" else "data.synth.task",
            )
    for i, spec in enumerate(cfg.methods):
        method = method_class(spec.name)(cfg.method_options(spec), cfg.training.missing)
        problem = method.check_modalities(corpus.modality_names) or method.check_task(task)
        if problem:
            option, text = problem
            raise CorekdError(f"{text} (corpus '{corpus.name}')", path=source, field=f"methods[{i}].options.{option}")
    check_modality_rates(cfg, corpus, source)
    check_ensembles(cfg, corpus, source)
    return corpus


def check_ensembles(cfg: RunConfig, corpus: Corpus, source: str | Path | None) -> None:
    """Refuse ``training.ensemble: seeds`` for a model that cannot be stacked on this corpus (one line, the reason)."""
    kinds = {m: s.kind for m, s in corpus.modalities.items()}
    dims = {m: s.dim for m, s in corpus.modalities.items()}
    for spec in [*cfg.methods, MethodSpec(name="teacher")]:
        if not cfg.ensembles(spec.name, spec.label):
            continue
        with torch.device("meta"):  # shapes and options only: nothing allocated
            model = ERCModel(cfg.model_for(spec.name, spec.label), dims, 2, kinds=kinds)
        problem = stack_problem(model)
        if problem:
            raise CorekdError(f"{problem} (method '{spec.label}')", path=source, field="training.ensemble")


def _required(value: str | None, field: str, source: str | Path | None) -> str:
    if value is None:  # the config's validation requires it for this source: reached only by a hand-built config
        raise CorekdError("required for this data source", path=source, field=field)
    return value


def settle_task(cfg: RunConfig, corpus_task: str | None, source: str | Path | None = None) -> str | None:
    """Fix ``cfg.task`` (its own, else ``corpus_task``) and with it the default selection metric (regression: dev MAE).

    Idempotent. Returns the task, or None when neither the config nor ``corpus_task`` tells it.
    """
    task = cfg.task or corpus_task
    if task is None:
        return None
    try:
        cfg.settle_task(task)
    except ValueError as exc:
        raise CorekdError(str(exc), path=source, field="training.select_metric") from None
    return task


def peek_corpus_task(cfg: RunConfig) -> str | None:
    """The ``task`` a corpus folder's ``corpus.json`` declares, without loading it (None when unreadable: loading it
    later reports why)."""
    if cfg.data.source != "corpus" or not cfg.data.path:
        return None
    try:
        meta = json.loads((Path(cfg.data.path) / "corpus.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    task = meta.get("task", "classification") if isinstance(meta, dict) else None
    return task if task in ("classification", "regression") else None


def corpus_notes(corpus: Corpus, cfg: RunConfig) -> list[str]:
    """What a run does to the corpus that its reader must know (carved dev, pooled sequences, legacy selection)."""
    notes = []
    if cfg.training.select_on == "test":
        notes.append(
            "LEGACY SELECTION ON TEST (training.select_on: test): epochs are chosen on the test split, so every "
            "test figure is optimistically biased; use it only to measure that bias"
        )
    if "dev_split" in corpus.info:
        notes.append(describe(corpus.info["dev_split"]))
    model = cfg.model
    for m in corpus.sequence_modalities():
        if model.sequence_encoder == "mean":
            how = "the mean over each utterance's frames, by the vector encoder (model.sequence_encoder: mean)"
        else:
            how = (
                f"its frames, by the {model.sequence_encoder} sequence encoder pooled by {model.sequence_pool} "
                "(model.sequence_encoder, model.sequence_pool)"
            )
        notes.append(f"modality '{m}' holds frame sequences: this run reads {how}")
    if (
        not corpus.sequence_modalities()
        and "frame_rates" in cfg.evaluation.model_fields_set
        and cfg.evaluation.frame_rates
    ):
        notes.append(
            "evaluation.frame_rates is set, but the corpus has no sequence modality: no frames:p condition is "
            "evaluated (frame missing does not apply to one vector per utterance)"
        )
    return notes


def resolve_config(
    config: RunConfig | str | Path | None,
    *,
    seeds: list[int] | None = None,
    device: str | None = None,
) -> tuple[RunConfig, Path | None]:
    """The run's configuration (file, object or the quickstart) with the command-line overrides applied."""
    config_path = None
    if config is None and not DEFAULT_CONFIG.is_file():
        # the built-in defaults plus the quickstart's missingness conditions are the quickstart
        config = RunConfig(name="quickstart", evaluation=EvaluationConfig(**QUICKSTART_MISSINGNESS))
    elif config is None or isinstance(config, (str, Path)):
        config_path = Path(config) if config is not None else DEFAULT_CONFIG
        config = load_config(config_path)
    overrides = {k: v for k, v in {"seeds": seeds, "device": device}.items() if v is not None}
    if overrides:
        try:
            # only what was set (in the file, or by a validator) travels, so the overridden config still tells a
            # default from a choice (setup warnings read model_fields_set)
            config = RunConfig.model_validate({**config.model_dump(exclude_unset=True), **overrides})
        except ValidationError as exc:
            err = from_validation_error(exc, None, model=RunConfig)
            root = (err.field or "").split("[")[0].split(".")[0]
            raise CorekdError(err.detail, field=f"--{root}" if root in overrides else err.field) from None
    return config, config_path


def check_modality_rates(config: RunConfig, corpus: Corpus, source: str | Path | None = None) -> None:
    """Per-modality rate lists (``evaluation.imbalanced_rates``, ``training.missing.rates``) must give one rate per
    corpus modality: a :class:`CorekdError` naming the field otherwise."""
    mods = corpus.modality_names
    lists = [(f"evaluation.imbalanced_rates[{i}]", r) for i, r in enumerate(config.evaluation.imbalanced_rates)]
    if config.training.missing.rates is not None:
        lists.append(("training.missing.rates", config.training.missing.rates))
    for field, rates in lists:
        if len(rates) != len(mods):
            raise CorekdError(
                f"{rates} gives {len(rates)} rate(s); corpus '{corpus.name}' has {len(mods)} modalities "
                f"({', '.join(mods)}): expected one rate per modality, in that order",
                path=source,
                field=field,
            )


def run_conditions(config: RunConfig, corpus: Corpus, source: str | Path | None = None) -> list:
    """The conditions a run evaluates on ``corpus``: complete, the fixed subsets, ``random:p``, ``frames:p`` (corpora
    with sequence modalities), ``imbalanced:...``, ``burst:p`` and ``features:p`` (from ``config.evaluation``)."""
    check_modality_rates(config, corpus, source)
    ev = config.evaluation
    return standard_conditions(
        corpus.modality_names,
        ev.random_rates,
        ev.frame_rates if corpus.sequence_modalities() else [],
        ev.imbalanced_rates,
        ev.burst_rates,
        ev.feature_rates,
    )


@dataclass
class RunSetup:
    """Everything a run prepares once before training: the corpus, its splits, the evaluation masks, the methods.

    Built by :func:`prepare_run`; :func:`train_unit` trains and evaluates one (method, seed) from it. ``corekd run``
    and ``corekd compare`` (one grid cell per unit, in worker processes) share both.
    """

    config: RunConfig
    corpus: Corpus
    fingerprint: str
    train: SplitTensors
    dev: SplitTensors
    test: SplitTensors
    conditions: list
    test_masks: ConditionMasks
    dev_masks: ConditionMasks
    input_stats: (
        dict[str, tuple[torch.Tensor, torch.Tensor]] | None
    )  # train split's input statistics (data.standardize)
    methods: dict  # label -> Method (the teacher included when a student needs one)
    order: list[MethodSpec]  # the teacher first (its students need it), then the students
    reported: set[str]  # the labels whose records are reported (an unlisted teacher is not)
    scored: dict  # label -> {"test"|"dev": ConditionMasks with the method's own not-applicable conditions}
    meta: dict  # results.json's meta for the run

    @property
    def labels(self) -> list[str]:
        return self.corpus.labels

    @property
    def task(self) -> str:
        return self.config.task or self.corpus.task  # settled by load_data


def method_order(config: RunConfig) -> tuple[dict, list[MethodSpec], set[str]]:
    """The run's methods (label -> Method), the order they train in and the labels that are reported.

    The teacher comes first (its students need it); when no teacher is listed but a student needs one, a teacher
    is added to the order, trained for the students and not reported.
    """
    methods = {s.label: method_class(s.name)(config.method_options(s), config.training.missing) for s in config.methods}
    teachers = [s for s in config.methods if s.name == "teacher"]
    students = [s for s in config.methods if s.name != "teacher"]
    reported = {s.label for s in config.methods}
    if not teachers and any(m.needs_teacher for m in methods.values()):
        teachers = [MethodSpec(name="teacher")]
        methods["teacher"] = method_class("teacher")(config.method_options(teachers[0]), config.training.missing)
    return methods, teachers[:1] + students, reported


def prepare_run(config: RunConfig, config_path: Path | None, device: torch.device, command: str) -> RunSetup:
    """Load the corpus (checked against the methods), build the splits, the condition masks and the run's meta."""
    corpus = load_data(config, config_path)
    fingerprint = corpus_fingerprint(corpus)
    labels = corpus.labels
    task = config.task or corpus.task  # settled by load_data
    train, dev_split, test = (SplitTensors.from_corpus(corpus, s, task) for s in ("train", "dev", "test"))
    ev = config.evaluation
    conditions = run_conditions(config, corpus, config_path)
    mods = corpus.modality_names
    test_masks = evaluation_masks(conditions, test, mods, ev.mask_seed, ev.scheme, ev.burst_length, ev.frame_scheme)
    dev_masks = evaluation_masks(conditions, dev_split, mods, ev.mask_seed, ev.scheme, ev.burst_length, ev.frame_scheme)
    input_stats = train_statistics(train) if config.data.standardize else None

    methods, order, reported = method_order(config)
    warnings = (
        corpus_notes(corpus, config)
        + corpus.problems()
        + [
            f"condition {name} is not applicable on the test split: {reason}"
            for name, reason in test_masks.not_applicable.items()
        ]
    )
    select_test = config.training.select_on == "test"
    meta = {
        "corpus": corpus.name,
        "defaults_provenance": defaults_in_effect(config),
        "task": task,
        "labels": labels,
        "modalities": list(corpus.modality_names),
        "splits": {
            s: {"dialogues": len(x), "utterances": x.num_utterances}
            for s, x in (("train", train), ("dev", dev_split), ("test", test))
        },
        "seeds": config.seeds,
        "methods": [s.label for s in config.methods],
        "mask_seed": ev.mask_seed,
        "random_scheme": ev.scheme,
        **({"burst_length": ev.burst_length} if ev.burst_rates else {}),
        **({"frame_scheme": ev.frame_scheme} if ev.frame_scheme != "keep_one" else {}),
        **({"sequence_modalities": corpus.sequence_modalities()} if corpus.sequence_modalities() else {}),
        "selection": (
            f"TEST split (legacy training.select_on: test), {config.training.select_metric}"
            if select_test
            else f"dev split, {config.training.select_metric}; test used once per model after training"
        ),
        **({"select_on": "test"} if select_test else {}),
        "modality_cards": corpus.cards(),
        **({"feature_extraction": extraction} if (extraction := features_record(corpus.info.get("features"))) else {}),
        **({"dev_split": corpus.info["dev_split"]} if "dev_split" in corpus.info else {}),
        "standardize": "train-split statistics" if input_stats is not None else None,
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": command,
        "warnings": warnings,
        "status": "running",
    }
    # Per method: the test and dev masks with the conditions it is not scored under (Method.not_applicable).
    scored = {
        label: {
            name: method_masks(m, masks, conditions, corpus.modality_names)
            for name, masks in (("test", test_masks), ("dev", dev_masks))
        }
        for label, m in methods.items()
    }
    return RunSetup(
        config,
        corpus,
        fingerprint,
        train,
        dev_split,
        test,
        conditions,
        test_masks,
        dev_masks,
        input_stats,
        methods,
        order,
        reported,
        scored,
        meta,
    )
