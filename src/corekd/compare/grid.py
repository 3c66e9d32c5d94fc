"""``corekd compare``: every (corpus, seed, variant) cell of a grid, in parallel, resumable, with one report.

Layout of the grid folder (``docs/compare.md``)::

    OUT/corekd-grid.json                 marks the folder as a grid (format, version, command, corpus fingerprints)
    OUT/config.yaml                      the resolved grid config (compared when the grid is started again)
    OUT/cells/<corpus>/seed-<S>/<variant>/
        model.safetensors, model.json    the cell's checkpoint
        embedding.npz                    fused states at random:0.5 (first seed only, for the t-SNE panels)
        cell.json                        records, training entry, analyses rows; written last, atomically:
                                         its presence means the cell is finished
    OUT/results.json, analyses.json      assembled from the finished cells, in a fixed order
    OUT/figures/, report.md, report.html the grid report (corekd.compare.report)

Each corpus and seed trains its teacher once (a cell like any other); the students of that seed
wait for it and read it from its saved checkpoint. Started again with the same command, a grid
keeps every finished cell and runs only the missing ones; because every cell depends on its own
task only, the records are the same as an uninterrupted grid's.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from corekd.compare.backends import make_backend
from corekd.compare.cells import CHECKPOINT_FILES, Cell
from corekd.compare.config import GridConfig, load_grid
from corekd.config import MethodSpec
from corekd.errors import CorekdError
from corekd.evaluation.analyses import add_relative_to_no_kd
from corekd.files import atomic_write, move_aside
from corekd.methods import method_class
from corekd.progress import GridProgress
from corekd.rundir import config_difference
from corekd.version import __version__

MARKER_FILE = "corekd-grid.json"
CONFIG_FILE = "config.yaml"
RESULTS_FILE = "results.json"
ANALYSES_FILE = "analyses.json"
CELL_FILE = "cell.json"
EMBEDDING_FILE = "embedding.npz"
FORMAT = "corekd-grid"
ANALYSES_FORMAT = "corekd-grid-analyses"
VERSION = 1
REFRESH_SECONDS = 30.0  # results.json / analyses.json rewritten at most this often while cells finish
RUN_META_LEFT_OUT = ("command", "status", "device", "torch", "python", "seeds", "methods")  # grid-level, not per corpus


class GridInterrupted(Exception):
    """A grid stopped by SIGINT/SIGTERM; finished cells are kept."""

    def __init__(self, out: Path, done: int, total: int, command: str):
        self.out, self.done, self.total, self.command = out, done, total, command
        super().__init__(self.line())

    def line(self) -> str:
        return (f"interrupted: {self.done} of {self.total} cells finished and kept in {self.out}; "
                f"continue with the same command: {self.command}")


@dataclass
class GridResult:
    out_dir: Path
    cells: int
    ran: int  # cells run by this call (the others were finished before)
    failed: list[dict] = field(default_factory=list)  # {"cell", "error"}
    report: Path | None = None
    seconds: float = 0.0


# ------------------------------------------------------------------ the folder
def _read_json(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorekdError(f"not a readable {what} ({exc})", path=path) from None


def check_folder(out: Path, grid: GridConfig, *, overwrite: bool, config_path: Path | None) -> str:
    """``new``, ``continue`` (an earlier attempt of the same grid) or ``overwrite``; raise when ``out`` may not be used."""
    if out.exists() and not out.is_dir():
        raise CorekdError("expected a folder (new, empty or an earlier attempt of this grid), but this is a file",
                          path=out, field="--out")
    if not out.exists() or not any(out.iterdir()):
        return "new"
    if not (out / MARKER_FILE).is_file():
        inside = config_path is not None and out.resolve() in Path(config_path).resolve().parents
        hint = f"; your config lies inside it: choose e.g. --out {out / 'grid'}" if inside else "; choose a new or empty folder"
        raise CorekdError(f"a non-empty folder that is not a corekd grid (nothing was written){hint}", path=out,
                          field="--out")
    if overwrite:
        return "overwrite"
    stored_path = out / CONFIG_FILE
    try:
        stored = yaml.safe_load(stored_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise CorekdError("the grid's resolved config is missing or unreadable, so it cannot be continued; use "
                          "--overwrite", path=stored_path) from None
    diff = config_difference(stored, grid.resolved())
    if diff:
        name, was, now = diff
        raise CorekdError(f"the configuration differs from the grid in {out} (stored {was!r}, given {now!r}); continue "
                          "it with the same config, or use --overwrite (it is moved aside) or another --out",
                          path=stored_path, field=name or "<root>")
    return "continue"


def read_cell(out: Path, cell: Cell) -> dict | None:
    """A finished cell's saved outcome, or None when it is not finished."""
    path = out / cell.folder / CELL_FILE
    if not path.is_file():
        return None
    saved = _read_json(path, "cell file")
    if not isinstance(saved, dict) or saved.get("cell") != cell.id or not isinstance(saved.get("records"), list):
        raise CorekdError(f"malformed cell file (expected cell '{cell.id}' with its records); delete the cell's folder "
                          "to run it again", path=path)
    return saved


