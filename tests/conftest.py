"""Shared fixtures: tiny synthetic corpora and batches that make the suite fast."""

from __future__ import annotations

import socket

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
        "evaluation": {"batch_size": 8, "figures": False},  # figures: drawn by test_analyses.py's runs
    }


@pytest.fixture(scope="session")
def tiny_run_bundle(tmp_path_factory):
    """A finished one-epoch ``no_kd`` run on the tiny corpus and a bundle of its model: (run dir, bundle dir)."""
    from corekd.config import validate_config
    from corekd.experiments import run
    from corekd.serving.bundle import export_bundle
    from helpers import quick_config

    root = tmp_path_factory.mktemp("serving")
    run(
        validate_config(
            quick_config(evaluation={"batch_size": 8, "random_rates": [0.0], "analyses": False}), "cfg.yaml"
        ),
        root / "run",
    )
    return root / "run", export_bundle(root / "run", "no_kd", root / "bundle")


@pytest.fixture(scope="session")
def tiny_test_dialogues(tiny_corpus):
    """The tiny corpus's test dialogues in the interchange format (every modality given), with the corpus."""
    from helpers import as_interchange

    return [as_interchange(d, tiny_corpus) for d in tiny_corpus.split("test")]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails (and is recorded)."""
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"network blocked in tests: connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts
