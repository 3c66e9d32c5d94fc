"""``corekd data import meld``: MELD from its official annotation files (and, optionally, its clips).

Reads ``train_sent_emo.csv``, ``dev_sent_emo.csv`` and ``test_sent_emo.csv`` (the official splits)
from ``--root``: one row per utterance with ``Utterance`` (the transcript), ``Speaker``,
``Emotion`` (7 classes), ``Sentiment`` (3 classes), ``Dialogue_ID``, ``Utterance_ID`` and the
episode and timing columns, which are kept in each utterance's ``extra``. Dialogue ids restart
in each file, so corpus ids carry the split: ``train_dia12`` and ``train_dia12_utt3``. The
transcripts are repaired where UTF-8 text was decoded as cp1252 (``repair_text``). The transcripts
are embedded by the text extractor; with ``--media``, each utterance's clip ``dia{D}_utt{U}.mp4``
goes through the audio and visual extractors too (``corekd.features``). See docs/import-meld.md.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from corekd.errors import CorekdError
from corekd.features.extract import FeaturesConfig, Row, extract_rows

SPLIT_FILES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
COLUMNS = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")
# MELD's label orders as its authors' code numbers them.
EMOTIONS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
SENTIMENTS = ["neutral", "positive", "negative"]
# The clip folders of MELD.Raw for each split (the first that exists is used).
MEDIA_FOLDERS = {"train": ("train_splits", "train"), "dev": ("dev_splits_complete", "dev_splits", "dev"),
                 "test": ("output_repeated_splits_test", "test_splits", "test")}

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


def _find_clip(media: Path | None, split: str, d: int, u: int) -> str:
    if media is None:
        return ""
    for folder in MEDIA_FOLDERS[split]:
        if (media / folder).is_dir():
            return str((media / folder / f"dia{d}_utt{u}.mp4").absolute())
    return str((media / MEDIA_FOLDERS[split][0] / f"dia{d}_utt{u}.mp4").absolute())


def meld_rows(root: str | Path, *, target: str = "emotion", media: str | Path | None = None) -> tuple[list[Row], dict]:
    """One :class:`Row` per utterance of the three official files, in file order; and what was read."""
    root = Path(root)
    if target not in ("emotion", "sentiment"):
        raise CorekdError(f"expected emotion or sentiment, got '{target}'", field="--target")
    if not root.is_dir():
        raise CorekdError("MELD folder not found (expected the folder holding train/dev/test_sent_emo.csv)", path=root,
                          field="--root")
    media_dir = Path(media) if media is not None else None
    if media_dir is not None and not media_dir.is_dir():
        raise CorekdError("media folder not found", path=media_dir, field="--media")
    rows: list[Row] = []
    repaired: list[dict] = []
    read = {}
    for split, fname in SPLIT_FILES.items():
        path = root / fname
        if not path.is_file():
            raise CorekdError(f"missing {fname}; expected {', '.join(SPLIT_FILES.values())} in the MELD folder",
                              path=path)
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            for col in COLUMNS:
                if col not in header:
                    raise CorekdError(f"missing column '{col}' (expected MELD's columns: {', '.join(COLUMNS)})",
                                      path=path, field="header")
            seen: dict[tuple[int, int], int] = {}
            n_split = 0
            for n, rec in enumerate(reader, 2):
                where = f"{fname} line {n}"
                try:
                    d, u = int(rec["Dialogue_ID"]), int(rec["Utterance_ID"])
                except (TypeError, ValueError):
                    raise CorekdError(f"expected integer ids, got Dialogue_ID={rec['Dialogue_ID']!r}, "
                                      f"Utterance_ID={rec['Utterance_ID']!r}", path=path, field=f"line {n}") from None
                if (d, u) in seen:
                    raise CorekdError(f"duplicate utterance dia{d}_utt{u} (also on line {seen[(d, u)]})", path=path,
                                      field=f"line {n}")
                seen[(d, u)] = n
                emotion, sentiment = rec["Emotion"].strip().lower(), rec["Sentiment"].strip().lower()
                if emotion not in EMOTIONS:
                    raise CorekdError(f"unknown emotion '{emotion}' (expected one of: {', '.join(EMOTIONS)})",
                                      path=path, field=f"line {n}: Emotion")
                if sentiment not in SENTIMENTS:
                    raise CorekdError(f"unknown sentiment '{sentiment}' (expected one of: {', '.join(SENTIMENTS)})",
                                      path=path, field=f"line {n}: Sentiment")
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
    from corekd.files import file_sha256

    sha = {fname: file_sha256(root / fname) for fname in SPLIT_FILES.values()}
    info = {"imported_from": {"format": "meld", "files": read, "sha256": sha, "target": target,
                              "media": str(media_dir) if media_dir else None},
            "text_repaired": {"count": len(repaired), "examples": repaired[:5]}}
    return rows, info


def _row(split, d, u, rec, target, emotion, sentiment, text, media_dir, extra, where) -> Row:
    return Row(dialogue_id=f"{split}_dia{d}", utterance_id=f"{split}_dia{d}_utt{u}",
               speaker=(rec["Speaker"] or "").strip() or "unknown",
               label=emotion if target == "emotion" else sentiment, split=split, text=text,
               video_path=_find_clip(media_dir, split, d, u), extra={**extra, "_d": d, "_u": u}, where=where)


def import_meld(root: str | Path, *, target: str = "emotion", media: str | Path | None = None,
                config: FeaturesConfig | None = None, workers: int = 1, strict: bool = False, name: str | None = None,
                progress: bool = False):
    """Rows of the official files -> the extractors -> an :class:`~corekd.features.extract.ExtractionResult`."""
    rows, info = meld_rows(root, target=target, media=media)
    cfg = config or FeaturesConfig()
    if media is None:  # annotations only: the transcripts are the one modality
        cfg = cfg.model_copy(update={"audio": cfg.audio.model_copy(update={"enabled": False}),
                                     "visual": cfg.visual.model_copy(update={"enabled": False})})
    if not cfg.text.enabled and media is None:
        raise CorekdError("without --media the transcripts are the only modality; the text extractor must be on")
    return extract_rows(rows, cfg, workers=workers, strict=strict,
                        labels=EMOTIONS if target == "emotion" else SENTIMENTS,
                        name=name or f"meld-{target}", src=Path(root), progress=progress, info=info)


def meld_source_corpus(root: str | Path, folder: str | Path, *, target: str = "emotion",
                       config: FeaturesConfig | None = None, progress: bool = False):
    """The corpus a run config with ``data.source: meld`` trains on: imported into ``folder`` on first use, read
    from there afterwards while the annotation files (by SHA-256) and the target are unchanged."""
    import json

    from corekd.data.corpus import load_corpus
    from corekd.features.extract import check_out, save_result
    from corekd.files import file_sha256

    root, folder = Path(root), Path(folder)
    meta_path = folder / "corpus.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            made = meta.get("info", {}).get("imported_from", {})
        except (OSError, ValueError, AttributeError):
            made = {}
        want = {fname: file_sha256(root / fname) for fname in SPLIT_FILES.values() if (root / fname).is_file()}
        if made.get("format") == "meld" and made.get("target") == target and made.get("sha256") == want:
            return load_corpus(folder)
        raise CorekdError("this folder holds a corpus that was not imported from these MELD files with this target; "
                          "expected a new or empty folder, or the one an earlier run imported", path=folder,
                          field="data.path")
    check_out(folder)
    result = import_meld(root, target=target, config=config, progress=progress)
    return save_result(result, folder)
