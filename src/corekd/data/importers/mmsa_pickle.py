"""``corekd data import mmsa-pickle``: MMSA's CMU-MOSI / CMU-MOSEI feature pickles.

See ``docs/import-mmsa-pickle.md``. The file is a dict ``{"train", "valid", "test"}`` of dicts
holding, per clip (row): ``id`` ("video$_$clip"), ``text``/``audio``/``vision`` frame arrays
``[N, T, D]``, ``regression_labels`` ``[N]`` (sentiment in [-3, 3]), optionally ``raw_text`` and,
in the unaligned files, ``audio_lengths``/``vision_lengths``. Clips become utterances, grouped
into one dialogue per video and ordered by clip number; frames are stored as sequences.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from corekd.data.importers.base import CorpusBuilder, ImportResult, Utterance
from corekd.data.unpickle import safe_load
from corekd.errors import CorekdError

SPLIT_OF = {"train": "train", "valid": "dev", "test": "test"}
MODALITY_OF = {"text": "l", "audio": "a", "vision": "v"}
CLASS_SETS = {
    2: ["negative", "non-negative"],  # Acc-2 (negative / non-negative), the has-zero convention
    7: ["-3", "-2", "-1", "0", "1", "2", "3"],  # Acc-7: the sentiment rounded and clipped to [-3, 3]
}


def sentiment_class(value: float, classes: int) -> int:
    """The class index of a sentiment score: 2 classes (negative / non-negative) or 7 (rounded, clipped)."""
    if classes == 2:
        return 0 if value < 0 else 1
    return int(np.clip(np.round(value), -3, 3)) + 3


def _clip_key(clip: str):
    return (0, int(clip), "") if re.fullmatch(r"\d+", clip) else (1, 0, clip)


def import_mmsa_pickle(
    src: str | Path,
    *,
    name: str | None = None,
    classes: int = 2,
    text_key: str = "text",
    task: str = "classification",
) -> ImportResult:
    src = Path(src)
    if classes not in CLASS_SETS:
        raise CorekdError(f"expected 2 or 7 classes, got {classes}", field="--classes")
    data = safe_load(src)
    if not isinstance(data, dict):
        raise CorekdError(
            f"expected a dict with keys train, valid, test; got {type(data).__name__}", path=src, field="pickle"
        )
    present = [s for s in SPLIT_OF if s in data]
    if not present:
        raise CorekdError(f"expected keys train, valid, test; got {sorted(map(str, data))}", path=src, field="pickle")
    builder = CorpusBuilder(src, CLASS_SETS[classes])
    notes: list[str] = []
    neg_inf = 0
    aligned = None
    seq_len: dict[str, int] = {}
    for split in present:
        part = data[split]
        if not isinstance(part, dict):
            raise CorekdError(f"expected a dict of arrays, got {type(part).__name__}", path=src, field=f"['{split}']")
        for key in ("id", "regression_labels"):
            if key not in part:
                raise CorekdError(
                    f"required key missing (found: {', '.join(sorted(map(str, part)))})",
                    path=src,
                    field=f"['{split}']['{key}']",
                )
        ids = [str(v) for v in np.asarray(part["id"]).reshape(-1)]
        n = len(ids)
        labels = np.asarray(part["regression_labels"], dtype=np.float64).reshape(-1)
        if len(labels) != n:
            raise CorekdError(
                f"{len(labels)} labels; expected {n}, one per id", path=src, field=f"['{split}']['regression_labels']"
            )
        keys = {"text": text_key, "audio": "audio", "vision": "vision"}
        arrays = {}
        for mod, key in keys.items():
            if key not in part:
                continue
            x = np.asarray(part[key])
            if x.ndim != 3 or x.shape[0] != n:
                raise CorekdError(
                    f"expected a [clips={n}, frames, dim] array, got shape {list(x.shape)}",
                    path=src,
                    field=f"['{split}']['{key}']",
                )
            if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
                raise CorekdError(f"expected numbers, got dtype {x.dtype}", path=src, field=f"['{split}']['{key}']")
            with np.errstate(over="ignore"):  # a finite value beyond float32's range is refused just below
                x32 = np.array(x, dtype=np.float32)
            overflow = np.isinf(x32) & np.isfinite(x) if x.dtype != np.float32 and np.isinf(x32).any() else None
            if overflow is not None and overflow.any():
                row, frame, j = (int(i) for i in np.argwhere(overflow)[0])
                raise CorekdError(
                    f"value {x[row, frame, j]:.6g} at frame {frame}, index {j} is beyond float32's range; "
                    "expected a float32 number",
                    path=src,
                    field=f"['{split}']['{key}'][{row}]",
                )
            x = x32
            inf = np.isneginf(x)
            neg_inf += int(inf.sum())
            x[inf] = 0.0  # MMSA reads -inf (log of silent COVAREP frames) as 0
            arrays[mod] = x
            seq_len[mod] = x.shape[1]
        lengths = {}
        for mod in arrays:
            key = f"{mod}_lengths"
            if key in part:
                lens = np.asarray(part[key]).reshape(-1)
                if len(lens) != n or (lens < 0).any() or (lens > arrays[mod].shape[1]).any():
                    raise CorekdError(
                        f"expected {n} lengths in 0..{arrays[mod].shape[1]}", path=src, field=f"['{split}']['{key}']"
                    )
                lengths[mod] = lens.astype(np.int64)
        if aligned is None:
            aligned = not lengths
        raw_text = [str(t) for t in part["raw_text"]] if "raw_text" in part else None
        by_video: dict[str, list[tuple[str, int]]] = {}
        for row, uid in enumerate(ids):
            if "$_$" not in uid:
                raise CorekdError(f"id '{uid}'; expected 'video$_$clip'", path=src, field=f"['{split}']['id'][{row}]")
            video, clip = uid.split("$_$", 1)
            by_video.setdefault(video, []).append((clip, row))
        for video, clips in by_video.items():
            clips.sort(key=lambda c: _clip_key(c[0]))
            utterances = []
            for _clip, row in clips:
                where = f"['{split}'] row {row} ('{ids[row]}')"
                feats = {}
                for mod, x in arrays.items():
                    frames = x[row]
                    if mod in lengths:
                        frames = frames[: lengths[mod][row]]
                    else:  # aligned files are zero-padded to a fixed length: drop the all-zero padding frames
                        frames = frames[np.abs(frames).sum(axis=1) > 0]
                    if len(frames):
                        feats[MODALITY_OF[mod]] = builder.feature(
                            MODALITY_OF[mod], frames, f"{where} {mod}", frames=True
                        )
                sentiment = builder.sentiment(float(labels[row]), f"['{split}']['regression_labels'][{row}]")
                utterances.append(
                    Utterance(
                        id=ids[row],
                        speaker=video,
                        label=sentiment_class(sentiment, classes),
                        features=feats,
                        sentiment=sentiment,
                        text=raw_text[row] if raw_text else None,
                    )
                )
            builder.add(video, SPLIT_OF[split], utterances, f"['{split}'] video '{video}'")
    if neg_inf:
        notes.append(f"{neg_inf} audio values of -inf read as 0 (as MMSA does)")
    notes.append(
        f"labels: {classes} classes from the sentiment score ({', '.join(CLASS_SETS[classes])}); the score "
        "itself is kept per utterance as 'sentiment'"
        + (" and is the target (task regression)" if task == "regression" else "")
    )
    cards = {MODALITY_OF[mod]: {"aligned": bool(aligned), "source": f"{src.name} '{mod}' (MMSA)"} for mod in seq_len}
    info = {
        "imported_from": {"format": "mmsa-pickle", "file": src.name, "aligned": bool(aligned), "padded_frames": seq_len}
    }
    corpus = builder.build(name or src.stem, cards=cards, info=info, task=task)
    return ImportResult(corpus, notes)
