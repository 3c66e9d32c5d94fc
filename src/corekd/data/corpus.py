"""The conversation corpus: dialogues of utterances with speakers, labels and per-modality features.

On disk (``docs/data-format.md``) a corpus is a folder with
- ``corpus.json``: names, labels, modality dims, dialogues and utterances (ids, speakers, labels,
  genuinely missing modalities), in order;
- ``features.safetensors``: one float32 tensor per modality, ``[N_utterances, D_m]``, rows in the
  order the utterances appear in ``corpus.json``; a frame-sequence modality (``kind: "sequence"``,
  format version 2) stores its frames flat, ``[N_frames, D_m]``, with ``<m>_offsets`` ``[N_utterances + 1]``.

Everything read from disk is validated; a problem raises :class:`~corekd.errors.CorekdError`
naming the file, the field and what was expected.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from corekd.errors import CorekdError, from_validation_error
from corekd.files import atomic_write, read_json

MODALITIES: tuple[str, ...] = ("l", "a", "v")
SPLITS: tuple[str, ...] = ("train", "dev", "test")
FORMAT_NAME = "corekd-corpus"
FORMAT_VERSION = 2  # the newest version read; a corpus is written with the lowest version that holds it
VERSIONS = (1, 2)
META_FILE = "corpus.json"
FEATURES_FILE = "features.safetensors"


CARD_FIELDS: tuple[str, ...] = ("frame_rate", "aligned", "normalization")  # format version 2


def offsets_name(m: str) -> str:
    """The safetensors name of a sequence modality's per-utterance frame offsets."""
    return f"{m}_offsets"


@dataclass(frozen=True)
class ModalitySpec:
    """What one modality's features are, and its dataset card.

    ``kind="vector"``: one ``[D]`` vector per utterance. ``kind="sequence"``: ``[F_i, D]`` frames
    per utterance (format version 2); until a sequence encoder exists, a run reads the mean over
    an utterance's frames. Callers ask the spec, never assume the shape.
    """

    dim: int
    kind: Literal["vector", "sequence"] = "vector"
    source: str | None = None  # card: the extractor or generator that produced the features
    frame_rate: float | None = None  # card: frames per second of a sequence (None: utterance-level or unknown)
    aligned: bool | None = None  # card: frames aligned across modalities (e.g. to words), None: not stated
    normalization: str | None = None  # card: normalisation already applied to the features, None: not stated

    def card(self) -> dict:
        """The dataset card: what ``inspect`` prints and reports carry."""
        if self.kind == "vector":
            rate = "utterance-level"
        else:
            rate = f"{self.frame_rate:g} frames/s" if self.frame_rate else "frames (rate not stated)"
        return {
            "extractor": self.source or "not stated",
            "dim": self.dim,
            "kind": self.kind,
            "frame_rate": rate,
            "aligned": "not stated" if self.aligned is None else ("aligned" if self.aligned else "unaligned"),
            "normalization": self.normalization or "not stated",
        }


@dataclass
class Dialogue:
    id: str
    split: str
    utterance_ids: list[str]
    speakers: list[str]
    labels: np.ndarray  # [U] int64, index into Corpus.labels
    features: dict[str, np.ndarray]  # m -> [U, D_m] float32 (zeros where unavailable)
    available: np.ndarray  # [U, M] bool, M in corpus modality order; False = genuinely missing
    # Optional per-utterance fields (format version 2); None = not given for any utterance.
    sentiment: np.ndarray | None = None  # [U] float32 in [-3, 3], NaN where an utterance has none
    texts: list[str | None] | None = None  # transcripts
    extras: list[dict] | None = None  # free-form per-utterance fields, kept as given
    # Sequence modalities: m -> (frames [F, D_m] float32, lengths [U] int64); ``features[m]`` is their mean.
    frames: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.utterance_ids)


