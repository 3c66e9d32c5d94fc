"""``corekd tune``: the same dev-only search budget for every method (docs/tune.md).

Per method label (the teacher first, then the students in config order) an Optuna study runs ``trials`` trials. A
trial sets the method's own options (``Method.search_space``) and the shared settings of :data:`SHARED_SPACE` for that
method only, trains the method through the engine's :func:`~corekd.experiments.unit.train_unit` (epoch selection on
dev, as every run) for each tuning seed and scores the selected model on the DEV split:

- a student: ``training.select_metric`` averaged over the dev conditions of kinds complete, fixed and random (the
  masks :func:`~corekd.evaluation.conditions.evaluation_masks` builds for the dev split; conditions the method is not
  scored under are left out), then over the seeds;
- the teacher: ``training.select_metric`` on complete dev views (the view it is trained, selected and used on).

Students that distil are tuned against the TUNED teacher (retrained once per seed with its best parameters). The test
split's features and labels are never read: the prepared run's test split is sealed (any use raises) before the
first trial. Each study lives in ``DIR/optuna.db`` (SQLite); a killed tuning resumes with ``--resume``: finished
trials are kept and counted, a trial cut off mid-way is marked failed (``interrupted``) and its budget slot re-run.
The sampler of every trial is seeded from (``tune.seed``, label, trial number), so a resumed tuning proposes what an
uninterrupted one would have.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel

from corekd.config import (
    MethodSpec,
    MethodTraining,
    RunConfig,
    TuneConfig,
    dump_config,
    read_yaml_file,
    validate_config,
)
from corekd.device import resolve_device
from corekd.errors import CorekdError
from corekd.evaluation.conditions import ConditionMasks, evaluate_model, method_masks
from corekd.evaluation.metrics import LOWER_IS_BETTER
from corekd.experiments.folder import FolderLock, config_difference, read_json_file, refuse_inside_experiment
from corekd.experiments.setup import RunSetup, method_order, prepare_run
from corekd.experiments.spec import load_grid, validate_grid
from corekd.experiments.unit import train_unit
from corekd.files import atomic_write, check_new_or_empty, move_aside
from corekd.methods import method_class
from corekd.methods.base import spec_problem
from corekd.models.model import ModelConfig
from corekd.reporting.tune import write_tuning_report
from corekd.seeding import derive_seed
from corekd.training import TeacherReference
from corekd.version import __version__

# The settings every method shares, tuned per method (docs/tune.md): the learning rate over the range the backbone
# study's recipes span, and dropout from none to the 0.5 beyond which no model of the backbone study trained well.
SHARED_SPACE: dict[str, dict] = {
    "training.lr": {"float": [1e-4, 3e-3], "log": True},
    "model.dropout": {"float": [0.0, 0.5]},
}
# Shared keys a tune.search entry may name (training.weight_decay is off by default; add it per method).
SHARED_KEYS = ("training.lr", "training.weight_decay", "model.dropout")
SCORED_KINDS = ("complete", "fixed", "random")  # the dev conditions a student's trial score averages
MARKER_FILE = "corekd-tune.json"
STORAGE_FILE = "optuna.db"
TUNING_FILE = "tuning.json"
TUNED_FILE = "tuned.yaml"
FORMAT = "corekd-tune"
VERSION = 1


class TuneInterrupted(Exception):
    """``corekd tune`` stopped by SIGINT/SIGTERM: finished trials are kept in the folder's storage."""

    def __init__(self, out: Path, done: int, total: int):
        self.out, self.done, self.total = out, done, total
        super().__init__(f"interrupted: {done} of {total} trials finished, kept in {out / STORAGE_FILE}")


@dataclass
class TuneResult:
    out: Path
    payload: dict  # tuning.json
    tuned: Path
    report: Path


# ------------------------------------------------------------------ input: a run config or a grid
@dataclass
class TuneInput:
    config: RunConfig  # what is tuned: the run config, or the grid's first corpus
    resolved: dict  # the resolved input (run config or grid), as tuned.yaml starts from
    grid: bool
    corpus_key: str | None  # the grid's corpus the methods are tuned on
    source: Path | None


