"""Model bundles: one trained model in a folder that a predictor, a server or an exporter can load alone.

A bundle is written by ``corekd export-bundle RUN_DIR --method M [--seed S] --out DIR`` (runs do
not write bundles themselves: a run's checkpoint folder already holds the weights, and a bundle is
made only for the model someone chooses to use). The folder holds

- ``model.safetensors``: the weights, byte for byte the run's checkpoint (standardisation
  statistics included, as the buffers ``standardizer.mean_<m>`` / ``standardizer.std_<m>``);
- ``model.json``: the checkpoint's own ``model.json`` (so :func:`corekd.training.load_checkpoint`
  rebuilds the model from it, whatever architecture fields it carries) plus a ``bundle`` section:
  format name and version, corekd version, task, labels, per-modality dim / kind / dataset card /
  the extractor settings the corpus recorded, the standardisation statistics, and where the model
  came from (run folder, method, seed, corpus).

:func:`read_bundle` checks the format version, that the model rebuilds from the weights, and that
the dims, labels and statistics in the ``bundle`` section agree with the model. A loaded bundle's
``modalities[m]["input"]`` says how the model reads ``m`` (derived from the model, not stored):
``frames`` for a ``sequence`` modality of a model with a frame-reading ``sequence_encoder`` (conv,
transformer, none), else ``vector`` (one vector per utterance; a sequence's frames averaged).

An *ensemble bundle* (``corekd export-bundle RUN_DIR --method M --seeds all|S,S --out DIR``) holds several seeds'
models of one method: one single-model bundle per member under ``members/seed<N>/`` (each loadable alone), and a
top-level ``model.json`` with only a ``bundle`` section (format version :data:`ENSEMBLE_BUNDLE_VERSION`,
``kind: "ensemble"``, the members' seeds, folders and weight checksums, and the task, labels, modalities and
features the members share). :func:`read_bundle` reads every member and refuses members that disagree in
architecture, task, labels or modalities (docs/serving.md, "Ensemble bundles").
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from corekd.data.corpus import META_FILE as CORPUS_META_FILE
from corekd.errors import CorekdError, shown
from corekd.experiments.folder import CHECKPOINTS, UNIT_DONE_FILE
from corekd.features.extract import features_record
from corekd.files import (
    CONFIG_FILE,
    RESULTS_FILE,
    atomic_write,
    check_new_or_empty,
    file_sha256,
    read_json,
    staged_folder,
)
from corekd.models.model import ERCModel
from corekd.serving.module import frame_inputs
from corekd.training import MODEL_META_FILE, WEIGHTS_FILE, load_checkpoint
from corekd.version import __version__
from corekd.weights import CHECKSUM_FIELD

EXTRACTION_FILE = "extraction.json"  # written beside an extracted corpus by `corekd features extract`
BUNDLE_FORMAT = "corekd-bundle"
BUNDLE_VERSION = 1  # bumped when a reader of this version could misread a newer bundle
READABLE_VERSIONS = (1,)
# An ensemble bundle's top-level model.json holds no model. It carries version 2, so that a reader of single-model
# bundles only (any corekd before ensembles, or another program written against version 1) refuses it by its version
# instead of failing on a missing weights file; single-model bundles stay version 1.
ENSEMBLE_BUNDLE_VERSION = 2
READABLE_ENSEMBLE_VERSIONS = (2,)
ENSEMBLE_KIND = "ensemble"  # the ``bundle.kind`` of an ensemble bundle (absent: one model)
MEMBERS_DIR = "members"  # an ensemble bundle's members: MEMBERS_DIR/seed<N>/, each a single-model bundle
# model.json fields that make a model's architecture: the members of an ensemble bundle agree on every one
ARCHITECTURE_FIELDS = ("architecture", "model", "dims", "kinds", "num_classes")


@dataclass
class Bundle:
    """A loaded bundle: the model (eval mode, on ``device``) and its description."""

    path: Path
    model: ERCModel
    info: dict  # the whole model.json
    task: str  # "classification" or "regression"
    labels: list[str]  # classification: the class names in output order; regression: the labels the run had
    modalities: dict[str, dict]  # m -> {"dim", "kind", "card", "extractor_settings"} in the model's order
    # an ensemble bundle's members, each a single-model bundle (``model`` is the first one's); [] for one model
    members: list[Bundle] = field(default_factory=list)

    @property
    def is_ensemble(self) -> bool:
        return bool(self.members)

    @property
    def models(self) -> list[ERCModel]:
        """The models that answer: every member's for an ensemble bundle, else the one model."""
        return [b.model for b in self.members] if self.members else [self.model]

    @property
    def seeds(self) -> list[int]:
        """An ensemble bundle's member seeds, in member order ([] for one model)."""
        return [int(e["seed"]) for e in self.meta.get("members", [])] if self.members else []

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(s["dim"]) for m, s in self.modalities.items()}

    @property
    def meta(self) -> dict:
        return self.info["bundle"]

    @property
    def features(self) -> dict | None:
        """The extraction that made the training corpus (config, extractor identities, version), or None."""
        f = self.meta.get("features")
        return f if isinstance(f, dict) else None

    def describe(self) -> dict:
        """What ``GET /v1/model`` and ``corekd predict`` report about the model."""
        b = self.meta
        if self.members:
            outputs = (
                "class probabilities (the members' mean) and their spread (per-class std over the members)"
                if self.task == "classification"
                else "sentiment value (the members' mean) and its spread (std over the members)"
            )
        else:
            outputs = "class probabilities" if self.task == "classification" else "sentiment value"
        out = {
            "format": b["format"],
            "format_version": b["version"],
            "corekd_version": b["corekd_version"],
            "task": self.task,
            "labels": self.labels if self.task == "classification" else [],
            "outputs": outputs,
            "modalities": self.modalities,
            "source": b.get("source", {}),
            "standardization": (self.members[0].meta if self.members else b)
            .get("standardization", {})
            .get("kind", "identity"),
            "features": self.features,  # None: media manifests cannot be turned into this model's inputs
        }
        if self.members:
            out["ensemble"] = {"members": len(self.members), "seeds": self.seeds}
        return out


