"""Shared fixtures: tiny synthetic corpora and batches that make the suite fast."""

from __future__ import annotations

import pytest

from corekd.data.batching import SplitTensors
from corekd.data.synth import SynthConfig, generate
from helpers import TINY_SYNTH



@pytest.fixture(scope="session")
def tiny_corpus():
    return generate(SynthConfig(**TINY_SYNTH))


@pytest.fixture(scope="session")
def tiny_splits(tiny_corpus):
    return {s: SplitTensors.from_corpus(tiny_corpus, s) for s in ("train", "dev", "test")}


@pytest.fixture()
def tiny_batch(tiny_splits):
    train = tiny_splits["train"]
    return train.batch(list(range(min(4, len(train)))))


@pytest.fixture()
def tiny_config_dict():
    """A whole run in seconds: tiny corpus, tiny model, two epochs."""
    return {
        "name": "tiny",
        "seeds": [0, 1],
        "device": "cpu",
        "data": {"source": "synthetic", "synth": dict(TINY_SYNTH)},
        "model": {"hidden": 16, "heads": 2},
        "training": {"epochs": 2, "patience": 1, "batch_size": 4},
        "evaluation": {"batch_size": 8},
    }

