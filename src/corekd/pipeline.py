"""``corekd run``: teacher -> students -> evaluation on every protocol condition -> report.

Per seed the teacher is trained once, frozen and shared by every student of that seed. Each
model is selected on the dev split; the test split is used once per model, after its training,
under masks that depend only on ``evaluation.mask_seed`` and the condition: identical for
every method and seed.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from corekd.config import MethodSpec, RunConfig, load_config
from corekd.data.batching import SplitTensors
from corekd.data.corpus import Corpus, load_corpus
from corekd.data.protocols import (
    frame_missing_rate,
    missing_rate,
    split_condition_mask,
    split_frame_keep,
    standard_conditions,
)
from corekd.data.splits import carve_dev, describe
from corekd.data.standardize import train_statistics
from corekd.data.synth import generate
from corekd.device import resolve_device
from corekd.errors import CorekdError, from_validation_error
from corekd.evaluation.analyses import RunAnalyses, conflict_flags
from corekd.evaluation.metrics import task_metrics
from corekd.evaluation.predict import predict
from corekd.evaluation.provenance import defaults_in_effect
from corekd.evaluation.report import write_report
from corekd.features.extract import features_record
from corekd.methods import method_class
from corekd.models.model import ERCModel
from corekd.progress import Reporter
from corekd.rundir import RunFolder, RunInterrupted, corpus_fingerprint
from corekd.training import (
    TeacherReference,
    TrainResult,
    init_model,
    load_checkpoint,
    save_checkpoint,
    train_model,
)

DEFAULT_CONFIG = Path("configs/quickstart.yaml")


@dataclass
class RunResult:
    out_dir: Path
    records: list[dict]
    trainings: list[dict]
    report: Path | None = None  # report.md, or sweep.md for a sweep


def load_data(cfg: RunConfig, source: str | Path | None = None) -> Corpus:
    """The run's corpus, checked against the configured methods (``source``: the config file, for errors)."""
    if cfg.data.source == "meld":
        from corekd.features.meld import meld_source_corpus

        corpus = meld_source_corpus(cfg.data.meld_root, cfg.data.path, target=cfg.data.meld_target)
    else:
        corpus = generate(cfg.data.synth) if cfg.data.source == "synthetic" else load_corpus(cfg.data.path)
    where = cfg.data.path if cfg.data.source in ("corpus", "meld") else source
    if cfg.data.dev == "carve" and not corpus.split("dev") and corpus.split("train"):
        try:
            carve_dev(corpus, cfg.data.dev_fraction, cfg.data.dev_seed)
        except CorekdError as exc:
            raise CorekdError(exc.detail, path=source, field="data.dev") from None
    for split in ("train", "dev", "test"):
        if not corpus.split(split):
            hint = " or set data.dev: carve to carve one from train" if split == "dev" else ""
            raise CorekdError(f"corpus '{corpus.name}' has no dialogues in split '{split}' (train, dev and test are "
                              f"needed{hint})",
                              path=where, field="dialogues[].split" if cfg.data.source != "synthetic" else "data.synth")
    task = settle_task(cfg, corpus.task, source)
    if task == "regression":
        lacking = next((d for d in corpus.dialogues if d.sentiment is None or bool(np.isnan(d.sentiment).any())), None)
        if lacking is not None:
            raise CorekdError(f"task 'regression' needs a sentiment on every utterance; corpus '{corpus.name}' has none "
                              f"on some utterance of dialogue '{lacking.id}'",
                              path=source, field="task" if cfg.data.source != "synthetic" else "data.synth.task")
    for i, spec in enumerate(cfg.methods):
        method = method_class(spec.name)(cfg.method_options(spec), cfg.training.missing)
        problem = method.check_modalities(corpus.modality_names) or method.check_task(task)
        if problem:
            option, text = problem
            raise CorekdError(f"{text} (corpus '{corpus.name}')", path=source, field=f"methods[{i}].options.{option}")
    return corpus


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
        notes.append("LEGACY SELECTION ON TEST (training.select_on: test): epochs are chosen on the test split, so every "
                     "test figure is optimistically biased; use it only to measure that bias")
    if "dev_split" in corpus.info:
        notes.append(describe(corpus.info["dev_split"]))
    model = cfg.model
    for m in corpus.sequence_modalities():
        if model.sequence_encoder == "mean":
            how = "the mean over each utterance's frames, by the vector encoder (model.sequence_encoder: mean)"
        else:
            how = (f"its frames, by the {model.sequence_encoder} sequence encoder pooled by {model.sequence_pool} "
                   "(model.sequence_encoder, model.sequence_pool)")
        notes.append(f"modality '{m}' holds frame sequences: this run reads {how}")
    if not corpus.sequence_modalities() and "frame_rates" in cfg.evaluation.model_fields_set and cfg.evaluation.frame_rates:
        notes.append("evaluation.frame_rates is set, but the corpus has no sequence modality: no frames:p condition is "
                     "evaluated (frame missing does not apply to one vector per utterance)")
    return notes