def save_cell(out: Path, cell: Cell, result: dict) -> dict:
    """Write a cell's checkpoint and embedding, then its cell.json (last: the cell is finished from here)."""
    folder = out / cell.folder
    folder.mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINT_FILES:
        atomic_write(folder / name, lambda p, b=result["checkpoint"][name]: Path(p).write_bytes(b))
    if result.get("embedding") is not None:
        atomic_write(folder / EMBEDDING_FILE, lambda p: Path(p).write_bytes(result["embedding"]))
    saved = {"cell": cell.id, "corpus": cell.corpus, "seed": cell.seed, "variant": cell.variant, "method": cell.method,
             "records": result["records"], "training": result["training"], "analyses": result["analyses"],
             "embedding": EMBEDDING_FILE if result.get("embedding") is not None else None,
             "seconds": result["seconds"]}
    atomic_write(folder / CELL_FILE, lambda p: Path(p).write_text(json.dumps(saved)))
    return saved


# ------------------------------------------------------------------ the plan
def plan_cells(grid: GridConfig) -> list[Cell]:
    """Every cell in the grid's fixed order: corpus (config order), seed, then the teacher and the students."""
    from corekd.pipeline import method_order

    cells = []
    for key, cfg in grid.corpora.items():
        methods, order, _ = method_order(cfg)
        for seed in grid.seeds:
            cells += [Cell(key, seed, spec.label, methods[spec.label].name) for spec in order]
    return cells


def uses_teacher(grid: GridConfig, cell: Cell) -> bool:
    """Whether ``cell`` reads its corpus and seed's teacher: to distil from it, or (analyses on) to measure its state
    drift and conflict rejection against it, as ``corekd run`` does for every model of a seed that has a teacher."""
    if cell.method == "teacher":
        return False
    cfg = grid.corpora[cell.corpus]
    has_teacher = any(s.name == "teacher" for s in cfg.methods) or any(
        method_class(s.name).needs_teacher for s in cfg.methods)
    return method_class(cell.method).needs_teacher or (has_teacher and cfg.evaluation.analyses)


def cell_task(grid: GridConfig, cell: Cell, out: Path, *, device: str, threads: int,
              config_path: Path | None) -> dict:
    """The plain-data input of :func:`corekd.compare.cells.run_cell` for ``cell`` (a student carries its teacher's
    saved checkpoint files)."""
    cfg = grid.corpora[cell.corpus]
    spec = {s.label: s for s in cfg.methods}.get(cell.variant) or MethodSpec(name="teacher")  # an unlisted teacher
    teacher = None
    if uses_teacher(grid, cell):
        folder = out / Cell(cell.corpus, cell.seed, "teacher", "teacher").folder
        teacher = {name: (folder / name).read_bytes() for name in CHECKPOINT_FILES}
    return {
        "cell": cell.id,
        "config": cfg.model_dump_json(),
        "config_path": str(config_path) if config_path else None,
        "spec": spec.model_dump(mode="json"),
        "seed": cell.seed,
        "device": device,
        "threads": threads,
        "teacher": teacher,
        "embedding": cell.seed == grid.seeds[0],
    }


