"""One unit of an experiment: a (corpus, seed, method variant) model, trained, selected on dev, scored once on test.

A unit's task is plain data (the corpus's resolved run config as JSON, the method spec, the seed, the device, the
thread count and, for a student that distils or is analysed against it, its teacher's checkpoint files as bytes),
and its outcome is plain data too (records, training entry, analyses rows, checkpoint files, the t-SNE embedding).
Nothing is read from or written to the output folder here: the driver writes, so a worker on another machine (Ray)
needs the package and the corpus, not the folder. Every runner (in this process, worker processes, Ray) runs the
same :func:`run_unit`, so the same task gives the same outcome wherever it runs.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from corekd.config import MethodSpec, validate_config
from corekd.device import resolve_device
from corekd.ensemble import train_ensemble
from corekd.evaluation.analyses import RunAnalyses, conflict_flags
from corekd.evaluation.conditions import evaluate_model
from corekd.experiments.setup import RunSetup, prepare_run
from corekd.training import (
    MODEL_META_FILE,
    WEIGHTS_FILE,
    TeacherReference,
    TrainResult,
    init_model,
    load_checkpoint,
    save_checkpoint,
    train_model,
)

CHECKPOINT_FILES = (MODEL_META_FILE, WEIGHTS_FILE)
ANALYSES_PARTS = ("pairs", "task", "drift", "mstate_drift", "rejection", "modality_diagnostics", "notes")


@dataclass(frozen=True, order=True)
class Unit:
    """One model of an experiment. ``part``: the corpus key of a grid, the value folder of a sweep, "" for a run."""

    part: str
    seed: int
    variant: str  # the method spec's label
    method: str

    @property
    def id(self) -> str:
        return f"{self.part}/seed-{self.seed}/{self.variant}" if self.part else f"{self.variant} seed {self.seed}"


@dataclass
class UnitResult:
    result: TrainResult
    training: dict  # results.json's training entry
    records: list[dict]  # dev and test records under every condition (none for an unreported teacher)
    checkpoint_meta: dict  # what model.json records beside the architecture


def _init_unit(setup: RunSetup, spec: MethodSpec, seed: int):
    """The freshly initialised model of ``spec`` at ``seed`` (input statistics set) and its training settings."""
    config, corpus = setup.config, setup.corpus
    method = setup.methods[spec.label]
    dims = {m: s.dim for m, s in corpus.modalities.items()}
    kinds = {m: s.kind for m, s in corpus.modalities.items()}
    outputs = 1 if config.task == "regression" else len(corpus.labels)  # regression: a one-output head
    model_cfg, train_cfg = config.model_for(method.name, spec.label), config.training_for(method.name, spec.label)
    model = init_model(
        model_cfg,
        dims,
        outputs,
        seed,
        "teacher" if method.name == "teacher" else "student",
        kinds=kinds,
        build=method.build_model,
    )
    if setup.input_stats is not None:
        model.set_input_statistics(setup.input_stats)
    return model, train_cfg


def _selection_split(setup: RunSetup):
    return setup.test if setup.config.training.select_on == "test" else setup.dev


def train_unit(
    setup: RunSetup,
    spec: MethodSpec,
    seed: int,
    device: torch.device,
    teacher_ref: TeacherReference | None,
    on_epoch=None,
) -> UnitResult:
    """Initialise, train and select one model (``spec`` at ``seed``), then score it on dev and, once, on test.

    ``teacher_ref``: the seed's frozen teacher (for the methods that need one). Nothing is written here.
    """
    method = setup.methods[spec.label]
    model, train_cfg = _init_unit(setup, spec, seed)
    result = train_model(
        method,
        model,
        setup.train,
        _selection_split(setup),
        train_cfg,
        seed=seed,
        label_names=setup.labels,
        device=device,
        teacher=teacher_ref if method.needs_teacher else None,
        eval_batch_size=setup.config.evaluation.batch_size,
        on_epoch=on_epoch,
    )
    return _score_unit(setup, spec, seed, device, result)


def train_units(
    setup: RunSetup,
    spec: MethodSpec,
    seeds: list[int],
    device: torch.device,
    teacher_refs: list[TeacherReference | None],
    on_epoch=None,
) -> list[UnitResult]:
    """:func:`train_unit` for every seed of ``seeds`` at once, trained as one batched ensemble
    (:func:`corekd.ensemble.train_ensemble`, ``training.ensemble: seeds``); one result per seed, in order."""
    method = setup.methods[spec.label]
    inits = [_init_unit(setup, spec, seed) for seed in seeds]
    results = train_ensemble(
        method,
        [model for model, _ in inits],
        setup.train,
        _selection_split(setup),
        inits[0][1],
        seeds=seeds,
        label_names=setup.labels,
        device=device,
        teachers=teacher_refs if method.needs_teacher else None,
        eval_batch_size=setup.config.evaluation.batch_size,
        on_epoch=on_epoch,
    )
    return [_score_unit(setup, spec, seed, device, result, ensemble=len(seeds)) for seed, result in zip(seeds, results)]


def _score_unit(
    setup: RunSetup, spec: MethodSpec, seed: int, device: torch.device, result: TrainResult, ensemble: int = 0
) -> UnitResult:
    """A trained model's checkpoint meta, training entry and records (dev, then test, once). ``ensemble``: the
    number of members it was trained with (0: trained alone)."""
    config, corpus = setup.config, setup.corpus
    label, method = spec.label, setup.methods[spec.label]
    task, labels, ev = config.task, corpus.labels, config.evaluation
    metric = config.training.select_metric
    checkpoint_meta = {
        "method": method.name,
        "variant": label,
        "options": method.options.model_dump(mode="json"),
        "seed": seed,
        "task": task,
        "best_epoch": result.best_epoch,
        "selected_epoch": result.selected_epoch,
        "labels": labels,
        "input_statistics": "train split" if setup.input_stats is not None else "identity",
        "modalities": list(corpus.modality_names),
        "corpus": corpus.name,
        f"dev_{metric}": result.best_score,
    }
    training = {
        "method": method.name,
        "variant": label,
        "seed": seed,
        "best_epoch": result.best_epoch,
        "selected_epoch": result.selected_epoch,
        "epochs_run": result.epochs_run,
        f"dev_{metric}": None if result.best_score is None else round(result.best_score, 6),
        "seconds": round(result.seconds, 2),
        "history": result.history,
    }
    if ensemble:  # seconds: the ensemble's wall time shared out over its members
        training["ensemble"] = ensemble
    records = []
    if label in setup.reported:  # dev under the same conditions; the test split, once, after this model's training
        for split_name, split in (("dev", setup.dev), ("test", setup.test)):
            for row in evaluate_model(
                result.model, split, setup.scored[label][split_name], labels, ev.batch_size, device
            ):
                records.append({"method": method.name, "variant": label, "seed": seed, "split": split_name, **row})
    return UnitResult(result, training, records, checkpoint_meta)


# ------------------------------------------------------------------ a unit as plain data in, plain data out
_SETUPS: dict[tuple[str, str | None, str], RunSetup] = {}


def remember_setup(config_json: str, config_path: str | None, device: str, setup: RunSetup) -> None:
    """Let units run in this process reuse the driver's prepared corpus instead of preparing it again."""
    _SETUPS.clear() if len(_SETUPS) >= 4 else None
    _SETUPS[(config_json, config_path, device)] = setup


