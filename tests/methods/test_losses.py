"""Each objective on a tiny case computed by hand, a degenerate case, and a backward pass."""

import math
from dataclasses import replace

import pytest
import torch

from corekd.methods.losses import (
    conflict_margin,
    cross_entropy,
    kd_loss,
    masked_mean,
    modality_anchor,
    state_anchor,
    state_distance,
    supervised_loss,
)
from helpers import made_up_batch, py_ce


def test_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])
    labels = torch.tensor([1, 1])
    # softmax([0, ln3]) = [1/4, 3/4]  ->  -ln(3/4);  softmax([ln3, 0]) = [3/4, 1/4] -> -ln(1/4)
    expected = torch.tensor([-math.log(0.75), -math.log(0.25)])
    assert torch.allclose(cross_entropy(logits, labels), expected, atol=1e-6)


def test_cross_entropy_keeps_leading_shape():
    logits = torch.randn(2, 3, 4)
    labels = torch.randint(4, (2, 3))
    ref = torch.nn.functional.cross_entropy(logits.reshape(6, 4), labels.reshape(6), reduction="none").view(2, 3)
    assert torch.allclose(cross_entropy(logits, labels), ref, atol=1e-6)


def test_kd_loss_by_hand_and_temperature_scaling():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    # p_t = [3/4, 1/4], p_s = [1/2, 1/2]: KL = 3/4 ln(3/2) + 1/4 ln(1/2)
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kd_loss(student, teacher, 1.0).item() == pytest.approx(kl, abs=1e-6)
    # With T = 2 and teacher logits doubled the softened distributions are the same; T^2 = 4 scales it.
    assert kd_loss(student, 2 * teacher, 2.0).item() == pytest.approx(4 * kl, abs=1e-6)
    # Identical predictions: zero.
    assert kd_loss(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_loss_direction_is_teacher_to_student():
    # KL(p_t || p_s) is not symmetric; swapping the arguments must change the value.
    a, b = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, -1.0]])
    assert not torch.allclose(kd_loss(a, b, 1.0), kd_loss(b, a, 1.0))


def test_state_distances_by_hand():
    s, t = torch.tensor([3.0, 4.0]), torch.tensor([4.0, 3.0])
    # cos = 24/25 = 0.96
    assert state_distance(s, t, "normalized_sq").item() == pytest.approx(2 - 2 * 0.96, abs=1e-6)
    assert state_distance(s, t, "cosine").item() == pytest.approx(1 - 0.96, abs=1e-6)
    assert state_distance(s, t, "mse").item() == pytest.approx(1.0, abs=1e-6)  # ((-1)^2 + 1^2) / 2
    with pytest.raises(ValueError):
        state_distance(s, t, "manhattan")


def test_normalized_distance_does_not_shrink_with_width():
    """The default keeps the per-utterance distance independent of H; plain MSE divides it by H."""
    torch.manual_seed(0)
    s, t = torch.randn(4, 8), torch.randn(4, 8)
    wide_s, wide_t = s.repeat(1, 16), t.repeat(1, 16)  # the same directions in 128 dimensions
    assert torch.allclose(state_anchor(s, t), state_anchor(wide_s, wide_t), atol=1e-5)
    assert state_anchor(s, t).mean() > 0.5  # random directions: about 2


def test_modality_anchor_by_hand():
    student = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])  # [1, M=3, H=2]
    teacher = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # distances 0, 2, 4
    observed = torch.tensor([[True, True, False]])
    values, usable = modality_anchor(student, teacher, observed)
    assert values.item() == pytest.approx(1.0)  # mean(0, 2) over observed
    assert usable.tolist() == [True]
    values, _ = modality_anchor(student, teacher, observed, over="all")
    assert values.item() == pytest.approx(2.0)  # mean(0, 2, 4)
    values, usable = modality_anchor(student, teacher, torch.zeros(1, 3, dtype=torch.bool))
    assert values.item() == 0.0 and usable.tolist() == [False]


def test_conflict_margin_by_hand():
    log_probs = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    target, donor = torch.tensor([0]), torch.tensor([1])
    # gap = ln 0.5 - ln 0.25 = ln 2
    assert conflict_margin(log_probs, target, donor, 1.0).item() == pytest.approx(1 - math.log(2), abs=1e-6)
    assert conflict_margin(log_probs, target, donor, 0.5).item() == 0.0


def test_masked_mean_by_hand_and_empty():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    assert masked_mean(values, torch.tensor([1, 0, 1, 0])).item() == pytest.approx(2.0)
    empty = masked_mean(values, torch.zeros(4))
    assert empty.item() == 0.0
    empty.backward()
    assert torch.isfinite(values.grad).all()


def test_gradients_by_hand():
    """The student's gradient of each objective, worked out by hand.

    Whether the teacher gets a gradient is not the losses' business (they are pure and take the
    teacher's outputs as given); that the teacher is frozen is pinned in tests/test_methods.py.
    """
    z = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)
    cross_entropy(z, torch.tensor([0])).sum().backward()
    # d CE / dz = softmax(z) - onehot(label) = [1/4 - 1, 3/4]
    assert torch.allclose(z.grad, torch.tensor([[-0.75, 0.75]]), atol=1e-6)

    z = torch.tensor([[0.0, 0.0]], requires_grad=True)
    kd_loss(z, torch.tensor([[2 * math.log(3.0), 0.0]]), 2.0).sum().backward()
    # d (T^2 KL(p_t || p_s)) / dz_s = T (p_s - p_t), p_s = [1/2, 1/2], p_t = softmax([ln 3, 0]) = [3/4, 1/4]
    assert torch.allclose(z.grad, 2.0 * torch.tensor([[-0.25, 0.25]]), atol=1e-6)

    s = torch.tensor([[2.0, 0.0]], requires_grad=True)
    state_anchor(s, torch.tensor([[0.0, 5.0]])).sum().backward()
    # ||s/|s| - t/|t|||^2 = 2 - 2 cos: d/ds = -2/|s| (I - s^ s^T) t^ = -2/2 [0, 1] at s = [2, 0], t^ = [0, 1]
    assert torch.allclose(s.grad, torch.tensor([[0.0, -1.0]]), atol=1e-6)

    s = torch.tensor([[2.0, 0.0]], requires_grad=True)
    state_anchor(s, torch.tensor([[0.0, 5.0]]), "cosine").sum().backward()
    assert torch.allclose(s.grad, torch.tensor([[0.0, -0.5]]), atol=1e-6)  # half of the above


