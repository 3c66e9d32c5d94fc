"""What every importer shares: checking values as they are read, and building the corpus.

An importer reads its source format and hands each dialogue to a :class:`CorpusBuilder`, which
checks every value against what came before (feature dims and kinds, label range, sentiment
range, unique ids) and reports a problem as one line naming the source file, where in it, and
what was expected. :func:`finish` carves a dev split when the source has none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from corekd.data.corpus import MODALITIES, Corpus, Dialogue, ModalitySpec, pool_mean
from corekd.data.splits import carve_dev, describe
from corekd.errors import CorekdError, shown

FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class ImportResult:
    corpus: Corpus
    notes: list[str] = field(default_factory=list)  # what the importer did that the user must know


@dataclass
class Utterance:
    id: str
    speaker: str
    label: int  # index into the label names
    features: dict[str, np.ndarray]  # m -> [D] (vector) or [F, D] (frames) float32; absent = genuinely missing
    sentiment: float | None = None
    text: str | None = None
    extra: dict = field(default_factory=dict)


class CorpusBuilder:
    """Collects dialogues, checking each value on arrival (``where`` names the place in the source)."""

    def __init__(self, src: str | Path, labels: list[str]):
        self.src = Path(src)
        self.labels = list(labels)
        self.dims: dict[str, tuple[int, str]] = {}  # m -> (dim, where it was first seen)
        self.kinds: dict[str, str] = {}
        self.dialogues: list[tuple[str, str, list[Utterance]]] = []
        self._utterance_owner: dict[str, str] = {}
        self._dialogue_ids: set[str] = set()

    def error(self, where: str, message: str) -> CorekdError:
        return CorekdError(message, path=self.src, field=where)

    def feature(self, m: str, value: object, where: str, *, frames: bool | None = None) -> np.ndarray:
        """A feature value as float32 ``[D]`` or ``[F, D]``, checked against the modality's first value."""
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            raise self.error(where, "expected a list of numbers (a vector) or of equal-length lists (frames)") from None
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise self.error(where, f"expected numbers, got values of type {arr.dtype}")
        if frames is None:
            frames = arr.ndim == 2
        if arr.ndim != (2 if frames else 1):
            want = "[frames, dim]" if frames else "[dim]"
            raise self.error(where, f"expected a {'2' if frames else '1'}-d array {want}, got shape {list(arr.shape)}")
        kind = "sequence" if frames else "vector"
        if self.kinds.setdefault(m, kind) != kind:
            raise self.error(
                where, f"modality '{m}' was {self.kinds[m]} data before; expected {self.kinds[m]} here too"
            )
        dim = int(arr.shape[-1])
        first, first_where = self.dims.setdefault(m, (dim, where))
        if dim != first:
            raise self.error(
                where,
                f"feature dim {dim} differs from the dim {first} of '{m}' at {first_where}; "
                "expected the same dim for every utterance",
            )
        if dim == 0:
            raise self.error(where, "expected at least one feature, got an empty vector")
        if not np.isfinite(arr).all():
            raise self.error(
                where, f"{int((~np.isfinite(arr)).sum())} non-finite values (NaN/inf); expected finite numbers"
            )
        with np.errstate(over="ignore"):  # checked below, where the value is named
            out = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(out).all():
            k = tuple(int(i) for i in np.argwhere(~np.isfinite(out))[0])
            raise self.error(
                where,
                f"value {arr[k]:.6g} at index {k[-1]}{f' of frame {k[0]}' if frames else ''} is beyond "
                f"float32's range (+-{FLOAT32_MAX:.4g}); expected a float32 number",
            )
        if frames and not (np.abs(arr).sum(axis=0, dtype=np.float64) < FLOAT32_MAX).all():
            raise self.error(
                where,
                f"the frames' sum (for their mean) is beyond float32's range (+-{FLOAT32_MAX:.4g}); "
                "expected smaller values",
            )
        return out

    def label(self, value: object, where: str) -> int:
        """An integer index or a label name -> the index, checked against the label names."""
        if isinstance(value, (bool, np.bool_)):
            raise self.error(where, f"expected a label name or index, got {shown(value)}")
        if isinstance(value, (int, np.integer)):
            if not 0 <= int(value) < len(self.labels):
                raise self.error(
                    where,
                    f"label index {int(value)} outside the {len(self.labels)} labels "
                    f"({', '.join(self.labels)}); expected 0..{len(self.labels) - 1}",
                )
            return int(value)
        if isinstance(value, str):
            if value not in self.labels:
                raise self.error(where, f"unknown label '{value}' (expected one of: {', '.join(self.labels)})")
            return self.labels.index(value)
        raise self.error(where, f"expected a label name or index, got {type(value).__name__}")

    def sentiment(self, value: object, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise self.error(where, f"expected a number in [-3, 3], got {type(value).__name__}")
        value = float(value)
        if not (math.isfinite(value) and -3 <= value <= 3):
            raise self.error(where, f"sentiment {value}; expected a finite number in [-3, 3]")
        return value

    def add(self, dialogue_id: str, split: str, utterances: list[Utterance], where: str) -> None:
        if not dialogue_id:
            raise self.error(where, "expected a non-empty dialogue id")
        if dialogue_id in self._dialogue_ids:
            raise self.error(where, f"duplicate dialogue id '{dialogue_id}'")
        if not utterances:
            raise self.error(where, f"dialogue '{dialogue_id}' has no utterances; expected at least one")
        for k, u in enumerate(utterances):
            if not u.id:
                raise self.error(f"{where} utterance {k}", "expected a non-empty utterance id")
            owner = self._utterance_owner.get(u.id)
            if owner is not None:
                raise self.error(
                    f"{where} utterance {k}",
                    f"duplicate utterance id '{u.id}' (also in dialogue '{owner}'); "
                    "expected ids unique across the corpus",
                )
            if not u.features:
                raise self.error(
                    f"{where} utterance {k}",
                    f"utterance '{u.id}' has no modality at all; expected at least one of l, a, v",
                )
            self._utterance_owner[u.id] = dialogue_id
        self._dialogue_ids.add(dialogue_id)
        self.dialogues.append((dialogue_id, split, utterances))

    def build(
        self, name: str, cards: dict[str, dict] | None = None, info: dict | None = None, task: str = "classification"
    ) -> Corpus:
        if len(self.labels) < 2:
            raise self.error("labels", f"found {len(self.labels)} label(s); expected at least two classes")
        order = [m for m in MODALITIES if m in self.dims]
        if not order:
            raise self.error("features", "no modality features found; expected at least one of l, a, v")
        cards = cards or {}
        specs = {m: ModalitySpec(dim=self.dims[m][0], kind=self.kinds[m], **cards.get(m, {})) for m in order}  # type: ignore[arg-type]
        dialogues = []
        for did, split, utts in self.dialogues:
            n = len(utts)
            avail = np.array([[m in u.features for m in order] for u in utts], dtype=bool).reshape(n, len(order))
            feats, frames = {}, {}
            for m in order:
                dim = self.dims[m][0]
                if specs[m].kind == "sequence":
                    lengths = np.array([len(u.features[m]) if m in u.features else 0 for u in utts], dtype=np.int64)
                    flat = [u.features[m] for u in utts if m in u.features]
                    stacked = np.concatenate(flat) if flat else np.zeros((0, dim), np.float32)
                    for k, u in enumerate(utts):
                        if m in u.features and lengths[k] == 0:
                            raise self.error(
                                f"dialogue '{did}' utterance '{u.id}'",
                                f"0 frames of '{m}'; expected at least one frame, or the modality left out",
                            )
                    frames[m] = (stacked.astype(np.float32), lengths)
                    feats[m] = pool_mean(stacked, lengths, dim)
                else:
                    x = np.zeros((n, dim), dtype=np.float32)
                    for k, u in enumerate(utts):
                        if m in u.features:
                            x[k] = u.features[m]
                    feats[m] = x
            sentiment = [u.sentiment for u in utts]
            texts = [u.text for u in utts]
            extras = [u.extra for u in utts]
            dialogues.append(
                Dialogue(
                    id=did,
                    split=split,
                    utterance_ids=[u.id for u in utts],
                    speakers=[u.speaker for u in utts],
                    labels=np.array([u.label for u in utts], dtype=np.int64),
                    features=feats,
                    available=avail,
                    sentiment=None
                    if all(s is None for s in sentiment)
                    else np.array([np.nan if s is None else s for s in sentiment], dtype=np.float32),
                    texts=None if all(t is None for t in texts) else texts,
                    extras=None if not any(extras) else extras,
                    frames=frames,
                )
            )
        return Corpus(
            name=name,
            labels=self.labels,
            modalities=specs,
            dialogues=dialogues,
            task=task,  # type: ignore[arg-type]
            info=dict(info or {}),
        )


def finish(result: ImportResult, *, dev_fraction: float, seed: int) -> ImportResult:
    """Carve a dev split from train when the source has none (recorded in ``info.dev_split``)."""
    corpus = result.corpus
    if not corpus.split("dev") and corpus.split("train"):
        record = carve_dev(corpus, dev_fraction, seed)
        result.notes.append(f"the source has no dev split: {describe(record)}")
    for split in ("train", "test"):
        if not corpus.split(split):
            result.notes.append(f"the source has no {split} split (`corekd run` needs one)")
    return result
