"""Dialogues as the model's input: the mapping a caller gives, checked into a :class:`DialogueInput`, and padded arrays.

A dialogue is a mapping (the interchange format of ``docs/import-jsonl.md``, or what
``POST /v1/predict`` takes)::

    {"dialogue_id": "d1", "utterances": [
        {"id": "u0", "speaker": "A", "l": [...], "a": [...]},      # v missing here
        {"id": "u1", "speaker": "B", "v": [...]}]}

A modality key absent from an utterance (or ``null``) means that modality is missing there; the
mask the model sees follows from that. A ``sequence`` modality also takes frames (a list of
equal-length vectors). What becomes of them follows from how the model reads the modality (the
spec's ``input``, set by :func:`~corekd.serving.bundle.read_bundle` from the model):

- ``input: "frames"`` (a ``sequence`` modality of a model whose ``sequence_encoder`` is ``conv``,
  ``transformer`` or ``none``): the frames are kept, ``[F_i, D]`` per utterance, and padded per
  batch (``Batch.frames`` / ``Batch.frame_mask``); a single vector is read as an utterance of one
  frame;
- ``input: "vector"`` (a vector modality, or a ``sequence`` modality of a model with
  ``sequence_encoder: mean`` or one built without ``kinds``): frames are averaged into one vector,
  which is what such a model was trained on.

Utterance keys other than ``id``, ``speaker`` and
the modalities (e.g. ``label``, ``text``) are ignored by :func:`parse_dialogue` (the HTTP service
refuses them instead); a modality the model does not have is an error.

:func:`encode` pads checked dialogues into the arrays :class:`~corekd.serving.module.ServingModule` takes;
:class:`InputReader` is the interface of the readers that yield dialogues one at a time
(:mod:`corekd.serving.inputs`, :mod:`corekd.serving.media`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from corekd.data.corpus import MODALITIES
from corekd.errors import CorekdError
from corekd.serving.schema import reads_frames

ID_KEYS = ("dialogue_id", "id")

__all__ = ["ID_KEYS", "DialogueInput", "InputReader", "encode", "modality_value", "parse_dialogue", "reads_frames"]


@dataclass
class DialogueInput:
    """One dialogue, checked against the model: ids, speakers and per-utterance features (None = missing)."""

    id: str
    utterance_ids: list[str]
    speakers: list[str]
    # m -> per utterance [D_m] float32 (frame-reading modalities: [F_i, D_m] frames, F_i >= 1), or None where missing
    features: dict[str, list[np.ndarray | None]]
    # utterances that have no modality at all (a media manifest's rows whose extraction failed): (position among
    # all of the dialogue's utterances, id, reason); the model never sees them, the output reports them
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    split: str | None = None  # the corpus split it comes from (a corpus folder's input); rows then carry it

    def __len__(self) -> int:
        return len(self.utterance_ids)

    def observed(self, i: int) -> list[str]:
        return [m for m, rows in self.features.items() if rows[i] is not None]


def _frames(value, m: str, spec: dict, where: str) -> np.ndarray:
    """A frame-reading modality's value -> [F, D] float32 frames (a single vector: one frame); errors name the frame."""
    dim = int(spec["dim"])
    if isinstance(value, np.ndarray) and value.dtype != object:
        x = value.astype(np.float32, copy=False)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2:
            raise CorekdError(
                f"got a {x.ndim}-d array; expected frames [F, {dim}] ('{m}' is read frame by frame)", field=where
            )
        if x.shape[1] != dim:
            raise CorekdError(f"frames of dim {x.shape[1]}; expected dim {dim} (the model's '{m}' input)", field=where)
    elif isinstance(value, (list, tuple)):
        if value and not isinstance(value[0], (list, tuple, np.ndarray)):  # a single vector: an utterance of one frame
            return _vector(value, m, {"dim": dim, "kind": "vector"}, where)[None]
        parsed: np.ndarray | None
        try:  # the common case in one step; anything else is checked frame by frame to name the bad one
            parsed = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            parsed = None
        whole = parsed is not None and parsed.ndim == 2 and parsed.shape[1] == dim  # parsed is the frames [F, D]
        rows = []
        for k, frame in enumerate(() if whole else value):
            fwhere = f"{where}[{k}]"
            if not isinstance(frame, (list, tuple, np.ndarray)):
                raise CorekdError(
                    f"expected a frame (a list of {dim} numbers), got {type(frame).__name__}", field=fwhere
                )
            try:
                row = np.asarray(frame, dtype=np.float32)
            except (TypeError, ValueError):
                raise CorekdError(f"expected a frame of {dim} numbers", field=fwhere) from None
            if row.shape != (dim,):
                got = f"{row.shape[0]} numbers" if row.ndim == 1 else f"a {row.ndim}-d array"
                raise CorekdError(f"frame of {got}; expected {dim} (the model's '{m}' input dim)", field=fwhere)
            rows.append(row)
        if parsed is not None and whole and not rows:
            x = parsed
        else:
            x = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
    else:
        raise CorekdError(
            f"expected a list of frames (each a list of {dim} numbers), got {type(value).__name__}", field=where
        )
    if x.shape[0] == 0:
        raise CorekdError("expected at least one frame (leave the modality out where it is missing)", field=where)
    bad = ~np.isfinite(x)
    if bad.any():
        k, j = (int(i) for i in np.argwhere(bad)[0])
        raise CorekdError(f"non-finite value (NaN/inf) at index {j}; expected finite numbers", field=f"{where}[{k}]")
    return np.ascontiguousarray(x)