def read_input(path: str | Path) -> TuneInput:
    """A run config or a grid config (``corpora``); a grid is tuned on its first corpus."""
    path = Path(path)
    raw = read_yaml_file(path)
    if isinstance(raw, dict) and "corpora" in raw:
        grid = load_grid(path)
        key = next(iter(grid.corpora))
        return TuneInput(grid.corpora[key], grid.resolved(), True, key, path)
    from corekd.config import load_config

    cfg = load_config(path)
    if cfg.sweep is not None:
        raise CorekdError("a sweep is not tuned: tune its base config without `sweep`", path=path, field="sweep")
    return TuneInput(cfg, yaml.safe_load(dump_config(cfg)), False, None, path)


def tune_settings(cfg: RunConfig, trials: int | None) -> TuneConfig:
    base = cfg.tune or TuneConfig()
    if trials is not None:
        if trials < 1:
            raise CorekdError(f"expected a positive number of trials, got {trials}", field="--trials")
        base = base.model_copy(update={"trials": trials})
    return base


# ------------------------------------------------------------------ search spaces
def fixed_options(cfg: RunConfig, spec: MethodSpec) -> list[str]:
    """The options that define a variant (kept out of its search space so that tuning cannot undo an ablation): those
    set differently from the same method's plain entry in the config (or from the option defaults, without one)."""
    if spec.variant is None:
        return []
    cls = method_class(spec.name)
    plain = next((s for s in cfg.methods if s.name == spec.name and s.variant is None), None)
    reference = cfg.method_options(plain) if plain is not None else cls.Options()
    base = reference.model_dump(mode="json")
    own = cfg.method_options(spec).model_dump(mode="json")
    return sorted(k for k in own if own[k] != base.get(k))


def method_space(cfg: RunConfig, spec: MethodSpec, tune: TuneConfig) -> dict[str, dict]:
    """A method label's search space: the shared settings, the method's own space, less a variant's defining options
    and the options inert under its settings (``Method.inert_options``), with ``tune.search[label]`` applied (a spec replaces or adds an entry, null removes it)."""
    cls = method_class(spec.name)
    space = {**SHARED_SPACE, **copy.deepcopy(cls.search_space)}
    for option in [*fixed_options(cfg, spec), *cls.inert_options(cfg.method_options(spec))]:
        space.pop(option, None)
    for key, value in (tune.search.get(spec.label) or {}).items():
        if value is None:
            space.pop(key, None)
        else:
            space[key] = value
    return space


def _candidates(spec: dict) -> list:
    if "choice" in spec:
        return list(spec["choice"])
    kind = "float" if "float" in spec else "int"
    return list(spec[kind])


def check_search(cfg: RunConfig, tune: TuneConfig, source: str | Path | None = None) -> list[MethodSpec]:
    """The specs tuned, in order; :class:`CorekdError` naming ``tune.search.<label>[.<option>]`` for a malformed space."""
    _, order, _ = method_order(cfg)
    labels = [s.label for s in order]
    for label in tune.search:
        if label not in labels:
            raise CorekdError(
                f"'{label}' is not a method of this config (methods: {', '.join(labels)})",
                path=source,
                field=f"tune.search.{label}",
            )
    for spec in order:
        cls = method_class(spec.name)
        given = tune.search.get(spec.label) or {}
        for key, value in method_space(cfg, spec, tune).items():
            field = f"tune.search.{spec.label}.{key}" if key in given else f"{cls.__name__}.search_space.{key}"
            problem = spec_problem(value)
            if problem:
                raise CorekdError(problem, path=source, field=field)
            if key in SHARED_KEYS:
                section, name = key.split(".")
                model: type[BaseModel] = MethodTraining if section == "training" else ModelConfig
                checked, fixed = model, {}
                key_name = name
            elif "." in key or key not in cls.Options.model_fields:
                known = [*SHARED_KEYS, *cls.Options.model_fields]
                raise CorekdError(
                    f"'{key}' is not an option of method '{spec.name}' nor a shared setting "
                    f"(expected one of: {', '.join(known) or 'none'})",
                    path=source,
                    field=field,
                )
            else:
                checked, key_name = cls.Options, key
                fixed = cfg.method_options(spec).model_dump(mode="json") if spec.name != "teacher" else {}
            for value_ in _candidates(value):
                try:
                    checked.model_validate({**fixed, key_name: value_})
                except Exception as exc:  # noqa: BLE001 - a pydantic error: one line naming the value
                    detail = str(exc).splitlines()[-2].strip() if "\n" in str(exc) else str(exc)
                    raise CorekdError(f"value {value_!r} is not allowed: {detail}", path=source, field=field) from None
    return order


