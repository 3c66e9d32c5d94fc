"""MELD through the feature extractors: ``corekd data import meld`` and a run's ``data.source: meld``.

:mod:`corekd.data.importers.meld` reads and checks the official annotation files (no extraction);
here its records become manifest rows (:class:`~corekd.features.extract.Row`) that go through the
extractors: the transcripts are embedded by the text extractor and, with ``--media``, each
utterance's clip ``dia{D}_utt{U}.mp4`` goes through the audio and visual extractors too. See
docs/import-meld.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from corekd.data.corpus import load_corpus
from corekd.data.importers.meld import EMOTIONS, SENTIMENTS, annotation_sha256, read_meld
from corekd.errors import CorekdError
from corekd.features.extract import FeaturesConfig, Row, check_out, extract_rows, save_result


def meld_rows(root: str | Path, *, target: str = "emotion", media: str | Path | None = None) -> tuple[list[Row], dict]:
    """One :class:`Row` per utterance of the three official files, in file order; and what was read."""
    records, info = read_meld(root, target=target, media=media)
    return [
        Row(
            dialogue_id=r.dialogue_id,
            utterance_id=r.utterance_id,
            speaker=r.speaker,
            label=r.label,
            split=r.split,
            text=r.text,
            video_path=r.video_path,
            extra=r.extra,
            where=r.where,
        )
        for r in records
    ], info


def import_meld(
    root: str | Path,
    *,
    target: str = "emotion",
    media: str | Path | None = None,
    config: FeaturesConfig | None = None,
    workers: int = 1,
    strict: bool = False,
    name: str | None = None,
    progress: bool = False,
):
    """Rows of the official files -> the extractors -> an :class:`~corekd.features.extract.ExtractionResult`."""
    rows, info = meld_rows(root, target=target, media=media)
    cfg = config or FeaturesConfig()
    if media is None:  # annotations only: the transcripts are the one modality
        cfg = cfg.model_copy(
            update={
                "audio": cfg.audio.model_copy(update={"enabled": False}),
                "visual": cfg.visual.model_copy(update={"enabled": False}),
            }
        )
    if not cfg.text.enabled and media is None:
        raise CorekdError("without --media the transcripts are the only modality; the text extractor must be on")
    return extract_rows(
        rows,
        cfg,
        workers=workers,
        strict=strict,
        labels=EMOTIONS if target == "emotion" else SENTIMENTS,
        name=name or f"meld-{target}",
        src=Path(root),
        progress=progress,
        info=info,
    )


def meld_source_corpus(
    root: str | Path,
    folder: str | Path,
    *,
    target: str = "emotion",
    config: FeaturesConfig | None = None,
    progress: bool = False,
):
    """The corpus a run config with ``data.source: meld`` trains on: imported into ``folder`` on first use, read
    from there afterwards while the annotation files (by SHA-256) and the target are unchanged."""
    root, folder = Path(root), Path(folder)
    meta_path = folder / "corpus.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            made = meta.get("info", {}).get("imported_from", {})
        except (OSError, ValueError, AttributeError):
            made = {}
        want = annotation_sha256(root)
        if made.get("format") == "meld" and made.get("target") == target and made.get("sha256") == want:
            return load_corpus(folder)
        raise CorekdError(
            "this folder holds a corpus that was not imported from these MELD files with this target; "
            "expected a new or empty folder, or the one an earlier run imported",
            path=folder,
            field="data.path",
        )
    check_out(folder)
    result = import_meld(root, target=target, config=config, progress=progress)
    return save_result(result, folder)