def _vector(value, m: str, spec: dict, where: str) -> np.ndarray:
    """A modality value -> [D] float32: a vector, or (sequence modalities) frames averaged."""
    dim, kind = int(spec["dim"]), spec.get("kind", "vector")
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise CorekdError(f"expected a list of {dim} numbers, got {type(value).__name__}", field=where)
    try:
        x = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise CorekdError(
            f"expected a list of {dim} numbers" + (" or a list of equal-length frames" if kind == "sequence" else ""),
            field=where,
        ) from None
    if x.ndim == 2 and kind == "sequence":
        if x.shape[0] == 0:
            raise CorekdError("expected at least one frame (leave the modality out where it is missing)", field=where)
        if x.shape[1] != dim:
            raise CorekdError(f"frames of dim {x.shape[1]}; expected dim {dim} (the model's '{m}' input)", field=where)
        if not np.isfinite(x).all():
            raise CorekdError("non-finite value (NaN/inf); expected finite numbers", field=where)
        return x.mean(0, dtype=np.float64).astype(np.float32)
    if x.ndim != 1:
        shape = "frames" if x.ndim == 2 else f"a {x.ndim}-d array"
        raise CorekdError(
            f"got {shape}; expected one vector of {dim} numbers ('{m}' is a {kind} modality)", field=where
        )
    if x.shape[0] != dim:
        raise CorekdError(f"got {x.shape[0]} numbers; expected {dim} (the model's '{m}' input dim)", field=where)
    if not np.isfinite(x).all():
        raise CorekdError(
            f"non-finite value (NaN/inf) at index {int(np.argmin(np.isfinite(x)))}; expected finite numbers",
            field=where,
        )
    return x


def modality_value(value, m: str, spec: dict, where: str) -> np.ndarray:
    """One utterance's value of modality ``m``, checked: [F, D] frames for a frame-reading modality, else [D]."""
    return _frames(value, m, spec, where) if reads_frames(spec) else _vector(value, m, spec, where)