@dataclass
class Corpus:
    name: str
    labels: list[str]
    modalities: dict[str, ModalitySpec]  # ordered; keys are a subset of MODALITIES, in that order
    dialogues: list[Dialogue]
    task: Literal["classification", "regression"] = "classification"
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

    def sequence_modalities(self) -> list[str]:
        return [m for m, s in self.modalities.items() if s.kind == "sequence"]

    def cards(self) -> dict[str, dict]:
        return {m: s.card() for m, s in self.modalities.items()}

    def format_version(self) -> int:
        """The lowest format version that holds this corpus (1 unless a version-2 field is used)."""
        v2 = any(
            s.kind != "vector" or any(getattr(s, k) is not None for k in CARD_FIELDS) for s in self.modalities.values()
        )
        v2 = v2 or any(d.sentiment is not None or d.texts is not None or d.extras is not None for d in self.dialogues)
        return 2 if v2 else 1

    def max_speakers(self) -> int:
        return max((len(set(d.speakers)) for d in self.dialogues), default=1)

    def problems(self) -> list[str]:
        """Soft problems worth a warning (the corpus loads, but a run may be misleading)."""
        found = []
        for split in SPLITS:
            if not self.split(split):
                found.append(f"split '{split}' has no dialogues")
                found.append(
                    "`corekd run` needs a dev split: set data.dev: carve in the run config to carve one from train"
                    if split == "dev"
                    else f"`corekd run` refuses a corpus without a {split} split"
                )
        for split, consequence in (
            ("train", "no model learns to predict {}"),
            ("dev", "model selection never scores {}"),
        ):
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
                found.append(
                    f"modality '{m}' is missing for every utterance (conditions that keep only '{m}' are not applicable)"
                )
                continue
            for split in SPLITS:
                dialogues = self.split(split)
                if dialogues and all(not d.available[:, j].any() for d in dialogues):
                    found.append(f"modality '{m}' is missing for every utterance of the {split} split")
        for split in SPLITS:
            empty = sum(int((~d.available.any(axis=1)).sum()) for d in self.split(split))
            if empty:
                n = sum(len(d) for d in self.split(split))
                found.append(
                    f"{empty} of {n} utterances of the {split} split have no modality at all (nothing observed)"
                )
        return found

    # ------------------------------------------------------------------ on disk
    def save(self, folder: str | Path) -> Path:
        """Write ``corpus.json`` and ``features.safetensors`` into ``folder`` (each atomically)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT_NAME,
            "version": self.format_version(),
            "name": self.name,
            "task": self.task,
            "labels": list(self.labels),
            "modalities": {m: {k: v for k, v in vars(s).items() if v is not None} for m, s in self.modalities.items()},
            "info": self.info,
            "dialogues": [_dialogue_meta(d, self) for d in self.dialogues],
        }
        tensors = {}
        for m in self.modality_names:
            if self.modalities[m].kind == "sequence":
                lengths = np.concatenate([d.frames[m][1] for d in self.dialogues]).astype(np.int64)
                tensors[offsets_name(m)] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
                rows = [d.frames[m][0] for d in self.dialogues]
            else:
                rows = [d.features[m] for d in self.dialogues]
            tensors[m] = np.ascontiguousarray(np.concatenate(rows, axis=0).astype(np.float32))
        atomic_write(folder / FEATURES_FILE, lambda p: save_file(tensors, str(p)))
        atomic_write(folder / META_FILE, lambda p: Path(p).write_text(json.dumps(meta, indent=1)))
        return folder


def _dialogue_meta(d: Dialogue, corpus: Corpus) -> dict:
    utterances = []
    for i, uid in enumerate(d.utterance_ids):
        u: dict[str, Any] = {"id": uid, "speaker": d.speakers[i], "label": corpus.labels[int(d.labels[i])]}
        missing = [m for j, m in enumerate(corpus.modality_names) if not d.available[i, j]]
        if missing:
            u["missing"] = missing
        if d.sentiment is not None and not np.isnan(d.sentiment[i]):
            u["sentiment"] = float(d.sentiment[i])
        if d.texts is not None and d.texts[i] is not None:
            u["text"] = d.texts[i]
        if d.extras is not None and d.extras[i]:
            u["extra"] = d.extras[i]
        utterances.append(u)
    return {"id": d.id, "split": d.split, "utterances": utterances}


# ---------------------------------------------------------------------- loading
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _ModalityFile(_Strict):
    dim: int = Field(gt=0)
    kind: Literal["vector", "sequence"] = "vector"
    source: str | None = None
    frame_rate: float | None = Field(None, gt=0)
    aligned: bool | None = None
    normalization: str | None = None


class _UtteranceFile(_Strict):
    id: str = Field(min_length=1)
    speaker: str
    label: str
    missing: list[Literal["l", "a", "v"]] = []
    sentiment: float | None = None
    text: str | None = None
    extra: dict = {}


class _DialogueFile(_Strict):
    id: str = Field(min_length=1)
    split: Literal["train", "dev", "test"]
    utterances: list[_UtteranceFile]


class CorpusFile(_Strict):
    format: Literal["corekd-corpus"]
    version: Literal[1, 2]
    name: str
    task: Literal["classification", "regression"] = "classification"
    labels: list[str] = Field(min_length=2)
    modalities: dict[Literal["l", "a", "v"], _ModalityFile] = Field(min_length=1)
    info: dict = {}
    dialogues: list[_DialogueFile]


def load_corpus(folder: str | Path, *, cast: bool = False) -> Corpus:
    """Read and validate a corpus folder (see ``docs/data-format.md``).

    Feature tensors must be float32 (offsets integers); ``cast=True`` converts other dtypes on
    reading instead of refusing them (:func:`cast_features` rewrites the file).
    """
    folder = Path(folder)
    if not folder.exists():
        raise CorekdError("no such corpus folder", path=folder)
    meta_path, feat_path = folder / META_FILE, folder / FEATURES_FILE
    raw = read_json(meta_path, f"a corpus folder holds {META_FILE} and {FEATURES_FILE}")
    try:
        meta = CorpusFile.model_validate(raw)
    except ValidationError as exc:
        raise from_validation_error(exc, meta_path, model=CorpusFile) from None
    _check_meta(meta, meta_path)
    tensors = _read_tensors(feat_path)

    order = [m for m in MODALITIES if m in meta.modalities]
    n_total = sum(len(d.utterances) for d in meta.dialogues)
    sequences = [m for m in order if meta.modalities[m].kind == "sequence"]
    expected = order + [offsets_name(m) for m in sequences]
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise CorekdError(
            f"tensor for unknown modality (corpus.json declares {expected})", path=feat_path, field=extra[0]
        )
    lengths: dict[str, np.ndarray] = {}
    for m in sequences:  # offsets first: they give the expected frame count
        name = offsets_name(m)
        if name not in tensors:
            raise CorekdError(
                f"tensor missing (modality '{m}' is a sequence: its frames need offsets)", path=feat_path, field=name
            )
        offsets = tensors[name]
        if not np.issubdtype(offsets.dtype, np.integer):
            raise CorekdError(f"dtype {offsets.dtype}; expected int64 frame offsets", path=feat_path, field=name)
        if offsets.shape != (n_total + 1,):
            raise CorekdError(
                f"expected shape [{n_total + 1}] (utterances + 1), got {list(offsets.shape)}",
                path=feat_path,
                field=name,
            )
        steps = np.diff(offsets.astype(np.int64))
        if offsets[0] != 0 or (steps < 0).any():
            raise CorekdError("expected offsets starting at 0 and never decreasing", path=feat_path, field=name)
        lengths[m] = steps
    for m in order:
        if m not in tensors:
            raise CorekdError("tensor missing (declared in corpus.json modalities)", path=feat_path, field=m)
        x = tensors[m]
        if x.dtype != np.float32:
            if not cast or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
                raise CorekdError(
                    f"dtype {x.dtype}; expected float32 (convert the file with `corekd data inspect {folder} --cast`)",
                    path=feat_path,
                    field=m,
                )
            tensors[m] = x = x.astype(np.float32)
        rows = int(lengths[m].sum()) if m in lengths else n_total
        want = (rows, meta.modalities[m].dim)
        got = tuple(x.shape)
        if got != want:
            what = "frames (last offset) x dim" if m in lengths else "utterances x dim from corpus.json"
            raise CorekdError(f"expected shape {list(want)} ({what}), got {list(got)}", path=feat_path, field=m)
        bad = ~np.isfinite(x)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            if m in lengths:
                row = int(np.searchsorted(np.cumsum(lengths[m]), row, side="right"))
            uid, did = _locate(meta, row)
            raise CorekdError(
                f"{int(bad.sum())} non-finite values (NaN/inf); expected finite floats; first at "
                f"utterance '{uid}' of dialogue '{did}'",
                path=feat_path,
                field=m,
            )

    label_index = {name: i for i, name in enumerate(meta.labels)}
    frame_start = {m: 0 for m in sequences}
    dialogues, start = [], 0
    for k, d in enumerate(meta.dialogues):
        n = len(d.utterances)
        avail = np.ones((n, len(order)), dtype=bool)
        for i, u in enumerate(d.utterances):
            for m in u.missing:
                avail[i, order.index(m)] = False
        feats: dict[str, np.ndarray] = {}  # modality -> [n, D]
        frames: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # modality -> ([frames, D], [n] lengths)
        for j, m in enumerate(order):
            if m in lengths:
                lens = lengths[m][start : start + n].copy()
                empty = np.flatnonzero((lens == 0) & avail[:, j])
                if len(empty):
                    raise CorekdError(
                        f"utterance '{d.utterances[empty[0]].id}' has 0 frames of sequence modality '{m}'; expected at "
                        "least one, or the modality listed in its 'missing'",
                        path=meta_path,
                        field=f"dialogues[{k}].utterances[{empty[0]}].missing",
                    )
                flat = tensors[m][frame_start[m] : frame_start[m] + int(lens.sum())]
                frame_start[m] += int(lens.sum())
                lens[~avail[:, j]] = 0  # frames of a missing modality carry no information
                keep = np.repeat(avail[:, j], lengths[m][start : start + n])
                flat = np.ascontiguousarray(flat[keep])
                frames[m] = (flat, lens.astype(np.int64))
                feats[m] = pool_mean(flat, lens, meta.modalities[m].dim)
            else:
                feats[m] = tensors[m][start : start + n].astype(np.float32)
                feats[m][~avail[:, j]] = 0.0  # unavailable rows carry no information, whatever the file holds
        given = lambda key: [getattr(u, key) for u in d.utterances]  # noqa: E731, B023 (called in this iteration only)
        sentiment = given("sentiment")
        dialogues.append(
            Dialogue(
                id=d.id,
                split=d.split,
                utterance_ids=[u.id for u in d.utterances],
                speakers=[u.speaker for u in d.utterances],
                labels=np.array([label_index[u.label] for u in d.utterances], dtype=np.int64),
                features=feats,
                available=avail,
                sentiment=None
                if all(v is None for v in sentiment)
                else np.array([np.nan if v is None else v for v in sentiment], dtype=np.float32),
                texts=None if all(v is None for v in given("text")) else given("text"),
                extras=None if not any(given("extra")) else given("extra"),
                frames=frames,
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


def pool_mean(frames: np.ndarray, lengths: np.ndarray, dim: int) -> np.ndarray:
    """[F, D] frames and [U] lengths -> [U, D] mean over each utterance's frames (zeros for 0 frames)."""
    out = np.zeros((len(lengths), dim), dtype=np.float32)
    if len(frames):
        owner = np.repeat(np.arange(len(lengths)), lengths)  # [F]
        np.add.at(out, owner, frames.astype(np.float32))
    nonzero = lengths > 0
    out[nonzero] /= lengths[nonzero, None].astype(np.float32)
    return out


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file; a missing or unreadable file is a CorekdError naming it."""
    if not path.is_file():
        raise CorekdError("file not found", path=path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorekdError(f"not a readable safetensors file ({exc})", path=path) from None


def cast_features(folder: str | Path) -> list[str]:
    """Rewrite ``features.safetensors`` with float32 features and int64 offsets; what was converted.

    Only dtypes change (values are converted as numpy does); everything else is checked on load.
    """
    path = Path(folder) / FEATURES_FILE
    tensors = _read_tensors(path)
    changed = []
    for name, x in list(tensors.items()):
        want = np.int64 if name.endswith("_offsets") else np.float32
        if x.dtype != want:
            changed.append(f"{name}: {x.dtype} -> {np.dtype(want)}")
            tensors[name] = np.ascontiguousarray(x.astype(want))
    if changed:
        atomic_write(path, lambda p: save_file(tensors, str(p)))
    return changed


def _check_meta(meta: CorpusFile, path: Path) -> None:
    if len(set(meta.labels)) != len(meta.labels):
        raise CorekdError("label names must be unique", path=path, field="labels")
    labels = set(meta.labels)
    seen_dialogues: set[str] = set()
    seen_utts: set[str] = set()
    declared = set(meta.modalities)
    if meta.version == 1:
        for m, spec in meta.modalities.items():
            for key in ("kind",) + CARD_FIELDS:
                if key in spec.model_fields_set and (key != "kind" or spec.kind != "vector"):
                    raise CorekdError(
                        'this field needs format version 2 (set "version": 2)', path=path, field=f"modalities.{m}.{key}"
                    )
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
            if meta.version >= 2 and declared <= set(u.missing):
                raise CorekdError(
                    f"utterance '{u.id}' lists every modality as missing; expected at least one observed modality "
                    "(leave the utterance out)",
                    path=path,
                    field=f"{uwhere}.missing",
                )
            if u.sentiment is not None and not (math.isfinite(u.sentiment) and -3 <= u.sentiment <= 3):
                raise CorekdError(
                    f"sentiment {u.sentiment} in dialogue '{d.id}'; expected a finite number in [-3, 3]",
                    path=path,
                    field=f"{uwhere}.sentiment",
                )
            if meta.task == "regression" and u.sentiment is None:
                raise CorekdError(
                    "no sentiment; a regression corpus (task 'regression') needs a number in [-3, 3] on "
                    "every utterance",
                    path=path,
                    field=f"{uwhere}.sentiment",
                )
            if meta.version == 1 and (u.sentiment is not None or u.text is not None or u.extra):
                key = "sentiment" if u.sentiment is not None else ("text" if u.text is not None else "extra")
                raise CorekdError(
                    'this field needs format version 2 (set "version": 2)', path=path, field=f"{uwhere}.{key}"
                )


def _locate(meta: CorpusFile, row: int) -> tuple[str, str]:
    for d in meta.dialogues:
        if row < len(d.utterances):
            return d.utterances[row].id, d.id
        row -= len(d.utterances)
    return "?", "?"
