"""Per-modality encoder gradient norms in the training history (issue 32 item 4): read-only, before clipping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import corekd.training as training
from corekd.config import TrainingConfig
from corekd.data.protocols import TrainingMissing
from corekd.methods import method_class
from corekd.models.model import ModelConfig
from corekd.training import GRAD_NORM_PREFIX, grad_norms, init_model, modality_parameters, train_model
from helpers import corpus_dims

CPU = torch.device("cpu")


def test_grad_norms_by_hand():
    p1, p2, p3, p4 = (
        nn.Parameter(torch.zeros(2)),
        nn.Parameter(torch.zeros(1, 1)),
        nn.Parameter(torch.zeros(3)),
        nn.Parameter(torch.zeros(2)),
    )
    p1.grad = torch.tensor([3.0, 4.0])  # norm 5
    p2.grad = torch.tensor([[12.0]])  # norm 12 -> the group's norm sqrt(25 + 144) = 13
    p4.grad = torch.tensor([-1.0, 0.0])
    out = grad_norms({"l": [p1, p2], "a": [p3], "v": [p3, p4]})  # p3 has no gradient: counts as 0
    assert list(out) == ["grad_norm_l", "grad_norm_a", "grad_norm_v"]
    assert float(out["grad_norm_l"]) == pytest.approx(13.0)
    assert float(out["grad_norm_a"]) == 0.0
    assert float(out["grad_norm_v"]) == pytest.approx(1.0)
    assert p1.grad.tolist() == [3.0, 4.0]  # read, not changed


def test_modality_parameters_are_each_encoders_without_the_missing_token(tiny_corpus):
    model = init_model(
        ModelConfig(hidden=16, heads=2, fusion="token"), corpus_dims(tiny_corpus), len(tiny_corpus.labels), 0, "x"
    )
    groups = modality_parameters(model)
    assert list(groups) == list(model.modalities) == ["l", "a", "v"]
    for m, params in groups.items():
        named = dict(model.encoders[m].named_parameters())
        assert "missing" in named  # the token fusion gives each encoder a missing token ...
        assert {id(p) for p in params} == {id(p) for n, p in named.items() if n != "missing"}  # ... left out
        assert params  # the encoder's weights are there


def _train(corpus, splits, name="no_kd", grad_clip=1.0, epochs=2):
    cls = method_class(name)
    method = cls(cls.Options(), TrainingMissing())
    model = init_model(
        ModelConfig(hidden=16, heads=2), corpus_dims(corpus), len(corpus.labels), 0, "student", build=method.build_model
    )
    cfg = TrainingConfig(epochs=epochs, patience=epochs, batch_size=4, grad_clip=grad_clip)
    return train_model(
        method, model, splits["train"], splits["dev"], cfg, seed=0, label_names=corpus.labels, device=CPU
    )


@pytest.mark.parametrize("name", ["no_kd", "decoupled", "reconstruction"])
def test_history_has_a_non_negative_norm_per_modality_and_epoch(tiny_corpus, tiny_splits, name):
    result = _train(tiny_corpus, tiny_splits, name)
    assert len(result.history) == 2
    for epoch in result.history:
        norms = [epoch[GRAD_NORM_PREFIX + m] for m in ("l", "a", "v")]
        assert all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in norms)
        assert any(v > 0 for v in norms)


def test_norms_change_no_weight(tiny_corpus, tiny_splits, monkeypatch):
    with_norms = _train(tiny_corpus, tiny_splits)
    monkeypatch.setattr(training, "grad_norms", lambda params: {})
    without = _train(tiny_corpus, tiny_splits)
    a, b = with_norms.model.state_dict(), without.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = [{k: v for k, v in h.items() if not k.startswith(GRAD_NORM_PREFIX)} for h in with_norms.history]
    assert strip == without.history


def test_norms_are_read_before_clipping(tiny_corpus, tiny_splits):
    clip = 1e-6  # the whole model's gradient is clipped to this norm: every encoder's clipped norm is at most it
    result = _train(tiny_corpus, tiny_splits, grad_clip=clip, epochs=1)
    assert max(result.history[0][GRAD_NORM_PREFIX + m] for m in ("l", "a", "v")) > 100 * clip
