"""Training objectives that relate the utterances of a batch to one another, as pure functions.

Every function takes the batch's real utterances flattened to N rows (``out.fused[valid]``:
``[N, H]``; labels ``[N]``) and returns one value per utterance ``[N]``; the method reduces them
with :func:`corekd.methods.losses.masked_mean`, like every other loss. Shapes: N utterances,
H state width, C classes, K categories present in the batch.

- :func:`contrastive_distill` : CorrKD's sample-level contrastive distillation (SCD, eq. 1).
- :func:`prototype_distill` : CorrKD's category-guided prototype distillation (CPD, eqs. 2-4).
- :func:`decouple_response`, :func:`jsd_mutual_information_loss`, :class:`SeparableCritic` : CorrKD's
  response-disentangled consistency distillation (RCD, eqs. 5-7).
- :func:`info_nce` : the multi-view contrastive student's loss (seed 002).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pair_distances(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """[N, H], [N, H] -> [N, N]: ``D[i, j] = ||student_i - teacher_j||_2`` (differentiable at 0).

    Through ``|s|^2 + |t|^2 - 2 s.t`` (one matrix product, [N, N] memory, not [N, N, H])."""
    sq = student.pow(2).sum(-1)[:, None] + teacher.pow(2).sum(-1)[None, :] - 2 * student @ teacher.T  # [N, N]
    return sq.clamp(min=1e-12).sqrt()


def contrastive_distill(student: torch.Tensor, teacher: torch.Tensor, eta: float) -> torch.Tensor:
    """SCD per utterance: [N, H], [N, H] -> [N].

    CorrKD eq. 1 sums over ordered pairs i != j: ``D(s_i, t_i)^2 + max(0, eta - D(s_i, t_j))^2`` with
    ``D`` the Euclidean distance. Per utterance this returns the mean of its N - 1 pair terms,
    ``D(s_i, t_i)^2 + mean_{j != i} max(0, eta - D(s_i, t_j))^2``, so the mean over the N utterances is
    eq. 1 divided by N (N - 1). With N = 1 there is no negative: ``D(s_1, t_1)^2``.
    """
    n = student.shape[0]
    positive = (student - teacher).pow(2).sum(-1)  # [N]: D(s_i, t_i)^2, smooth at 0
    if n < 2:
        return positive
    hinge = F.relu(eta - pair_distances(student, teacher)).pow(2)  # [N, N]
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=student.device)
    negative = (hinge * off_diagonal).sum(-1) / (n - 1)  # [N]
    return positive + negative


def prototype_similarities(
    states: torch.Tensor, categories: torch.Tensor, num_categories: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, H], [N] long, K_all -> (M [N, K_all], present [K_all] bool).

    CorrKD eqs. 2-3: the prototype ``c_k`` is the mean state of the batch's utterances of category k;
    ``M[i, k] = cos(H_i, c_k)``. Columns of categories absent from the batch are 0 and not ``present``.
    """
    one_hot = F.one_hot(categories, num_categories).to(states.dtype)  # [N, K_all]
    counts = one_hot.sum(0)  # [K_all]
    prototypes = one_hot.T @ states / counts.clamp(min=1)[:, None]  # [K_all, H]
    sim = F.normalize(states, dim=-1) @ F.normalize(prototypes, dim=-1).T  # [N, K_all]
    present = counts > 0
    return sim * present.to(sim.dtype), present


def prototype_distill(
    student: torch.Tensor, teacher: torch.Tensor, categories: torch.Tensor, num_categories: int
) -> torch.Tensor:
    """CPD per utterance: [N, H], [N, H], [N] long -> [N].

    Each network's states give its own prototypes and similarity matrix (eqs. 2-3); eq. 4 is
    ``1/(N K) sum_i sum_k (M^s_k(i) - M^t_k(i))^2`` over the K categories present in the batch.
    Per utterance: the mean over those K of the squared difference (their mean over N is eq. 4).
    """
    m_s, present = prototype_similarities(student, categories, num_categories)
    m_t, _ = prototype_similarities(teacher, categories, num_categories)
    return (m_s - m_t).pow(2).sum(-1) / present.sum().clamp(min=1)


def decouple_response(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, C], [N] long -> (TCR [N, 2], NTCR [N, C - 1]).

    The response ``R = softmax(logits)`` split at the target index (as decoupled KD does): the
    target-category response ``(p_target, 1 - p_target)`` and the non-target response, the
    probabilities of the other classes renormalised to sum to 1 (in class order, target left out).
    """
    p = logits.softmax(-1)  # [N, C]
    p_target = p.gather(-1, target[:, None])  # [N, 1]
    tcr = torch.cat([p_target, 1 - p_target], dim=-1)  # [N, 2]
    c = logits.shape[-1]
    others = torch.arange(c, device=logits.device)[None, :] != target[:, None]  # [N, C] bool
    ntcr = logits.masked_fill(~others, float("-inf")).softmax(-1)[others].view(-1, c - 1)  # [N, C - 1]
    return tcr, ntcr


def jsd_mutual_information_loss(scores: torch.Tensor) -> torch.Tensor:
    """Minus CorrKD's JSD mutual-information estimate (eq. 6), per utterance: [N, N] -> [N].

    ``scores[i, j] = F(q_i, u_j)``: the statistics network on teacher response i and student response
    j. The diagonal pairs are samples of the joint P(Q, U), the off-diagonal ones of the product of
    the marginals P(Q) P(U). ``-I = E_joint[softplus(-F)] + E_marginal[softplus(F)]``; per utterance
    ``softplus(-F_ii) + mean_{j != i} softplus(F_ij)`` (with N = 1 only the joint term).
    """
    n = scores.shape[0]
    joint = F.softplus(-scores.diagonal())  # [N]
    if n < 2:
        return joint
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=scores.device)
    marginal = (F.softplus(scores) * off_diagonal).sum(-1) / (n - 1)  # [N]
    return joint + marginal


class SeparableCritic(nn.Module):
    """The statistics network F(q, u) of eq. 6: ``<g(q), h(u)>`` with g, h one-hidden-layer MLPs.

    Separable, so the scores of all N x N (teacher, student) pairs are one matrix product.
    """

    def __init__(self, q_dim: int, u_dim: int, hidden: int):
        super().__init__()
        self.g = nn.Sequential(nn.Linear(q_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.h = nn.Sequential(nn.Linear(u_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden))

    def forward(self, q: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        # q: [N, Dq] teacher responses; u: [N, Du] student responses -> [N, N]
        return self.g(q) @ self.h(u).T


def info_nce(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """[N, H], [N, H] -> [N]: ``-log softmax_j(cos(s_i, t_j) / temperature)[i]``.

    The student's embedding of utterance i is pulled towards the teacher's embedding of the same
    utterance and pushed from the teacher's embeddings of the batch's other utterances.
    """
    logits = F.normalize(student, dim=-1) @ F.normalize(teacher, dim=-1).T / temperature  # [N, N]
    return -logits.log_softmax(-1).diagonal()
