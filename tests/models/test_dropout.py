"""The models' dropout layer (corekd.models.dropout): the mask rule, scaling, gradients, modes."""

import pytest
import torch

from corekd.models.dropout import Dropout, dropout
from helpers import ROOT


def test_the_mask_is_a_uniform_draw_compared_with_p_and_kept_units_are_scaled():
    x = torch.arange(1.0, 9.0).view(2, 4)  # [2, 4]
    torch.manual_seed(3)
    u = torch.rand(2, 4)
    torch.manual_seed(3)
    y = dropout(x, 0.25, training=True)
    expected = x * torch.where(u >= 0.25, 1.0 / 0.75, 0.0)
    assert torch.equal(y, expected)
    assert 0 < int((y == 0).sum()) < 8  # this seed drops some units and keeps others


def test_a_hand_computed_case(monkeypatch):
    # u = [0.1, 0.5, 0.3, 0.9] against p = 0.3: the first unit dropped, the third (u == p) kept
    x = torch.tensor([2.0, 4.0, 6.0, 8.0])
    u = torch.tensor([0.1, 0.5, 0.3, 0.9])
    monkeypatch.setattr(torch, "rand_like", lambda t: u.clone())  # the only draw the layer makes
    y = dropout(x, 0.3, training=True)
    assert torch.allclose(y, torch.tensor([0.0, 4.0 / 0.7, 6.0 / 0.7, 8.0 / 0.7]))


def test_keep_rate_and_mean_match_nn_dropout_in_distribution():
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = dropout(x, 0.2, training=True)
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.8) < 0.005
    assert abs(y.mean().item() - 1.0) < 0.01  # inverted dropout keeps the expectation
    assert torch.unique(y).tolist() == pytest.approx([0.0, 1.25])


def test_gradient_is_the_mask():
    torch.manual_seed(1)
    x = torch.randn(5, 7, requires_grad=True)
    torch.manual_seed(2)
    y = dropout(x, 0.4, training=True)
    y.sum().backward()
    torch.manual_seed(2)
    keep = (torch.rand(5, 7) >= 0.4).float() / 0.6
    assert torch.allclose(x.grad, keep)


def test_eval_mode_and_p_zero_are_the_identity_and_draw_nothing():
    x = torch.randn(3, 4)
    layer = Dropout(0.5).eval()
    state = torch.random.get_rng_state()
    assert layer(x) is x
    assert dropout(x, 0.0, training=True) is x
    assert torch.equal(torch.random.get_rng_state(), state)
    assert layer.state_dict() == {}
    assert "p=0.5" in repr(layer)


def test_same_seed_same_masks():
    x = torch.randn(4, 6)
    torch.manual_seed(9)
    a = Dropout(0.3).train()(x)
    torch.manual_seed(9)
    b = Dropout(0.3).train()(x)
    assert torch.equal(a, b)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_a_probability_outside_0_1_is_refused(p):
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(p)
    with pytest.raises(ValueError, match="dropout probability"):
        dropout(torch.ones(2), p, training=True)


def test_every_model_dropout_is_ours_and_the_speed_benchmark_can_swap_it_for_torchs(tiny_corpus):
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from speed import with_torch_dropout

    from corekd.models.model import ERCModel, ModelConfig

    dims = {m: spec.dim for m, spec in tiny_corpus.modalities.items()}
    model = ERCModel(ModelConfig(hidden=16, heads=2), dims, len(tiny_corpus.labels))
    ours = [m for m in model.modules() if isinstance(m, Dropout)]
    assert ours and not any(type(m) is torch.nn.Dropout for m in model.modules())
    swapped = with_torch_dropout(model)
    assert swapped is model
    assert not any(isinstance(m, Dropout) for m in model.modules())
    assert sorted(m.p for m in model.modules() if type(m) is torch.nn.Dropout) == sorted(m.p for m in ours)
