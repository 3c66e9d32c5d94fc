"""One grid cell: a (corpus, seed, variant) unit of ``corekd run``, trained where a backend puts it.

A cell's task is plain data (the corpus's resolved run config as JSON, the method spec, the seed,
the device, the thread count and, for a student that distils or is analysed against it, its
teacher's checkpoint files as bytes), and its
result is plain data too (records, training entry, analyses rows, checkpoint files, the t-SNE
embedding). Nothing is read from or written to the grid folder here: the driver writes, so a
worker on another machine (Ray) needs the package and the corpus, not the output folder.

Same task, same result: :func:`corekd.pipeline.train_unit` is deterministic for a seed on the
CPU, and a student always reads its teacher from the saved checkpoint, whether the teacher was
trained a second ago or by an earlier, killed attempt of the grid.
"""

from __future__ import annotations

import functools
import io
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from corekd.config import MethodSpec, validate_config
from corekd.evaluation.analyses import RunAnalyses, conflict_flags
from corekd.training import (
    MODEL_META_FILE,
    WEIGHTS_FILE,
    TeacherReference,
    load_checkpoint,
    save_checkpoint,
)

CHECKPOINT_FILES = (MODEL_META_FILE, WEIGHTS_FILE)


@dataclass(frozen=True, order=True)
class Cell:
    corpus: str  # the grid's corpus key
    seed: int
    variant: str  # the method spec's label
    method: str

    @property
    def id(self) -> str:
        return f"{self.corpus}/seed-{self.seed}/{self.variant}"

    @property
    def folder(self) -> Path:
        """Relative to the grid folder."""
        return Path("cells") / self.corpus / f"seed-{self.seed}" / self.variant


@functools.lru_cache(maxsize=4)
def _setup(config_json: str, config_path: str | None, device: str):
    """The corpus's prepared run (loaded once per worker process and corpus)."""
    from corekd.device import resolve_device
    from corekd.pipeline import prepare_run

    cfg = validate_config(json.loads(config_json), config_path)
    return prepare_run(cfg, Path(config_path) if config_path else None, resolve_device(device), command="")


def _model_from_files(files: dict[str, bytes], device: torch.device):
    with tempfile.TemporaryDirectory(prefix="corekd-teacher-") as tmp:
        for name in CHECKPOINT_FILES:
            (Path(tmp) / name).write_bytes(files[name])
        with torch.random.fork_rng(devices=[]):
            model, _ = load_checkpoint(tmp, device)
    return model


def _files_from_model(model, meta: dict) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="corekd-cell-") as tmp:
        save_checkpoint(model, tmp, meta)
        return {name: (Path(tmp) / name).read_bytes() for name in CHECKPOINT_FILES}


def embedding_bytes(fused: np.ndarray, target: np.ndarray) -> bytes:
    """An ``embedding.npz`` (arrays ``fused`` [n, H], ``target`` [n]), as bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, fused=fused, target=target)
    return buffer.getvalue()


def run_cell(task: dict) -> dict:
    """Train and evaluate one cell (``task``: see :func:`corekd.compare.grid.cell_task`); return its result."""
    from corekd.device import resolve_device
    from corekd.pipeline import train_unit

    started = time.perf_counter()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(task["threads"])
    try:
        setup = _setup(task["config"], task["config_path"], task["device"])
        device = resolve_device(task["device"])
        spec = MethodSpec.model_validate(task["spec"])
        seed, ev = task["seed"], setup.config.evaluation
        teacher = _model_from_files(task["teacher"], device) if task["teacher"] is not None else None
        method = setup.methods[spec.label]
        teacher_ref = (TeacherReference(teacher, setup.train, cache=setup.config.training.teacher_cache,
                                        batch_size=ev.batch_size, device=device)
                       if teacher is not None and method.needs_teacher else None)
        unit = train_unit(setup, spec, seed, device, teacher_ref)
        model = unit.result.model
        if method.name == "teacher":  # analysed against itself and frozen first, as `corekd run` does
            teacher = model.eval().requires_grad_(False)
        analyses, embedding = None, None
        if ev.analyses and spec.label in setup.reported:
            with tempfile.TemporaryDirectory(prefix="corekd-analyses-") as tmp:
                collect = RunAnalyses(Path(tmp), setup.test, setup.test_masks, conflict_flags(setup.corpus, "test"),
                                      setup.labels, setup.task, ev.mask_seed, ev.batch_size, device,
                                      figures=ev.figures and task["embedding"])
                collect.add(spec.label, method.name, seed, model, teacher,
                            not_applicable=setup.scored[spec.label]["test"].not_applicable)
                payload = collect.payload()
            analyses = {k: payload[k] for k in ("pairs", "task", "drift", "mstate_drift", "rejection", "notes")}
            analyses["natural_conflicts"] = payload["natural_conflicts"]
            if spec.label in collect.embeddings:
                embedding = embedding_bytes(*collect.embeddings[spec.label])
        return {
            "records": unit.records,
            "training": unit.training,
            "checkpoint": _files_from_model(model, unit.checkpoint_meta),
            "analyses": analyses,
            "embedding": embedding,
            "seconds": round(time.perf_counter() - started, 2),
        }
    finally:
        torch.set_num_threads(threads_before)