def not_applicable(condition, mask: torch.Tensor, split: SplitTensors,
                   frame_keep: dict[str, torch.Tensor] | None = None) -> str | None:
    """Why a condition observes nothing worth scoring on ``split`` (None: it is applicable)."""
    valid = split.utt_mask  # [N, U]
    if not bool(mask[valid].any()):
        return "nothing is observed under this condition"
    if condition.kind == "frames":
        if not split.sequence_modalities:
            return "the corpus has no sequence modality: there are no frames to drop"
        if condition.rate > 0 and frame_missing_rate(frame_keep, split.frame_presence()) == 0:
            return "no utterance has more than one frame: frame missing drops nothing (same as complete)"
    if condition.kind == "random" and condition.rate > 0 and int(split.avail[valid].sum(-1).max()) <= 1:
        return "at most one modality per utterance: random missing drops nothing (same as complete)"
    return None


def evaluate_model(
    model: ERCModel, test: SplitTensors, masks: dict[str, torch.Tensor], labels: list[str],
    batch_size: int, device: torch.device,
) -> list[dict]:
    """One record per condition: metrics on the test split under that condition's mask (the task's metrics:
    regression when ``test`` carries targets)."""
    rows = []
    reasons = getattr(masks, "not_applicable", {})
    frames = getattr(masks, "frames", {})
    present = test.frame_presence() if frames else None  # the frames the split has: the same for every condition
    for name, mask in masks.items():
        reason = reasons.get(name)
        rate = round(missing_rate(mask[test.utt_mask], test.avail[test.utt_mask]), 4)
        keep = frames.get(name)
        extra = {} if keep is None else {"frame_missing_rate": round(frame_missing_rate(keep, present), 4)}
        if reason:  # no number: nothing observed, or the same as another condition
            rows.append({"condition": name, "applicable": False, "reason": reason, "missing_rate": rate, **extra,
                         "n_utterances": int(test.utt_mask.sum())})
            continue
        preds = predict(model, test, mask, batch_size, device, keep)
        rows.append({
            "condition": name,
            **task_metrics(preds.y_true, preds.y_pred, labels, preds.task),
            "missing_rate": rate,
            **extra,
            "n_utterances": int(len(preds.y_true)),
        })
    return rows


class ConditionMasks(dict):
    """Condition name -> mask, with ``not_applicable``: name -> reason for conditions that get no number, and
    ``frames``: name -> the frames a ``frames:p`` condition keeps (m -> [N, U, F] bool)."""

    def __init__(self, masks: dict[str, torch.Tensor], not_applicable: dict[str, str],
                 frames: dict[str, dict[str, torch.Tensor]] | None = None):
        super().__init__(masks)
        self.not_applicable = not_applicable
        self.frames = frames or {}


def method_masks(method, masks: ConditionMasks, conditions, modalities: tuple[str, ...]) -> ConditionMasks:
    """``masks`` with the conditions ``method`` is not scored under (``Method.not_applicable``) added to the
    not-applicable ones (a condition the data already rules out keeps its own reason)."""
    reasons = dict(masks.not_applicable)
    for c in conditions:
        if c.name not in reasons and (reason := method.not_applicable(c, modalities)):
            reasons[c.name] = reason
    return ConditionMasks(dict(masks), reasons, masks.frames)


