"""The output folder of ``corekd run``: safe to write into, resumable, never losing a result.

Layout (``docs/configuration.md``, "Output folders")::

    OUT/corekd-run.json                      marks the folder as a corekd run (format, version, created)
    OUT/config.yaml                          the resolved configuration (never the user's own file)
    OUT/results.json                         meta + every record + every training entry; only grows
    OUT/report.md
    OUT/checkpoints/<label>/seed<S>/         model.safetensors, model.json, then complete.json
                                             (that model's records and training entry; written last,
                                             atomically: its presence means the model is finished)

Rules, checked before anything is written:
- ``OUT`` must be a folder (or not exist yet). A non-empty folder that is not a corekd run is
  refused; an earlier corekd run needs ``resume`` (finish it: same configuration, finished models
  are kept) or ``overwrite`` (the old folder is moved aside to ``OUT.old-<UTC time>``, never deleted).
- On resume the resolved configuration must equal the stored one; the first differing field is named.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from corekd.config import RunConfig, dump_config, validate_config
from corekd.errors import CorekdError, from_validation_error
from corekd.files import atomic_write, move_aside
from corekd.version import __version__

MARKER_FILE = "corekd-run.json"
CONFIG_FILE = "config.yaml"
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
CHECKPOINTS = "checkpoints"
UNIT_DONE_FILE = "complete.json"
FORMAT = "corekd-run"
VERSION = 1

Mode = Literal["new", "resume", "overwrite"]


class RunInterrupted(Exception):
    """A run stopped by SIGINT/SIGTERM; finished models are kept on disk."""

    def __init__(self, out: Path, kept: list[str], total: int, resume_command: str):
        self.out, self.kept, self.total, self.resume_command = out, kept, total, resume_command
        super().__init__(self.line())

    def line(self) -> str:
        return (
            f"interrupted: kept {len(self.kept)} finished model(s) of {self.total} in {self.out} "
            f"(checkpoints, records, results.json); resume with: {self.resume_command}"
        )


def _json(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorekdError(f"not a readable {what} ({exc}); move the folder aside or choose another --out", path=path) from None


def is_run_folder(out: Path) -> bool:
    """A folder written by ``corekd run``: this version's marker, or an older run's config.yaml and results.json."""
    if (out / MARKER_FILE).is_file():
        return True
    if not ((out / RESULTS_FILE).is_file() and (out / CONFIG_FILE).is_file()):
        return False
    try:
        payload = json.loads((out / RESULTS_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(payload, dict) and {"meta", "records"} <= set(payload)


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
        for i, (a, b) in enumerate(zip(stored, given)):
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


def _record_key(record: object) -> str:
    return json.dumps(record, sort_keys=True)


@dataclass
class RunFolder:
    """Where a run writes, and what an earlier attempt of the same run already finished."""

    path: Path
    mode: Mode
    moved_to: Path | None = None
    warnings: list[str] = field(default_factory=list)

    # ------------------------------------------------------------ checks (read only)
    @classmethod
    def check(cls, out: str | Path, config: RunConfig, *, resume: bool = False, overwrite: bool = False,
              config_path: Path | None = None) -> "RunFolder":
        """Decide how ``out`` may be used; raise :class:`CorekdError` (nothing written) if it may not."""
        out = Path(out)
        if resume and overwrite:
            raise CorekdError("choose one of --resume (finish the earlier run) and --overwrite (move it aside)",
                              field="--resume/--overwrite")
        if out.exists() and not out.is_dir():
            raise CorekdError("expected a folder (new, empty or an earlier run), but this is a file", path=out, field="--out")
        if not out.exists() or not any(out.iterdir()):
            return cls(out, "new")
        inside = config_path is not None and out.resolve() in Path(config_path).resolve().parents
        if not is_run_folder(out):
            hint = (f"; your config {config_path} lies inside it: give the run its own folder, e.g. --out {out / 'run'}"
                    if inside else "; choose a new or empty folder")
            raise CorekdError(f"a non-empty folder that is not a corekd run (nothing was written){hint}",
                              path=out, field="--out")
        if overwrite:
            return cls(out, "overwrite")
        if not resume:
            raise CorekdError(
                "holds an earlier corekd run: pass --resume to finish it (same config) or --overwrite to move it "
                "aside and start again", path=out, field="--out",
            )
        if not (out / MARKER_FILE).is_file():
            raise CorekdError(
                f"was written by an older corekd without resume data ({MARKER_FILE} is missing); use --overwrite",
                path=out, field="--resume",
            )
        marker = _json(out / MARKER_FILE, "run marker")
        if not isinstance(marker, dict) or marker.get("format") != FORMAT or marker.get("version") != VERSION:
            raise CorekdError(f"not a {FORMAT} v{VERSION} marker", path=out / MARKER_FILE)
        stored_path = out / CONFIG_FILE
        if not stored_path.is_file():
            raise CorekdError("the run's resolved config is missing, so it cannot be resumed; use --overwrite",
                              path=stored_path)
        try:
            stored = yaml.safe_load(stored_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError):
            raise CorekdError("not readable YAML, so the run cannot be resumed; use --overwrite", path=stored_path) from None
        given = yaml.safe_load(dump_config(config))
        try:  # both resolved alike: a run written by an earlier corekd lacks settings added since (their defaults)
            stored, given = (yaml.safe_load(dump_config(validate_config(c))) for c in (stored, given))
        except CorekdError:
            pass  # not a valid config today: compared as written, so the difference is named
        diff = config_difference(stored, given)
        if diff:
            name, was, now = diff
            raise CorekdError(
                f"the configuration differs from the run being resumed (stored {was!r}, given {now!r}); "
                "resume with the same config, or use --overwrite", path=stored_path, field=name or "<root>",
            )
        folder = cls(out, "resume")
        if (out / RESULTS_FILE).exists():
            payload = _json(out / RESULTS_FILE, "results file") if (out / RESULTS_FILE).is_file() else None
            if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
                raise CorekdError("not a corekd results file (expected an object with a 'records' list)",
                                  path=out / RESULTS_FILE)
            # Every record already reported must belong to a finished model, or resuming would drop it.
            kept = {_record_key(r) for unit in folder._units() for r in unit["records"]}
            orphans = [r for r in payload["records"] if _record_key(r) not in kept]
            if orphans:
                raise CorekdError(
                    f"holds {len(orphans)} record(s) of no finished model (no matching {CHECKPOINTS}/<method>/seed<S>/"
                    f"{UNIT_DONE_FILE}), so resuming could lose them; use --overwrite", path=out / RESULTS_FILE,
                )
        return folder

    def _units(self) -> list[dict]:
        return [self._read_unit(p) for p in sorted((self.path / CHECKPOINTS).glob(f"*/seed*/{UNIT_DONE_FILE}"))]

    # ------------------------------------------------------------ writing
    def check_corpus(self, fingerprint: str, where: str | Path | None) -> None:
        """On resume, the corpus must be the one the run started with (a folder's contents can change)."""
        if self.mode != "resume":
            return
        stored = _json(self.path / MARKER_FILE, "run marker").get("corpus_fingerprint")
        if stored is not None and stored != fingerprint:
            raise CorekdError(
                f"the corpus differs from the one the run in {self.path} started with (fingerprint {stored[:12]} -> "
                f"{fingerprint[:12]}); resume with the same data, or use --overwrite", path=where, field="data",
            )

    def prepare(self, config: RunConfig, command: str, corpus_fingerprint: str | None = None) -> None:
        """Create the folder (moving an earlier run aside first when overwriting); write marker and config."""
        if self.mode == "overwrite":
            self.moved_to = move_aside(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        if self.mode == "resume":
            return  # the stored config equals this one; the marker stays as it was
        marker = {"format": FORMAT, "version": VERSION, "corekd_version": __version__,
                  "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": command,
                  "corpus_fingerprint": corpus_fingerprint}
        atomic_write(self.path / CONFIG_FILE, lambda p: Path(p).write_text(dump_config(config)))
        atomic_write(self.path / MARKER_FILE, lambda p: Path(p).write_text(json.dumps(marker, indent=1)))

    def unit_dir(self, label: str, seed: int) -> Path:
        return self.path / CHECKPOINTS / label / f"seed{seed}"

    def finished(self, label: str, seed: int) -> dict | None:
        """The saved outcome of a finished model (``records``, ``training``), or None (not finished)."""
        if self.mode != "resume":
            return None
        path = self.unit_dir(label, seed) / UNIT_DONE_FILE
        if not path.is_file():
            return None
        return self._read_unit(path)

    @staticmethod
    def _read_unit(path: Path) -> dict:
        unit = _json(path, "completion record")
        if (not isinstance(unit, dict) or not isinstance(unit.get("records"), list)
                or not isinstance(unit.get("training"), dict)):
            raise CorekdError("malformed completion record (expected 'records' and 'training'); delete this "
                              "model's folder to retrain it", path=path)
        return unit

    def save_unit(self, label: str, seed: int, records: list[dict], training: dict) -> None:
        """Mark a model finished: written after its checkpoint, atomically."""
        payload = {"label": label, "seed": seed, "records": records, "training": training}
        atomic_write(self.unit_dir(label, seed) / UNIT_DONE_FILE, lambda p: Path(p).write_text(json.dumps(payload)))

    def write_results(self, payload: dict) -> None:
        """Atomically replace results.json, refusing to drop any record the file already holds."""
        path = self.path / RESULTS_FILE
        if path.is_file():
            old = _json(path, "results file")
            old_records = old.get("records", []) if isinstance(old, dict) else []
            new = {_record_key(r) for r in payload["records"]}
            lost = [r for r in old_records if _record_key(r) not in new]
            if lost:  # a bug, not a user error: never shrink the results
                raise RuntimeError(f"refusing to drop {len(lost)} record(s) from {path}")
        atomic_write(path, lambda p: Path(p).write_text(json.dumps(payload, indent=1)))


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
    def _scored(self) -> "_Record":
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
    def _dev_score(self) -> "_Training":
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
    payload = _json(path, "results file")
    try:
        _Results.model_validate(payload)
    except ValidationError as exc:
        err = from_validation_error(exc, path, model=_Results)
        raise CorekdError(f"not a corekd results file ({err.detail})", path=path, field=err.field) from None
    return payload["meta"], payload["records"], payload.get("trainings", [])
