"""Content-addressed cache of extracted features: a re-run on unchanged inputs does no work.

An entry is keyed by the SHA-256 of the input (a media file's bytes, or a transcript's UTF-8
text) and by the extractor's identity (name, package versions, model file hash, options): change
any of them and the entry is computed again. Entries are ``.npz`` files written atomically
(temporary name, then rename), so a killed run never leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_cache_dir() -> Path:
    """``$COREKD_CACHE`` or ``$XDG_CACHE_HOME/corekd/features`` (``~/.cache/corekd/features``)."""
    if os.environ.get("COREKD_CACHE"):
        return Path(os.environ["COREKD_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "corekd" / "features"


class FeatureCache:
    """``root/<extractor id>/<content hash>.npz``; ``root=None`` disables caching."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None

    def _path(self, extractor_id: str, key: str) -> Path | None:
        if self.root is None:
            return None
        return self.root / extractor_id / key[:2] / f"{key}.npz"

    def get(self, extractor_id: str, key: str) -> dict[str, np.ndarray] | None:
        path = self._path(extractor_id, key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except (OSError, ValueError):  # a damaged entry is recomputed, not trusted
            return None

    def put(self, extractor_id: str, key: str, arrays: dict[str, np.ndarray]) -> None:
        path = self._path(extractor_id, key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub reads any keyword as allow_pickle
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