# ------------------------------------------------------------------ assembling results.json and analyses.json
def assemble(cells: list[Cell], saved_cells: dict[Cell, dict], meta: dict) -> tuple[dict, dict]:
    """results.json and analyses.json from the finished cells' saved outcomes (``saved_cells``: cell -> its cell.json),
    in the plan's order (the same for any attempt)."""
    records, trainings = [], []
    per_corpus: dict[str, dict] = {}
    embeddings: dict[str, dict[str, str]] = {}
    done = 0
    for cell in cells:
        saved = saved_cells.get(cell)
        if saved is None:
            continue
        done += 1
        records += [{**r, "corpus": cell.corpus} for r in saved["records"]]
        trainings.append({**saved["training"], "corpus": cell.corpus})
        part = saved.get("analyses")
        if part:
            merged = per_corpus.setdefault(cell.corpus, {
                "format": "corekd-analyses", "version": 1, "pairs": part["pairs"], "task": part["task"], "drift": [],
                "mstate_drift": [], "rejection": [], "natural_conflicts": {**part["natural_conflicts"], "records": []}, "notes": [],
            })
            merged["drift"] += part["drift"]
            merged["mstate_drift"] += part.get("mstate_drift", [])  # cells saved before it existed have none
            merged["rejection"] += part["rejection"]
            merged["natural_conflicts"]["records"] += part["natural_conflicts"]["records"]
            merged["notes"] += [n for n in part["notes"] if n not in merged["notes"]]
        if saved.get("embedding"):
            embeddings.setdefault(cell.corpus, {})[cell.variant] = str(cell.folder / saved["embedding"])
    for merged in per_corpus.values():
        merged["drift"] = add_relative_to_no_kd(merged["drift"])
        merged["mstate_drift"] = add_relative_to_no_kd(merged["mstate_drift"])
    complete = done == len(cells)
    results = {"format": FORMAT, "version": VERSION,
               "meta": {**meta, "cells": {"total": len(cells), "done": done},
                        "status": "complete" if complete else "partial"},
               "records": records, "trainings": trainings}
    analyses = {"format": ANALYSES_FORMAT, "version": VERSION, "corpora": per_corpus, "embeddings": embeddings,
                "figures": []}
    return results, analyses


def write_assembled(out: Path, results: dict, analyses: dict) -> None:
    atomic_write(out / RESULTS_FILE, lambda p: Path(p).write_text(json.dumps(results, indent=1)))
    atomic_write(out / ANALYSES_FILE, lambda p: Path(p).write_text(json.dumps(analyses, indent=1)))