def parse_dialogue(obj: Mapping, modalities: dict[str, dict], where: str = "") -> DialogueInput:
    """Check one dialogue mapping against the model's ``modalities`` ({m: {"dim", "kind"}}); errors name the field."""
    at = lambda f: f"{where}: {f}" if where else f  # noqa: E731
    if not isinstance(obj, Mapping):
        raise CorekdError(f"expected a JSON object (one dialogue), got {type(obj).__name__}", field=where or None)
    did = next((obj[k] for k in ID_KEYS if k in obj), None)
    if not isinstance(did, str) or not did:
        raise CorekdError(f"expected a non-empty string, got {did!r}", field=at("dialogue_id"))
    utts = obj.get("utterances")
    if not isinstance(utts, list) or not utts:
        raise CorekdError(
            "expected a non-empty list of utterances (an empty dialogue has nothing to predict)", field=at("utterances")
        )
    ids, speakers = [], []
    features: dict[str, list] = {m: [] for m in modalities}
    for k, u in enumerate(utts):
        uwhere = at(f"utterances[{k}]")
        if not isinstance(u, Mapping):
            raise CorekdError(f"expected an object, got {type(u).__name__}", field=uwhere)
        uid = u.get("id") if u.get("id") is not None else str(k)
        if not isinstance(uid, str) or not uid:
            raise CorekdError(f"expected a non-empty string, got {uid!r}", field=f"{uwhere}.id")
        speaker = u.get("speaker") if u.get("speaker") is not None else did
        if not isinstance(speaker, str):
            raise CorekdError(f"expected a string, got {speaker!r}", field=f"{uwhere}.speaker")
        unknown = [m for m in MODALITIES if m in u and m not in modalities and u[m] is not None]
        if unknown:
            raise CorekdError(
                f"modality '{unknown[0]}' is not an input of this model (its modalities: {', '.join(modalities)})",
                field=f"{uwhere}.{unknown[0]}",
            )
        seen = False
        for m, spec in modalities.items():
            value = u.get(m)
            if value is None:
                features[m].append(None)
                continue
            features[m].append(modality_value(value, m, spec, f"{uwhere}.{m}"))
            seen = True
        if not seen:
            raise CorekdError(f"no modality given; expected at least one of {', '.join(modalities)}", field=uwhere)
        ids.append(uid)
        speakers.append(speaker)
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise CorekdError(f"duplicate utterance id '{dup}' in dialogue '{did}'", field=at("utterances"))
    return DialogueInput(id=did, utterance_ids=ids, speakers=speakers, features=features)


def encode(
    dialogues: list[DialogueInput], dims: Mapping[str, int], frames: Iterable[str] = ()
) -> dict[str, np.ndarray]:
    """Padded arrays: ``mask`` [B, U, M] bool, ``speakers`` [B, U] int64, ``lengths`` [B] int64, one [B, U, D_m] per modality.

    A modality in ``frames`` (read frame by frame) gives ``<m>_frames`` [B, U, F, D_m] float32 and ``<m>_frame_mask``
    [B, U, F] bool instead, F the batch's most frames of one utterance (at least 1). Padding and missing entries are
    zeros (the model never reads them: the masks say so).
    """
    frames = set(frames)
    b, u = len(dialogues), max(len(d) for d in dialogues)
    arrays = {
        "mask": np.zeros((b, u, len(dims)), dtype=bool),
        "speakers": np.zeros((b, u), dtype=np.int64),
        "lengths": np.array([len(d) for d in dialogues], dtype=np.int64),
    }
    for j, (m, dim) in enumerate(dims.items()):
        if m in frames:
            f = max([len(x) for d in dialogues for x in d.features[m] if x is not None], default=1)
            feats = np.zeros((b, u, f, dim), dtype=np.float32)
            shown = np.zeros((b, u, f), dtype=bool)
            for i, d in enumerate(dialogues):
                for t, x in enumerate(d.features[m]):
                    if x is not None:
                        feats[i, t, : len(x)] = x
                        shown[i, t, : len(x)] = True
                        arrays["mask"][i, t, j] = True
            arrays[f"{m}_frames"], arrays[f"{m}_frame_mask"] = feats, shown
            continue
        feats = np.zeros((b, u, dim), dtype=np.float32)
        for i, d in enumerate(dialogues):
            for t, x in enumerate(d.features[m]):
                if x is not None:
                    feats[i, t] = x
                    arrays["mask"][i, t, j] = True
        arrays[m] = feats
    for i, d in enumerate(dialogues):
        order: dict[str, int] = {}
        arrays["speakers"][i, : len(d)] = [
            order.setdefault(s, len(order)) for s in d.speakers
        ]  # index of first appearance
    return arrays


class InputReader:
    """``len(reader)``: dialogues to come (for the progress bar); iterating yields :class:`DialogueInput`."""

    def __len__(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def __iter__(self) -> Iterator[DialogueInput]:  # pragma: no cover - interface
        raise NotImplementedError
