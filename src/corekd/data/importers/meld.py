"""MELD's official annotation files read into checked utterance records (no feature extraction here).

Reads ``train_sent_emo.csv``, ``dev_sent_emo.csv`` and ``test_sent_emo.csv`` (the official splits)
from ``--root``: one row per utterance with ``Utterance`` (the transcript), ``Speaker``,
``Emotion`` (7 classes), ``Sentiment`` (3 classes), ``Dialogue_ID``, ``Utterance_ID`` and the
episode and timing columns, which are kept in each utterance's ``extra``. Dialogue ids restart
in each file, so corpus ids carry the split: ``train_dia12`` and ``train_dia12_utt3``. The
transcripts are repaired where UTF-8 text was decoded as cp1252 (``repair_text``). Each record
names its clip ``dia{D}_utt{U}.mp4`` when a media folder is given.

Turning the records into a corpus needs the feature extractors (the transcripts are embedded; with
``--media`` the clips go through the audio and visual extractors): that is
:mod:`corekd.features.meld` (``corekd data import meld``, a run's ``data.source: meld``), above this
package. See docs/import-meld.md.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from corekd.errors import CorekdError
from corekd.files import file_sha256

SPLIT_FILES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
COLUMNS = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")
# MELD's label orders as its authors' code numbers them.
EMOTIONS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
SENTIMENTS = ["neutral", "positive", "negative"]
# The clip folders of MELD.Raw for each split (the first that exists is used).
MEDIA_FOLDERS = {
    "train": ("train_splits", "train"),
    "dev": ("dev_splits_complete", "dev_splits", "dev"),
    "test": ("output_repeated_splits_test", "test_splits", "test"),
}

# Characters that cp1252 shows for the bytes 0x80-0xBF (UTF-8 continuation bytes); its five undefined
# bytes come through as the C1 control characters of the same code.
_CONT = {}
for _b in range(0x80, 0xC0):
    try:
        _CONT[bytes([_b]).decode("cp1252")] = _b
    except UnicodeDecodeError:
        _CONT[chr(_b)] = _b
_C = "[" + re.escape("".join(_CONT)) + "]"
# A UTF-8 sequence read as cp1252: a lead byte (0xC2-0xF4, the same characters in cp1252 and Latin-1)
# followed by its continuation bytes.
_MOJIBAKE = re.compile(f"(?:[\u00c2-\u00df]{_C}|[\u00e0-\u00ef]{_C}{{2}}|[\u00f0-\u00f4]{_C}{{3}})+")
_C1 = re.compile("[\u0080-\u009f]")


def _as_bytes(text: str) -> bytes:
    return bytes(_CONT[ch] if ch in _CONT else ord(ch) for ch in text)


def repair_text(text: str) -> str:
    """Undo UTF-8 that was decoded as cp1252 ("itâ€™s" -> "it’s"), and cp1252 bytes read as Latin-1
    ("it\\x92s" -> "it’s"). Text that is already right is returned unchanged."""

    def fix(match: re.Match) -> str:
        try:
            return _as_bytes(match.group(0)).decode("utf-8")
        except (UnicodeDecodeError, ValueError):
            return match.group(0)

    text = _MOJIBAKE.sub(fix, text)

    def c1(match: re.Match) -> str:
        try:
            return bytes([ord(match.group(0))]).decode("cp1252")
        except UnicodeDecodeError:
            return match.group(0)

    return _C1.sub(c1, text)


@dataclass
class MeldUtterance:
    """One utterance of MELD's files, checked: ids carry the split, ``label`` is the target's class name."""

    dialogue_id: str
    utterance_id: str
    speaker: str
    label: str
    split: str
    text: str
    video_path: str  # the clip, or "" when no media folder is given
    extra: dict = field(default_factory=dict)  # the other columns (and the other target's class)
    where: str = ""  # e.g. "dev_sent_emo.csv line 7", for error messages


def find_clip(media: Path | None, split: str, d: int, u: int) -> str:
    """The absolute path of clip ``dia{d}_utt{u}.mp4`` of ``split`` under ``media`` ("" without a media folder)."""
    if media is None:
        return ""
    for folder in MEDIA_FOLDERS[split]:
        if (media / folder).is_dir():
            return str((media / folder / f"dia{d}_utt{u}.mp4").absolute())
    return str((media / MEDIA_FOLDERS[split][0] / f"dia{d}_utt{u}.mp4").absolute())


def annotation_sha256(root: str | Path) -> dict[str, str]:
    """SHA-256 of each official file present under ``root`` (what an imported corpus records of its source)."""
    root = Path(root)
    return {fname: file_sha256(root / fname) for fname in SPLIT_FILES.values() if (root / fname).is_file()}


def read_meld(
    root: str | Path, *, target: str = "emotion", media: str | Path | None = None
) -> tuple[list[MeldUtterance], dict]:
    """One record per utterance of the three official files, in file order; and what was read."""
    root = Path(root)
    if target not in ("emotion", "sentiment"):
        raise CorekdError(f"expected emotion or sentiment, got '{target}'", field="--target")
    if not root.is_dir():
        raise CorekdError(
            "MELD folder not found (expected the folder holding train/dev/test_sent_emo.csv)", path=root, field="--root"
        )
    media_dir = Path(media) if media is not None else None
    if media_dir is not None and not media_dir.is_dir():
        raise CorekdError("media folder not found", path=media_dir, field="--media")
    rows: list[MeldUtterance] = []
    repaired: list[dict] = []
    read = {}
    for split, fname in SPLIT_FILES.items():
        path = root / fname
        if not path.is_file():
            raise CorekdError(
                f"missing {fname}; expected {', '.join(SPLIT_FILES.values())} in the MELD folder", path=path
            )
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            for col in COLUMNS:
                if col not in header:
                    raise CorekdError(
                        f"missing column '{col}' (expected MELD's columns: {', '.join(COLUMNS)})",
                        path=path,
                        field="header",
                    )
            seen: dict[tuple[int, int], int] = {}
            n_split = 0
            for n, rec in enumerate(reader, 2):
                where = f"{fname} line {n}"
                try:
                    d, u = int(rec["Dialogue_ID"]), int(rec["Utterance_ID"])
                except (TypeError, ValueError):
                    raise CorekdError(
                        f"expected integer ids, got Dialogue_ID={rec['Dialogue_ID']!r}, "
                        f"Utterance_ID={rec['Utterance_ID']!r}",
                        path=path,
                        field=f"line {n}",
                    ) from None
                if (d, u) in seen:
                    raise CorekdError(
                        f"duplicate utterance dia{d}_utt{u} (also on line {seen[(d, u)]})", path=path, field=f"line {n}"
                    )
                seen[(d, u)] = n
                emotion, sentiment = rec["Emotion"].strip().lower(), rec["Sentiment"].strip().lower()
                if emotion not in EMOTIONS:
                    raise CorekdError(
                        f"unknown emotion '{emotion}' (expected one of: {', '.join(EMOTIONS)})",
                        path=path,
                        field=f"line {n}: Emotion",
                    )
                if sentiment not in SENTIMENTS:
                    raise CorekdError(
                        f"unknown sentiment '{sentiment}' (expected one of: {', '.join(SENTIMENTS)})",
                        path=path,
                        field=f"line {n}: Sentiment",
                    )
                raw = rec["Utterance"] or ""
                text = repair_text(raw).strip()
                if text != raw.strip():
                    repaired.append({"where": where, "before": raw.strip(), "after": text})
                extra = {k: v for k, v in rec.items() if k not in COLUMNS and k is not None}
                extra.update(sentiment=sentiment) if target == "emotion" else extra.update(emotion=emotion)
                rows.append(_row(split, d, u, rec, target, emotion, sentiment, text, media_dir, extra, where))
                n_split += 1
            read[fname] = n_split
    # utterance order within a dialogue: by Utterance_ID (the files list them in order; this makes it certain)
    rows.sort(key=lambda r: (("train", "dev", "test").index(r.split), r.extra["_d"], r.extra["_u"]))
    for r in rows:
        del r.extra["_d"], r.extra["_u"]
    sha = {fname: file_sha256(root / fname) for fname in SPLIT_FILES.values()}
    info = {
        "imported_from": {
            "format": "meld",
            "files": read,
            "sha256": sha,
            "target": target,
            "media": str(media_dir) if media_dir else None,
        },
        "text_repaired": {"count": len(repaired), "examples": repaired[:5]},
    }
    return rows, info


def _row(split, d, u, rec, target, emotion, sentiment, text, media_dir, extra, where) -> MeldUtterance:
    return MeldUtterance(
        dialogue_id=f"{split}_dia{d}",
        utterance_id=f"{split}_dia{d}_utt{u}",
        speaker=(rec["Speaker"] or "").strip() or "unknown",
        label=emotion if target == "emotion" else sentiment,
        split=split,
        text=text,
        video_path=find_clip(media_dir, split, d, u),
        extra={**extra, "_d": d, "_u": u},
        where=where,
    )
