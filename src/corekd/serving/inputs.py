"""Input readers for ``corekd predict``: each yields dialogues one at a time (bounded memory).

A reader is chosen by :func:`open_input` from :data:`READERS`, a list of ``(detect, reader)``
pairs tried in order (``reader(path, predictor, options)``); adding a format means adding a pair.
Readers in this version:

- a corpus folder (``corpus.json`` + ``features.safetensors``): the metadata is parsed once, the
  features are read per dialogue from the memory-mapped safetensors file (a sequence modality's
  frames kept per utterance for a model that reads frames, else averaged as in training);
- a jsonl file in the interchange format (``docs/import-jsonl.md``), one dialogue per line, read
  line by line; ``split``, ``label``, ``sentiment``, ``text`` and extra utterance keys are ignored;
- a media manifest (a CSV/TSV of ``dialogue_id, utterance_id[, speaker], text, audio_path,
  video_path``, docs/features.md): its media go through the extractors the bundle records
  (:class:`corekd.serving.media.ManifestReader`, which refuses a bundle whose features corekd's
  extractors did not make).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from safetensors import safe_open

from corekd.data.corpus import (
    FEATURES_FILE,
    META_FILE,
    CorpusFile,
    offsets_name,
    pool_mean,
)
from corekd.data.importers.jsonl import jsonl_objects
from corekd.errors import CorekdError, from_validation_error
from corekd.files import read_json
from corekd.serving.dialogue import (
    DialogueInput,
    InputReader,
    parse_dialogue,
    reads_frames,
)
from corekd.serving.media import ManifestReader

MANIFEST_SUFFIXES = (".csv", ".tsv")
MEDIA_COLUMNS = ("audio", "video", "audio_path", "video_path", "wav", "path", "file", "media")


class JsonlReader(InputReader):
    def __init__(self, path: Path, modalities: dict[str, dict]):
        self.path, self.modalities = path, modalities

    def __len__(self) -> int:
        with self.path.open("rb") as fh:
            return sum(1 for line in fh if line.strip())

    def __iter__(self) -> Iterator[DialogueInput]:
        for n, obj in jsonl_objects(self.path):  # the interchange format's reader: one JSON object per line
            try:
                yield parse_dialogue(obj, self.modalities, f"line {n}")
            except CorekdError as exc:
                raise CorekdError(exc.detail, path=self.path, field=exc.field) from None


class CorpusReader(InputReader):
    """A corpus folder's dialogues, every split or only ``splits``; each dialogue carries its split (and so its rows)."""

    def __init__(self, folder: Path, modalities: dict[str, dict], splits: list[str] | None = None):
        self.path = self.folder = folder
        self.modalities = modalities
        meta_path = folder / META_FILE
        raw = read_json(meta_path, f"a corpus folder holds {META_FILE} and {FEATURES_FILE}")
        try:
            self.meta = CorpusFile.model_validate(raw)
        except ValidationError as exc:
            raise from_validation_error(exc, meta_path, model=CorpusFile) from None
        extra = [m for m in self.meta.modalities if m not in modalities]
        if extra:
            raise CorekdError(
                f"the corpus has modality '{extra[0]}', which this model does not read (its modalities: "
                f"{', '.join(modalities)})",
                path=meta_path,
                field=f"modalities.{extra[0]}",
            )
        for m, spec in self.meta.modalities.items():
            if spec.dim != modalities[m]["dim"]:
                raise CorekdError(
                    f"dim {spec.dim}; the model's '{m}' input has dim {modalities[m]['dim']}",
                    path=meta_path,
                    field=f"modalities.{m}.dim",
                )
        self.features_path = folder / FEATURES_FILE
        if not self.features_path.is_file():
            raise CorekdError("file not found", path=self.features_path)
        present = list(dict.fromkeys(d.split for d in self.meta.dialogues))
        unknown = [s for s in splits or [] if s not in present]
        if unknown:
            raise CorekdError(
                f"no split '{unknown[0]}' in {meta_path} (its splits: {', '.join(present)})", field="--split"
            )
        self.splits = set(splits) if splits else None

    def _wanted(self, d) -> bool:
        return self.splits is None or d.split in self.splits

    def __len__(self) -> int:
        return sum(1 for d in self.meta.dialogues if self._wanted(d))

    def __iter__(self) -> Iterator[DialogueInput]:
        meta = self.meta
        with safe_open(str(self.features_path), framework="numpy") as f:
            names = set(f.keys())
            for m in meta.modalities:
                if m not in names:
                    raise CorekdError(
                        "tensor missing (declared in corpus.json modalities)", path=self.features_path, field=m
                    )
            offsets = {
                m: f.get_tensor(offsets_name(m)).astype(np.int64)
                for m, s in meta.modalities.items()
                if s.kind == "sequence"
            }
            start = 0
            for k, d in enumerate(meta.dialogues):
                n = len(d.utterances)
                if not self._wanted(d):  # another split: skipped without reading its features
                    start += n
                    continue
                feats: dict[str, list] = {m: [None] * n for m in self.modalities}
                for m, spec in meta.modalities.items():
                    if m in offsets and reads_frames(self.modalities[m]):  # the model reads the frames themselves
                        self._frames(f, m, spec.dim, offsets[m][start : start + n + 1], d, feats[m])
                        continue
                    if m in offsets:
                        lo, hi = int(offsets[m][start]), int(offsets[m][start + n])
                        frames = f.get_slice(m)[lo:hi].astype(np.float32)
                        rows = pool_mean(frames, np.diff(offsets[m][start : start + n + 1]), spec.dim)
                    else:
                        rows = f.get_slice(m)[start : start + n].astype(np.float32)
                    if rows.shape != (n, spec.dim):
                        raise CorekdError(
                            f"expected {n} rows of dim {spec.dim} for dialogue '{d.id}', got {list(rows.shape)}",
                            path=self.features_path,
                            field=m,
                        )
                    for i, u in enumerate(d.utterances):
                        if m in u.missing:
                            continue
                        if not np.isfinite(rows[i]).all():
                            raise CorekdError(
                                f"non-finite values (NaN/inf) at utterance '{u.id}' of dialogue '{d.id}'",
                                path=self.features_path,
                                field=m,
                            )
                        feats[m][i] = rows[i]
                for i, u in enumerate(d.utterances):
                    if all(feats[m][i] is None for m in feats):
                        raise CorekdError(
                            f"utterance '{u.id}' has no modality",
                            path=self.folder / META_FILE,
                            field=f"dialogues[{k}].utterances[{i}].missing",
                        )
                start += n
                yield DialogueInput(
                    id=d.id,
                    utterance_ids=[u.id for u in d.utterances],
                    speakers=[u.speaker for u in d.utterances],
                    features=feats,
                    split=d.split,
                )

    def _frames(self, f, m: str, dim: int, offsets: np.ndarray, d, out: list) -> None:
        """Dialogue ``d``'s frames of ``m`` ([F_i, D] per utterance where available) into ``out``; ``offsets`` [U + 1]."""
        lo, hi = int(offsets[0]), int(offsets[-1])
        frames = f.get_slice(m)[lo:hi].astype(np.float32)  # [F, D]
        if frames.shape != (hi - lo, dim):
            raise CorekdError(
                f"expected {hi - lo} frames of dim {dim} for dialogue '{d.id}', got {list(frames.shape)}",
                path=self.features_path,
                field=m,
            )
        for i, u in enumerate(d.utterances):
            if m in u.missing:
                continue
            x = frames[int(offsets[i]) - lo : int(offsets[i + 1]) - lo]
            if len(x) == 0:
                raise CorekdError(
                    f"utterance '{u.id}' of dialogue '{d.id}' has 0 frames of sequence modality '{m}'; "
                    "expected at least one, or the modality listed in its 'missing'",
                    path=self.features_path,
                    field=m,
                )
            if not np.isfinite(x).all():
                raise CorekdError(
                    f"non-finite values (NaN/inf) at utterance '{u.id}' of dialogue '{d.id}'",
                    path=self.features_path,
                    field=m,
                )
            out[i] = x


