"""The training objectives as pure functions.

Every loss returns one value per utterance (``[...]``, any leading shape such as ``[B, U]``);
:func:`masked_mean` is the one place the padding / selection weights reduce them to a scalar.
Shapes: C classes, H state width, M modalities.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

StateDistance = Literal["normalized_sq", "cosine", "mse"]


def masked_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over entries where ``weight`` is non-zero (weighted); 0 if there are none."""
    weight = weight.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp(min=torch.finfo(values.dtype).tiny)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """[..., C], [...] -> [...]: ``-log softmax(logits)[label]``.

    With ``smoothing`` e the target is ``(1 - e) one_hot(label) + e / C``:
    ``(1 - e) * -log p[label] + e * mean_c(-log p[c])``.
    """
    log_p = F.log_softmax(logits, dim=-1)
    nll = -log_p.gather(-1, labels[..., None]).squeeze(-1)
    if smoothing == 0:
        return nll
    return (1 - smoothing) * nll - smoothing * log_p.mean(-1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """[..., C], [..., C] -> [...]: ``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))`` (Hinton's scaling)."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    return temperature**2 * (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)


def l1_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[...], [...] -> [...]: ``|prediction - target|`` (regression's supervised term, as MMSA trains)."""
    return (prediction - target).abs()


def squared_error(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """[...], [...] -> [...]: ``(student - teacher)^2`` (regression's KD term: match the teacher's output)."""
    return (student - teacher).pow(2)


def supervised_loss(logits: torch.Tensor, batch, smoothing: float = 0.0) -> torch.Tensor:
    """Per utterance [B, U]: the task's supervised term on the model's head output ``logits`` [B, U, C].

    Dispatches on the task the batch carries: with regression ``targets`` (``batch.targets`` [B, U]
    float) L1 between the one-output head ``logits[..., 0]`` and the target; otherwise cross-entropy
    on ``batch.labels`` (label smoothing applies to classification only).
    """
    if batch.targets is not None:
        return l1_error(logits[..., 0], batch.targets)
    return cross_entropy(logits, batch.labels, smoothing)


def distill_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, regression: bool
) -> torch.Tensor:
    """Per utterance [...]: KD to the teacher's output; squared error for regression (``temperature`` unused), else
    :func:`kd_loss`."""
    if regression:
        return squared_error(student_logits[..., 0], teacher_logits[..., 0])
    return kd_loss(student_logits, teacher_logits, temperature)


def state_distance(student: torch.Tensor, teacher: torch.Tensor, kind: StateDistance = "normalized_sq") -> torch.Tensor:
    """[..., H], [..., H] -> [...]: distance between states, one value per utterance.

    - ``normalized_sq``: ``||s/|s| - t/|t|||^2`` summed over H (= 2 - 2 cos); independent of H.
    - ``cosine``: ``1 - cos(s, t)`` (half of the above).
    - ``mse``: mean over H of ``(s - t)^2`` (plain MSE; its scale shrinks as 1/H for unit-scale states).
    """
    if kind == "normalized_sq":
        return (F.normalize(student, dim=-1) - F.normalize(teacher, dim=-1)).pow(2).sum(-1)
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(student, teacher, dim=-1)
    if kind == "mse":
        return (student - teacher).pow(2).mean(-1)
    raise ValueError(f"unknown state distance '{kind}'")


def state_anchor(
    student_fused: torch.Tensor, teacher_fused: torch.Tensor, kind: StateDistance = "normalized_sq"
) -> torch.Tensor:
    """L_state per utterance: [..., H], [..., H] -> [...]."""
    return state_distance(student_fused, teacher_fused, kind)


def modality_anchor(
    student_states: torch.Tensor,
    teacher_states: torch.Tensor,
    observed: torch.Tensor,
    kind: StateDistance = "normalized_sq",
    over: Literal["observed", "all"] = "observed",
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_mstate per utterance: [..., M, H], [..., M, H], [..., M] bool -> (values [...], usable [...] bool).

    The distance averaged over the modalities the student observes (``over="observed"``) or over
    all of them; an utterance with nothing to average over is not usable (value 0).
    """
    dist = state_distance(student_states, teacher_states, kind)  # [..., M]
    weight = observed.to(dist.dtype) if over == "observed" else torch.ones_like(dist)
    count = weight.sum(-1)
    return (dist * weight).sum(-1) / count.clamp(min=1.0), count > 0


def conflict_margin(
    log_probs: torch.Tensor, target: torch.Tensor, donor_label: torch.Tensor, margin: float
) -> torch.Tensor:
    """[..., C], [...], [...] -> [...]: ``max(0, margin - (log p[target] - log p[donor label]))`` on a conflict view."""
    gap = log_probs.gather(-1, target[..., None]).squeeze(-1) - log_probs.gather(-1, donor_label[..., None]).squeeze(-1)
    return F.relu(margin - gap)
