"""The one resumable output folder of every experiment: a run, a sweep or a grid.

Three layouts, one set of rules (``docs/configuration.md``, "Output folders")::

    run    OUT/corekd-run.json, config.yaml, results.json, analyses.json, report.md, report.html
           OUT/checkpoints/<label>/seed<S>/     model.safetensors, model.json, complete.json
    sweep  OUT/corekd-run.json, config.yaml (with its sweep section), sweep.json, sweep.md
           OUT/<option>=<value>/                one run folder per value (the run layout)
    grid   OUT/corekd-grid.json, config.yaml, results.json, analyses.json, report.md, report.html
           OUT/cells/<corpus>/seed-<S>/<variant>/  model.safetensors, model.json, embedding.npz, cell.json

A unit (one trained model) is finished when its done-file (``complete.json`` / ``cell.json``) exists: it is
written last and atomically, after the checkpoint.

The promises, and how they are kept:

- **Creation is atomic.** A new folder is built as a hidden sibling (marker, resolved config) and renamed into
  place; a killed or failed creation leaves nothing at ``OUT`` (or the empty folder it was). A folder an older
  corekd left half-created (a config.yaml and no marker, nothing else) is accepted by ``--resume`` (it starts
  afresh) and ``--overwrite``.
- **One writer at a time.** The writer holds an OS lock (``flock``) on ``OUT/.corekd.lock`` while it runs; a second
  writer is refused in one line naming the holder's pid and command.
- **A finished folder is not rewritten in place.** Resuming a complete folder changes nothing; results.json only
  grows; every file is replaced by an atomic rename, so a kill leaves the earlier file whole.
- The resolved configuration and the corpus must match on resume (the first differing field is named).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from corekd.errors import CorekdError, from_validation_error
from corekd.files import CONFIG_FILE, GRID_FORMAT, RESULTS_FILE, atomic_write, move_aside
from corekd.version import __version__

LOCK_FILE = ".corekd.lock"
CHECKPOINTS = "checkpoints"
RUN_MARKER = "corekd-run.json"
GRID_MARKER = "corekd-grid.json"
UNIT_DONE_FILE = "complete.json"  # a run's finished model
CELL_FILE = "cell.json"  # a grid's finished cell
EMBEDDING_FILE = "embedding.npz"
MARKERS = (RUN_MARKER, GRID_MARKER)
VERSION = 1

Mode = Literal["new", "resume", "overwrite"]


@dataclass(frozen=True)
class Layout:
    """Where a kind of experiment keeps its files."""

    kind: Literal["run", "grid"]
    marker: str
    format: str
    done_file: str

    def unit_dir(self, root: Path, part: str, label: str, seed: int) -> Path:
        if self.kind == "run":
            return root / CHECKPOINTS / label / f"seed{seed}"
        return root / "cells" / part / f"seed-{seed}" / label


RUN = Layout("run", RUN_MARKER, "corekd-run", UNIT_DONE_FILE)
GRID = Layout("grid", GRID_MARKER, GRID_FORMAT, CELL_FILE)


def read_json_file(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorekdError(
            f"not a readable {what} ({exc}); move the folder aside or choose another --out", path=path
        ) from None


def config_difference(stored: object, given: object, where: str = "") -> tuple[str, object, object] | None:
    """The first field (dotted path) where two resolved configurations differ, with both values."""
    if isinstance(stored, dict) and isinstance(given, dict):
        for key in list(dict.fromkeys([*stored, *given])):
            sub = f"{where}.{key}" if where else str(key)
            if key not in stored or key not in given:
                return sub, stored.get(key, "<absent>"), given.get(key, "<absent>")
            found = config_difference(stored[key], given[key], sub)
            if found:
                return found
        return None
    if isinstance(stored, list) and isinstance(given, list):
        if len(stored) != len(given):
            return where, stored, given
        for i, (a, b) in enumerate(zip(stored, given, strict=True)):
            found = config_difference(a, b, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if stored == given else (where, stored, given)


def corpus_fingerprint(corpus) -> str:
    """A hash of everything a run reads from a corpus: names, labels, dims, dialogues, features (and frames)."""
    h = hashlib.sha256()
    h.update(json.dumps([corpus.name, corpus.labels, {m: s.dim for m, s in corpus.modalities.items()}]).encode())
    for d in corpus.dialogues:
        h.update(json.dumps([d.id, d.split, d.utterance_ids, d.speakers]).encode())
        h.update(d.labels.tobytes())
        h.update(d.available.tobytes())
        for m in corpus.modality_names:
            h.update(d.features[m].tobytes())
            if m in d.frames:  # a sequence modality: the frames a run reads (vector corpora hash as before)
                h.update(d.frames[m][1].tobytes())
                h.update(np.ascontiguousarray(d.frames[m][0]).tobytes())
    return h.hexdigest()


def record_key(record: object) -> str:
    return json.dumps(record, sort_keys=True)


# ------------------------------------------------------------------ what a folder is
def _contents(out: Path) -> set[str]:
    """The names in ``out`` that count (the lock file and hidden temporary files do not)."""
    return {p.name for p in out.iterdir() if not p.name.startswith(".")}


def is_run_folder(out: Path) -> bool:
    """A folder written by ``corekd run``: this version's marker, or an older run's config.yaml and results.json."""
    out = Path(out)
    if (out / RUN_MARKER).is_file():
        return True
    if not ((out / RESULTS_FILE).is_file() and (out / CONFIG_FILE).is_file()):
        return False
    try:
        payload = json.loads((out / RESULTS_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(payload, dict) and {"meta", "records"} <= set(payload)


def is_grid_folder(out: Path) -> bool:
    return (Path(out) / GRID_MARKER).is_file()


def half_created(out: Path) -> bool:
    """What an older corekd left when it was killed between writing config.yaml and its marker: nothing else."""
    return bool(_contents(out)) and _contents(out) <= {CONFIG_FILE}


def enclosing_experiment(path: str | Path) -> Path | None:
    """The run or grid folder that ``path`` lies in (or is), or None."""
    p = Path(path).resolve()
    for folder in (p, *p.parents):
        if folder.is_dir() and any((folder / m).is_file() for m in MARKERS):
            return folder
    return None


def refuse_inside_experiment(path: str | Path, field: str = "--out") -> None:
    """Commands that write files refuse a path inside a run or grid folder (its files belong to that experiment)."""
    folder = enclosing_experiment(path)
    if folder is not None:
        raise CorekdError(
            f"lies inside the corekd experiment folder {folder}, whose files belong to that run or grid; "
            "choose a path outside it",
            path=path,
            field=field,
        )


# ------------------------------------------------------------------ the lock
class FolderLock:
    """An exclusive ``flock`` on ``<folder>/.corekd.lock`` holding the writer's pid and command."""

    def __init__(self, folder: Path, command: str):
        self.folder, self.command = folder, command
        self.fd: int | None = None

    def acquire(self, record: bool = True) -> FolderLock:
        """Take the lock (``record``: write this process's pid and command into the file) or raise naming the holder."""
        path = self.folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
            except (ValueError, UnicodeDecodeError):
                holder = {}
            os.close(fd)
            who = f"pid {holder.get('pid', '?')}" + (f" ({holder['command']})" if holder.get("command") else "")
            raise CorekdError(
                f"another corekd process is writing to this folder: {who}; wait for it to finish, or "
                "stop it and --resume",
                path=self.folder,
                field="--out",
            ) from None
        if record:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": self.command}).encode("utf-8"), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


