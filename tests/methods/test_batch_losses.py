"""The batch-relational losses (CorrKD's SCD, CPD, RCD; the contrastive student's InfoNCE) on tiny cases by hand."""

import math

import pytest
import torch

from corekd.methods.batch_losses import (
    SeparableCritic,
    contrastive_distill,
    decouple_response,
    info_nce,
    jsd_mutual_information_loss,
    pair_distances,
    prototype_distill,
    prototype_similarities,
)


def test_scd_two_utterances_by_hand():
    s = torch.tensor([[0.0], [3.0]])
    t = torch.tensor([[1.0], [3.0]])
    # positives: D(s0,t0)^2 = 1, D(s1,t1)^2 = 0; negatives (eta 2.5): D(s0,t1) = 3 -> 0, D(s1,t0) = 2 -> 0.5^2
    values = contrastive_distill(s, t, eta=2.5)
    assert torch.allclose(values, torch.tensor([1.0, 0.25]))
    # eq. 1 (the sum over ordered pairs i != j) is N (N - 1) times the mean of the per-utterance values
    assert float(values.mean()) * 2 * 1 == pytest.approx(1.0 + 0.25)


def test_scd_averages_negatives_over_the_other_utterances():
    s = torch.tensor([[0.0], [1.0], [4.0]])
    t = torch.tensor([[0.0], [2.0], [4.0]])
    # i=0: D to t1 = 2 -> (3-2)^2 = 1, to t2 = 4 -> 0: mean 0.5; positive 0
    # i=1: D to t0 = 1 -> (3-1)^2 = 4, to t2 = 3 -> 0: mean 2;   positive 1
    # i=2: D to t0 = 4 -> 0, to t1 = 2 -> 1: mean 0.5;           positive 0
    assert torch.allclose(contrastive_distill(s, t, eta=3.0), torch.tensor([0.5, 3.0, 0.5]))


def test_scd_single_utterance_and_coincident_states_have_finite_gradients():
    s = torch.tensor([[1.0, 2.0]], requires_grad=True)
    assert contrastive_distill(s, torch.tensor([[1.0, 0.0]]), eta=1.0).item() == pytest.approx(4.0)
    s2 = torch.zeros(3, 2, requires_grad=True)
    contrastive_distill(s2, torch.zeros(3, 2), eta=1.0).sum().backward()  # every distance is 0
    assert torch.isfinite(s2.grad).all()


def test_cpd_by_hand():
    categories = torch.tensor([0, 0, 1])  # category 2 of 3 is absent from the batch
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # student prototypes c0 = (.5,.5), c1 = (1,1): cosines rows (1/sqrt2, 1/sqrt2), (1/sqrt2, 1/sqrt2), (1, 1)
    # teacher prototypes c0 = (1,0), c1 = (0,1): rows (1, 0), (1, 0), (0, 1)
    m_s, present = prototype_similarities(s, categories, 3)
    r = 1 / math.sqrt(2)
    assert torch.allclose(m_s, torch.tensor([[r, r, 0.0], [r, r, 0.0], [1.0, 1.0, 0.0]]), atol=1e-6)
    assert present.tolist() == [True, True, False]
    # per utterance: mean over the K = 2 present categories of the squared difference
    # i0, i1: ((1 - r)^2 + r^2) / 2 = (2 - sqrt2) / 2;  i2: ((1 - 0)^2 + 0) / 2
    expected = torch.tensor([1 - r, 1 - r, 0.5])
    assert torch.allclose(prototype_distill(s, t, categories, 3), expected, atol=1e-6)


def test_cpd_is_zero_for_identical_networks_and_ignores_scale():
    torch.manual_seed(0)
    h = torch.randn(6, 4)
    cats = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.allclose(prototype_distill(h, 3.0 * h, cats, 4), torch.zeros(6), atol=1e-6)


def test_decouple_response_by_hand():
    logits = torch.log(torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))  # softmax = (1/6, 2/6, 3/6)
    tcr, ntcr = decouple_response(logits, torch.tensor([1, 2]))
    assert torch.allclose(tcr, torch.tensor([[1 / 3, 2 / 3], [1 / 2, 1 / 2]]), atol=1e-6)
    # target 1: others (1/6, 3/6) renormalised by 4/6; target 2: (1/6, 2/6) by 3/6
    assert torch.allclose(ntcr, torch.tensor([[1 / 4, 3 / 4], [1 / 3, 2 / 3]]), atol=1e-6)