def _corpus_settings(run_dir: Path, recorded: dict | None = None) -> tuple[dict, dict, dict | None, str | None]:
    """For the run's corpus: (raw corpus.json modality entries, its ``info.extractors`` if any, the
    :func:`features_record` of its extraction if it was extracted by corekd, a note).

    ``recorded``: the record the run kept in results.json (``meta.feature_extraction``), used when
    the corpus folder is no longer readable.
    """
    cfg_path = run_dir / CONFIG_FILE
    try:
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else None
    except yaml.YAMLError:
        cfg = None
    data = (cfg or {}).get("data") or {}
    if data.get("source") not in ("corpus", "meld") or not data.get("path"):
        return {}, {}, None, "synthetic corpus (generated by corekd.data.synth; no extractor)"
    corpus_meta = Path(data["path"]) / CORPUS_META_FILE
    if not corpus_meta.is_file():
        return (
            {},
            {},
            features_record(recorded),
            (
                f"the run's corpus ({data['path']}) is not readable here: extractor settings from the run's cards"
                + (" and results.json" if features_record(recorded) else " only")
            ),
        )
    raw = read_json(corpus_meta, "the run's corpus")
    info = found if isinstance(found := raw.get("info"), dict) else {}
    extractors = found if isinstance(found := info.get("extractors"), dict) else {}
    extraction_path = Path(data["path"]) / EXTRACTION_FILE
    try:
        extraction = json.loads(extraction_path.read_text(encoding="utf-8")) if extraction_path.is_file() else None
    except (OSError, ValueError):
        extraction = None
    return raw.get("modalities") or {}, extractors, features_record(info.get("features"), extraction), None