@contextlib.contextmanager
def locked(folder: Path, command: str = ""):
    """Hold the folder's writer lock for the block (``corekd report`` writes into a finished folder this way)."""
    lock = FolderLock(Path(folder), command).acquire()
    try:
        yield lock
    finally:
        lock.release()


# ------------------------------------------------------------------ the folder
@dataclass
class ExperimentFolder:
    """Where an experiment writes, and what an earlier attempt of it already finished.

    :meth:`check` decides (reading only) how ``path`` may be used; :meth:`open` creates it (atomically) or takes
    it over for a resume, and holds its lock until :meth:`close`.
    """

    path: Path
    layout: Layout
    mode: Mode
    moved_to: Path | None = None
    lock: FolderLock | None = None

    # ------------------------------------------------------------ checks (read only)
    @classmethod
    def check(
        cls,
        out: str | Path,
        layout: Layout,
        resolved: object,
        *,
        mode: Literal["run", "grid"],
        resume: bool = False,
        overwrite: bool = False,
        config_path: Path | None = None,
        nested: bool = False,
        normalise: Callable[[object], object] | None = None,
    ) -> ExperimentFolder:
        """Decide how ``out`` may be used; raise :class:`CorekdError` (nothing written) if it may not.

        ``mode="run"``: an earlier run needs ``resume`` or ``overwrite``; ``mode="grid"``: an earlier attempt of the
        same grid is continued without a flag (the same command finishes it). ``nested``: ``out`` may lie in an
        experiment folder (a sweep's runs do); ``normalise``: applied to the stored config before comparing it.
        """
        out = Path(out)
        kind = "run" if layout.kind == "run" else "grid"
        if resume and overwrite:
            raise CorekdError(
                "choose one of --resume (finish the earlier run) and --overwrite (move it aside)",
                field="--resume/--overwrite",
            )
        if out.exists() and not out.is_dir():
            raise CorekdError(
                f"expected a folder (new, empty or an earlier {kind}), but this is a file", path=out, field="--out"
            )
        enclosing = None if nested or not out.parent.exists() else enclosing_experiment(out.parent)
        if enclosing is not None:
            raise CorekdError(
                f"lies inside the corekd experiment folder {enclosing}; choose a path outside it",
                path=out,
                field="--out",
            )
        if not out.exists() or not _contents(out):
            return cls(out, layout, "new")
        if half_created(out) and (resume or overwrite):
            return cls(out, layout, "overwrite")
        is_ours = (out / layout.marker).is_file() or (layout.kind == "run" and is_run_folder(out))
        if not is_ours:
            inside = config_path is not None and out.resolve() in Path(config_path).resolve().parents
            hint = (
                f"; your config {config_path} lies inside it: give the {kind} its own folder, e.g. --out {out / kind}"
                if inside
                else "; choose a new or empty folder"
            )
            raise CorekdError(
                f"a non-empty folder that is not a corekd {kind} (nothing was written){hint}", path=out, field="--out"
            )
        if overwrite:
            return cls(out, layout, "overwrite")
        if mode == "run" and not resume:
            raise CorekdError(
                "holds an earlier corekd run: pass --resume to finish it (same config) or --overwrite to move it "
                "aside and start again",
                path=out,
                field="--out",
            )
        if not (out / layout.marker).is_file():
            raise CorekdError(
                f"was written by an older corekd without resume data ({layout.marker} is missing); use --overwrite",
                path=out,
                field="--resume",
            )
        marker = read_json_file(out / layout.marker, f"{kind} marker")
        if not isinstance(marker, dict) or marker.get("format") != layout.format or marker.get("version") != VERSION:
            raise CorekdError(
                f"not a {layout.format} v{VERSION} marker; use --overwrite to start again", path=out / layout.marker
            )
        stored_path = out / CONFIG_FILE
        try:
            stored = yaml.safe_load(stored_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            raise CorekdError(
                f"the {kind}'s resolved config is missing or unreadable, so it cannot be resumed; use --overwrite",
                path=stored_path,
            ) from None
        if normalise is not None:
            stored = normalise(stored)
        diff = config_difference(stored, resolved)
        if diff:
            name, was, now = diff
            where = "the run being resumed" if kind == "run" else f"the grid in {out}"
            raise CorekdError(
                f"the configuration differs from {where} (stored {was!r}, given {now!r}); "
                f"{'resume' if kind == 'run' else 'continue it'} with the same config, or use --overwrite (it is moved "
                "aside) or another --out",
                path=stored_path,
                field=name or "<root>",
            )
        folder = cls(out, layout, "resume")
        if layout.kind == "run":
            folder._check_no_orphans()
        return folder

    def _check_no_orphans(self) -> None:
        """Every record results.json already reports must belong to a finished model, or resuming would drop it."""
        path = self.path / RESULTS_FILE
        if not path.exists():
            return
        payload = read_json_file(path, "results file") if path.is_file() else None
        if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
            raise CorekdError("not a corekd results file (expected an object with a 'records' list)", path=path)
        kept = {record_key(r) for unit in self.saved_units() for r in unit["records"]}
        orphans = [r for r in payload["records"] if record_key(r) not in kept]
        if orphans:
            raise CorekdError(
                f"holds {len(orphans)} record(s) of no finished model (no matching {CHECKPOINTS}/<method>/seed<S>/"
                f"{UNIT_DONE_FILE}), so resuming could lose them; use --overwrite",
                path=path,
            )

    def check_fingerprints(self, fingerprints: dict[str, str], where: str | Path | None) -> None:
        """On resume, every corpus must be the one the experiment started with (a folder's contents can change)."""
        if self.mode != "resume":
            return
        marker = read_json_file(self.path / self.layout.marker, "marker")
        assert isinstance(marker, dict)
        stored = marker.get("corpus_fingerprints")
        if stored is None and marker.get("corpus_fingerprint") is not None:
            stored = {"": marker["corpus_fingerprint"]}
        for key, fp in (stored or {}).items():
            given = fingerprints.get(key)
            if given is not None and given != fp:
                if self.layout.kind == "run":
                    raise CorekdError(
                        f"the corpus differs from the one the run in {self.path} started with (fingerprint {fp[:12]} "
                        f"-> {given[:12]}); resume with the same data, or use --overwrite",
                        path=where,
                        field="data",
                    )
                raise CorekdError(
                    f"the data of corpus '{key}' differs from the one this grid started with; continue "
                    "with the same data, or use --overwrite",
                    path=self.path / self.layout.marker,
                    field="corpus_fingerprints",
                )

    # ------------------------------------------------------------ creating and locking
    def open(self, config_text: str, command: str, fingerprints: dict[str, str]) -> None:
        """Create the folder atomically (moving an earlier one aside first when overwriting), or lock it to resume."""
        if self.mode == "resume":
            self.lock = FolderLock(self.path, command).acquire()
            return
        if self.mode == "overwrite":
            lock = FolderLock(self.path, command).acquire(record=False)  # nobody may write into what is moved aside
            try:
                self.moved_to = move_aside(self.path)
            finally:
                lock.release()
        marker: dict = {
            "format": self.layout.format,
            "version": VERSION,
            "corekd_version": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": command,
        }
        if self.layout.kind == "run":
            marker["corpus_fingerprint"] = fingerprints.get("")
        else:
            marker["corpus_fingerprints"] = fingerprints
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.creating-", dir=self.path.parent))
        try:
            lock = FolderLock(tmp, command).acquire()  # the lock's inode moves with the folder
            try:
                atomic_write(tmp / CONFIG_FILE, lambda p: Path(p).write_text(config_text))
                atomic_write(tmp / self.layout.marker, lambda p: Path(p).write_text(json.dumps(marker, indent=1)))
                umask = os.umask(0o022)
                os.umask(umask)
                os.chmod(tmp, 0o777 & ~umask)
                try:
                    os.replace(tmp, self.path)  # onto a missing or empty folder
                except OSError:
                    raise CorekdError(
                        "another process created this folder while this one was being set up; choose another --out",
                        path=self.path,
                        field="--out",
                    ) from None
            except BaseException:
                lock.release()
                raise
            self.lock = lock
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # ------------------------------------------------------------ units
    def unit_dir(self, part: str, label: str, seed: int) -> Path:
        return self.layout.unit_dir(self.path, part, label, seed)

    def finished(self, part: str, label: str, seed: int) -> dict | None:
        """The saved outcome of a finished unit, or None (not finished, or a new folder)."""
        if self.mode != "resume":
            return None
        path = self.unit_dir(part, label, seed) / self.layout.done_file
        return self._read_unit(path) if path.is_file() else None

    def saved_units(self) -> list[dict]:
        pattern = f"*/seed*/{UNIT_DONE_FILE}" if self.layout.kind == "run" else f"*/seed-*/*/{CELL_FILE}"
        root = self.path / (CHECKPOINTS if self.layout.kind == "run" else "cells")
        return [self._read_unit(p) for p in sorted(root.glob(pattern))]

    def _read_unit(self, path: Path) -> dict:
        what = "completion record" if self.layout.kind == "run" else "cell file"
        unit = read_json_file(path, what)
        if (
            not isinstance(unit, dict)
            or not isinstance(unit.get("records"), list)
            or not isinstance(unit.get("training"), dict)
        ):
            raise CorekdError(
                f"malformed {what} (expected 'records' and 'training'); delete this model's folder to train it again",
                path=path,
            )
        return unit

    def save_unit(self, part: str, label: str, seed: int, payload: dict, files: dict[str, bytes]) -> None:
        """Write a unit's files (checkpoint, embedding), then its done-file (last, atomically: finished from here)."""
        folder = self.unit_dir(part, label, seed)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            atomic_write(folder / name, lambda p, b=data: Path(p).write_bytes(b))
        atomic_write(folder / self.layout.done_file, lambda p: Path(p).write_text(json.dumps(payload)))

    # ------------------------------------------------------------ results
    def write_results(self, payload: dict, root: Path | None = None) -> None:
        """Atomically replace results.json (of ``root``, default the folder), refusing to drop a record it holds."""
        path = (root or self.path) / RESULTS_FILE
        if path.is_file():
            old = read_json_file(path, "results file")
            old_records = old.get("records", []) if isinstance(old, dict) else []
            new = {record_key(r) for r in payload["records"]}
            lost = [r for r in old_records if record_key(r) not in new]
            if lost:  # a bug, not a user error: never shrink the results
                raise RuntimeError(f"refusing to drop {len(lost)} record(s) from {path}")
        atomic_write(path, lambda p: Path(p).write_text(json.dumps(payload, indent=1)))


def stored_status(root: Path) -> str | None:
    """results.json's ``meta.status`` (None when absent or unreadable)."""
    try:
        payload = json.loads((Path(root) / RESULTS_FILE).read_text(encoding="utf-8"))
        return payload["meta"]["status"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ------------------------------------------------------------------ reading results.json
class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=True)


class _Record(_Loose):
    method: str
    variant: str
    seed: int
    condition: str
    applicable: bool = True
    accuracy: float | None = None
    weighted_f1: float | None = None
    macro_f1: float | None = None
    uar: float | None = None
    per_class_f1: dict[str, float] = {}
    missing_rate: float | None = None

    @model_validator(mode="after")
    def _scored(self) -> _Record:
        if self.applicable and (self.accuracy is None or self.weighted_f1 is None):
            raise ValueError("a scored record needs accuracy and weighted_f1")
        return self


class _Training(_Loose):
    variant: str
    seed: int
    best_epoch: float
    epochs_run: float
    seconds: float = 0.0

    @model_validator(mode="after")
    def _dev_score(self) -> _Training:
        if not any(k.startswith("dev_") for k in (self.model_extra or {})):
            raise ValueError("a training entry needs its dev score (a 'dev_<metric>' key)")
        return self


class _Split(_Loose):
    dialogues: int
    utterances: int


class _Meta(_Loose):
    corpus: str = ""
    seeds: list[int] = []
    splits: dict[str, _Split] = {}


class _Results(_Loose):
    meta: _Meta
    records: list[_Record]
    trainings: list[_Training] = []


def read_results(run_dir: str | Path) -> tuple[dict, list[dict], list[dict]]:
    """``meta``, ``records`` and ``trainings`` of a run folder's results.json, validated."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise CorekdError("file not found (run `corekd run` first)", path=path)
    payload = read_json_file(path, "results file")
    try:
        _Results.model_validate(payload)
    except ValidationError as exc:
        err = from_validation_error(exc, path, model=_Results)
        raise CorekdError(f"not a corekd results file ({err.detail})", path=path, field=err.field) from None
    assert isinstance(payload, dict)
    return payload["meta"], payload["records"], payload.get("trainings", [])
