"""``corekd features extract``: a manifest of dialogues and media -> a corpus folder ``corekd run`` trains on.

Offline, loud and reproducible: every model ships inside a pip package and is loaded by path;
every input is cached by content hash and extractor identity (a re-run on the same inputs does no
work); a missing or undecodable file is reported, its modality marked missing for that utterance,
and the run goes on (``strict=True``: the first failure stops it). The summary lists every
failure; it is printed, written to ``extraction.json`` beside the corpus and kept in the corpus's
``info.features``. See docs/features.md.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from corekd.data.corpus import SPLITS, Corpus, load_corpus
from corekd.data.importers.base import CorpusBuilder, Utterance
from corekd.errors import CorekdError, from_validation_error
from corekd.features.cache import FeatureCache, default_cache_dir, text_sha256
from corekd.features.worker import run_file_job
from corekd.files import check_new_or_empty, staged_folder

REQUIRED = ("dialogue_id", "utterance_id", "speaker", "label", "split")
MEDIA = ("text", "audio_path", "video_path")
EXTRACTOR_VERSION = 1  # bump when the code of an extractor changes its output (invalidates cached entries)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TextOptions(_Strict):
    enabled: bool = Field(True, description="embed the transcripts (modality l)")
    tokens: bool = Field(
        False,
        description="keep the token states [tokens, 384] as a sequence instead of the pooled 384-d sentence embedding",
    )
    batch_size: int = Field(64, ge=1, description="transcripts per forward pass")
    device: str = Field("cpu", description="torch device of the text model (cpu, cuda, cuda:N)")


class AudioOptions(_Strict):
    enabled: bool = Field(True, description="openSMILE features (modality a)")
    feature_set: Literal["eGeMAPSv02", "ComParE_2016"] = Field("eGeMAPSv02", description="openSMILE feature set")
    level: Literal["functionals", "lld"] = Field(
        "functionals",
        description="functionals (one vector per utterance) or low-level descriptors (a frame sequence, 100 frames/s)",
    )
    sample_rate: int = Field(16000, ge=8000, description="rate the audio is resampled to before openSMILE")
    from_video: bool = Field(
        True, description="take the audio from the video's sound track when a row has a video but no audio file"
    )


class VisualOptions(_Strict):
    enabled: bool = Field(True, description="face descriptors (modality v)")
    fps: float = Field(2.0, gt=0, description="frames sampled per second of video")
    max_frames: int = Field(32, ge=1, description="at most this many sampled frames per utterance")
    embedding: Literal["hog", "pyemotion"] = Field(
        "hog",
        description="face descriptor: hog (HOG of the face crop, 1764-d for size 64) or pyemotion (the 256-d "
        "hidden layer of the facial-expression CNN shipped in the PyEmotion wheel)",
    )
    size: int = Field(
        64,
        ge=16,
        description="side of the square face crop (pixels) the HOG descriptor is computed "
        "on (hog only: pyemotion's network takes 48x48)",
    )
    margin: float = Field(0.1, ge=0, le=1, description="margin added around the detected face box (share of its size)")
    pooling: Literal["mean", "sequence"] = Field(
        "mean", description="mean over the frames with a face (one vector per utterance) or keep them as a sequence"
    )

    @model_validator(mode="after")
    def _size_is_for_hog(self) -> VisualOptions:
        if self.embedding == "pyemotion" and self.size != 64:
            raise ValueError(
                f"visual.size ({self.size}) applies to embedding 'hog' only; the pyemotion network "
                "takes a fixed 48x48 crop (leave size at its default, 64)"
            )
        return self


class FeaturesConfig(_Strict):
    text: TextOptions = Field(default_factory=TextOptions)
    audio: AudioOptions = Field(default_factory=AudioOptions)
    visual: VisualOptions = Field(default_factory=VisualOptions)
    cache: bool = Field(True, description="cache extracted features by content hash (a re-run does no work)")
    cache_dir: str | None = Field(None, description="cache folder (default $COREKD_CACHE or ~/.cache/corekd/features)")


def load_features_config(path: str | Path | None) -> FeaturesConfig:
    if path is None:
        return FeaturesConfig()
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CorekdError("features config not found", path=path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise CorekdError(f"not valid YAML: {exc}", path=path) from None
    try:
        return FeaturesConfig.model_validate(raw)
    except ValidationError as exc:
        raise from_validation_error(exc, path, model=FeaturesConfig) from None


@dataclass
class Row:
    """One manifest row (one utterance); an empty text or path means that modality is missing."""

    dialogue_id: str
    utterance_id: str
    speaker: str
    label: str
    split: str
    text: str = ""
    audio_path: str = ""
    video_path: str = ""
    extra: dict = field(default_factory=dict)
    where: str = ""  # e.g. "line 7", for error messages


PREDICT_REQUIRED = ("dialogue_id", "utterance_id")


def read_manifest(path: str | Path, *, predict: bool = False) -> list[Row]:
    """The rows of a manifest CSV (``.tsv``: tab-separated); relative media paths are read from the manifest's folder.

    ``predict=True`` (``corekd predict``): only ``dialogue_id`` and ``utterance_id`` are required;
    ``speaker`` defaults to one speaker per dialogue (as in the interchange format), ``label`` and
    ``split`` are optional and not read.
    """
    path = Path(path)
    if not path.is_file():
        raise CorekdError("manifest not found", path=path)
    required = PREDICT_REQUIRED if predict else REQUIRED
    optional = tuple(c for c in REQUIRED if c not in required) + MEDIA
    data = path.read_bytes()
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CorekdError(
            f"not UTF-8 text (undecodable byte at position {exc.start}); expected a UTF-8 CSV/TSV file",
            path=path,
            field=f"line {line}",
        ) from None
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        columns = reader.fieldnames or []
        for col in required:
            if col not in columns:
                raise CorekdError(
                    f"missing column '{col}' (required: {', '.join(required)}; optional: {', '.join(optional)})",
                    path=path,
                    field="header",
                )
        if not any(c in columns for c in MEDIA):
            raise CorekdError(
                f"no media column; expected at least one of {', '.join(MEDIA)}", path=path, field="header"
            )
        rows = []
        for n, rec in enumerate(reader, 2):
            if None in rec:
                raise CorekdError(f"{len(rec[None])} more value(s) than columns", path=path, field=f"line {n}")
            values = {k: (v or "").strip() if k != "text" else (v or "") for k, v in rec.items()}
            for col in required:
                if not values[col]:
                    raise CorekdError(f"empty '{col}'; expected a value", path=path, field=f"line {n}: {col}")
            if not predict and values["split"] not in SPLITS:
                raise CorekdError(
                    f"split '{values['split']}'; expected one of {', '.join(SPLITS)}",
                    path=path,
                    field=f"line {n}: split",
                )
            media = {}
            for col in ("audio_path", "video_path"):
                value = values.get(col, "")
                media[col] = str((path.parent / value).absolute()) if value and not Path(value).is_absolute() else value
            rows.append(
                Row(
                    dialogue_id=values["dialogue_id"],
                    utterance_id=values["utterance_id"],
                    speaker=values.get("speaker") or values["dialogue_id"],
                    label=values.get("label", ""),
                    split=values.get("split", ""),
                    text=values.get("text", "").strip(),
                    **media,
                    extra={k: v for k, v in values.items() if k not in REQUIRED + MEDIA},
                    where=f"line {n}",
                )
            )
    if not rows:
        raise CorekdError("no rows; expected one row per utterance", path=path)
    return rows


# ---------------------------------------------------------------------------------------------- jobs


def _audio_id(o: AudioOptions) -> str:
    return f"audio-opensmile-{o.feature_set}-{o.level}-{o.sample_rate}-v{EXTRACTOR_VERSION}"


def _visual_id(o: VisualOptions) -> str:
    if o.embedding == "pyemotion":
        from corekd.features.visual import pyemotion_sha256

        return (
            f"visual-dlib-pyemotion{pyemotion_sha256()[:16]}-fps{o.fps:g}-max{o.max_frames}-m{o.margin:g}"
            f"-v{EXTRACTOR_VERSION}"
        )
    return f"visual-dlibhog-fps{o.fps:g}-max{o.max_frames}-s{o.size}-m{o.margin:g}-v{EXTRACTOR_VERSION}"


def _versions_tag(kind: str) -> str:
    from importlib import metadata

    if kind == "audio":
        return f"opensmile{metadata.version('opensmile')}"
    tag = f"dlib{metadata.version('dlib-bin')}-skimage{metadata.version('scikit-image')}"
    if kind == "visual-pyemotion":
        tag += f"-pyemotion{metadata.version('PyEmotion')}-torch{metadata.version('torch')}"
    return tag


class Progress:
    """One bar over every job; its text counts failures as they happen."""

    def __init__(self, total: int, show: bool):
        self.failures = 0
        self.bar = None
        if show and total:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(
                TextColumn("extracting"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self.bar.start()
            self.task = self.bar.add_task("extract", total=total, info="failures 0")

    def advance(self, n: int = 1, failed: int = 0) -> None:
        self.failures += failed
        if self.bar is not None:
            self.bar.update(self.task, advance=n, info=f"failures {self.failures}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


_Progress = Progress  # the name earlier versions used


@dataclass
class ExtractionResult:
    corpus: Corpus
    summary: dict


@dataclass
class Extracted:
    """What :func:`extract_features` found for a list of rows (no corpus yet)."""

    results: dict[tuple[int, str], np.ndarray]  # (row index, modality) -> [D] or [F, D]
    failures: list[dict]
    no_face: list[dict]
    jobs: int
    computed: int
    hits: int
    cache_root: Path | None
    text_ident: dict | None  # the text model's identity when text was embedded


class TextModel:
    """The MiniLM embedder, loaded on first use and then kept (several calls of :func:`extract_features` share it)."""

    def __init__(self, cfg: TextOptions):
        self.cfg = cfg
        self._embedder = None

    def get(self):
        if self._embedder is None:
            from corekd.features import text as text_mod

            self._embedder = text_mod.TextEmbedder(device=self.cfg.device, batch_size=self.cfg.batch_size)
        return self._embedder


def _card(ident: dict) -> str:
    parts = [ident["extractor"], ident.get("package", "")]
    if ident.get("model_sha256"):
        parts.append(f"{ident['model_file']} sha256:{ident['model_sha256'][:16]}")
    return "; ".join(p for p in parts if p)


def count_jobs(rows: list[Row], cfg: FeaturesConfig) -> int:
    """How many (row, modality) jobs :func:`extract_features` runs for ``rows`` (the progress bar's total)."""
    n = 0
    for r in rows:
        n += bool(cfg.audio.enabled and (r.audio_path or (r.video_path if cfg.audio.from_video else "")))
        n += bool(cfg.visual.enabled and r.video_path)
        n += bool(cfg.text.enabled and r.text)
    return n


def extractor_identity(m: str, cfg: FeaturesConfig) -> dict:
    """The identity of modality ``m``'s extractor under ``cfg`` on this installation (what dataset cards record).

    Names, package versions, model file (and, for text, its SHA-256) and the options that shape the
    output; ``kind`` says utterance-level or sequence. Raises :class:`CorekdError` when the
    extractor's package is not installed.
    """
    from importlib import metadata

    try:
        if m == "l":
            from corekd.features import text as text_mod

            ident = text_mod.identity()
            return {**ident, "kind": "sequence (token states)" if cfg.text.tokens else "utterance-level"}
        if m == "a":
            from corekd.features.audio import LLD_FRAME_RATE
            from corekd.features.audio import identity as audio_identity

            ident = audio_identity(cfg.audio.feature_set, cfg.audio.level, cfg.audio.sample_rate)
            return {
                **ident,
                "kind": f"sequence ({LLD_FRAME_RATE:g} frames/s)" if cfg.audio.level == "lld" else "utterance-level",
            }
        if m == "v":
            from corekd.features.visual import identity as visual_identity

            ident = visual_identity(
                cfg.visual.fps, cfg.visual.max_frames, cfg.visual.size, cfg.visual.margin, cfg.visual.embedding
            )
            return {
                **ident,
                "kind": f"sequence (faces at {cfg.visual.fps:g} frames/s)"
                if cfg.visual.pooling == "sequence"
                else "utterance-level (mean over frames with a face)",
            }
    except (ImportError, metadata.PackageNotFoundError) as exc:
        raise CorekdError(
            f"the '{m}' extractor needs the features extra (pip install 'corekd[features]'): {exc}"
        ) from None
    raise CorekdError(f"no extractor for modality '{m}' (expected l, a or v)")


def extract_features(
    rows: list[Row],
    cfg: FeaturesConfig,
    *,
    workers: int = 1,
    strict: bool = False,
    src: str | Path = "manifest",
    bar: Progress | None = None,
    on_failure: Callable[[dict], None] | None = None,
    pool: Executor | None = None,
    text_model: TextModel | None = None,
) -> Extracted:
    """Run every enabled extractor on every row; failures are recorded (``strict``: the first one raises).

    ``pool``: an executor of worker processes to use instead of starting ``workers`` new ones;
    ``text_model``: an embedder kept between calls. Results come back in row order, the same for
    any number of workers.
    """
    if workers < 1:
        raise CorekdError(f"expected at least 1 worker, got {workers}", field="--workers")
    cache_root = (Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()) if cfg.cache else None
    cache = FeatureCache(cache_root)
    bar = bar or Progress(0, False)
    failures: list[dict] = []
    results: dict[tuple[int, str], np.ndarray] = {}  # (row index, modality) -> [D] or [F, D]
    no_face: list[dict] = []
    hits = computed = 0

    def fail(i: int, m: str, path: str, reason: str) -> None:
        record = {
            "utterance": rows[i].utterance_id,
            "dialogue": rows[i].dialogue_id,
            "modality": m,
            "file": path,
            "reason": reason,
        }
        failures.append(record)
        if on_failure is not None:
            on_failure(record)
        if strict:
            raise CorekdError(
                f"utterance '{rows[i].utterance_id}', modality {m}: {reason} (--strict stops at the first failure)",
                path=src,
                field=rows[i].where or None,
            )

    jobs = []
    if cfg.audio.enabled:
        aid = f"{_audio_id(cfg.audio)}-{_versions_tag('audio')}"
        for i, r in enumerate(rows):
            path = r.audio_path or (r.video_path if cfg.audio.from_video else "")
            if path:
                jobs.append((i, "a", path, cfg.audio.model_dump(), str(cache_root) if cache_root else None, aid))
    if cfg.visual.enabled:
        vid = f"{_visual_id(cfg.visual)}-{_versions_tag('visual-' + cfg.visual.embedding)}"
        for i, r in enumerate(rows):
            if r.video_path:
                jobs.append(
                    (i, "v", r.video_path, cfg.visual.model_dump(), str(cache_root) if cache_root else None, vid)
                )
    text_rows = [i for i, r in enumerate(rows) if r.text] if cfg.text.enabled else []

    def run_in(executor: Executor) -> list:
        done = []
        futures = {executor.submit(run_file_job, job): job for job in jobs}
        for future in as_completed(futures):
            outcome = future.result()
            done.append((futures[future], outcome))
            bar.advance(failed=outcome[1] == "failed")
            if outcome[1] == "failed" and strict:
                for other in futures:
                    other.cancel()
                fail(futures[future][0], futures[future][1], futures[future][2], outcome[2])
        return done

    outcomes = []
    if pool is not None and len(jobs) > 1:
        outcomes = run_in(pool)
    elif workers == 1 or len(jobs) <= 1:
        for job in jobs:
            outcome = run_file_job(job)
            outcomes.append((job, outcome))
            bar.advance(failed=outcome[1] == "failed")
            if outcome[1] == "failed" and strict:
                fail(job[0], job[1], job[2], outcome[2])
    elif jobs:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold torch's thread pools
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as own_pool:
            outcomes = run_in(own_pool)
    outcomes.sort(key=lambda jo: (jo[0][0], jo[0][1]))  # row order, then modality: same result for any N
    for job, (i, status, payload, hit) in outcomes:
        m = job[1]
        if status == "failed":
            fail(i, m, job[2], payload)
            continue
        hits += hit
        computed += not hit
        if m == "v":
            faces, sampled = payload["x"], int(payload["sampled"])
            if len(faces) == 0:
                no_face.append({"utterance": rows[i].utterance_id, "file": job[2], "frames": sampled})
                continue
            results[(i, m)] = faces if cfg.visual.pooling == "sequence" else faces.mean(axis=0)
            rows[i].extra.setdefault("face_frames", f"{len(faces)}/{sampled}")
        else:
            results[(i, m)] = payload["x"]
    text_ident = None
    if text_rows:
        from corekd.features import text as text_mod

        text_ident = text_mod.identity()
        tid = f"text-minilm-{'tokens' if cfg.text.tokens else 'sentence'}-{text_ident['model_sha256'][:16]}-v{EXTRACTOR_VERSION}"
        todo = []
        for i in text_rows:
            got = cache.get(tid, text_sha256(rows[i].text))
            if got is None:
                todo.append(i)
            else:
                results[(i, "l")] = got["x"]
                hits += 1
                bar.advance()
        if todo:
            embedder = (text_model or TextModel(cfg.text)).get()
            chunk = max(cfg.text.batch_size * 8, 1)
            for start in range(0, len(todo), chunk):
                part = todo[start : start + chunk]
                texts = [rows[i].text for i in part]
                outs = embedder.tokens(texts) if cfg.text.tokens else list(embedder.embed(texts))
                for i, x in zip(part, outs):
                    results[(i, "l")] = x
                    cache.put(tid, text_sha256(rows[i].text), {"x": x})
                    computed += 1
                bar.advance(len(part))
    return Extracted(
        results=results,
        failures=failures,
        no_face=no_face,
        jobs=len(jobs) + len(text_rows),
        computed=computed,
        hits=hits,
        cache_root=cache_root,
        text_ident=text_ident,
    )


def extract_rows(
    rows: list[Row],
    config: FeaturesConfig | None = None,
    *,
    workers: int = 1,
    strict: bool = False,
    labels: list[str] | None = None,
    name: str = "corpus",
    src: str | Path = "manifest",
    progress: bool = False,
    info: dict | None = None,
    on_failure: Callable[[dict], None] | None = None,
) -> ExtractionResult:
    """Extract every modality of every row and build the corpus (not yet saved)."""
    cfg = config or FeaturesConfig()
    if workers < 1:
        raise CorekdError(f"expected at least 1 worker, got {workers}", field="--workers")
    started = time.perf_counter()
    label_names = list(labels) if labels is not None else sorted({r.label for r in rows})
    bar = Progress(count_jobs(rows, cfg), progress)
    try:
        ext = extract_features(rows, cfg, workers=workers, strict=strict, src=src, bar=bar, on_failure=on_failure)
    finally:
        bar.close()
    results, failures, no_face = ext.results, ext.failures, ext.no_face

    # ------------------------------------------------------------------ the corpus
    builder = CorpusBuilder(src, label_names)
    order: list[str] = []
    grouped: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.dialogue_id not in grouped:
            grouped[r.dialogue_id] = []
            order.append(r.dialogue_id)
        grouped[r.dialogue_id].append(i)
    dropped = []
    kinds = {"l": cfg.text.tokens, "a": cfg.audio.level == "lld", "v": cfg.visual.pooling == "sequence"}
    for did in order:
        idx = grouped[did]
        splits = {rows[i].split for i in idx}
        if len(splits) > 1:
            raise CorekdError(
                f"dialogue '{did}' has rows in splits {', '.join(sorted(splits))}; expected one split per dialogue",
                path=src,
                field=rows[idx[0]].where,
            )
        utterances = []
        for i in idx:
            r = rows[i]
            feats = {
                m: builder.feature(m, results[(i, m)], f"{r.where} ({m})", frames=kinds[m])
                for m in ("l", "a", "v")
                if (i, m) in results
            }
            if not feats:
                dropped.append(
                    {
                        "utterance": r.utterance_id,
                        "dialogue": did,
                        "reason": "no modality could be extracted (see failures / no_face)",
                    }
                )
                continue
            utterances.append(
                Utterance(
                    id=r.utterance_id,
                    speaker=r.speaker,
                    label=builder.label(r.label, r.where),
                    features=feats,
                    text=r.text or None,
                    extra=dict(r.extra),
                )
            )
        if utterances:
            builder.add(did, rows[idx[0]].split, utterances, rows[idx[0]].where)
        else:
            dropped.append({"dialogue": did, "reason": "every utterance of the dialogue was dropped"})
    if not builder.dialogues:
        raise CorekdError(
            f"no utterance has any feature ({len(failures)} failures; first: "
            f"{failures[0]['reason'] if failures else 'no media given'})",
            path=src,
        )

    present = {m for (_, m) in results}
    idents: dict[str, dict] = {}
    cards: dict[str, dict] = {}
    for m in ("l", "a", "v"):
        if m not in present:
            continue
        idents[m] = extractor_identity(m, cfg)
        cards[m] = {
            "source": _card(idents[m]),
            "normalization": {
                "l": "none (token states)" if cfg.text.tokens else "L2 (unit length, the model's Normalize module)",
                "a": "none",
                "v": "L2-Hys per HOG block",
            }[m],
        }
    if "l" in cards and cfg.text.tokens:
        cards["l"]["aligned"] = False
    if "a" in cards and kinds["a"]:
        from corekd.features.audio import LLD_FRAME_RATE

        cards["a"].update(frame_rate=LLD_FRAME_RATE, aligned=False)
    if "v" in cards and kinds["v"]:
        cards["v"].update(frame_rate=cfg.visual.fps, aligned=False)
    summary = {
        "rows": len(rows),
        "jobs": ext.jobs,
        "computed": ext.computed,
        "cache_hits": ext.hits,
        "cache_dir": str(ext.cache_root) if ext.cache_root else None,
        "workers": workers,
        "failures": failures,
        "no_face": no_face,
        "dropped": dropped,
        "extractors": idents,
        "extractor_version": EXTRACTOR_VERSION,
        "config": cfg.model_dump(mode="json"),
        "seconds": round(time.perf_counter() - started, 3),
    }
    info_out = dict(info or {})
    info_out["features"] = {
        k: summary[k] for k in ("extractors", "extractor_version", "config", "failures", "no_face", "dropped")
    }
    corpus = builder.build(name, cards=cards, info=info_out)
    return ExtractionResult(corpus, summary)


def features_record(info_features: object, extraction: object = None) -> dict | None:
    """What re-running a corpus's extraction needs, from its ``info.features`` (else ``extraction.json``).

    ``{"config": FeaturesConfig as written, "extractors": m -> identity, "extractor_version": n}``,
    or None when neither names a config and extractors (the corpus was not made by
    ``corekd features extract`` / ``corekd data import meld``). Corpora written before the
    extractor version was recorded were written by version 1.
    """
    for rec in (info_features, extraction):
        if isinstance(rec, dict) and isinstance(rec.get("config"), dict) and isinstance(rec.get("extractors"), dict):
            return {
                "config": rec["config"],
                "extractors": rec["extractors"],
                "extractor_version": rec.get("extractor_version", 1),
            }
    return None


def save_result(result: ExtractionResult, out: str | Path) -> Corpus:
    """Write the corpus and ``extraction.json`` into a temporary folder beside ``out``, read the corpus back with
    every check, then move the folder into place (a failure leaves ``out`` as it was)."""
    with staged_folder(out) as tmp:
        result.corpus.save(tmp)
        (tmp / "extraction.json").write_text(json.dumps(result.summary, indent=2) + "\n", encoding="utf-8")
        return load_corpus(tmp)


check_out = check_new_or_empty


def extract_manifest(
    manifest: str | Path,
    out: str | Path,
    config: FeaturesConfig | None = None,
    *,
    workers: int = 1,
    strict: bool = False,
    labels: list[str] | None = None,
    name: str | None = None,
    progress: bool = False,
) -> ExtractionResult:
    """``corekd features extract``: read the manifest, extract, write ``out`` (new or empty) and read it back."""
    out = check_out(out)
    manifest = Path(manifest)
    rows = read_manifest(manifest)
    result = extract_rows(
        rows,
        config,
        workers=workers,
        strict=strict,
        labels=labels,
        name=name or manifest.stem,
        src=manifest,
        progress=progress,
        info={"imported_from": {"format": "features-manifest", "file": manifest.name}},
    )
    result.corpus = save_result(result, out)
    return result


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