def _method_seeds(run_dir: Path, method: str) -> tuple[dict, list[int]]:
    """The run's results.json ``meta`` and the seeds that have a checkpoint folder of ``method`` (sorted)."""
    if not run_dir.is_dir():
        raise CorekdError("no such run folder", path=run_dir)
    results = read_json(run_dir / RESULTS_FILE, "a run folder written by `corekd run` holds results.json")
    meta = results.get("meta", {}) if isinstance(results, dict) else {}
    labels_run = [p.name for p in sorted((run_dir / CHECKPOINTS).glob("*")) if p.is_dir()]
    if method not in labels_run:
        raise CorekdError(
            f"no model '{method}' in this run (it has: {', '.join(labels_run) or 'none'})",
            path=run_dir,
            field="--method",
        )
    seeds = sorted(
        int(p.name[4:]) for p in (run_dir / CHECKPOINTS / method).glob("seed*") if p.name[4:].lstrip("-").isdigit()
    )
    return meta, seeds


def _finished_unit(run_dir: Path, method: str, seed: int, seeds: list[int], flag: str) -> Path:
    """The checkpoint folder of ``method`` at ``seed``, refused (naming the seed) when absent or not finished."""
    unit = run_dir / CHECKPOINTS / method / f"seed{seed}"
    if not unit.is_dir():
        raise CorekdError(
            f"no checkpoint of '{method}' for seed {seed} (seeds: {', '.join(map(str, seeds)) or 'none'})",
            path=unit,
            field=flag,
        )
    if not (unit / UNIT_DONE_FILE).is_file():
        raise CorekdError(
            f"model '{method}' seed {seed} is not finished (no {UNIT_DONE_FILE}); finish the run with "
            "`corekd run ... --resume` first" + (f", or leave seed {seed} out of {flag}" if flag == "--seeds" else ""),
            path=unit,
            field=None if flag == "--seed" else flag,
        )
    return unit


def _run_settings(run_dir: Path, meta: dict) -> tuple[dict, str | None]:
    """What every bundle of this run records about its corpus (``bundle_checkpoint``'s keyword arguments but
    ``source``), and the note on the corpus (synthetic, unreadable) or None."""
    raw_modalities, extractors, features, note = _corpus_settings(run_dir, meta.get("feature_extraction"))
    settings = {
        "cards": meta.get("modality_cards") or {},
        "corpus_modalities": raw_modalities,
        "extractors": extractors,
        "features": features,
        "labels": meta.get("labels"),
        "task": meta.get("task"),
    }
    return settings, note


def export_bundle(run_dir: str | Path, method: str, out: str | Path, seed: int | None = None) -> Path:
    """Write the bundle of ``method`` (a method's label in the run, e.g. ``corekd``) at ``seed`` into ``out``.

    ``seed`` defaults to the run's first seed. The model must be finished (its ``complete.json``
    written). ``out`` must be new or empty.
    """
    run_dir, out = Path(run_dir), Path(out)
    meta, seeds = _method_seeds(run_dir, method)
    if seed is None:
        run_seeds = [s for s in meta.get("seeds", []) if s in seeds]
        if not run_seeds and not seeds:
            raise CorekdError(f"model '{method}' has no checkpoint", path=run_dir / CHECKPOINTS / method)
        seed = run_seeds[0] if run_seeds else seeds[0]
    unit = _finished_unit(run_dir, method, seed, seeds, "--seed")
    settings, note = _run_settings(run_dir, meta)
    source = {
        "run": str(run_dir.resolve()),
        "variant": method,
        "seed": seed,
        "corpus": meta.get("corpus"),
        **({"note": note} if note else {}),
    }
    return bundle_checkpoint(unit, out, source=source, **settings)


