"""The conversation corpus: dialogues of utterances with speakers, labels and per-modality features.

On disk (``docs/data-format.md``) a corpus is a folder with
- ``corpus.json``: names, labels, modality dims, dialogues and utterances (ids, speakers, labels,
  genuinely missing modalities), in order;
- ``features.safetensors``: one float32 tensor per modality, ``[N_utterances, D_m]``, rows in the
  order the utterances appear in ``corpus.json``.

Everything read from disk is validated; a problem raises :class:`~corekd.errors.CorekdError`
naming the file, the field and what was expected.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from corekd.errors import CorekdError, from_validation_error

MODALITIES: tuple[str, ...] = ("l", "a", "v")
SPLITS: tuple[str, ...] = ("train", "dev", "test")
FORMAT_NAME = "corekd-corpus"
FORMAT_VERSION = 1
META_FILE = "corpus.json"
FEATURES_FILE = "features.safetensors"


@dataclass(frozen=True)
class ModalitySpec:
    """What one modality's features are. ``kind="vector"``: one ``[D]`` vector per utterance.

    A later ``kind="frames"`` (``[F, D]`` per utterance plus lengths) slots in here; callers ask
    the spec, never assume the shape.
    """

    dim: int
    kind: Literal["vector"] = "vector"
    source: str | None = None  # provenance: the extractor or generator that produced it


@dataclass
class Dialogue:
    id: str
    split: str
    utterance_ids: list[str]
    speakers: list[str]
    labels: np.ndarray  # [U] int64, index into Corpus.labels
    features: dict[str, np.ndarray]  # m -> [U, D_m] float32 (zeros where unavailable)
    available: np.ndarray  # [U, M] bool, M in corpus modality order; False = genuinely missing

    def __len__(self) -> int:
        return len(self.utterance_ids)


@dataclass
class Corpus:
    name: str
    labels: list[str]
    modalities: dict[str, ModalitySpec]  # ordered; keys are a subset of MODALITIES, in that order
    dialogues: list[Dialogue]
    task: Literal["classification"] = "classification"
    info: dict = field(default_factory=dict)  # provenance (e.g. the generator's config)

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(self.modalities)

    def split(self, name: str) -> list[Dialogue]:
        return [d for d in self.dialogues if d.split == name]

    @property
    def num_utterances(self) -> int:
        return sum(len(d) for d in self.dialogues)

    def label_counts(self, split: str | None = None) -> Counter:
        counts: Counter = Counter()
        for d in self.dialogues:
            if split is None or d.split == split:
                counts.update(self.labels[i] for i in d.labels.tolist())
        return counts

    def max_speakers(self) -> int:
        return max((len(set(d.speakers)) for d in self.dialogues), default=1)

    def problems(self) -> list[str]:
        """Soft problems worth a warning (the corpus loads, but a run may be misleading)."""
        found = []
        for split in SPLITS:
            if not self.split(split):
                found.append(f"split '{split}' has no dialogues")
        for split, consequence in (("train", "no model learns to predict {}"), ("dev", "model selection never scores {}")):
            counts = self.label_counts(split)
            absent = [name for name in self.labels if counts[name] == 0]
            if absent and self.split(split):
                many = len(absent) > 1
                found.append(
                    f"label{'s' if many else ''} {', '.join(repr(n) for n in absent)} never "
                    f"occur{'' if many else 's'} in the {split} split ({consequence.format('them' if many else 'it')})"
                )
        for j, m in enumerate(self.modality_names):
            missing = sum(int((~d.available[:, j]).sum()) for d in self.dialogues)
            if missing == self.num_utterances and missing:
                found.append(f"modality '{m}' is missing for every utterance (conditions that keep only '{m}' are not applicable)")
                continue
            for split in SPLITS:
                dialogues = self.split(split)
                if dialogues and all(not d.available[:, j].any() for d in dialogues):
                    found.append(f"modality '{m}' is missing for every utterance of the {split} split")
        for split in SPLITS:
            empty = sum(int((~d.available.any(axis=1)).sum()) for d in self.split(split))
            if empty:
                n = sum(len(d) for d in self.split(split))
                found.append(f"{empty} of {n} utterances of the {split} split have no modality at all (nothing observed)")
        return found

    # ------------------------------------------------------------------ on disk
    def save(self, folder: str | Path) -> Path:
        """Write ``corpus.json`` and ``features.safetensors`` into ``folder`` (each atomically)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "name": self.name,
            "task": self.task,
            "labels": list(self.labels),
            "modalities": {
                m: {k: v for k, v in vars(s).items() if v is not None} for m, s in self.modalities.items()
            },
            "info": self.info,
            "dialogues": [_dialogue_meta(d, self) for d in self.dialogues],
        }
        tensors = {
            m: np.ascontiguousarray(
                np.concatenate([d.features[m] for d in self.dialogues], axis=0).astype(np.float32)
            )
            for m in self.modality_names
        }
        atomic_write(folder / FEATURES_FILE, lambda p: save_file(tensors, str(p)))
        atomic_write(folder / META_FILE, lambda p: Path(p).write_text(json.dumps(meta, indent=1)))
        return folder