def _is_manifest(path: Path) -> bool:
    if not path.is_file():
        return False
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return True
    try:
        with path.open(encoding="utf-8") as fh:
            head = fh.readline().strip().lower()
    except (UnicodeDecodeError, OSError):
        return False
    return not head.startswith("{") and any(c in head.replace("\t", ",").split(",") for c in MEDIA_COLUMNS)


def _manifest_reader(path: Path, predictor, options: dict):
    bundle = getattr(predictor, "bundle", None)
    if bundle is None:  # only modalities were given: nothing says how the model's features were made
        raise CorekdError(
            "this looks like a media manifest; reading one needs the predictor (its bundle records the "
            "feature extractors), not only the model's modalities",
            path=path,
        )
    return ManifestReader(path, bundle, device=getattr(predictor, "text_device", "cpu"), **options)


def _modalities(predictor) -> dict[str, dict]:
    return predictor if isinstance(predictor, dict) else predictor.modalities


READERS: list[tuple[Callable[[Path], bool], Callable[[Path, object, dict], object]]] = [
    (
        lambda p: p.is_dir() and (p / META_FILE).is_file(),
        lambda p, pr, o: CorpusReader(p, _modalities(pr), o.pop("splits", None)),
    ),
    (_is_manifest, _manifest_reader),
    (lambda p: p.is_file(), lambda p, pr, o: JsonlReader(p, _modalities(pr))),
]