def export_ensemble_bundle(run_dir: str | Path, method: str, out: str | Path, seeds: list[int] | None = None) -> Path:
    """Write the ensemble bundle of ``method``: one member per seed of ``seeds`` (None: every finished seed).

    An unknown seed, an unfinished one (no ``complete.json``) or one given twice is refused naming it
    (``--seeds``). ``out`` must be new or empty. See :func:`bundle_ensemble` for the layout.
    """
    run_dir, out = Path(run_dir), Path(out)
    meta, available = _method_seeds(run_dir, method)
    if seeds is None:
        chosen = [s for s in available if (run_dir / CHECKPOINTS / method / f"seed{s}" / UNIT_DONE_FILE).is_file()]
        if not chosen:
            raise CorekdError(
                f"model '{method}' has no finished seed (seeds with a checkpoint: "
                f"{', '.join(map(str, available)) or 'none'}; a finished one has {UNIT_DONE_FILE})",
                path=run_dir / CHECKPOINTS / method,
                field="--seeds",
            )
    else:
        if not seeds:
            raise CorekdError("expected 'all' or a comma list of seeds like 0,2, got none", field="--seeds")
        twice = next((s for s in seeds if seeds.count(s) > 1), None)
        if twice is not None:
            raise CorekdError(f"seed {twice} is given twice", field="--seeds")
        chosen = list(seeds)
    units = {s: _finished_unit(run_dir, method, s, available, "--seeds") for s in chosen}
    settings, note = _run_settings(run_dir, meta)
    source = {
        "run": str(run_dir.resolve()),
        "variant": method,
        "corpus": meta.get("corpus"),
        **({"note": note} if note else {}),
    }
    return bundle_ensemble(units, out, source=source, **settings)


def _with_after(source: dict, key: str, value, after: str = "variant") -> dict:
    """``source`` with ``key`` placed right after ``after`` (where a single-model bundle's ``seed`` goes), else last."""
    out: dict = {}
    for k, v in source.items():
        if k != key:
            out[k] = v
        if k == after:
            out[key] = value
    out.setdefault(key, value)
    return out


def bundle_ensemble(
    checkpoints: Mapping[int, str | Path],
    out: str | Path,
    *,
    source: dict | None = None,
    **settings,
) -> Path:
    """Write an ensemble bundle from checkpoint folders, one member per seed (``{seed: folder}``, in member order).

    Each member is the single-model bundle :func:`bundle_checkpoint` writes (``settings`` are its keyword
    arguments; the member's ``source`` is ``source`` with its ``seed``) in ``members/seed<N>/``; the top-level
    ``model.json`` holds the ``bundle`` section of the ensemble (version :data:`ENSEMBLE_BUNDLE_VERSION`, ``kind``,
    ``members``: seed, folder and weights checksum of each, and the task, labels, modalities and features the
    members share). Written whole or not at all, and read back (members that disagree are refused).
    """
    out = Path(out)
    check_new_or_empty(out)
    if not checkpoints:
        raise CorekdError("an ensemble bundle needs at least one member", field="--seeds")
    source = dict(source or {})
    with staged_folder(out) as tmp:
        entries = []
        for seed, checkpoint in checkpoints.items():
            rel = f"{MEMBERS_DIR}/seed{seed}"
            bundle_checkpoint(checkpoint, tmp / rel, source=_with_after(source, "seed", seed), **settings)
            info = read_json(tmp / rel / MODEL_META_FILE, "a bundle folder holds model.json")
            entries.append({"seed": seed, "path": rel, CHECKSUM_FIELD: info[CHECKSUM_FIELD]})
        first = read_json(tmp / entries[0]["path"] / MODEL_META_FILE, "a bundle folder holds model.json")["bundle"]
        bundle = {
            "format": BUNDLE_FORMAT,
            "version": ENSEMBLE_BUNDLE_VERSION,
            "kind": ENSEMBLE_KIND,
            "corekd_version": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "task": first["task"],
            "labels": first["labels"],
            "modalities": first["modalities"],
            **({"features": first["features"]} if "features" in first else {}),
            "source": {
                "method": first["source"].get("method"),
                "trained_with_corekd": first["source"].get("trained_with_corekd"),
                **_with_after(source, "seeds", list(checkpoints)),
            },
            "members": entries,
        }
        atomic_write(
            tmp / MODEL_META_FILE,
            lambda p: Path(p).write_text(json.dumps({"bundle": bundle}, indent=2), encoding="utf-8"),
        )
        read_bundle(tmp)  # read back: what was written loads, and its members agree
    return out