def resolve_config(
    config: RunConfig | str | Path | None, *, seeds: list[int] | None = None, device: str | None = None,
) -> tuple[RunConfig, Path | None]:
    """The run's configuration (file, object or the quickstart) with the command-line overrides applied."""
    config_path = None
    if config is None and not DEFAULT_CONFIG.is_file():
        config = RunConfig(name="quickstart")  # the built-in defaults are the quickstart
    elif config is None or isinstance(config, (str, Path)):
        config_path = Path(config) if config is not None else DEFAULT_CONFIG
        config = load_config(config_path)
    overrides = {k: v for k, v in {"seeds": seeds, "device": device}.items() if v is not None}
    if overrides:
        try:
            config = RunConfig.model_validate({**config.model_dump(), **overrides})
        except ValidationError as exc:
            err = from_validation_error(exc, None, model=RunConfig)
            root = (err.field or "").split("[")[0].split(".")[0]
            raise CorekdError(err.detail, field=f"--{root}" if root in overrides else err.field) from None
    return config, config_path


def evaluation_masks(
    conditions, split: SplitTensors, modalities: tuple[str, ...], mask_seed: int, scheme: str
) -> ConditionMasks:
    """Condition name -> mask on ``split`` (named ``split.name``): a function of (mask_seed, split, condition).

    Conditions under which nothing is worth scoring on this split are listed as not applicable.
    """
    masks = {c.name: split_condition_mask(c, split.avail, modalities, mask_seed, split.name, scheme) for c in conditions}
    present = split.frame_presence()
    frames = {c.name: split_frame_keep(c, present, mask_seed, split.name) for c in conditions if c.kind == "frames"}
    reasons = {c.name: reason for c in conditions if (reason := not_applicable(c, masks[c.name], split, frames.get(c.name)))}
    return ConditionMasks(masks, reasons, frames)


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
    input_stats: object  # the train split's input statistics, None without data.standardize
    methods: dict  # label -> Method (the teacher included when a student needs one)
    order: list[MethodSpec]  # the teacher first (its students need it), then the students
    reported: set[str]  # the labels whose records are reported (an unlisted teacher is not)
    scored: dict  # label -> {"test"|"dev": ConditionMasks with the method's own not-applicable conditions}
    meta: dict  # results.json's meta for the run

    @property
    def labels(self) -> list[str]:
        return self.corpus.labels

    @property
    def task(self) -> str | None:
        return self.config.task