# ------------------------------------------------------------------ the driver
def run_grid(
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
    """Run every unfinished cell of the grid; write results.json, analyses.json and the report.

    Everything (the config, every corpus against its methods, the device, the folder) is checked
    before anything is written. A KeyboardInterrupt stops the running cells and raises
    :class:`GridInterrupted`; the finished cells are kept.
    """
    from corekd.device import resolve_device
    from corekd.pipeline import prepare_run

    config_path = None if isinstance(config, GridConfig) else Path(config)
    grid = config if isinstance(config, GridConfig) else load_grid(config)
    out = Path(out_dir) if out_dir is not None else Path("runs") / grid.name
    command = command or shlex.join(["corekd", "compare", str(config_path or "<config>"), "--out", str(out)])
    progress = progress or GridProgress()
    device = device or grid.base.device
    try:
        resolved_device = resolve_device(device)
    except CorekdError as exc:
        raise CorekdError(exc.detail, field="--device" if device != grid.base.device else "device",
                          path=None if device != grid.base.device else config_path) from None
    mode = check_folder(out, grid, overwrite=overwrite, config_path=config_path)
    resolved = grid.dump()  # as given (loading a corpus settles its task in the config: compared unsettled)
    corpora_meta, fingerprints = {}, {}
    for key, cfg in grid.corpora.items():  # every corpus loads and fits its methods, or nothing is written
        try:
            setup = prepare_run(cfg, config_path, resolved_device, command)
        except CorekdError as exc:
            raise CorekdError(f"corpus '{key}': {exc.detail}", path=exc.path, field=exc.field) from None
        corpora_meta[key] = {k: v for k, v in setup.meta.items() if k not in RUN_META_LEFT_OUT}
        corpora_meta[key]["select_metric"] = cfg.training.select_metric
        fingerprints[key] = setup.fingerprint
    if mode == "continue":
        stored = _read_json(out / MARKER_FILE, "grid marker")
        if not isinstance(stored, dict) or stored.get("format") != FORMAT:
            raise CorekdError(f"not a {FORMAT} marker; use --overwrite to start the grid again", path=out / MARKER_FILE)
        changed = [k for k, fp in (stored.get("corpus_fingerprints") or {}).items() if fingerprints.get(k) != fp]
        if changed:
            raise CorekdError(f"the data of corpus '{changed[0]}' differs from the one this grid started with; continue "
                              "with the same data, or use --overwrite", path=out / MARKER_FILE, field="corpus_fingerprints")
    cells = plan_cells(grid)
    backend_impl = make_backend(backend, workers, threads, address, str(resolved_device))

    # Everything is checked: from here on the folder is written.
    moved = move_aside(out) if mode == "overwrite" else None
    out.mkdir(parents=True, exist_ok=True)
    if mode != "continue":
        marker = {"format": FORMAT, "version": VERSION, "corekd_version": __version__,
                  "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": command,
                  "corpus_fingerprints": fingerprints}
        atomic_write(out / CONFIG_FILE, lambda p: Path(p).write_text(resolved))
        atomic_write(out / MARKER_FILE, lambda p: Path(p).write_text(json.dumps(marker, indent=1)))
    variants = [{"variant": s.label, "method": s.name} for s in grid.base.methods]
    meta = {"name": grid.name, "command": command, "seeds": grid.seeds, "variants": variants,
            "reference": grid.reference, "corpora": corpora_meta, "workers": workers, "threads": threads,
            "backend": backend, "device": str(resolved_device), "corekd_version": __version__}

    saved_cells = {c: saved for c in cells if (saved := read_cell(out, c)) is not None}
    finished = set(saved_cells)
    todo = [c for c in cells if c not in finished]
    teachers_done = {(c.corpus, c.seed) for c in finished if c.method == "teacher"}

    def ready(c: Cell) -> bool:  # a cell that reads a teacher waits for its corpus and seed's teacher
        return not uses_teacher(grid, c) or (c.corpus, c.seed) in teachers_done

    queue = deque(c for c in todo if ready(c))
    waiting = [c for c in todo if not ready(c)]
    pending: dict = {}
    failed: list[dict] = []
    ran = 0
    started = time.perf_counter()

    last_write = [0.0]

    def refresh(now: bool = True) -> None:
        """results.json and analyses.json from the cells finished so far (the cell files are what is durable: while
        cells finish, at most every REFRESH_SECONDS, so a large grid does not rewrite them after every cell)."""
        if not now and time.perf_counter() - last_write[0] < REFRESH_SECONDS:
            return
        results, analyses = assemble(cells, saved_cells, {**meta, "failed": failed,
                                                          "seconds": round(time.perf_counter() - started, 1)})
        write_assembled(out, results, analyses)
        last_write[0] = time.perf_counter()

    refresh()
    with progress:
        if moved:
            progress.message(f"moved the earlier grid in {out} aside to {moved}")
        if finished:
            progress.message(f"{len(finished)} of {len(cells)} cells finished before: kept; running {len(todo)}")
        progress.plan(len(cells), len(finished))
        try:
            while queue or pending:
                while queue and len(pending) < backend_impl.capacity:
                    cell = queue.popleft()
                    task = cell_task(grid, cell, out, device=device, threads=threads, config_path=config_path)
                    pending[backend_impl.submit(task)] = cell
                    progress.running(len(pending))
                for handle, outcome in backend_impl.wait(list(pending)):
                    cell = pending.pop(handle)
                    if isinstance(outcome, BaseException):
                        failed.append({"cell": cell.id, "error": f"{type(outcome).__name__}: {outcome}",
                                       "user_error": isinstance(outcome, CorekdError)})
                        progress.cell_failed(cell.id, failed[-1]["error"])
                        if cell.method == "teacher":  # its students cannot run
                            blocked = [c for c in waiting if (c.corpus, c.seed) == (cell.corpus, cell.seed)]
                            waiting = [c for c in waiting if c not in blocked]
                            failed += [{"cell": c.id, "error": f"not run: its teacher {cell.id} failed",
                                        "user_error": failed[-1]["user_error"]} for c in blocked]
                        continue
                    saved_cells[cell] = save_cell(out, cell, outcome)
                    ran += 1
                    if cell.method == "teacher":
                        teachers_done.add((cell.corpus, cell.seed))
                        queue.extend(c for c in waiting if ready(c))
                        waiting = [c for c in waiting if not ready(c)]
                    refresh(now=False)
                    progress.cell_done(cell.id, outcome["seconds"], len(pending))
        except KeyboardInterrupt:
            backend_impl.close(kill=True, pending=list(pending))
            refresh()
            raise GridInterrupted(out, len(finished) + ran, len(cells), command) from None
        except BaseException:  # the driver itself failed (a full disk, say): stop the workers, keep what is saved
            backend_impl.close(kill=True, pending=list(pending))
            raise
        backend_impl.close()
    seconds = round(time.perf_counter() - started, 1)
    results, analyses = assemble(cells, saved_cells, {**meta, "failed": failed, "seconds": seconds})
    write_assembled(out, results, analyses)
    report_path = None
    if report:
        from corekd.compare.report import write_grid_report

        report_path = write_grid_report(out)[0]
    return GridResult(out, len(cells), ran, failed, report_path, seconds)