def bundle_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    cards: dict | None = None,
    corpus_modalities: dict | None = None,
    extractors: dict | None = None,
    features: dict | None = None,
    source: dict | None = None,
    labels: list[str] | None = None,
    task: str | None = None,
) -> Path:
    """Write a bundle from a checkpoint folder (``save_checkpoint``'s): the weights copied, model.json extended.

    ``cards``: m -> dataset card (``ModalitySpec.card()``); ``corpus_modalities``: m -> the corpus.json
    modality entry (kind, source, frame rate, ... and any extractor settings it records);
    ``extractors``: m -> the corpus's ``info.extractors`` entry; ``features``: the corpus's
    :func:`features_record` when corekd's extractors made it (recorded as the bundle's ``features``
    section, restricted to the model's modalities: what ``corekd predict MODEL manifest.csv`` re-runs).
    ``labels`` / ``task`` are used where the checkpoint's model.json does not name them.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    check_new_or_empty(out)
    model, info = load_checkpoint(checkpoint, "cpu")  # the one way a model is rebuilt: fails here if it does not fit
    task = info.get("task") or task or "classification"
    labels = list(info.get("labels") or labels or [])
    if task == "classification" and len(labels) != model.num_classes:
        raise CorekdError(
            f"the checkpoint names {len(labels)} labels for a {model.num_classes}-class head",
            path=checkpoint / MODEL_META_FILE,
            field="labels",
        )
    cards, corpus_modalities, extractors = cards or {}, corpus_modalities or {}, extractors or {}
    modalities = {}
    for m in model.modalities:
        card = cards.get(m) or {}
        raw = corpus_modalities.get(m) if isinstance(corpus_modalities.get(m), dict) else None
        kind = (raw or {}).get("kind") or card.get("kind") or model.kinds.get(m, "vector")
        settings = {k: v for k, v in (raw or {}).items() if k not in ("dim", "kind")}
        if m in extractors:
            settings["extractor"] = extractors[m]
        elif features and m in features["extractors"]:
            settings["extractor"] = features["extractors"][m]
        modalities[m] = {"dim": model.dims[m], "kind": kind, "card": card, "extractor_settings": settings}
    stats = model.standardizer.statistics()
    identity = all(bool((mean == 0).all() and (std == 1).all()) for mean, std in stats.values())
    bundle = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "corekd_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "task": task,
        "labels": labels,
        "modalities": modalities,
        "standardization": {
            "kind": "identity" if identity else "train-split z-scores",
            "statistics": {m: {"mean": mean.tolist(), "std": std.tolist()} for m, (mean, std) in stats.items()},
        },
        "source": {"method": info.get("method"), "trained_with_corekd": info.get("corekd_version"), **(source or {})},
    }
    if features:
        bundle["features"] = {
            **features,
            "extractors": {m: features["extractors"][m] for m in model.modalities if m in features["extractors"]},
        }
    with staged_folder(out) as tmp:  # the bundle appears whole or not at all
        shutil.copyfile(checkpoint / WEIGHTS_FILE, tmp / WEIGHTS_FILE)
        info.setdefault(CHECKSUM_FIELD, file_sha256(tmp / WEIGHTS_FILE))  # a checkpoint written before checksums
        atomic_write(
            tmp / MODEL_META_FILE,
            lambda p: Path(p).write_text(json.dumps({**info, "bundle": bundle}, indent=2), encoding="utf-8"),
        )
        read_bundle(tmp)  # read back: what was written loads
    return out


def read_bundle(path: str | Path, device: str | torch.device = "cpu") -> Bundle:
    """Load and check a bundle folder, a single-model or an ensemble bundle (see the module docstring)."""
    return _read(Path(path), device, member_of=None)


def _read(path: Path, device: str | torch.device, member_of: Path | None) -> Bundle:
    """:func:`read_bundle`; ``member_of``: the ensemble bundle whose member ``path`` is (then it must be one model)."""
    if not path.is_dir():
        raise CorekdError(
            "no such bundle folder (make one with `corekd export-bundle RUN_DIR --method M --out DIR`)", path=path
        )
    meta_path = path / MODEL_META_FILE
    info = read_json(meta_path, "a bundle folder holds model.json and model.safetensors")
    b = info.get("bundle") if isinstance(info, dict) else None
    if not isinstance(b, dict):
        raise CorekdError(
            "this is a run checkpoint, not a bundle (no 'bundle' section); make a bundle with "
            "`corekd export-bundle RUN_DIR --method M --out DIR`",
            path=meta_path,
            field="bundle",
        )
    if b.get("format") != BUNDLE_FORMAT:
        raise CorekdError(
            f"expected format '{BUNDLE_FORMAT}', got {b.get('format')!r}", path=meta_path, field="bundle.format"
        )
    kind = b.get("kind")
    if kind is not None and (kind != ENSEMBLE_KIND or member_of is not None):
        raise CorekdError(
            f"expected '{ENSEMBLE_KIND}' or no kind (one model), got {kind!r}"
            + (f" (a member of the ensemble bundle {member_of} is one model)" if member_of is not None else ""),
            path=meta_path,
            field="bundle.kind",
        )
    version = b.get("version")
    readable = READABLE_ENSEMBLE_VERSIONS if kind == ENSEMBLE_KIND else READABLE_VERSIONS
    if version not in readable:
        hint = ""
        if kind is None and version in READABLE_ENSEMBLE_VERSIONS:
            hint = f" (version {version} is an ensemble bundle's, whose bundle.kind is '{ENSEMBLE_KIND}')"
        raise CorekdError(
            f"bundle format version {version!r} (written by corekd {b.get('corekd_version', '?')}) cannot be read by corekd "
            f"{__version__}, which reads version{'s' if len(readable) > 1 else ''} "
            f"{', '.join(map(str, readable))}{' for an ensemble bundle' if kind == ENSEMBLE_KIND else ''}{hint}; "
            "re-export the bundle with this corekd or install the corekd that wrote it",
            path=meta_path,
            field="bundle.version",
        )
    if kind == ENSEMBLE_KIND:
        return _read_ensemble(path, info, device)
    model, info = load_checkpoint(path, device)  # model.json's fields, checksum, shapes, finite weights
    task = b.get("task")
    if task not in ("classification", "regression"):
        raise CorekdError(
            f"expected 'classification' or 'regression', got {task!r}", path=meta_path, field="bundle.task"
        )
    modalities = b.get("modalities")
    if not isinstance(modalities, dict) or list(modalities) != list(model.modalities):
        got = list(modalities) if isinstance(modalities, dict) else modalities
        raise CorekdError(
            f"modalities {got} differ from the model's {list(model.modalities)}",
            path=meta_path,
            field="bundle.modalities",
        )
    for m, spec in modalities.items():
        if not isinstance(spec, dict) or spec.get("dim") != model.dims[m]:
            raise CorekdError(
                f"dim {spec.get('dim') if isinstance(spec, dict) else spec!r} differs from the model's "
                f"input dim {model.dims[m]}",
                path=meta_path,
                field=f"bundle.modalities.{m}.dim",
            )
        if spec.get("kind", "vector") not in ("vector", "sequence"):
            raise CorekdError(
                f"expected 'vector' or 'sequence', got {spec.get('kind')!r}",
                path=meta_path,
                field=f"bundle.modalities.{m}.kind",
            )
        if model.kinds.get(m) == "sequence" and spec.get("kind", "vector") != "sequence":
            raise CorekdError(
                f"kind {spec.get('kind', 'vector')!r}, but the model reads '{m}' as a sequence of frames "
                "(model.json kinds)",
                path=meta_path,
                field=f"bundle.modalities.{m}.kind",
            )
    labels = b.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise CorekdError(f"expected a list of label names, got {labels!r}", path=meta_path, field="bundle.labels")
    if task == "classification" and len(labels) != model.num_classes:
        raise CorekdError(
            f"{len(labels)} labels for a {model.num_classes}-class head", path=meta_path, field="bundle.labels"
        )
    if task == "regression" and model.num_classes != 1:
        raise CorekdError(
            f"a regression bundle needs a one-output head, got {model.num_classes} outputs",
            path=meta_path,
            field="bundle.task",
        )
    standardization = b.get("standardization") or {}
    recorded = (standardization.get("statistics") if isinstance(standardization, dict) else None) or {}
    if not isinstance(recorded, dict):
        raise CorekdError(
            f"expected an object of modality -> mean/std, got {type(recorded).__name__}",
            path=meta_path,
            field="bundle.standardization.statistics",
        )
    for m, (mean, std) in model.standardizer.statistics().items():
        rec = recorded.get(m)
        if rec is None:
            continue
        for name, weights in (("mean", mean), ("std", std)):
            value = rec.get(name, []) if isinstance(rec, dict) else None
            try:
                values = torch.tensor(value, dtype=torch.float32)
            except (TypeError, ValueError, RuntimeError):
                raise CorekdError(
                    f"expected a list of {weights.numel()} numbers",
                    path=meta_path,
                    field=f"bundle.standardization.statistics.{m}.{name}",
                ) from None
            if values.shape != weights.shape or not torch.allclose(values, weights.cpu(), rtol=1e-5, atol=1e-6):
                raise CorekdError(
                    "the standardisation statistics in model.json differ from those in the weights "
                    "(the files come from different models)",
                    path=meta_path,
                    field=f"bundle.standardization.statistics.{m}.{name}",
                )
    reads = set(frame_inputs(model))
    return Bundle(
        path=path,
        model=model,
        info=info,
        task=task,
        labels=list(labels),
        modalities={
            m: {
                "dim": int(s["dim"]),
                "kind": s.get("kind", "vector"),
                "input": "frames" if m in reads else "vector",
                "card": s.get("card", {}),
                "extractor_settings": s.get("extractor_settings", {}),
            }
            for m, s in modalities.items()
        },
    )


def _member_folder(path: Path, entry: object, i: int, meta_path: Path) -> tuple[int, str]:
    """An ensemble's ``members[i]`` entry checked: (seed, folder relative to the bundle, strictly inside it)."""
    where = f"bundle.members[{i}]"
    if not isinstance(entry, dict):
        raise CorekdError(
            f"expected an object {{seed, path, {CHECKSUM_FIELD}}}, got {type(entry).__name__}",
            path=meta_path,
            field=where,
        )
    seed = entry.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise CorekdError(f"expected an integer seed, got {seed!r}", path=meta_path, field=f"{where}.seed")
    rel = entry.get("path")
    inside = False
    if isinstance(rel, str) and rel and not Path(rel).is_absolute() and ".." not in Path(rel).parts:
        try:
            inside = (path / rel).resolve() != path.resolve() and (path / rel).resolve().is_relative_to(path.resolve())
        except OSError:
            inside = False
    if not inside:
        raise CorekdError(
            f"expected a folder inside the bundle, such as {MEMBERS_DIR}/seed{seed}, got {rel!r}",
            path=meta_path,
            field=f"{where}.path",
        )
    assert isinstance(rel, str)
    return seed, rel