def suggest(trial, key: str, spec: dict):
    """One parameter of ``trial`` drawn from its spec."""
    if "choice" in spec:
        values = spec["choice"]
        index = trial.suggest_categorical(key, list(range(len(values))))  # indices: values may be lists
        return copy.deepcopy(values[index])
    if "int" in spec:
        low, high = spec["int"]
        return trial.suggest_int(key, int(low), int(high), log=bool(spec.get("log", False)))
    low, high = spec["float"]
    return trial.suggest_float(key, float(low), float(high), log=bool(spec.get("log", False)))


def starting_params(cfg: RunConfig, spec: MethodSpec, space: dict[str, dict]) -> dict:
    """The config's own values of the searched keys, as Optuna's parameters (a choice by its index), for the first
    trial of every method: the tuned result is then never one the config's settings beat on dev. A value outside its
    range (or not among the choices) is left out and drawn instead."""
    own = cfg.method_options(spec).model_dump(mode="json") if spec.name != "teacher" else {}
    training, model = cfg.training_for(spec.name, spec.label), cfg.model_for(spec.name, spec.label)
    out: dict = {}
    for key, value_spec in space.items():
        section, _, name = key.partition(".")
        if key in SHARED_KEYS:
            value = getattr(training if section == "training" else model, name)
        elif key in own:
            value = own[key]
        else:
            continue
        if "choice" in value_spec:
            if value in value_spec["choice"]:
                out[key] = value_spec["choice"].index(value)
            continue
        low, high = value_spec["int" if "int" in value_spec else "float"]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high:
            out[key] = value
    return out


def apply_params(raw: dict, spec: MethodSpec, params: dict) -> dict:
    """A copy of a resolved config mapping with ``params`` set for the method ``spec`` only (the teacher's in the
    ``teacher`` section, a student's in its ``methods`` entry: options, ``training``, ``model``)."""
    raw = copy.deepcopy(raw)
    shared = {k: v for k, v in params.items() if k in SHARED_KEYS}
    own = {k: v for k, v in params.items() if k not in SHARED_KEYS}
    if spec.name == "teacher":
        section = raw.setdefault("teacher", {}) or {}
        raw["teacher"] = section
        for key, value in shared.items():
            section[key.split(".")[1]] = value
        return raw
    entry = next(e for e in raw["methods"] if (e.get("variant") or e["name"]) == spec.label)
    entry["options"] = {**(entry.get("options") or {}), **own}
    for section in ("training", "model"):
        values = {k.split(".")[1]: v for k, v in shared.items() if k.startswith(section + ".")}
        if values:
            entry[section] = {**(entry.get(section) or {}), **values}
    return raw


# ------------------------------------------------------------------ scoring
class SealedSplit:
    """Stands in for the test split while tuning: any use of it is a bug, and raises."""

    def __getattr__(self, name: str):
        raise CorekdError(f"corekd tune never reads the test split (something asked for its '{name}')")


def dev_score(setup: RunSetup, label: str, model, device) -> float | None:
    """The trial score of one selected model on dev (module doc), or None when the metric is undefined everywhere."""
    cfg, metric = setup.config, setup.config.training.select_metric
    masks = setup.scored[label]["dev"]
    kinds = {c.name: c.kind for c in setup.conditions}
    names = ["complete"] if setup.methods[label].name == "teacher" else [n for n in masks if kinds[n] in SCORED_KINDS]
    chosen = ConditionMasks(
        {n: masks[n] for n in names}, {n: r for n, r in masks.not_applicable.items() if n in names}, masks.frames
    )
    rows = evaluate_model(model, setup.dev, chosen, setup.labels, cfg.evaluation.batch_size, device)
    values = [r[metric] for r in rows if r.get("applicable", True) and r.get(metric) is not None]
    return float(sum(values) / len(values)) if values else None


