"""Media manifests as prediction input: the bundle's own extraction, re-run on new media.

A bundle made from a run on a corpus that ``corekd features extract`` (or ``corekd data import
meld``) wrote records that extraction in its ``features`` section: the :class:`FeaturesConfig`,
each modality's extractor identity (names, package versions, model file and its SHA-256) and
corekd's extractor version. :func:`media_config` checks that section against the model and against
the extractors installed here, and :class:`ManifestReader` runs those extractors on a manifest's
rows (same code, cache, progress bar and failure handling as ``corekd features extract``) and
yields the dialogues for :func:`corekd.serving.inputs.predict_stream`. A sequence modality's frames
are kept for a model that reads frames (``input: "frames"``) and averaged otherwise, as the corpus
reader gives them for training.

Refused, with a message naming both sides: a bundle with no ``features`` section (synthetic or
imported features: media cannot be turned into its inputs), a model modality the extractors did
not produce, another extractor version, or an installed extractor whose identity differs from the
recorded one (another model file hash, package version or feature set).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from corekd.data.corpus import pool_mean
from corekd.errors import CorekdError
from corekd.serving.bundle import Bundle
from corekd.serving.dialogue import DialogueInput, InputReader, reads_frames

CHUNK_ROWS = 512  # manifest rows extracted (and held) at once; whole dialogues, so a long one may exceed it
IDENTITY_IGNORED = ("kind",)  # derived from the config, which is compared as a whole
FEATURE_MODALITY = {"l": "text", "a": "audio", "v": "visual"}


def media_config(
    bundle: Bundle,
    *,
    where: str | Path | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
):
    """The :class:`~corekd.features.extract.FeaturesConfig` that made the bundle's training features, checked.

    Extractors of modalities the model does not read are switched off; ``cache`` / ``cache_dir`` /
    ``device`` (the text model's) are this machine's settings, not the recorded ones (they do not
    change the features). Raises :class:`CorekdError` for every refusal in the module docstring.
    """
    meta_path = bundle.path / "model.json"
    feats = bundle.features
    models = ", ".join(bundle.modalities)
    if feats is None:
        why = bundle.meta.get("source", {}).get("note") or (
            "its bundle records no extraction: the corpus was imported from precomputed features, or the bundle was "
            "exported before corekd recorded extractions"
        )
        raise CorekdError(
            f"this looks like a media manifest, but this model ({models}) was not trained on features made by corekd's "
            f"feature extractors; {why}. Media cannot be turned into its inputs: predict on features instead (a "
            "corpus folder or a jsonl file, docs/import-jsonl.md), or train on a corpus written by `corekd features "
            "extract` and export its bundle again",
            path=where,
        )
    from corekd.features.extract import (
        EXTRACTOR_VERSION,
        FeaturesConfig,
        extractor_identity,
    )

    recorded = found if isinstance(found := feats.get("extractors"), dict) else {}
    lacking = [m for m in bundle.modalities if m not in recorded]
    if lacking:
        raise CorekdError(
            f"the model reads modality '{lacking[0]}', which corekd's extractors did not produce for its training corpus "
            f"(they produced: {', '.join(recorded) or 'nothing'}); media cannot be turned into that input",
            path=meta_path,
            field=f"bundle.features.extractors.{lacking[0]}",
        )
    version = feats.get("extractor_version")
    if version != EXTRACTOR_VERSION:
        raise CorekdError(
            f"the model's features were made by corekd's extractors version {version!r}; this corekd's extractors are "
            f"version {EXTRACTOR_VERSION} and compute different features; use the corekd that made the bundle",
            path=meta_path,
            field="bundle.features.extractor_version",
        )
    try:
        cfg = FeaturesConfig.model_validate(feats.get("config"))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise CorekdError(
            f"{first['msg']} (a features config this corekd does not read)",
            path=meta_path,
            field=f"bundle.features.config{'.' + loc if loc else ''}",
        ) from None
    update = {"cache": cache, "cache_dir": str(cache_dir) if cache_dir is not None else None}
    for m, name in FEATURE_MODALITY.items():
        section = getattr(cfg, name)
        changes = {"enabled": section.enabled and m in bundle.modalities}
        if m == "l":
            changes["device"] = device
        update[name] = section.model_copy(update=changes)
    cfg = cfg.model_copy(update=update)
    for m in bundle.modalities:
        if not getattr(cfg, FEATURE_MODALITY[m]).enabled:
            raise CorekdError(
                f"the model reads modality '{m}', but the recorded config has its extractor switched off",
                path=meta_path,
                field=f"bundle.features.config.{FEATURE_MODALITY[m]}.enabled",
            )
        here = extractor_identity(m, cfg)
        then = recorded[m] if isinstance(recorded[m], dict) else {}
        keys = [k for k in dict.fromkeys([*then, *here]) if k not in IDENTITY_IGNORED and then.get(k) != here.get(k)]
        if keys:
            diffs = "; ".join(f"{k}: recorded {then.get(k)!r}, installed {here.get(k)!r}" for k in keys)
            raise CorekdError(
                f"the {FEATURE_MODALITY[m]} extractor installed here differs from the one that made the model's '{m}' "
                f"features ({diffs}); its features would not be the ones the model learned from: install the recorded "
                "version or train on features from this one",
                path=meta_path,
                field=f"bundle.features.extractors.{m}.{keys[0]}",
            )
    return cfg


@dataclass
class ManifestPredictions:
    """``Predictor.predict_manifest``'s answer: one row per manifest row, and the extraction summary."""

    rows: list[dict]
    summary: dict


class ManifestReader(InputReader):
    """Dialogues of a media manifest, their features extracted with the bundle's recorded settings.

    Rows are read with ``read_manifest(predict=True)`` (``label`` / ``split`` optional); dialogues
    are extracted in chunks of whole dialogues of about :data:`CHUNK_ROWS` rows, so memory stays
    bounded; the worker processes and the text model are started once. After iteration,
    :attr:`summary` holds what ``corekd features extract`` reports (jobs, computed, cache hits,
    failures, faceless utterances) and ``skipped``: utterances with no modality extracted, which
    get an output row with ``"prediction": null`` and the reason.
    """

    shows_progress = True

    def __init__(
        self,
        path: str | Path,
        bundle: Bundle,
        *,
        workers: int = 1,
        strict: bool = False,
        cache: bool = True,
        cache_dir: str | Path | None = None,
        device: str = "cpu",
        progress: bool = False,
        chunk_rows: int = CHUNK_ROWS,
    ):
        from corekd.features.extract import (
            count_jobs,
            extractor_identity,
            read_manifest,
        )

        if workers < 1:
            raise CorekdError(f"expected at least 1 worker, got {workers}", field="--workers")
        self.path = Path(path)
        self.modalities = bundle.modalities
        self.cfg = media_config(bundle, where=self.path, cache=cache, cache_dir=cache_dir, device=device)
        self.rows = read_manifest(self.path, predict=True)
        self.workers, self.strict, self.progress, self.chunk_rows = workers, strict, progress, max(1, chunk_rows)
        grouped: dict[str, list[int]] = {}
        for i, r in enumerate(self.rows):
            ids = grouped.setdefault(r.dialogue_id, [])
            if any(self.rows[j].utterance_id == r.utterance_id for j in ids):
                raise CorekdError(
                    f"duplicate utterance id '{r.utterance_id}' in dialogue '{r.dialogue_id}'",
                    path=self.path,
                    field=f"{r.where}: utterance_id",
                )
            ids.append(i)
        self.dialogues = list(grouped.items())
        self.total_jobs = count_jobs(self.rows, self.cfg)
        self.summary = {
            "manifest": str(self.path),
            "rows": len(self.rows),
            "dialogues": len(self.dialogues),
            "jobs": 0,
            "computed": 0,
            "cache_hits": 0,
            "cache_dir": None,
            "workers": workers,
            "failures": [],
            "no_face": [],
            "skipped": [],
            "extractors": {m: extractor_identity(m, self.cfg) for m in self.modalities},
            "config": self.cfg.model_dump(mode="json"),
            "seconds": 0.0,
        }

    def __len__(self) -> int:
        return len(self.dialogues)

    def _chunks(self) -> Iterator[list[tuple[str, list[int]]]]:
        chunk: list[tuple[str, list[int]]] = []
        size = 0
        for entry in self.dialogues:
            if chunk and size + len(entry[1]) > self.chunk_rows:
                yield chunk
                chunk, size = [], 0
            chunk.append(entry)
            size += len(entry[1])
        if chunk:
            yield chunk

    def __iter__(self) -> Iterator[DialogueInput]:
        from corekd.features.extract import Progress, TextModel, extract_features

        started = time.perf_counter()
        bar = Progress(self.total_jobs, self.progress)
        text_model = TextModel(self.cfg.text)
        pool = None
        try:
            if self.workers > 1:
                pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))
            for chunk in self._chunks():
                index = [i for _, ids in chunk for i in ids]
                ext = extract_features(
                    [self.rows[i] for i in index],
                    self.cfg,
                    workers=self.workers,
                    strict=self.strict,
                    src=self.path,
                    bar=bar,
                    pool=pool,
                    text_model=text_model,
                )
                for key in ("jobs", "computed"):
                    self.summary[key] += getattr(ext, key)
                self.summary["cache_hits"] += ext.hits
                self.summary["cache_dir"] = str(ext.cache_root) if ext.cache_root else None
                self.summary["failures"] += ext.failures
                self.summary["no_face"] += ext.no_face
                local = {i: k for k, i in enumerate(index)}
                for did, ids in chunk:
                    yield self._dialogue(did, ids, ext, local)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
            bar.close()
            self.summary["seconds"] = round(time.perf_counter() - started, 3)

    def _dialogue(self, did: str, ids: list[int], ext, local: dict[int, int]) -> DialogueInput:
        features: dict[str, list] = {m: [] for m in self.modalities}
        uids, speakers, skipped = [], [], []
        for pos, i in enumerate(ids):
            r = self.rows[i]
            got = {}
            for m, spec in self.modalities.items():
                x = ext.results.get((local[i], m))
                if x is None:
                    continue
                x = np.asarray(x, dtype=np.float32)
                if reads_frames(spec):  # the model reads frames: kept as they are ([F, D]; one vector is one frame)
                    x = x[None] if x.ndim == 1 else x
                    if x.ndim != 2 or x.shape[1] != int(spec["dim"]) or len(x) == 0:
                        raise CorekdError(
                            f"the '{m}' extractor gave frames of shape {list(x.shape)}; the model reads "
                            f"frames of dim {spec['dim']} (at least one)",
                            path=self.path,
                            field=f"{r.where} ({m})",
                        )
                    if not np.isfinite(x).all():
                        raise CorekdError(
                            f"the '{m}' extractor gave non-finite values (NaN/inf)",
                            path=self.path,
                            field=f"{r.where} ({m})",
                        )
                    got[m] = np.ascontiguousarray(x)
                    continue
                if x.ndim == 2:  # a sequence: averaged over its frames, as the corpus reader does for training
                    x = pool_mean(x, np.array([len(x)], np.int64), x.shape[1])[0]
                if x.shape != (int(spec["dim"]),):
                    raise CorekdError(
                        f"the '{m}' extractor gave features of shape {list(x.shape)}; the model's input "
                        f"has dim {spec['dim']}",
                        path=self.path,
                        field=f"{r.where} ({m})",
                    )
                if not np.isfinite(x).all():
                    raise CorekdError(
                        f"the '{m}' extractor gave non-finite values (NaN/inf)",
                        path=self.path,
                        field=f"{r.where} ({m})",
                    )
                got[m] = x
            if not got:
                reasons = [
                    f"{f['modality']}: {f['reason']}"
                    for f in ext.failures
                    if f["utterance"] == r.utterance_id and f["dialogue"] == did
                ]
                reasons += [
                    f"v: no face in {f['frames']} sampled frame(s)"
                    for f in ext.no_face
                    if f["utterance"] == r.utterance_id and f["file"] == r.video_path
                ]
                reason = "no modality could be extracted" + (
                    f" ({'; '.join(reasons)})" if reasons else " (no text or media given for the model's modalities)"
                )
                skipped.append((pos, r.utterance_id, reason))
                self.summary["skipped"].append({"utterance": r.utterance_id, "dialogue": did, "reason": reason})
                continue
            uids.append(r.utterance_id)
            speakers.append(r.speaker)
            for m in self.modalities:
                features[m].append(got.get(m))
        return DialogueInput(id=did, utterance_ids=uids, speakers=speakers, features=features, skipped=skipped)