def open_input(path: str | Path, predictor, **media_options):
    """The reader for ``path`` (see the module docstring).

    ``predictor``: a :class:`~corekd.serving.predictor.Predictor` (or, for features only, the model's
    modalities ``{m: {"dim", "kind"}}``). ``media_options`` go to the manifest reader: ``workers``,
    ``strict``, ``cache``, ``cache_dir``, ``progress``; ``splits`` (a list of split names, or None for every split)
    to the corpus reader, the only input that has splits.
    """
    path = Path(path)
    if not path.exists():
        raise CorekdError("no such file or folder", path=path, field="INPUT")
    splits = media_options.pop("splits", None)
    for detect, reader in READERS:
        if detect(path):
            if reader is READERS[0][1]:
                return reader(path, predictor, {**media_options, "splits": splits})
            if splits:
                raise CorekdError(
                    "--split applies to a corpus folder (a jsonl file or a manifest has no splits to choose from)",
                    path=path,
                    field="--split",
                )
            return reader(path, predictor, media_options)
    raise CorekdError(
        f"expected a corpus folder (with {META_FILE}), a jsonl file or a media manifest", path=path, field="INPUT"
    )


def predict_stream(
    predictor,
    reader: InputReader,
    write: Callable[[dict], None],
    *,
    batch_size: int = 16,
    on_dialogues: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Predict every dialogue of ``reader`` in groups of ``batch_size``; ``write`` each utterance's row, in input order.

    At most ``batch_size`` dialogues are held at once. Returns (dialogues, utterances).
    """
    pending: list[DialogueInput] = []
    counts = [0, 0]

    def flush() -> None:
        try:
            results = predictor.predict_many(pending)
        except CorekdError as exc:  # an input too far out or a non-finite output: name the input file too
            where = getattr(reader, "path", None)
            raise CorekdError(exc.detail, path=exc.path or where, field=exc.field) from None
        for dialogue, rows in zip(pending, results):
            for row in rows:
                write(row if dialogue.split is None else {**row, "split": dialogue.split})
            counts[1] += len(rows)
        counts[0] += len(pending)
        if on_dialogues:
            on_dialogues(len(pending))
        pending.clear()

    for dialogue in reader:
        pending.append(dialogue)
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()
    return counts[0], counts[1]