@dataclass
class UnitResult:
    result: "TrainResult"
    training: dict  # results.json's training entry
    records: list[dict]  # dev and test records under every condition (none for an unreported teacher)
    checkpoint_meta: dict  # what model.json records beside the architecture


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
    task = config.task  # settled by load_data
    train, dev_split, test = (SplitTensors.from_corpus(corpus, s, task) for s in ("train", "dev", "test"))
    ev = config.evaluation
    conditions = standard_conditions(corpus.modality_names, ev.random_rates,
                                     ev.frame_rates if corpus.sequence_modalities() else [])
    test_masks = evaluation_masks(conditions, test, corpus.modality_names, ev.mask_seed, ev.scheme)
    dev_masks = evaluation_masks(conditions, dev_split, corpus.modality_names, ev.mask_seed, ev.scheme)
    input_stats = train_statistics(train) if config.data.standardize else None

    methods, order, reported = method_order(config)
    warnings = corpus_notes(corpus, config) + corpus.problems() + [
        f"condition {name} is not applicable on the test split: {reason}" for name, reason in test_masks.not_applicable.items()
    ]
    select_test = config.training.select_on == "test"
    meta = {
        "corpus": corpus.name,
        "defaults_provenance": defaults_in_effect(config),
        "task": task,
        "labels": labels,
        "modalities": list(corpus.modality_names),
        "splits": {s: {"dialogues": len(x), "utterances": x.num_utterances} for s, x in
                   (("train", train), ("dev", dev_split), ("test", test))},
        "seeds": config.seeds,
        "methods": [s.label for s in config.methods],
        "mask_seed": ev.mask_seed,
        "random_scheme": ev.scheme,
        **({"sequence_modalities": corpus.sequence_modalities()} if corpus.sequence_modalities() else {}),
        "selection": (f"TEST split (legacy training.select_on: test), {config.training.select_metric}" if select_test
                      else f"dev split, {config.training.select_metric}; test used once per model after training"),
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
    scored = {label: {name: method_masks(m, masks, conditions, corpus.modality_names)
                      for name, masks in (("test", test_masks), ("dev", dev_masks))} for label, m in methods.items()}
    return RunSetup(config, corpus, fingerprint, train, dev_split, test, conditions, test_masks, dev_masks, input_stats,
                    methods, order, reported, scored, meta)


def train_unit(setup: RunSetup, spec: MethodSpec, seed: int, device: torch.device,
               teacher_ref: TeacherReference | None, on_epoch=None) -> UnitResult:
    """Initialise, train and select one model (``spec`` at ``seed``), then score it on dev and, once, on test.

    ``teacher_ref``: the seed's frozen teacher (for the methods that need one). Nothing is written here.
    """
    config, corpus = setup.config, setup.corpus
    label, method = spec.label, setup.methods[spec.label]
    task, labels, ev = config.task, corpus.labels, config.evaluation
    dims = {m: s.dim for m, s in corpus.modalities.items()}
    kinds = {m: s.kind for m, s in corpus.modalities.items()}
    outputs = 1 if task == "regression" else len(labels)  # regression: a one-output head
    model_cfg, train_cfg = config.model_for(method.name), config.training_for(method.name)
    model = init_model(model_cfg, dims, outputs, seed, "teacher" if method.name == "teacher" else "student",
                       kinds=kinds, build=method.build_model)
    if setup.input_stats is not None:
        model.set_input_statistics(setup.input_stats)
    select_test = config.training.select_on == "test"
    result = train_model(
        method, model, setup.train, setup.test if select_test else setup.dev, train_cfg, seed=seed, label_names=labels,
        device=device, teacher=teacher_ref if method.needs_teacher else None, eval_batch_size=ev.batch_size,
        on_epoch=on_epoch,
    )
    metric = config.training.select_metric
    checkpoint_meta = {
        "method": method.name, "variant": label, "options": method.options.model_dump(mode="json"),
        "seed": seed, "task": task, "best_epoch": result.best_epoch, "selected_epoch": result.selected_epoch,
        "labels": labels, "input_statistics": "train split" if setup.input_stats is not None else "identity",
        "modalities": list(corpus.modality_names), "corpus": corpus.name,
        f"dev_{metric}": result.best_score,
    }
    training = {
        "method": method.name, "variant": label, "seed": seed, "best_epoch": result.best_epoch,
        "selected_epoch": result.selected_epoch, "epochs_run": result.epochs_run, f"dev_{metric}": None if result.best_score is None else round(result.best_score, 6),
        "seconds": round(result.seconds, 2), "history": result.history,
    }
    records = []
    if label in setup.reported:  # dev under the same conditions; the test split, once, after this model's training
        for split_name, split in (("dev", setup.dev), ("test", setup.test)):
            for row in evaluate_model(result.model, split, setup.scored[label][split_name], labels, ev.batch_size, device):
                records.append({"method": method.name, "variant": label, "seed": seed, "split": split_name, **row})
    return UnitResult(result, training, records, checkpoint_meta)


def run(
    config: RunConfig | str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    seeds: list[int] | None = None,
    device: str | None = None,
    reporter: Reporter | None = None,
    command: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> RunResult:
    """Train and evaluate every configured method for every seed; write config, results, report, checkpoints.

    ``out_dir`` must be new or empty, or an earlier run of the same config with ``resume=True``
    (finished models are kept), or any earlier run with ``overwrite=True`` (it is moved aside).
    Everything (config, corpus, methods against the corpus, device, output folder) is checked
    before anything is written. A KeyboardInterrupt becomes :class:`~corekd.rundir.RunInterrupted`.
    """
    config, config_path = resolve_config(config, seeds=seeds, device=device)
    out = Path(out_dir) if out_dir is not None else Path("runs") / config.name
    reporter = reporter or Reporter()
    command = command or f"corekd run {config_path or '<config>'} --out {out}"
    if config.sweep is not None:  # one ordinary run per value (corekd.sweep), then sweep.json and sweep.md
        from corekd.sweep import run_sweep

        path = run_sweep(config, config_path, out, reporter=reporter, command=command, resume=resume,
                         overwrite=overwrite, run_one=run)
        return RunResult(out, [], [], report=path)
    try:
        dev = resolve_device(config.device)
    except CorekdError as exc:
        where = {"field": "--device"} if device else {"path": config_path, "field": "device"}
        raise CorekdError(exc.detail, **where) from None
    # The task (and regression's default selection metric) is settled before the folder is compared with a resumed run's.
    settle_task(config, peek_corpus_task(config), config_path)
    folder = RunFolder.check(out, config, resume=resume, overwrite=overwrite, config_path=config_path)
    setup = prepare_run(config, config_path, dev, command)
    folder.check_corpus(setup.fingerprint, config.data.path if config.data.source != "synthetic" else config_path)
    corpus, meta, warnings = setup.corpus, setup.meta, setup.meta["warnings"]
    train, test, labels, ev = setup.train, setup.test, setup.labels, config.evaluation
    methods, order, reported = setup.methods, setup.order, setup.reported
    test_masks, scored, task = setup.test_masks, setup.scored, config.task
    records: list[dict] = []
    trainings: list[dict] = []
    kept: list[str] = []

    def save_results() -> None:
        folder.write_results({"meta": meta, "records": records, "trainings": trainings})

    # Everything is validated: from here on the output folder is written.
    if config.threads:
        torch.set_num_threads(config.threads)
    folder.prepare(config, command, setup.fingerprint)
    if folder.moved_to:
        reporter.message(f"moved the earlier run in {out} aside to {folder.moved_to}")
    for warning in warnings:
        reporter.message(f"warning: {warning}")

    analyses = RunAnalyses(out, test, test_masks, conflict_flags(corpus, "test"), labels, task, ev.mask_seed,
                           ev.batch_size, dev, figures=ev.figures) if ev.analyses else None

    def analyse(label: str, method_name: str, seed: int, model, teacher_ref) -> None:
        """Mechanism analyses of one reported model, right after its test evaluation (analyses.json)."""
        if analyses is not None and label in reported:
            analyses.add(label, method_name, seed, model, teacher_ref.teacher if teacher_ref is not None else None,
                         not_applicable=scored[label]["test"].not_applicable)
            analyses.save()

    started = time.perf_counter()
    try:
        with reporter:
            reporter.plan(len(order) * len(config.seeds))
            for seed in config.seeds:
                teacher_ref = None
                for spec in order:
                    label, method = spec.label, methods[spec.label]
                    done = folder.finished(label, seed)
                    if done is not None:  # finished by an earlier attempt of this run: keep it
                        records.extend(done["records"])
                        trainings.append(done["training"])
                        kept.append(f"{label} seed {seed}")
                        if method.name == "teacher":
                            with torch.random.fork_rng(devices=[]):
                                model, _ = load_checkpoint(folder.unit_dir(label, seed), dev)
                            teacher_ref = TeacherReference(
                                model, train, cache=config.training.teacher_cache, batch_size=ev.batch_size, device=dev
                            )
                        elif analyses is not None and label in reported:  # analysed like a new model
                            with torch.random.fork_rng(devices=[]):
                                model, _ = load_checkpoint(folder.unit_dir(label, seed), dev)
                        analyse(label, method.name, seed, model, teacher_ref)
                        reporter.end_model(f"{label} seed {seed}: kept from the earlier attempt")
                        continue
                    reporter.start_model(f"{label} seed {seed}", config.training_for(method.name).epochs)
                    unit = train_unit(setup, spec, seed, dev, teacher_ref, on_epoch=reporter.epoch)
                    result, training, model_records = unit.result, unit.training, unit.records
                    save_checkpoint(result.model, folder.unit_dir(label, seed), unit.checkpoint_meta)
                    if method.name == "teacher":
                        teacher_ref = TeacherReference(
                            result.model, train, cache=config.training.teacher_cache, batch_size=ev.batch_size, device=dev
                        )
                    folder.save_unit(label, seed, model_records, training)  # the model is finished from here
                    records.extend(model_records)
                    trainings.append(training)
                    kept.append(f"{label} seed {seed}")
                    save_results()
                    analyse(label, method.name, seed, result.model, teacher_ref)
                    reporter.end_model(
                        f"{label} seed {seed}: epoch {result.selected_epoch}/{result.epochs_run} selected, "
                        f"dev {config.training.select_metric} "
                        f"{'n/a' if result.best_score is None else f'{result.best_score:.4f}'}, {result.seconds:.1f} s"
                    )
    except KeyboardInterrupt:
        meta["status"] = "interrupted"
        save_results()
        write_report(out, meta, records, trainings)
        raise RunInterrupted(out, kept, len(order) * len(config.seeds), f"{command} --resume") from None
    meta["status"] = "complete"
    meta["seconds"] = round(time.perf_counter() - started, 1)
    save_results()
    if analyses is not None:
        analyses.save(records, final=True)  # with the figures
    write_report(out, meta, records, trainings)
    reporter.message(f"wrote {out / 'report.md'}, {out / 'results.json'}, {out / 'config.yaml'}, {out / 'checkpoints'}")
    return RunResult(out, records, trainings, report=out / "report.md")