# ---------------------------------------------------------------- losses on [B, U, ...] inputs
def test_conflict_margin_on_dialogue_shaped_inputs():
    probs = torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]], [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]])  # [B=2, U=2, C=3]
    target = torch.tensor([[0, 2], [1, 2]])
    donor = torch.tensor([[1, 0], [0, 1]])
    got = conflict_margin(probs.log(), target, donor, 2.0)
    want = torch.tensor(
        [
            [2.0 - torch.log(torch.tensor(2.0)), 2.0 - torch.log(torch.tensor(7.0))],
            [2.0 - torch.log(torch.tensor(0.5)), 2.0 - torch.log(torch.tensor(3.0))],
        ]
    )
    assert torch.allclose(got, want.clamp(min=0), atol=1e-6)


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_modality_anchor_uses_the_chosen_distance(kind):
    student = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]])  # [1, M=2, H=2]
    teacher = torch.tensor([[[4.0, 3.0], [0.0, 2.0]]])
    values, _ = modality_anchor(student, teacher, torch.tensor([[True, True]]), kind)
    assert values.item() == pytest.approx(state_distance(student, teacher, kind).mean().item())
    assert values.item() != pytest.approx(state_distance(student, teacher).mean().item())


# ---------------------------------------------------------------- state distances
def test_state_distance_defaults_and_shapes():
    s, t = torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[4.0, 3.0], [1.0, 2.0]])
    assert torch.allclose(state_distance(s, t), state_distance(s, t, "normalized_sq"))
    assert torch.allclose(state_distance(s, t, "mse"), torch.tensor([1.0, 2.0]))  # one value per row
    with pytest.raises(ValueError, match="unknown state distance 'manhattan'"):
        state_distance(s, t, "manhattan")


# ---------------------------------------------------------------- cross-entropy, supervised loss, masked mean
def test_cross_entropy_by_hand_with_and_without_smoothing():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    labels = torch.tensor([1, 0])
    assert cross_entropy(logits, labels).tolist() == pytest.approx(
        [py_ce([1.0, 2.0, 0.5], 1), py_ce([0.0, -1.0, 3.0], 0)]
    )
    assert cross_entropy(logits, labels, 0.0).tolist() == pytest.approx(
        [py_ce([1.0, 2.0, 0.5], 1), py_ce([0.0, -1.0, 3.0], 0)]
    )
    got = cross_entropy(logits, labels, 0.3).tolist()
    assert got == pytest.approx([py_ce([1.0, 2.0, 0.5], 1, 0.3), py_ce([0.0, -1.0, 3.0], 0, 0.3)])
    assert all(v > 0 for v in got)
    # at smoothing 1 only the uniform part is left: mean_c(-log p[c])
    uniform = [sum(py_ce(row, c) for c in range(3)) / 3 for row in ([1.0, 2.0, 0.5], [0.0, -1.0, 3.0])]
    assert cross_entropy(logits, labels, 1.0).tolist() == pytest.approx(uniform)


def test_supervised_loss_dispatches_on_the_batch_task():
    avail = torch.ones(1, 2, 3, dtype=torch.bool)
    batch = made_up_batch(avail, avail, torch.tensor([[2, 0]]), torch.tensor([[True, True]]))
    logits = torch.tensor([[[0.5, 1.0, -1.0], [2.0, 0.0, 1.0]]])
    assert supervised_loss(logits, batch)[0].tolist() == pytest.approx(
        [py_ce([0.5, 1.0, -1.0], 2), py_ce([2.0, 0.0, 1.0], 0)]
    )
    assert supervised_loss(logits, batch, 0.2)[0].tolist() == pytest.approx(
        [py_ce([0.5, 1.0, -1.0], 2, 0.2), py_ce([2.0, 0.0, 1.0], 0, 0.2)]
    )
    reg = replace(batch, targets=torch.tensor([[1.5, -1.0]]))
    assert supervised_loss(logits, reg)[0].tolist() == pytest.approx([1.0, 3.0])  # |0.5 - 1.5|, |2 - (-1)|
    assert supervised_loss(logits, reg, 0.2)[0].tolist() == pytest.approx([1.0, 3.0])  # no smoothing in regression


def test_masked_mean_weights_and_bool_masks():
    values = torch.tensor([[1.0, 2.0], [4.0, 8.0]])
    assert float(masked_mean(values, torch.tensor([[True, False], [True, True]]))) == pytest.approx(13 / 3)
    assert float(masked_mean(values, torch.tensor([[0.5, 0.0], [0.0, 1.5]]))) == pytest.approx((0.5 + 12) / 2)
    assert float(masked_mean(values, torch.zeros(2, 2, dtype=torch.bool))) == 0.0
    half = masked_mean(torch.tensor([1.0, 3.0], dtype=torch.float16), torch.tensor([1.0, 1.0]))
    assert half.dtype == torch.float16 and float(half) == 2.0  # the weights take the values' dtype
