"""One (modality, file) extraction job: what a worker process runs.

Kept apart from the rest of corekd so that a spawned worker imports numpy and the extractors'
packages only (not torch, unless ``visual.embedding: pyemotion`` runs its network): a worker starts in
about a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from corekd.features.cache import FeatureCache
from corekd.features.media import MediaError
from corekd.files import file_sha256


def run_file_job(job: tuple) -> tuple:
    """One (modality, file) job, in a worker or inline: (index, status, arrays or reason, cache hit)."""
    index, kind, path, opts, cache_root, cache_id = job
    cache = FeatureCache(cache_root)
    try:
        if not Path(path).is_file():
            raise MediaError(f"file not found: {path}")
        key = file_sha256(path)
        hit = cache.get(cache_id, key)
        if hit is not None:
            return index, "ok", hit, True
        if kind == "a":
            from corekd.features.audio import extract_audio

            arrays = {"x": extract_audio(path, opts["feature_set"], opts["level"], opts["sample_rate"])}
        else:
            from corekd.features.visual import extract_visual

            faces, sampled = extract_visual(
                path, opts["fps"], opts["max_frames"], opts["size"], opts["margin"], opts.get("embedding", "hog")
            )
            arrays = {"x": faces, "sampled": np.array(sampled, np.int64)}
        cache.put(cache_id, key, arrays)
        return index, "ok", arrays, False
    except MediaError as exc:
        return index, "failed", str(exc), False
    except Exception as exc:  # noqa: BLE001 - an extractor choking on a file is that file's failure, reported
        return index, "failed", f"{type(exc).__name__}: {exc}", False