def trial_setup(base: RunSetup, cfg: RunConfig, label: str) -> tuple[RunSetup, MethodSpec]:
    """The prepared run with ``cfg`` (one trial's config) and the trial's method rebuilt from it (nothing reloaded)."""
    methods, order, _ = method_order(cfg)
    if label == "teacher" and label not in methods:  # a teacher only some trials' options ask for
        order = [MethodSpec(name="teacher")]
        methods = {label: method_class("teacher")(cfg.method_options(order[0]), cfg.training.missing)}
    spec = next(s for s in order if s.label == label)
    method = methods[label]
    modalities = base.corpus.modality_names
    scored = {label: {"dev": method_masks(method, base.dev_masks, base.conditions, modalities)}}
    setup = dataclasses.replace(base, config=cfg, methods={label: method}, scored=scored, reported=set())
    return setup, spec


# ------------------------------------------------------------------ the folder
def _open_folder(out: Path, marker: dict, resume: bool, overwrite: bool) -> bool:
    """Create or take over ``out``; True when earlier trials are resumed."""
    refuse_inside_experiment(out)
    if overwrite and out.exists() and any(out.iterdir()):
        move_aside(out)
    if out.is_dir() and any(out.iterdir()):
        if not resume:
            raise CorekdError(
                "folder is not empty; continue an interrupted tuning with --resume, or start again with --overwrite",
                path=out,
                field="--out",
            )
        stored_path = out / MARKER_FILE
        if not stored_path.is_file():
            raise CorekdError(f"not a corekd tune folder (no {MARKER_FILE}); choose another --out", path=out)
        stored = read_json_file(stored_path, "tuning marker")
        stored_input = stored.get("input") if isinstance(stored, dict) else None
        diff = config_difference(stored_input, marker["input"])
        if diff:
            field, was, now = diff
            raise CorekdError(
                f"this folder tuned another config ({field}: {was!r} there, {now!r} now); resume with the same "
                "config or choose another --out",
                path=out,
                field="--resume",
            )
        return True
    check_new_or_empty(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / MARKER_FILE, json.dumps(marker, indent=1))
    return False


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _study(storage, label: str, direction: Literal["minimize", "maximize"], pruning: bool, patience: int):
    import optuna

    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=patience)
        if pruning
        else optuna.pruners.NopPruner()
    )
    return optuna.create_study(
        storage=storage, study_name=label, direction=direction, pruner=pruner, load_if_exists=True
    )