def unit_setup(config_json: str, config_path: str | None, device: str) -> RunSetup:
    """The corpus's prepared run (prepared once per process and corpus)."""
    key = (config_json, config_path, device)
    if key not in _SETUPS:
        cfg = validate_config(json.loads(config_json), config_path)
        remember_setup(
            config_json,
            config_path,
            device,
            prepare_run(cfg, Path(config_path) if config_path else None, resolve_device(device), command=""),
        )
    return _SETUPS[key]


def model_from_files(files: dict[str, bytes], device: torch.device):
    with tempfile.TemporaryDirectory(prefix="corekd-teacher-") as tmp:
        for name in CHECKPOINT_FILES:
            (Path(tmp) / name).write_bytes(files[name])
        with torch.random.fork_rng(devices=[]):
            model, _ = load_checkpoint(tmp, device)
    return model


def files_from_model(model, meta: dict) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="corekd-unit-") as tmp:
        save_checkpoint(model, tmp, meta)
        return {name: (Path(tmp) / name).read_bytes() for name in CHECKPOINT_FILES}


def embedding_bytes(fused: np.ndarray, target: np.ndarray) -> bytes:
    """An ``embedding.npz`` (arrays ``fused`` [n, H], ``target`` [n]), as bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, fused=fused, target=target)
    return buffer.getvalue()


def analyse(
    setup: RunSetup,
    spec: MethodSpec,
    seed: int,
    model,
    teacher,
    device: torch.device,
    embedding: bool,
    records: list[dict] | None = None,
    history: list[dict] | None = None,
) -> tuple[dict, bytes | None]:
    """The mechanism analyses of one reported model (its part of analyses.json) and, with ``embedding``, its t-SNE
    points as ``embedding.npz`` bytes (``records``, ``history``: the model's records and training history, read by the
    modality diagnostics)."""
    ev = setup.config.evaluation
    method = setup.methods[spec.label]
    collect = RunAnalyses(
        setup.test,
        setup.test_masks,
        conflict_flags(setup.corpus, "test"),
        setup.labels,
        setup.task,
        ev.mask_seed,
        ev.batch_size,
        device,
        figures=ev.figures and embedding,
    )
    collect.add(
        spec.label,
        method.name,
        seed,
        model,
        teacher,
        not_applicable=setup.scored[spec.label]["test"].not_applicable,
        records=records,
        history=history,
    )
    payload = collect.payload()
    part = {k: payload[k] for k in ANALYSES_PARTS}
    part["natural_conflicts"] = payload["natural_conflicts"]
    part["skipped"] = list(collect.notes)  # the unit's own notes (what it skipped); the rest are the run's
    points = collect.embeddings.get(spec.label)
    return part, (embedding_bytes(*points) if points is not None else None)


def run_unit(task: dict, on_epoch=None) -> dict:
    """Train and evaluate one unit (``task``: see :func:`corekd.experiments.engine.unit_task`); return its outcome.

    A task with ``seeds`` (a list) and ``teachers`` (one per seed) is an ensemble of units (``training.ensemble:
    seeds``): its outcome is ``{"members": [one unit's outcome per seed]}``.
    """
    started = time.perf_counter()
    threads_before = torch.get_num_threads()
    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    try:
        setup = unit_setup(task["config"], task["config_path"], task["device"])
        device = resolve_device(task["device"])
        spec = MethodSpec.model_validate(task["spec"])
        method = setup.methods[spec.label]
        ev = setup.config.evaluation
        group = "seeds" in task
        seeds = task["seeds"] if group else [task["seed"]]
        teacher_files = task["teachers"] if group else [task["teacher"]]
        teachers = [model_from_files(f, device) if f is not None else None for f in teacher_files]
        refs = [
            TeacherReference(
                t, setup.train, cache=setup.config.training.teacher_cache, batch_size=ev.batch_size, device=device
            )
            if t is not None and method.needs_teacher
            else None
            for t in teachers
        ]
        if group:
            units = train_units(setup, spec, seeds, device, refs, on_epoch=on_epoch)
        else:
            units = [train_unit(setup, spec, seeds[0], device, refs[0], on_epoch=on_epoch)]
        outcomes = []
        for seed, unit, teacher in zip(seeds, units, teachers):
            model = unit.result.model
            if method.name == "teacher":  # analysed against itself, frozen first
                teacher = model.eval().requires_grad_(False)
            analyses, embedding = None, None
            if ev.analyses and spec.label in setup.reported:
                analyses, embedding = analyse(
                    setup,
                    spec,
                    seed,
                    model,
                    teacher,
                    device,
                    task["embedding"] if not group else seed == task["embedding_seed"],
                    unit.records,
                    unit.result.history,
                )
            outcomes.append(
                {
                    "records": unit.records,
                    "training": unit.training,
                    "checkpoint": files_from_model(model, unit.checkpoint_meta),
                    "analyses": analyses,
                    "embedding": embedding,
                    "seconds": round((time.perf_counter() - started) / len(seeds), 2),
                    "summary": {
                        "selected_epoch": unit.result.selected_epoch,
                        "epochs_run": unit.result.epochs_run,
                        "best_score": unit.result.best_score,
                        "seconds": unit.result.seconds,
                    },
                }
            )
        return {"members": outcomes} if group else outcomes[0]
    finally:
        torch.set_num_threads(threads_before)