def _differs(a: object, b: object, at: str) -> tuple[str, object, object] | None:
    """The first place (a dotted path from ``at``) where two JSON values differ, with both values; None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            found = _differs(a.get(k), b.get(k), f"{at}.{k}")
            if found:
                return found
        return None
    return None if a == b else (at, a, b)


def _read_ensemble(path: Path, info: dict, device: str | torch.device) -> Bundle:
    """An ensemble bundle: every member read as a single-model bundle, then checked against the first one and
    against the ensemble's own section (architecture, task, labels, modalities); one line naming the file."""
    meta_path = path / MODEL_META_FILE
    b = info["bundle"]
    entries = b.get("members")
    if not isinstance(entries, list) or not entries:
        raise CorekdError(
            f"expected a non-empty list of members ({{seed, path, {CHECKSUM_FIELD}}} each), got {shown(entries)}",
            path=meta_path,
            field="bundle.members",
        )
    members: list[Bundle] = []
    seen: dict[object, int] = {}
    for i, entry in enumerate(entries):
        seed, rel = _member_folder(path, entry, i, meta_path)
        for key, value in (("seed", seed), ("path", str(Path(rel)))):
            if (key, value) in seen:
                raise CorekdError(
                    f"{key} {value!r} is also member {seen[(key, value)]}'s",
                    path=meta_path,
                    field=f"bundle.members[{i}].{key}",
                )
            seen[(key, value)] = i
        folder = path / rel
        if not (folder / MODEL_META_FILE).is_file():
            raise CorekdError(
                f"member {i} (seed {seed}) of this ensemble bundle is missing: no {rel}/{MODEL_META_FILE}",
                path=meta_path,
                field=f"bundle.members[{i}].path",
            )
        member = _read(folder, device, member_of=path)
        member_meta = folder / MODEL_META_FILE
        recorded = entry.get(CHECKSUM_FIELD)
        if recorded is not None and recorded != member.info.get(CHECKSUM_FIELD):
            raise CorekdError(
                f"weights SHA-256 {str(member.info.get(CHECKSUM_FIELD))[:12]}... differs from the {str(recorded)[:12]}... "
                f"that the ensemble's {MODEL_META_FILE} records (bundle.members[{i}].{CHECKSUM_FIELD}): this member "
                "comes from another model",
                path=member_meta,
                field=CHECKSUM_FIELD,
            )
        member_seed = (member.meta.get("source") or {}).get("seed")
        if member_seed is not None and member_seed != seed:
            raise CorekdError(
                f"seed {member_seed!r}, but the ensemble's {MODEL_META_FILE} lists this folder as seed {seed}",
                path=member_meta,
                field="bundle.source.seed",
            )
        if members:  # the architecture of the first member: one template runs them all
            first = members[0]
            for name in ARCHITECTURE_FIELDS:
                found = _differs(member.info.get(name), first.info.get(name), name)
                if found:
                    raise CorekdError(
                        f"{shown(found[1])} here, {shown(found[2])} in {entries[0]['path']}/{MODEL_META_FILE}: the "
                        "members of an ensemble bundle must share one architecture (models of one method and run)",
                        path=member_meta,
                        field=found[0],
                    )
        mine = member.meta
        for name in ("task", "labels"):
            if mine.get(name) != b.get(name):
                raise CorekdError(
                    f"{shown(mine.get(name))} here, {shown(b.get(name))} in the ensemble's {MODEL_META_FILE}: the "
                    f"members of an ensemble bundle must share their {name}",
                    path=member_meta,
                    field=f"bundle.{name}",
                )
        ours = b.get("modalities")
        described = lambda mods: (  # noqa: E731
            {m: (s.get("dim"), s.get("kind", "vector")) for m, s in mods.items() if isinstance(s, dict)}
            if isinstance(mods, dict)
            else mods
        )
        if described(mine.get("modalities")) != described(ours) or list(mine["modalities"]) != list(ours or []):
            raise CorekdError(
                f"modalities {described(mine.get('modalities'))} here, {described(ours)!r:.300} in the ensemble's "
                f"{MODEL_META_FILE}: the members of an ensemble bundle must share their modalities (names, dims, kinds)",
                path=member_meta,
                field="bundle.modalities",
            )
        members.append(member)
    first = members[0]
    return Bundle(
        path=path,
        model=first.model,
        info=info,
        task=first.task,
        labels=list(first.labels),
        modalities=first.modalities,
        members=members,
    )
