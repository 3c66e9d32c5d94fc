"""Data: the corpus and its on-disk format, the synthetic corpus, batches, missing-modality protocols."""

from corekd.data.batching import Batch, SplitTensors
from corekd.data.corpus import (
    MODALITIES,
    SPLITS,
    Corpus,
    Dialogue,
    ModalitySpec,
    load_corpus,
)
from corekd.data.protocols import Condition
from corekd.data.synth import SynthConfig, generate

__all__ = [
    "MODALITIES",
    "SPLITS",
    "Batch",
    "Condition",
    "Corpus",
    "Dialogue",
    "ModalitySpec",
    "SplitTensors",
    "SynthConfig",
    "generate",
    "load_corpus",
]