def _dialogue_meta(d: Dialogue, corpus: Corpus) -> dict:
    utterances = []
    for i, uid in enumerate(d.utterance_ids):
        u = {"id": uid, "speaker": d.speakers[i], "label": corpus.labels[int(d.labels[i])]}
        missing = [m for j, m in enumerate(corpus.modality_names) if not d.available[i, j]]
        if missing:
            u["missing"] = missing
        utterances.append(u)
    return {"id": d.id, "split": d.split, "utterances": utterances}


def atomic_write(target: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``target``: readers never see a half-written file.

    The file is flushed to disk before the rename and gets the usual permissions (0666 less the
    umask, e.g. 0644), not the 0600 of a temporary file.
    """
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------- loading
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _ModalityFile(_Strict):
    dim: int = Field(gt=0)
    kind: Literal["vector"] = "vector"
    source: str | None = None


class _UtteranceFile(_Strict):
    id: str = Field(min_length=1)
    speaker: str
    label: str
    missing: list[Literal["l", "a", "v"]] = []


class _DialogueFile(_Strict):
    id: str = Field(min_length=1)
    split: Literal["train", "dev", "test"]
    utterances: list[_UtteranceFile]


class _CorpusFile(_Strict):
    format: Literal["corekd-corpus"]
    version: Literal[1]
    name: str
    task: Literal["classification"] = "classification"
    labels: list[str] = Field(min_length=2)
    modalities: dict[Literal["l", "a", "v"], _ModalityFile] = Field(min_length=1)
    info: dict = {}
    dialogues: list[_DialogueFile]


def load_corpus(folder: str | Path) -> Corpus:
    """Read and validate a corpus folder (see ``docs/data-format.md``)."""
    folder = Path(folder)
    if not folder.exists():
        raise CorekdError("no such corpus folder", path=folder)
    meta_path, feat_path = folder / META_FILE, folder / FEATURES_FILE
    if not meta_path.is_file():
        raise CorekdError(f"file not found (a corpus folder holds {META_FILE} and {FEATURES_FILE})", path=meta_path)
    try:
        raw = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise CorekdError(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", path=meta_path) from None
    try:
        meta = _CorpusFile.model_validate(raw)
    except ValidationError as exc:
        raise from_validation_error(exc, meta_path, model=_CorpusFile) from None
    _check_meta(meta, meta_path)
    if not feat_path.is_file():
        raise CorekdError("file not found", path=feat_path)
    try:
        tensors = load_file(str(feat_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorekdError(f"not a readable safetensors file ({exc})", path=feat_path) from None

    order = [m for m in MODALITIES if m in meta.modalities]
    n_total = sum(len(d.utterances) for d in meta.dialogues)
    extra = sorted(set(tensors) - set(order))
    if extra:
        raise CorekdError(f"tensor for unknown modality (corpus.json declares {order})", path=feat_path, field=extra[0])
    for m in order:
        if m not in tensors:
            raise CorekdError("tensor missing (declared in corpus.json modalities)", path=feat_path, field=m)
        want = (n_total, meta.modalities[m].dim)
        got = tuple(tensors[m].shape)
        if got != want:
            raise CorekdError(
                f"expected shape {list(want)} (utterances x dim from corpus.json), got {list(got)}",
                path=feat_path,
                field=m,
            )
        bad = ~np.isfinite(tensors[m])
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            uid, did = _locate(meta, row)
            raise CorekdError(
                f"{int(bad.sum())} non-finite values (NaN/inf); expected finite floats; first at "
                f"utterance '{uid}' of dialogue '{did}'",
                path=feat_path,
                field=m,
            )

    label_index = {name: i for i, name in enumerate(meta.labels)}
    dialogues, start = [], 0
    for d in meta.dialogues:
        n = len(d.utterances)
        avail = np.ones((n, len(order)), dtype=bool)
        for i, u in enumerate(d.utterances):
            for m in u.missing:
                avail[i, order.index(m)] = False
        feats = {m: tensors[m][start : start + n].astype(np.float32) for m in order}
        for j, m in enumerate(order):  # unavailable rows carry no information, whatever the file holds
            feats[m][~avail[:, j]] = 0.0
        dialogues.append(
            Dialogue(
                id=d.id,
                split=d.split,
                utterance_ids=[u.id for u in d.utterances],
                speakers=[u.speaker for u in d.utterances],
                labels=np.array([label_index[u.label] for u in d.utterances], dtype=np.int64),
                features=feats,
                available=avail,
            )
        )
        start += n
    return Corpus(
        name=meta.name,
        labels=list(meta.labels),
        modalities={m: ModalitySpec(**meta.modalities[m].model_dump()) for m in order},
        dialogues=dialogues,
        task=meta.task,
        info=meta.info,
    )


def _check_meta(meta: _CorpusFile, path: Path) -> None:
    if len(set(meta.labels)) != len(meta.labels):
        raise CorekdError("label names must be unique", path=path, field="labels")
    labels = set(meta.labels)
    seen_dialogues: set[str] = set()
    seen_utts: set[str] = set()
    declared = set(meta.modalities)
    for i, d in enumerate(meta.dialogues):
        where = f"dialogues[{i}]"
        if d.id in seen_dialogues:
            raise CorekdError(f"duplicate dialogue id '{d.id}'", path=path, field=f"{where}.id")
        seen_dialogues.add(d.id)
        if not d.utterances:
            raise CorekdError(
                f"empty dialogue '{d.id}': expected at least one utterance", path=path, field=f"{where}.utterances"
            )
        for k, u in enumerate(d.utterances):
            uwhere = f"{where}.utterances[{k}]"
            if u.label not in labels:
                raise CorekdError(
                    f"unknown label '{u.label}' in dialogue '{d.id}' (expected one of: {', '.join(meta.labels)})",
                    path=path,
                    field=f"{uwhere}.label",
                )
            if u.id in seen_utts:
                raise CorekdError(f"duplicate utterance id '{u.id}'", path=path, field=f"{uwhere}.id")
            seen_utts.add(u.id)
            undeclared = set(u.missing) - declared
            if undeclared:
                raise CorekdError(
                    f"lists modality {sorted(undeclared)} as missing, but the corpus has no such modality",
                    path=path,
                    field=f"{uwhere}.missing",
                )


def _locate(meta: _CorpusFile, row: int) -> tuple[str, str]:
    for d in meta.dialogues:
        if row < len(d.utterances):
            return d.utterances[row].id, d.id
        row -= len(d.utterances)
    return "?", "?"
