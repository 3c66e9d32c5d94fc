"""The one experiment engine: ``corekd run`` (one corpus), its sweeps (one run per value) and ``corekd compare``
(corpora x variants x seeds) are all units planned by :func:`plan_units`, run by one scheduler (:func:`execute`) on a
runner (:mod:`corekd.experiments.runner`), kept in one folder format (:mod:`corekd.experiments.folder`) and
assembled into results.json and analyses.json by the same functions.

Per corpus and seed the teacher is trained once, frozen, saved, and read back from its checkpoint by every unit
that needs it. Each model is selected on the dev split; the test split is used once per model, after its training,
under masks that depend only on ``evaluation.mask_seed`` and the condition: identical for every method and seed.
Everything (config, corpus, methods against the corpus, device, output folder) is checked before anything is
written. A signal (Ctrl-C, SIGTERM) at any phase stops the work, keeps every finished unit, writes a folder whose
status is true and raises :class:`Interrupted`.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from corekd.config import (
    RunConfig,
    dump_config,
    folder_name,
    option_type,
    sub_config,
    validate_config,
    value_text,
)
from corekd.device import resolve_device
from corekd.errors import CorekdError
from corekd.evaluation.analyses import TSNE_CONDITION, merge_parts
from corekd.experiments.folder import EMBEDDING_FILE, GRID, RUN, ExperimentFolder, stored_status
from corekd.experiments.runner import SequentialRunner, make_runner
from corekd.experiments.setup import (
    RunSetup,
    method_order,
    peek_corpus_task,
    prepare_run,
    resolve_config,
    settle_task,
)
from corekd.experiments.spec import GridConfig, load_grid
from corekd.experiments.sweep import SWEEP_JSON, write_summary
from corekd.experiments.unit import (
    CHECKPOINT_FILES,
    Unit,
    analyse,
    model_from_files,
    remember_setup,
)
from corekd.files import (
    ANALYSES_FILE,
    CONFIG_FILE,
    GRID_ANALYSES_FORMAT,
    GRID_FORMAT,
    REPORT_FILE,
    RESULTS_FILE,
    atomic_write,
)
from corekd.progress import GridProgress, Reporter
from corekd.reporting.figures import write_run_figures
from corekd.reporting.grid import write_grid_report
from corekd.reporting.run import write_report
from corekd.reporting.sweep import SWEEP_STEM
from corekd.training import load_checkpoint
from corekd.version import __version__

REFRESH_SECONDS = 30.0  # a grid's results.json / analyses.json rewritten at most this often while cells finish
RUN_META_LEFT_OUT = ("command", "status", "device", "torch", "python", "seeds", "methods")  # grid-level, not per corpus


class Interrupted(Exception):
    """An experiment stopped by SIGINT/SIGTERM; every finished unit is kept and the folder says so."""

    def __init__(self, text: str, out: Path, done: int, total: int):
        self.text, self.out, self.done, self.total = text, out, done, total
        super().__init__(text)

    def line(self) -> str:
        return self.text


@dataclass
class RunResult:
    out_dir: Path
    records: list[dict]
    trainings: list[dict]
    report: Path | None = None  # report.md, or sweep.md for a sweep
    changed: bool = True  # False when the folder held this run complete and nothing was written


@dataclass
class GridResult:
    out_dir: Path
    cells: int
    ran: int  # cells run by this call (the others were finished before)
    failed: list[dict] = field(default_factory=list)  # {"cell", "error", "user_error"}
    report: Path | None = None
    seconds: float = 0.0


# ------------------------------------------------------------------ signals
_NOTED: list[int] = []  # signals a handler raised as KeyboardInterrupt during this experiment (note_signal)


def note_signal(signum: int | None) -> None:
    """Record that ``signum`` interrupted the experiment (the CLI's handler does, then raises KeyboardInterrupt);
    None forgets every noted signal (a new experiment starts)."""
    if signum is None:
        _NOTED.clear()
    else:
        _NOTED.append(signum)


def by_signal(exc: BaseException) -> bool:
    """Whether ``exc`` is the interruption: a KeyboardInterrupt, or any error after a noted signal. torch's C++ code
    turns a KeyboardInterrupt raised inside Python code it calls back (e.g. while it reads a sequence into a tensor)
    into another exception (a ValueError naming ``UntypedStorage``); that is still the signal, not a bug."""
    return isinstance(exc, KeyboardInterrupt) or bool(_NOTED)


@contextlib.contextmanager
def signals_deferred() -> Iterator[list[int]]:
    """While the block runs (writing what an interrupted experiment keeps), SIGINT and SIGTERM are recorded, not
    raised: a second Ctrl-C cannot cut the folder's last writes short."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# ------------------------------------------------------------------ the plan
@dataclass
class Part:
    """One corpus of an experiment: ``key`` ("" for a run, the corpus key of a grid), its config and setup."""

    key: str
    config: RunConfig
    setup: RunSetup
    config_path: Path | None


def plan_units(configs: dict[str, RunConfig], seeds: list[int]) -> list[Unit]:
    """Every unit in the fixed order: part (config order), seed, then the teacher and the students."""
    units = []
    for key, config in configs.items():
        methods, order, _ = method_order(config)
        for seed in seeds:
            units += [Unit(key, seed, spec.label, methods[spec.label].name) for spec in order]
    return units


def plan_grid(grid: GridConfig) -> list[Unit]:
    """A grid's cells in the order they are planned (and reported)."""
    return plan_units(grid.corpora, grid.seeds)


def uses_teacher(config: RunConfig, unit: Unit) -> bool:
    """Whether ``unit`` reads its corpus and seed's teacher: to distil from it, or (analyses on) to measure its state
    drift and conflict rejection against it."""
    if unit.method == "teacher":
        return False
    methods, order, _ = method_order(config)  # a teacher is in the order when one is listed or a student needs one
    has_teacher = any(methods[s.label].name == "teacher" for s in order)
    return methods[unit.variant].needs_teacher or (has_teacher and config.evaluation.analyses)


def finished_before(folder: ExperimentFolder, units: list[Unit], *, analyses: bool) -> bool:
    """Whether ``folder`` holds this experiment complete (every unit, its status, report and analyses), with every
    checkpoint sound (a damaged one is refused here, in one line, as loading it would be): then nothing is written."""
    out = folder.path
    if folder.mode != "resume" or stored_status(out) != "complete" or not (out / REPORT_FILE).is_file():
        return False
    if analyses and not (out / ANALYSES_FILE).is_file():
        return False
    if any(folder.finished(u.part, u.variant, u.seed) is None for u in units):
        return False
    with torch.random.fork_rng(devices=[]):
        for u in units:
            load_checkpoint(folder.unit_dir(u.part, u.variant, u.seed), "cpu")
    return True


def group_units(units: list[Unit], configs: dict[str, RunConfig]) -> list[tuple[Unit, ...]]:
    """The jobs that run ``units`` (plan order): one unit each, except where a variant trains as an ensemble
    (``training.ensemble: seeds``): then its seeds of a part are one job, placed where its first seed was planned."""
    jobs: dict[tuple, list[Unit]] = {}
    for u in units:
        jobs.setdefault((u.part, u.variant) if configs[u.part].ensembles(u.method, u.variant) else (u,), []).append(u)
    return [tuple(members) for members in jobs.values()]


def unit_task(
    part: Part,
    job: Unit | tuple[Unit, ...],
    folder: ExperimentFolder,
    *,
    device: str,
    threads: int | None,
    embedding: bool | int,
) -> dict:
    """The plain-data input of :func:`corekd.experiments.unit.run_unit` (a student carries its teacher's files).

    ``job``: one unit, or the seeds of one variant trained as an ensemble (then ``seeds`` and ``teachers`` are lists
    and ``embedding_seed`` says which seed's t-SNE points to keep); ``embedding``: keep the t-SNE points (a unit),
    or the seed whose points to keep (an ensemble)."""
    units = job if isinstance(job, tuple) else (job,)
    first = units[0]
    spec = next(s for s in part.setup.order if s.label == first.variant)

    def teacher_files(unit: Unit) -> dict | None:
        if not uses_teacher(part.config, unit):
            return None
        where = folder.unit_dir(unit.part, "teacher", unit.seed)
        return {name: (where / name).read_bytes() for name in CHECKPOINT_FILES}

    task = {
        "cell": first.id,
        "config": part.config.model_dump_json(),
        "config_path": str(part.config_path) if part.config_path else None,
        "spec": spec.model_dump(mode="json"),
        "device": device,
        "threads": threads,
    }
    if isinstance(job, tuple):
        return {
            **task,
            "cell": ", ".join(u.id for u in units),
            "seeds": [u.seed for u in units],
            "teachers": [teacher_files(u) for u in units],
            "embedding_seed": embedding,
        }
    return {**task, "seed": first.seed, "teacher": teacher_files(first), "embedding": embedding}


def execute(
    jobs: list[tuple[Unit, ...]],
    *,
    ready: Callable[[Unit], bool],
    task: Callable[[tuple[Unit, ...]], dict],
    runner,
    started: Callable[[tuple[Unit, ...], int], None],
    finished: Callable[[Unit, dict, int], None],
    failed: Callable[[Unit, BaseException], list[Unit]],
) -> None:
    """Run ``jobs`` (plan order; a job is one unit, or an ensemble's units) on ``runner``: at most
    ``runner.capacity`` at once, each as soon as all its units are ``ready`` (their teachers finished), the earliest
    in plan order first. ``failed`` returns the units that cannot run any more (a failed teacher's students), which
    leave their jobs; ``started`` is called per job, ``finished`` per unit, with the number of jobs running. A
    KeyboardInterrupt (or any error of the driver itself) stops the runner's jobs and propagates."""
    todo = [job for job in jobs if job]
    pending: dict = {}
    try:
        while todo or pending:
            while len(pending) < runner.capacity:
                nxt = next((job for job in todo if all(ready(u) for u in job)), None)
                if nxt is None:
                    break
                todo.remove(nxt)
                started(nxt, len(pending) + 1)
                pending[runner.submit(task(nxt))] = nxt
            if not pending:
                break
            for handle, outcome in runner.wait(list(pending)):
                job = pending.pop(handle)
                if isinstance(outcome, BaseException):
                    blocked: set[Unit] = set()
                    for u in job:
                        blocked |= set(failed(u, outcome))
                    todo = [kept for kept in (tuple(u for u in j if u not in blocked) for j in todo) if kept]
                else:
                    members = outcome["members"] if "members" in outcome else [outcome]
                    for u, member in zip(job, members, strict=True):
                        finished(u, member, len(pending))
    except BaseException:  # interrupted, or the driver itself failed (a full disk): stop the workers, keep the saved
        runner.close(kill=True, pending=list(pending))
        raise
    runner.close()


def _task(
    part: Part, job: tuple[Unit, ...], folder: ExperimentFolder, *, device: str, threads: int | None, first_seed: int
) -> dict:
    """A job's task: a unit's (its t-SNE points kept for the first seed), or an ensemble's."""
    if len(job) == 1 and not part.config.ensembles(job[0].method, job[0].variant):
        return unit_task(part, job[0], folder, device=device, threads=threads, embedding=job[0].seed == first_seed)
    return unit_task(part, job, folder, device=device, threads=threads, embedding=first_seed)


def read_embedding(path: Path):
    import numpy as np

    with np.load(path) as data:
        return data["fused"], data["target"]


# ------------------------------------------------------------------ corekd run
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
    """Train and evaluate every configured method for every seed; write config, results, analyses, report, checkpoints.

    ``out_dir`` must be new or empty, or an earlier run of the same config with ``resume=True`` (finished models are
    kept; a finished run is left as it is), or any earlier run with ``overwrite=True`` (it is moved aside). A config
    with a ``sweep`` runs one such run per value into ``OUT/<option>=<value>/``, then writes sweep.json and sweep.md.
    """
    config, config_path = resolve_config(config, seeds=seeds, device=device)
    out = Path(out_dir) if out_dir is not None else Path("runs") / config.name
    reporter = reporter or Reporter()
    command = command or f"corekd run {config_path or '<config>'} --out {out}"
    if config.sweep is not None:
        return _run_sweep(
            config, config_path, out, reporter=reporter, command=command, resume=resume, overwrite=overwrite
        )
    return _run_one(
        config,
        config_path,
        out,
        reporter=reporter,
        command=command,
        resume=resume,
        overwrite=overwrite,
        device_flag=device is not None,
    )


def _normalised(raw: object) -> object:
    """A stored or given run config resolved alike (a run written by an earlier corekd lacks settings added since)."""
    try:
        return yaml.safe_load(dump_config(validate_config(raw)))
    except CorekdError:
        return raw  # not a valid config today: compared as written, so the difference is named


def _device(config: RunConfig, config_path: Path | None, flag: bool) -> torch.device:
    try:
        return resolve_device(config.device)
    except CorekdError as exc:
        where = {"field": "--device"} if flag else {"path": config_path, "field": "device"}
        raise CorekdError(exc.detail, **where) from None


def _check_run_folder(
    out: Path, config: RunConfig, config_path: Path | None, *, resume: bool, overwrite: bool, nested: bool = False
) -> ExperimentFolder:
    given = _normalised(yaml.safe_load(dump_config(config)))
    folder = ExperimentFolder.check(
        out,
        RUN,
        given,
        mode="run",
        resume=resume,
        overwrite=overwrite,
        config_path=config_path,
        nested=nested,
        normalise=_normalised,
    )
    return folder


def _run_one(
    config: RunConfig,
    config_path: Path | None,
    out: Path,
    *,
    reporter: Reporter,
    command: str,
    resume: bool,
    overwrite: bool,
    device_flag: bool,
    nested: bool = False,
    interrupted_command: str | None = None,
) -> RunResult:
    dev = _device(config, config_path, device_flag)
    # The task (and regression's default selection metric) is settled before the folder is compared with a resumed run's.
    settle_task(config, peek_corpus_task(config), config_path)
    folder = _check_run_folder(out, config, config_path, resume=resume, overwrite=overwrite, nested=nested)
    setup = prepare_run(config, config_path, dev, command)
    folder.check_fingerprints(
        {"": setup.fingerprint}, config.data.path if config.data.source != "synthetic" else config_path
    )
    part = Part("", config, setup, config_path)
    units = plan_units({"": config}, config.seeds)
    resume_line = interrupted_command or f"{command} --resume"
    if finished_before(folder, units, analyses=config.evaluation.analyses):
        reporter.message(f"{out} holds this run, complete: nothing to do (the report is {out / 'report.md'})")
        return _result_from_folder(folder, units)

    # Everything is validated: from here on the output folder is written.
    if config.threads:
        torch.set_num_threads(config.threads)
    folder.open(dump_config(config), command, {"": setup.fingerprint})
    try:
        return _execute_run(folder, part, units, reporter=reporter, command=command, resume_line=resume_line)
    finally:
        folder.close()


def _result_from_folder(folder: ExperimentFolder, units: list[Unit]) -> RunResult:
    saved = [folder.finished(u.part, u.variant, u.seed) for u in units]
    return RunResult(
        folder.path,
        [r for s in saved if s for r in s["records"]],
        [s["training"] for s in saved if s],
        report=folder.path / REPORT_FILE,
        changed=False,
    )


def _execute_run(
    folder: ExperimentFolder, part: Part, units: list[Unit], *, reporter: Reporter, command: str, resume_line: str
) -> RunResult:
    out, config, setup = folder.path, part.config, part.setup
    ev = config.evaluation
    meta = setup.meta
    dev_name = str(resolve_device(config.device))
    remember_setup(config.model_dump_json(), str(part.config_path) if part.config_path else None, dev_name, setup)
    saved: dict[Unit, dict] = {}
    kept: list[str] = []
    first_seed = config.seeds[0]
    if folder.moved_to:
        reporter.message(f"moved the earlier run in {out} aside to {folder.moved_to}")
    for warning in meta["warnings"]:
        reporter.message(f"warning: {warning}")

    def save_results() -> None:
        records = [r for u in units if u in saved for r in saved[u]["records"]]
        trainings = [saved[u]["training"] for u in units if u in saved]
        folder.write_results({"meta": meta, "records": records, "trainings": trainings})

    def keep(unit: Unit, done: dict) -> None:
        if ev.analyses and unit.variant in setup.reported and done.get("analyses") is None:
            done = _analyse_saved(folder, part, unit, done, embedding=unit.seed == first_seed)
        saved[unit] = done
        kept.append(f"{unit.variant} seed {unit.seed}")
        reporter.end_model(f"{unit.variant} seed {unit.seed}: kept from the earlier attempt")

    def started(job: tuple[Unit, ...], running: int) -> None:
        first = job[0]
        label = f"{first.variant} seed {first.seed}"
        if config.ensembles(first.method, first.variant):
            label = f"{first.variant} seeds {', '.join(str(u.seed) for u in job)} (one ensemble)"
        reporter.start_model(label, config.training_for(first.method, first.variant).epochs)

    def finished(unit: Unit, outcome: dict, running: int) -> None:
        payload = {
            "label": unit.variant,
            "seed": unit.seed,
            "records": outcome["records"],
            "training": outcome["training"],
            "analyses": outcome["analyses"],
        }
        files = dict(outcome["checkpoint"])
        if outcome.get("embedding") is not None:
            files[EMBEDDING_FILE] = outcome["embedding"]
        folder.save_unit("", unit.variant, unit.seed, payload, files)  # the model is finished from here
        saved[unit] = payload
        kept.append(f"{unit.variant} seed {unit.seed}")
        save_results()
        s = outcome["summary"]
        score = "n/a" if s["best_score"] is None else f"{s['best_score']:.4f}"
        reporter.end_model(
            f"{unit.variant} seed {unit.seed}: epoch {s['selected_epoch']}/{s['epochs_run']} selected, "
            f"dev {config.training.select_metric} {score}, {s['seconds']:.1f} s"
        )

    def failed(unit: Unit, exc: BaseException) -> list[Unit]:
        raise exc

    clock = time.perf_counter()
    try:
        with reporter:
            reporter.plan(len(units))
            todo = []
            for unit in units:
                done = folder.finished("", unit.variant, unit.seed)
                if done is not None:
                    keep(unit, done)
                else:
                    todo.append(unit)
            execute(
                group_units(todo, {"": config}),
                ready=lambda u: True,
                runner=SequentialRunner(on_epoch=reporter.epoch),
                task=lambda job: _task(part, job, folder, device=dev_name, threads=None, first_seed=first_seed),
                started=started,
                finished=finished,
                failed=failed,
            )
            meta["status"] = "complete"
            meta["seconds"] = round(time.perf_counter() - clock, 1)
            _finish_run(folder, part, units, saved, meta)
    except (KeyboardInterrupt, Exception) as exc:
        if not by_signal(exc):
            raise
        with signals_deferred():
            meta["status"] = "interrupted"
            meta.pop("seconds", None)
            _finish_run(folder, part, units, saved, meta)
        raise Interrupted(
            f"interrupted: kept {len(kept)} finished model(s) of {len(units)} in {out} (checkpoints, records, "
            f"results.json); resume with: {resume_line}",
            out,
            len(kept),
            len(units),
        ) from None
    reporter.message(f"wrote {out / 'report.md'}, {out / 'results.json'}, {out / 'config.yaml'}, {out / 'checkpoints'}")
    records = [r for u in units if u in saved for r in saved[u]["records"]]
    return RunResult(out, records, [saved[u]["training"] for u in units if u in saved], report=out / REPORT_FILE)


def _analyse_saved(folder: ExperimentFolder, part: Part, unit: Unit, done: dict, *, embedding: bool) -> dict:
    """A unit finished by an older corekd (no analyses part saved): analysed again from its checkpoint."""
    setup = part.setup
    dev = resolve_device(part.config.device)
    spec = next(s for s in setup.order if s.label == unit.variant)
    where = folder.unit_dir(unit.part, unit.variant, unit.seed)
    model = model_from_files({n: (where / n).read_bytes() for n in CHECKPOINT_FILES}, dev)
    teacher = None
    if unit.method == "teacher":
        teacher = model.eval().requires_grad_(False)
    elif uses_teacher(part.config, unit):
        tdir = folder.unit_dir(unit.part, "teacher", unit.seed)
        teacher = model_from_files({n: (tdir / n).read_bytes() for n in CHECKPOINT_FILES}, dev).eval()
        teacher.requires_grad_(False)
    analyses, points = analyse(
        setup,
        spec,
        unit.seed,
        model,
        teacher,
        dev,
        embedding,
        done.get("records"),
        done.get("training", {}).get("history"),
    )
    if points is not None:
        atomic_write(where / EMBEDDING_FILE, lambda p: Path(p).write_bytes(points))
    return {**done, "analyses": analyses}


def _finish_run(folder: ExperimentFolder, part: Part, units: list[Unit], saved: dict[Unit, dict], meta: dict) -> None:
    """analyses.json (with its figures), report.md/report.html, then results.json (its status last)."""
    out, config, setup = folder.path, part.config, part.setup
    records = [r for u in units if u in saved for r in saved[u]["records"]]
    trainings = [saved[u]["training"] for u in units if u in saved]
    parts = [saved[u]["analyses"] for u in units if u in saved and saved[u].get("analyses")]
    if config.evaluation.analyses and parts:
        payload = merge_parts(parts)
        figures: list[str] = []
        if config.evaluation.figures and meta["status"] == "complete":
            embeddings = {}
            for u in units:
                path = folder.unit_dir("", u.variant, u.seed) / EMBEDDING_FILE
                if u in saved and u.seed == config.seeds[0] and path.is_file():
                    embeddings[u.variant] = read_embedding(path)
            figures = write_run_figures(out, embeddings, records, setup.task, setup.labels, TSNE_CONDITION)
        payload["figures"] = figures
        text = json.dumps(payload, indent=1)
        atomic_write(out / ANALYSES_FILE, lambda p: Path(p).write_text(text))
    write_report(out, meta, records, trainings)
    folder.write_results({"meta": meta, "records": records, "trainings": trainings})


# ------------------------------------------------------------------ sweeps: one run per value
def _run_sweep(
    config: RunConfig,
    config_path: Path | None,
    out: Path,
    *,
    reporter: Reporter,
    command: str,
    resume: bool,
    overwrite: bool,
) -> RunResult:
    """Every value's run in turn (``OUT/<option>=<value>/``, the run layout), then sweep.json and sweep.md."""
    sweep = config.sweep
    assert sweep is not None
    folder = ExperimentFolder.check(
        out,
        RUN,
        _normalised(yaml.safe_load(dump_config(config))),
        mode="run",
        resume=resume,
        overwrite=overwrite,
        config_path=config_path,
        normalise=_normalised,
    )
    subs = [(v, sub_config(config, v, config_path)) for v in sweep.values]
    existed = out.exists()
    folder.open(dump_config(config), command, {})
    try:
        if folder.moved_to:
            reporter.message(f"moved the earlier sweep in {out} aside to {folder.moved_to}")
        kind = option_type(sweep.option)
        changed = False
        for i, (value, cfg) in enumerate(subs, 1):
            sub = out / folder_name(sweep.option, value, kind)
            reporter.message(f"sweep {sweep.option} = {value_text(value, kind)} ({i}/{len(subs)}): {sub}")
            sub_resume = resume and sub.exists()
            try:
                changed |= _run_one(
                    cfg,
                    config_path,
                    sub,
                    reporter=reporter,
                    command=command,
                    resume=sub_resume,
                    overwrite=False,
                    device_flag=False,
                    nested=True,
                    interrupted_command=f"{command} --resume",
                ).changed
            except Interrupted as stop:
                raise Interrupted(
                    f"interrupted: kept {stop.done} finished model(s) of {stop.total} in {out} "
                    f"(checkpoints, records, results.json); resume with: {command} --resume",
                    out,
                    stop.done,
                    stop.total,
                ) from None
            except CorekdError:
                if i == 1 and folder.mode == "new":  # refused before anything of a value's run was written
                    folder.close()
                    _remove_new(out, keep_folder=existed)
                raise
        if not changed and (out / SWEEP_JSON).is_file() and (out / f"{SWEEP_STEM}.md").is_file():  # a finished sweep
            reporter.message(f"{out} holds this sweep, complete: nothing to do (the report is {out / SWEEP_STEM}.md)")
            return RunResult(out, [], [], report=out / f"{SWEEP_STEM}.md", changed=False)
        path = write_summary(out, config, command)
    finally:
        folder.close()
    reporter.message(f"wrote {path}, {out / SWEEP_JSON}")
    return RunResult(out, [], [], report=path)


def _remove_new(out: Path, keep_folder: bool) -> None:
    """Remove what this call just wrote into a new (or empty) sweep folder when nothing else is there."""
    if {p.name for p in out.iterdir() if not p.name.startswith(".")} <= {CONFIG_FILE, RUN.marker}:
        for p in out.iterdir():
            p.unlink()
        if not keep_folder:
            out.rmdir()


# ------------------------------------------------------------------ corekd compare
def compare(
    config: GridConfig | str | Path,
    out_dir: str | Path | None = None,
    *,
    workers: int = 1,
    threads: int = 1,
    backend: str = "local",
    address: str | None = None,
    device: str | None = None,
    overwrite: bool = False,
    progress: GridProgress | None = None,
    command: str | None = None,
    report: bool = True,
) -> GridResult:
    """Run every unfinished cell of a grid; write results.json, analyses.json and the report.

    Everything (the config, every corpus against its methods, the device, the folder) is checked before anything is
    written. A KeyboardInterrupt stops the running cells and raises :class:`Interrupted`; finished cells are kept.
    """
    config_path = None if isinstance(config, GridConfig) else Path(config)
    grid = config if isinstance(config, GridConfig) else load_grid(config)
    out = Path(out_dir) if out_dir is not None else Path("runs") / grid.name
    command = command or shlex.join(["corekd", "compare", str(config_path or "<config>"), "--out", str(out)])
    progress = progress or GridProgress()
    device = device or grid.base.device
    try:
        resolved_device = resolve_device(device)
    except CorekdError as exc:
        raise CorekdError(
            exc.detail,
            field="--device" if device != grid.base.device else "device",
            path=None if device != grid.base.device else config_path,
        ) from None
    folder = ExperimentFolder.check(
        out, GRID, grid.resolved(), mode="grid", overwrite=overwrite, config_path=config_path
    )
    resolved = grid.dump()  # as given (loading a corpus settles its task in the config: compared unsettled)
    parts, corpora_meta, fingerprints = [], {}, {}
    for key, cfg in grid.corpora.items():  # every corpus loads and fits its methods, or nothing is written
        try:
            setup = prepare_run(cfg, config_path, resolved_device, command)
        except CorekdError as exc:
            raise CorekdError(f"corpus '{key}': {exc.detail}", path=exc.path, field=exc.field) from None
        corpora_meta[key] = {k: v for k, v in setup.meta.items() if k not in RUN_META_LEFT_OUT}
        corpora_meta[key]["select_metric"] = cfg.training.select_metric
        fingerprints[key] = setup.fingerprint
        parts.append(Part(key, cfg, setup, config_path))
    folder.check_fingerprints(fingerprints, config_path)
    units = plan_grid(grid)
    runner = make_runner(backend, workers, threads, address, str(resolved_device))
    if finished_before(folder, units, analyses=False):
        progress.message(f"{out} holds this grid, complete: nothing to do (the report is {out / 'report.md'})")
        runner.close()
        return GridResult(out, len(units), 0, [], out / REPORT_FILE, 0.0)

    # Everything is checked: from here on the folder is written.
    try:
        folder.open(resolved, command, fingerprints)
    except BaseException:
        runner.close()
        raise
    try:
        return _execute_grid(
            folder,
            grid,
            parts,
            units,
            runner,
            progress=progress,
            command=command,
            meta={
                "name": grid.name,
                "command": command,
                "seeds": grid.seeds,
                "variants": [{"variant": s.label, "method": s.name} for s in grid.base.methods],
                "reference": grid.reference,
                "corpora": corpora_meta,
                "workers": workers,
                "threads": threads,
                "backend": backend,
                "device": str(resolved_device),
                "corekd_version": __version__,
            },
            device=device,
            threads=threads,
            report=report,
        )
    finally:
        folder.close()


def assemble_grid(units: list[Unit], saved: dict[Unit, dict], meta: dict) -> tuple[dict, dict]:
    """results.json and analyses.json of a grid from its finished cells, in the plan's order."""
    records, trainings = [], []
    per_corpus: dict[str, list[dict]] = {}
    embeddings: dict[str, dict[str, str]] = {}
    for unit in units:
        cell = saved.get(unit)
        if cell is None:
            continue
        records += [{**r, "corpus": unit.part} for r in cell["records"]]
        trainings.append({**cell["training"], "corpus": unit.part})
        if cell.get("analyses"):
            per_corpus.setdefault(unit.part, []).append(cell["analyses"])
        if cell.get("embedding"):
            rel = GRID.unit_dir(Path(""), unit.part, unit.variant, unit.seed) / cell["embedding"]
            embeddings.setdefault(unit.part, {})[unit.variant] = str(rel)
    done = len(saved)
    results = {
        "format": GRID_FORMAT,
        "version": 1,
        "meta": {
            **meta,
            "cells": {"total": len(units), "done": done},
            "status": "complete" if done == len(units) else "partial",
        },
        "records": records,
        "trainings": trainings,
    }
    analyses = {
        "format": GRID_ANALYSES_FORMAT,
        "version": 1,
        "corpora": {k: merge_parts(v) for k, v in per_corpus.items()},
        "embeddings": embeddings,
        "figures": [],
    }
    return results, analyses


def _execute_grid(
    folder: ExperimentFolder,
    grid: GridConfig,
    parts: list[Part],
    units: list[Unit],
    runner,
    *,
    progress: GridProgress,
    command: str,
    meta: dict,
    device: str,
    threads: int,
    report: bool,
) -> GridResult:
    out = folder.path
    by_key = {p.key: p for p in parts}
    saved = {u: s for u in units if (s := folder.finished(u.part, u.variant, u.seed)) is not None}
    before = len(saved)
    todo = [u for u in units if u not in saved]
    failures: list[dict] = []
    ran = [0]
    clock = time.perf_counter()
    last_write = [0.0]

    def write(now: bool = True) -> None:
        if not now and time.perf_counter() - last_write[0] < REFRESH_SECONDS:
            return
        results, analyses = assemble_grid(
            units, saved, {**meta, "failed": failures, "seconds": round(time.perf_counter() - clock, 1)}
        )
        atomic_write(out / RESULTS_FILE, lambda p: Path(p).write_text(json.dumps(results, indent=1)))
        atomic_write(out / ANALYSES_FILE, lambda p: Path(p).write_text(json.dumps(analyses, indent=1)))
        last_write[0] = time.perf_counter()

    readers = {u for u in units if uses_teacher(by_key[u.part].config, u)}  # the cells that read their teacher

    def ready(u: Unit) -> bool:  # a cell that reads a teacher waits for its corpus and seed's teacher
        return u not in readers or Unit(u.part, u.seed, "teacher", "teacher") in saved

    def started(job: tuple[Unit, ...], running: int) -> None:
        progress.running(running)

    def finished(u: Unit, outcome: dict, running: int) -> None:
        files = dict(outcome["checkpoint"])
        if outcome.get("embedding") is not None:
            files[EMBEDDING_FILE] = outcome["embedding"]
        cell = {
            "cell": u.id,
            "corpus": u.part,
            "seed": u.seed,
            "variant": u.variant,
            "method": u.method,
            "records": outcome["records"],
            "training": outcome["training"],
            "analyses": outcome["analyses"],
            "embedding": EMBEDDING_FILE if outcome.get("embedding") is not None else None,
            "seconds": outcome["seconds"],
        }
        folder.save_unit(u.part, u.variant, u.seed, cell, files)
        saved[u] = cell
        ran[0] += 1
        write(now=False)
        progress.cell_done(u.id, outcome["seconds"], running)

    def failed(u: Unit, exc: BaseException) -> list[Unit]:
        failures.append(
            {"cell": u.id, "error": f"{type(exc).__name__}: {exc}", "user_error": isinstance(exc, CorekdError)}
        )
        progress.cell_failed(u.id, failures[-1]["error"])
        blocked = []
        if u.method == "teacher":  # its students cannot run
            blocked = [
                c for c in todo if (c.part, c.seed) == (u.part, u.seed) and c != u and c not in saved and c in readers
            ]
            failures.extend(
                {"cell": c.id, "error": f"not run: its teacher {u.id} failed", "user_error": failures[-1]["user_error"]}
                for c in blocked
            )
        return blocked

    first_seed = grid.seeds[0]
    try:
        with progress:
            if folder.moved_to:
                progress.message(f"moved the earlier grid in {out} aside to {folder.moved_to}")
            if before:
                progress.message(f"{before} of {len(units)} cells finished before: kept; running {len(todo)}")
            progress.plan(len(units), before)
            write()
            execute(
                group_units(todo, {p.key: p.config for p in parts}),
                ready=ready,
                runner=runner,
                task=lambda job: _task(
                    by_key[job[0].part], job, folder, device=device, threads=threads, first_seed=first_seed
                ),
                started=started,
                finished=finished,
                failed=failed,
            )
            seconds = round(time.perf_counter() - clock, 1)
            results, analyses = assemble_grid(units, saved, {**meta, "failed": failures, "seconds": seconds})
            atomic_write(out / RESULTS_FILE, lambda p: Path(p).write_text(json.dumps(results, indent=1)))
            atomic_write(out / ANALYSES_FILE, lambda p: Path(p).write_text(json.dumps(analyses, indent=1)))
            report_path = write_grid_report(out)[0] if report else None
    except (KeyboardInterrupt, Exception) as exc:
        if not by_signal(exc):
            raise
        with signals_deferred():
            write()
        raise Interrupted(
            f"interrupted: {len(saved)} of {len(units)} cells finished and kept in {out}; continue "
            f"with the same command: {command}",
            out,
            len(saved),
            len(units),
        ) from None
    return GridResult(out, len(units), ran[0], failures, report_path, seconds)