def test_jsd_mutual_information_loss_by_hand():
    scores = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), -math.log(3.0)]])
    # joint: softplus(-F00) = ln(1 + 1/3), softplus(-F11) = ln(1 + 3); marginal: softplus(F01) = ln 2, softplus(F10) = ln 4
    expected = torch.tensor([math.log(4 / 3) + math.log(2.0), math.log(4.0) + math.log(4.0)])
    assert torch.allclose(jsd_mutual_information_loss(scores), expected, atol=1e-6)
    # a critic that separates joint from marginal pairs drives the loss (minus the estimate) towards 0
    sharp = torch.tensor([[20.0, -20.0], [-20.0, 20.0]])
    assert float(jsd_mutual_information_loss(sharp).max()) < 1e-6
    # one utterance: only the joint term
    assert jsd_mutual_information_loss(torch.tensor([[0.0]])).item() == pytest.approx(math.log(2.0))


def test_separable_critic_scores_every_pair():
    torch.manual_seed(0)
    critic = SeparableCritic(2, 3, hidden=4)
    q, u = torch.rand(5, 2), torch.rand(5, 3)
    scores = critic(q, u)
    assert scores.shape == (5, 5)
    with torch.no_grad():
        assert scores[1, 3].item() == pytest.approx((critic.g(q[1]) @ critic.h(u[3])).item(), abs=1e-6)


def test_info_nce_by_hand():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # cosines: s0 (1, r), s1 (0, r), r = 1/sqrt2
    r = 1 / math.sqrt(2)
    expected = torch.tensor([math.log(1 + math.exp(r - 1)), math.log(1 + math.exp(-r))])
    assert torch.allclose(info_nce(s, t, temperature=1.0), expected, atol=1e-6)
    # temperature 0.5 doubles the logits
    expected_half = torch.tensor([math.log(1 + math.exp(2 * (r - 1))), math.log(1 + math.exp(-2 * r))])
    assert torch.allclose(info_nce(s, t, temperature=0.5), expected_half, atol=1e-6)


LN2, LN3 = math.log(2.0), math.log(3.0)


def test_pair_distances_by_hand():
    """Kills batch_losses.pair_distances `clamp(min=1.000000000001)` (distances below 1 clamped to 1)."""
    s = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    t = torch.tensor([[0.0, 0.5], [0.0, 0.0]])
    d = pair_distances(s, t)
    # D[0,0] = 0.5, D[0,1] = 0 (clamped at sqrt(1e-12)), D[1,0] = |(3, 3.5)|, D[1,1] = 5
    assert torch.allclose(d, torch.tensor([[0.5, 0.0], [math.hypot(3.0, 3.5), 5.0]]), atol=1e-5)


def test_cpd_with_one_category_divides_by_one():
    """One category present: K = 1. s: (1, 0), (0, 1), prototype (.5, .5), cos r = 1/sqrt 2 each; t: (1, 0) twice,
    cos 1. Per utterance (r - 1)^2 / 1. Kills batch_losses.prototype_distill `present.sum().clamp(min=2)`."""
    r = 1 / math.sqrt(2)
    values = prototype_distill(
        torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([1, 1]), 3
    )
    assert torch.allclose(values, torch.full((2,), (r - 1) ** 2), atol=1e-6)


def test_jsd_mutual_information_loss_with_three_utterances():
    """The marginal term is the mean over the N - 1 = 2 other utterances (N = 2 cannot tell / from *).
    scores: diagonal ln 3 (softplus(-ln 3) = ln 4/3); off-diagonal 0 (softplus 0 = ln 2) except F[0, 1] = ln 3
    (softplus = ln 4). Kills batch_losses.jsd_mutual_information_loss `* (n - 1)`."""
    scores = torch.zeros(3, 3)
    scores.fill_diagonal_(LN3)
    scores[0, 1] = LN3
    expected = torch.tensor([math.log(4 / 3) + (math.log(4.0) + LN2) / 2, math.log(4 / 3) + LN2, math.log(4 / 3) + LN2])
    assert torch.allclose(jsd_mutual_information_loss(scores), expected, atol=1e-6)


def test_separable_critic_is_linear_relu_linear_on_each_side():
    """g(q) = W2 relu(W1 q + b1) + b2 (and h alike): with W1 = (1, -1)^T, the ReLU keeps |q| in one unit; W2 sums
    the units. F(q, u) = g(q) h(u) = |q| * |u|. Kills batch_losses.SeparableCritic.__init__ the ReLU left out (F would
    be 0) and the last Linear left out."""
    critic = SeparableCritic(1, 1, hidden=2)
    with torch.no_grad():
        for mlp in (critic.g, critic.h):
            mlp[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
            mlp[0].bias.zero_()
            mlp[2].weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
            mlp[2].bias.zero_()
        scores = critic(torch.tensor([[-2.0], [3.0]]), torch.tensor([[1.0], [-0.5]]))
    assert torch.allclose(scores, torch.tensor([[2.0, 1.0], [3.0, 1.5]]))