def _settle_interrupted(study) -> None:
    """Trials left running by a killed tuning: marked failed (``interrupted``), so their budget slot is re-run.

    Optuna has no public call to change a past trial's state; the study's storage does it (as Optuna's own
    ``fail_stale_trials`` does for heartbeats)."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)


def _counted(study) -> list:
    """The trials that use up the budget: finished, pruned, or failed by an error (not cut off by a kill)."""
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [t for t in study.get_trials(deepcopy=False) if t.state in done and not t.user_attrs.get("interrupted")]


def _trial_row(label: str, t) -> dict:
    return {
        "method": label,
        "number": t.number,
        "params": t.user_attrs.get("params", {}),
        "dev_score": t.value,
        "seed_scores": t.user_attrs.get("seed_scores"),
        "seconds": t.user_attrs.get("seconds"),
        "state": t.state.name.lower(),
        **({"error": t.user_attrs["error"]} if "error" in t.user_attrs else {}),
        **({"interrupted": True} if t.user_attrs.get("interrupted") else {}),
    }


def _best(study, direction: str) -> dict | None:
    rows = [t for t in _counted(study) if t.state.name == "COMPLETE" and t.value is not None]
    if not rows:
        return None
    sign = -1.0 if direction == "minimize" else 1.0
    best = max(rows, key=lambda t: (sign * t.value, -t.number))  # the earliest on ties
    return {"number": best.number, "params": best.user_attrs.get("params", {}), "dev_score": best.value}


# ------------------------------------------------------------------ the command
def tune(
    config: str | Path,
    out: str | Path,
    *,
    trials: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    command: str = "",
    before_trial: Callable[[str, int], None] | None = None,
) -> TuneResult:
    """Tune every method of ``config`` (a run or grid config file) with the same budget; write ``out`` (docs/tune.md).

    ``before_trial(label, number)``: called before each trial (tests interrupt there).
    """
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    say = progress or (lambda text: None)
    inp = read_input(config)
    cfg, source, out = inp.config, inp.source, Path(out)
    settings = tune_settings(cfg, trials)
    order = check_search(cfg, settings, source)
    if cfg.training.select_on == "test":
        raise CorekdError(
            "corekd tune selects on dev only; remove training.select_on: test", path=source, field="training.select_on"
        )
    seeds = settings.seeds or cfg.seeds[:1]
    metric = cfg.training.select_metric
    marker = {
        "format": FORMAT,
        "version": VERSION,
        "corekd": __version__,
        "input": inp.resolved,
        "tuned_on": inp.corpus_key,
        "command": command,
    }
    refuse_inside_experiment(out)
    if out.is_dir() and any(out.iterdir()) and not (resume or overwrite):
        _open_folder(out, marker, resume, overwrite)  # refuses, naming --resume and --overwrite
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    base = prepare_run(cfg, source, device, command)  # before the folder is made: a bad corpus leaves nothing behind
    resumed = _open_folder(out, marker, resume, overwrite)
    lock = FolderLock(out, command).acquire()
    try:
        metric = base.config.training.select_metric  # settled by the corpus's task
        base.test, base.test_masks = SealedSplit(), ConditionMasks({}, {})  # type: ignore[assignment]
        direction: Literal["minimize", "maximize"] = "minimize" if metric in LOWER_IS_BETTER else "maximize"
        storage = optuna.storages.RDBStorage(f"sqlite:///{(out / STORAGE_FILE).resolve()}")
        raw = yaml.safe_load(dump_config(cfg))
        studies: dict[str, object] = {}
        spaces = {s.label: method_space(cfg, s, settings) for s in order}
        if resumed:
            say(f"resuming {out}")
        teachers: dict[int, TeacherReference] = {}

        def teachers_now() -> dict[int, TeacherReference]:  # the tuned teacher, trained when a trial first needs it
            if not teachers:
                teachers.update(_tuned_teachers(base, raw, order, studies, direction, seeds, device, source, say))
            return teachers

        for spec in order:
            study = _study(storage, spec.label, direction, settings.pruning, cfg.training.patience)
            studies[spec.label] = study
            _settle_interrupted(study)
            _run_trials(
                study,
                base,
                raw,
                spec,
                spaces[spec.label],
                settings,
                seeds,
                teachers_now,
                device,
                source,
                say,
                before_trial,
                direction,
            )
    except KeyboardInterrupt:
        done = sum(len(_counted(s)) for s in studies.values()) if "studies" in locals() else 0
        raise TuneInterrupted(out, done, settings.trials * len(order)) from None
    finally:
        lock.release()
    payload = _payload(inp, cfg, settings, seeds, metric, direction, order, spaces, studies)
    _write_text(out / TUNING_FILE, json.dumps(payload, indent=1))
    tuned = out / TUNED_FILE
    text = tuned_yaml(inp, order, payload)
    _write_text(tuned, text)
    report, _ = write_tuning_report(out, payload)
    return TuneResult(out, payload, tuned, report)


def _tuned_teachers(base, raw, order, studies, direction, seeds, device, source, say) -> dict[int, TeacherReference]:
    """The frozen teacher of each tuning seed, trained once with its best parameters (defaults when untuned)."""
    teacher_spec = next((s for s in order if s.name == "teacher"), MethodSpec(name="teacher"))
    study = studies.get(teacher_spec.label)
    best = _best(study, direction) if study is not None else None
    params = best["params"] if best else {}
    cfg = validate_config(apply_params(raw, teacher_spec, params), source)
    setup, spec = trial_setup(base, cfg, teacher_spec.label)
    refs = {}
    for seed in seeds:
        model = train_unit(setup, spec, seed, device, None).result.model.eval().requires_grad_(False)
        refs[seed] = TeacherReference(
            model, base.train, cache=cfg.training.teacher_cache, batch_size=cfg.evaluation.batch_size, device=device
        )
    say(f"teacher for the students: {'tuned, trial ' + str(best['number']) if best else 'defaults'}")
    return refs


def _run_trials(
    study, base, raw, spec, space, settings, seeds, teachers_now, device, source, say, before_trial, direction
) -> None:
    import optuna
    from optuna.trial import TrialState

    label = spec.label
    while (done := len(_counted(study))) < settings.trials:
        number = len(study.get_trials(deepcopy=False))
        sampler_seed = derive_seed("tune", settings.seed, label, number) % (2**32)
        study.sampler = optuna.samplers.TPESampler(
            seed=sampler_seed, n_startup_trials=max(1, min(10, settings.trials // 2))
        )
        if before_trial is not None:
            before_trial(label, done)
        if done == 0:  # the first counted trial: the config's own settings (the baseline every later trial must beat)
            study.enqueue_trial(starting_params(validate_config(raw, source), spec, space))
        trial = study.ask()
        params = {key: suggest(trial, key, s) for key, s in space.items()}
        trial.set_user_attr("params", params)
        started = time.perf_counter()
        state, value, error = TrialState.COMPLETE, None, None
        scores: list[float | None] = []
        try:
            cfg = validate_config(apply_params(raw, spec, params), source)
            setup, tspec = trial_setup(base, cfg, label)
            teachers = teachers_now() if setup.methods[label].needs_teacher else {}
            for i, seed in enumerate(seeds):
                hook = _pruning_hook(trial) if i == 0 else None
                result = train_unit(setup, tspec, seed, device, teachers.get(seed), on_epoch=hook)
                scores.append(dev_score(setup, label, result.result.model, device))
            defined = [s for s in scores if s is not None]
            if not defined:
                state, error = TrialState.FAIL, f"dev {setup.config.training.select_metric} undefined on every seed"
            else:
                value = float(statistics.fmean(defined))
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except CorekdError as exc:
            state, error = TrialState.FAIL, exc.detail
        trial.set_user_attr("seed_scores", scores)
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
        if error:
            trial.set_user_attr("error", error)
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        best = _best(study, direction)
        shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
        score = f"{value:.4f}" if value is not None else state.name.lower()
        say(
            f"{label} trial {done + 1}/{settings.trials}: dev {score}"
            + (f" (best {best['dev_score']:.4f})" if best else "")
            + f" [{shown}] {time.perf_counter() - started:.1f}s"
            + (f" ({error})" if error else "")
        )


def _pruning_hook(trial):
    import optuna

    def on_epoch(epoch: int, score: float | None) -> None:
        if score is None:
            return
        trial.report(float(score), epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()

    return on_epoch


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _payload(inp, cfg, settings, seeds, metric, direction, order, spaces, studies) -> dict:
    methods = {}
    for spec in order:
        study = studies[spec.label]
        rows = [_trial_row(spec.label, t) for t in study.get_trials(deepcopy=False)]
        scores = [r["dev_score"] for r in rows if r["state"] == "complete" and r["dev_score"] is not None]
        methods[spec.label] = {
            "method": spec.name,
            "space": spaces[spec.label],
            "fixed": fixed_options(cfg, spec),
            "trials": rows,
            "best": _best(study, direction),
            "distribution": (
                {"n": len(scores), "min": min(scores), "median": statistics.median(scores), "max": max(scores)}
                if scores
                else None
            ),
        }
    return {
        "format": FORMAT,
        "version": VERSION,
        "corekd": __version__,
        "config": cfg.name,
        "tuned_on": inp.corpus_key or cfg.data.source,
        "grid": inp.grid,
        "budget": settings.trials,
        "seeds": seeds,
        "sampler_seed": settings.seed,
        "pruning": settings.pruning,
        "metric": metric,
        "direction": direction,
        "score": "dev split only: students averaged over the complete, fixed and random conditions; the teacher on "
        "complete views; mean over the seeds",
        "students_against": "the tuned teacher (retrained per seed with its best parameters)",
        "shared_space": SHARED_SPACE,
        "methods": methods,
    }


def tuned_yaml(inp: TuneInput, order: list[MethodSpec], payload: dict) -> str:
    """The input config (or grid) with every method's best parameters (checked to load before it is written)."""
    raw = copy.deepcopy(inp.resolved)
    for spec in order:
        best = payload["methods"][spec.label]["best"]
        if best:
            raw = apply_params(raw, spec, best["params"])
    if inp.grid:
        validate_grid(raw, inp.source)
    else:
        validate_config(raw, inp.source)
    header = (
        f"# corekd tune: each method's best of {payload['budget']} trials on the dev split of "
        f"{payload['tuned_on']} (tuning.json, tuning.md).\n"
        f"# Run it with `corekd {'compare' if inp.grid else 'run'}`.\n"
    )
    return header + yaml.safe_dump(raw, sort_keys=False)
