"""Follow-up tests for mutation survivors in the baselines: reconstruction, corrkd, contrastive_view, decoupled's
corpus check and the batch-relational losses.

The losses are checked on made-up outputs with every term worked out by hand (plain Python ``math`` below, not the
library's functions). Each test names the mutants it kills; every kill was checked by applying the mutant by hand.
"""

import math
from dataclasses import replace

import pytest
import torch
from helpers import TINY_SYNTH, build_method, made_up_batch, py_ce, py_kd, py_softmax
from torch import nn

from corekd.data.batching import SplitTensors
from corekd.data.protocols import Condition
from corekd.data.synth import SynthConfig, generate
from corekd.methods import StepContext, TrainView
from corekd.methods.batch_losses import (
    SeparableCritic,
    jsd_mutual_information_loss,
    pair_distances,
    prototype_distill,
)
from corekd.methods.corrkd import Critics
from corekd.methods.reconstruction import ReconstructionModel, imputation_loss
from corekd.models.model import ERCModel, ModelConfig, Output
from corekd.seeding import torch_generator

LN2, LN3 = math.log(2.0), math.log(3.0)


# ================================================================ reconstruction
# One dialogue of three slots (the third is padding), M = 2 modalities (l, a), H = 1, C = 2.
#   u0: the data has l and a, the view hides a;   u1: the data has only l, the view shows it;   u2: padding.
R_UTT = torch.tensor([[True, True, False]])
R_AVAIL = torch.tensor([[[True, True], [True, False], [False, False]]])
R_VIEW = torch.tensor([[[True, False], [True, False], [False, False]]])
R_LABELS = torch.tensor([[1, 1, 0]])
R_LOGITS = [[0.0, LN3], [math.log(7.0), 0.0], [7.0, -7.0]]  # p(label 1) = 3/4, 1/8; the padding's never counts
R_TEACHER = [[LN3, 0.0], [0.0, 0.0], [0.0, 5.0]]
# imputed and target encodings [1, 3, 2, 1]; squared errors per modality (l, a): u0 (1, 4), u1 (1, 25), u2 (81, 81)
R_IMPUTED = [[[1.0], [3.0]], [[3.0], [5.0]], [[9.0], [9.0]]]
R_TARGET = [[[0.0], [1.0]], [[2.0], [0.0]], [[0.0], [0.0]]]


class _Encoder(nn.Module):
    """ctx.model for the imputation target: ``encode`` gives ``scale * R_TARGET``, recording the batch it saw."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.seen = []

    def encode(self, batch):
        self.seen.append(batch)
        return self.scale * torch.tensor([R_TARGET]), batch.mask


def _reconstruction_loss(label_smoothing=0.0, **options):
    complete = made_up_batch(R_AVAIL, R_AVAIL, R_LABELS, R_UTT)
    view = TrainView(made_up_batch(R_AVAIL, R_VIEW, R_LABELS, R_UTT))
    imputed = torch.tensor([R_IMPUTED], requires_grad=True)
    out = Output(logits=torch.tensor([R_LOGITS], requires_grad=True), fused=torch.zeros(1, 3, 1),
                 states=torch.zeros(1, 3, 2, 1), extra={"imputed": imputed})
    teacher = Output(logits=torch.tensor([R_TEACHER]), fused=torch.zeros(1, 3, 1), states=torch.zeros(1, 3, 2, 1))
    method, encoder = build_method("reconstruction", **options), _Encoder()
    ctx = StepContext(batch=complete, view=view, output=out, teacher=teacher if method.needs_teacher else None,
                      model=encoder, generator=torch_generator("unused"), label_smoothing=label_smoothing)
    total, terms = method.loss(ctx)
    return total, terms, encoder


CE_R = (math.log(4 / 3) + math.log(8.0)) / 2  # u0 and u1; label 1 with p = 3/4 and 1/8


def test_reconstruction_loss_by_hand_over_all_modalities():
    """rec_over all: every modality the data has, of the real utterances: u0 (1 + 4) / 2, u1 1 / 1 (a is not in
    the data, so not scored). Kills reconstruction.py:126 `batch.avail | real`; :127 `(rec_over == "all") and False`,
    `!= "all"`, `"XXallXX"`, `"ALL"`; :130 `total - ...`, `l_rec / rec`; :47 (imputation_loss) `clamp(min=2.0)`,
    `count > 1` (u1 has one selected modality)."""
    total, terms, encoder = _reconstruction_loss(l_rec=0.5)
    assert set(terms) == {"ce", "rec"}
    assert terms["ce"].item() == pytest.approx(CE_R, abs=1e-6)
    assert terms["rec"].item() == pytest.approx((2.5 + 1.0) / 2, abs=1e-6)
    assert total.item() == pytest.approx(CE_R + 0.5 * 1.75, abs=1e-6)
    (target_batch,) = encoder.seen  # the target is the encoding of the complete view
    assert torch.equal(target_batch.mask, R_AVAIL)


def test_reconstruction_loss_by_hand_over_the_hidden_modalities():
    """rec_over missing: only what the data has and the view hides: u0's a (error 4); u1 hides nothing, so it is
    not usable and leaves the mean. Kills reconstruction.py:127 `(rec_over == "all") or True`, `has | ~mask`,
    `has & mask`; :129 `real | usable`."""
    total, terms, _ = _reconstruction_loss(l_rec=2.0, rec_over="missing")
    assert terms["rec"].item() == pytest.approx(4.0, abs=1e-6)
    assert total.item() == pytest.approx(CE_R + 2.0 * 4.0, abs=1e-6)


def test_reconstruction_with_label_smoothing_and_kd_by_hand():
    """Label smoothing reaches the CE; l_kd = 0.5 (below 1) adds KD at temperature 2 over the real utterances.
    Kills reconstruction.py:118 `supervised_loss(out.logits, batch, )`; :131 `l_kd > 1`; :132 every KD-term mutant
    (`None`, the key, the arguments, `targets is None`); :133 `total = None`, `-`, `/`, the key."""
    total, terms, _ = _reconstruction_loss(label_smoothing=0.1, l_rec=0.0, l_kd=0.5, temperature=2.0)
    ce = (py_ce(R_LOGITS[0], 1, 0.1) + py_ce(R_LOGITS[1], 1, 0.1)) / 2
    kd = (py_kd(R_LOGITS[0], R_TEACHER[0], 2.0) + py_kd(R_LOGITS[1], R_TEACHER[1], 2.0)) / 2
    assert set(terms) == {"ce", "kd"}
    assert terms["ce"].item() == pytest.approx(ce, abs=1e-6)
    assert terms["kd"].item() == pytest.approx(kd, abs=1e-6)
    assert total.item() == pytest.approx(ce + 0.5 * kd, abs=1e-6)


def test_reconstruction_kd_on_regression_is_the_squared_error_by_hand():
    """A regression batch: L1 to the target plus l_kd times the squared error to the teacher's output.
    u0: |0.5 - 1| = 0.5, (0.5 - 1.5)^2 = 1;  u1: |-1 + 2| = 1, (-1 - 0)^2 = 1;  the padding never counts.
    Kills reconstruction.py:132 `distill_loss(..., o.temperature, None)` (None: the classification branch)."""
    batch = replace(made_up_batch(R_AVAIL, R_AVAIL, R_LABELS, R_UTT), targets=torch.tensor([[1.0, -2.0, 0.0]]))
    out = Output(logits=torch.tensor([[[0.5], [-1.0], [3.0]]]), fused=torch.zeros(1, 3, 1),
                 states=torch.zeros(1, 3, 2, 1), extra={"imputed": torch.zeros(1, 3, 2, 1)})
    teacher = Output(logits=torch.tensor([[[1.5], [0.0], [9.0]]]), fused=torch.zeros(1, 3, 1),
                     states=torch.zeros(1, 3, 2, 1))
    method = build_method("reconstruction", l_rec=0.0, l_kd=0.5)
    total, terms = method.loss(StepContext(batch=batch, view=TrainView(batch), output=out, teacher=teacher,
                                           model=_Encoder(), generator=torch_generator("unused")))
    assert terms["ce"].item() == pytest.approx(0.75) and terms["kd"].item() == pytest.approx(1.0)
    assert total.item() == pytest.approx(0.75 + 0.5 * 1.0)


def test_reconstruction_without_rec_weight_computes_no_target():
    """l_rec = 0 switches the term off: no second encoder pass. Kills reconstruction.py:120 `l_rec >= 0`."""
    total, terms, encoder = _reconstruction_loss(l_rec=0.0)
    assert set(terms) == {"ce"} and encoder.seen == []
    assert total.item() == pytest.approx(CE_R, abs=1e-6)


@pytest.mark.parametrize("rec_target,reaches_encoder", [("detached", False), ("attached", True)])
def test_reconstruction_target_detached_or_attached(rec_target, reaches_encoder):
    """Kills reconstruction.py:121 `!= "detached"`, `"XXdetachedXX"`, `"DETACHED"`."""
    total, _, encoder = _reconstruction_loss(rec_target=rec_target)
    total.backward()
    assert (encoder.scale.grad is not None) == reaches_encoder
    if reaches_encoder:
        # d rec / d scale at scale 1: u0 (2 (1-0)(-0) + 2 (3-1)(-1)) / 2 = -2; u1 2 (3-2)(-2) = -4; mean -3
        assert encoder.scale.grad.item() == pytest.approx(-3.0, abs=1e-6)


def test_imputation_loss_of_one_selected_modality():
    """The mean over one selected modality is its error, and the utterance is usable. Kills reconstruction.py:47
    `count.clamp(min=2.0)` and `count > 1`."""
    values, usable = imputation_loss(torch.tensor([[[2.0, 0.0], [9.0, 9.0]]]), torch.zeros(1, 2, 2),
                                     torch.tensor([[True, False]]))
    assert values.tolist() == [2.0] and usable.tolist() == [True]  # mean_H (4, 0) = 2


def test_reconstruction_model_is_built_with_the_corpus_kinds_and_imputer_width():
    """Kills reconstruction.py:113 `kinds` -> None / left out, `imputer_hidden` -> None / left out; :58 the base
    model built without `kinds`."""
    cfg, dims = ModelConfig(hidden=8, heads=1), {"l": 3, "a": 2}
    model = build_method("reconstruction", imputer_hidden=5).build_model(cfg, dims, 4, {"a": "sequence"})
    assert isinstance(model, ReconstructionModel)
    assert model.kinds == {"l": "vector", "a": "sequence"} and model.imputer_hidden == 5
    assert model.imputer[0].out_features == 5 and model.architecture_options() == {"imputer_hidden": 5}
    assert ReconstructionModel(cfg, dims, 4, {"a": "sequence"}).kinds["a"] == "sequence"
    assert build_method("reconstruction").build_model(cfg, dims, 4).imputer_hidden == 16  # default: 2 * hidden


# ================================================================ corrkd
# Two dialogues of two slots, (1,1) padding: N = 3 real utterances, C = 3 classes, H = 2 (U = 2 < C: the class
# count comes from the logits' last axis, not the slot axis).
C_UTT = torch.tensor([[True, True], [True, False]])
C_LABELS = torch.tensor([[2, 0], [2, 0]])
C_S_LOGITS = [[[0.0, 0.0, LN2], [LN2, 0.0, 0.0]], [[0.0, LN2, 0.0], [9.0, 0.0, 0.0]]]
C_T_LOGITS = [[[0.0, 0.0, LN2], [0.0, 0.0, LN2]], [[0.0, 0.0, math.log(6.0)], [0.0, 0.0, 0.0]]]
C_S_FUSED = [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [5.0, -5.0]]]
C_T_FUSED = [[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 7.0]]]


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _identity_critics(critics):
    """g and h = Linear(I) -> ReLU -> Linear(I): F(q, u) = <q, u> on the (non-negative) responses."""
    with torch.no_grad():
        for critic in (critics.target, critics.non_target):
            for mlp in (critic.g, critic.h):
                for layer in (mlp[0], mlp[2]):
                    layer.weight.copy_(torch.eye(2))
                    layer.bias.zero_()
    return critics


def _tcr_ntcr(logits, label):
    p = py_softmax(logits)
    others = [v for c, v in enumerate(p) if c != label]
    return [p[label], 1 - p[label]], [v / sum(others) for v in others]


def _jsd(scores):
    """softplus(-F_ii) + mean_{j != i} softplus(F_ij), per row."""
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    n = len(scores)
    return [sp(-scores[i][i]) + sum(sp(scores[i][j]) for j in range(n) if j != i) / (n - 1) for i in range(n)]


def _corrkd_context(method, auxiliary, label_smoothing=0.0):
    batch = made_up_batch(C_UTT[..., None].expand(2, 2, 1).clone(), C_UTT[..., None].expand(2, 2, 1).clone(), C_LABELS, C_UTT)
    out = Output(logits=torch.tensor(C_S_LOGITS), fused=torch.tensor(C_S_FUSED), states=torch.zeros(2, 2, 1, 2))
    teacher = Output(logits=torch.tensor(C_T_LOGITS), fused=torch.tensor(C_T_FUSED), states=torch.zeros(2, 2, 1, 2))
    return StepContext(batch=batch, view=TrainView(batch), output=out, teacher=teacher, model=None,
                       generator=torch_generator("unused"), label_smoothing=label_smoothing, auxiliary=auxiliary)


def test_corrkd_loss_by_hand_cpd_and_rcd():
    """CE (label smoothing 0.1), CPD over the 2 categories present (0 and 2 of 3), RCD with identity critics;
    l_scd = 0 leaves SCD out. Kills corrkd.py:128 `supervised_loss(out.logits, ctx.batch, )`; :134 `l_scd >= 0`;
    :146 `out.logits.shape[+1]`, `shape[-2]`; :158 `mi_target - mi_non_target`."""
    method = build_method("corrkd", l_scd=0.0, l_cpd=2.0, l_rcd=0.5, critic_hidden=2)
    critics = _identity_critics(Critics(3, 2))
    total, terms = method.loss(_corrkd_context(method, critics, label_smoothing=0.1))
    real = [(0, 0), (0, 1), (1, 0)]
    labels = [2, 0, 2]
    s_logits = [C_S_LOGITS[b][u] for b, u in real]
    t_logits = [C_T_LOGITS[b][u] for b, u in real]
    ce = sum(py_ce(z, y, 0.1) for z, y in zip(s_logits, labels)) / 3
    # CPD: student prototypes c0 = (0, 1), c2 = mean((1, 0), (1, 1)) = (1, .5); teacher c0 = c2 = (1, 0) (cos 1)
    s = [C_S_FUSED[b][u] for b, u in real]
    proto_s = {0: [0.0, 1.0], 2: [1.0, 0.5]}
    cpd = sum(((_cos(h, proto_s[0]) - 1) ** 2 + (_cos(h, proto_s[2]) - 1) ** 2) / 2 for h in s) / 3
    # RCD: F[i, j] = <teacher response i, student response j> for each part; the loss per utterance is summed
    s_parts = [_tcr_ntcr(z, y) for z, y in zip(s_logits, labels)]
    t_parts = [_tcr_ntcr(z, y) for z, y in zip(t_logits, labels)]
    rcd = 0.0
    for part in (0, 1):
        scores = [[sum(a * b for a, b in zip(t_parts[i][part], s_parts[j][part])) for j in range(3)] for i in range(3)]
        rcd += sum(_jsd(scores)) / 3
    assert set(terms) == {"ce", "cpd", "rcd"}
    assert terms["ce"].item() == pytest.approx(ce, abs=1e-6)
    assert terms["cpd"].item() == pytest.approx(cpd, abs=1e-6)
    assert terms["rcd"].item() == pytest.approx(rcd, abs=1e-5)
    assert total.item() == pytest.approx(ce + 2.0 * cpd + 0.5 * rcd, abs=1e-5)


def test_corrkd_scd_sum_reduction_with_two_utterances():
    """eq. 1 as printed: the per-utterance mean times N (N - 1) = 2 * 1 for N = 2 (not 2 * 2).
    Normalised states s = (1, 0), (0, 1); t = (1, 0), (1, 0); eta 1.4:
    u0: D(s0, t0)^2 = 0, hinge (1.4 - D(s0, t1) = 0)^2 = 1.96;  u1: D(s1, t1)^2 = 2, hinge (1.4 - sqrt 2 < 0) = 0.
    Kills corrkd.py:139 `max(n - 1, 2)`."""
    method = build_method("corrkd", l_cpd=0.0, l_rcd=0.0, scd_reduction="sum", l_scd=1.0)
    ctx = _corrkd_context(method, None)
    ctx.batch.utt_mask[1, 0] = False  # only row 0: N = 2
    total, terms = method.loss(ctx)
    assert terms["scd"].item() == pytest.approx((1.96 + 2.0) / 2 * 2 * 1, abs=1e-4)


def test_corrkd_rcd_needs_two_classes_and_its_critics():
    """Kills corrkd.py:120 `num_classes <= 2`, `< 3`; :121 `ValueError(None)`, lower- and upper-cased text; :152
    `ValueError(None)`, lower- and upper-cased text."""
    method = build_method("corrkd")
    binary = ERCModel(ModelConfig(hidden=8, heads=1), {"l": 3}, 2)
    critics = method.auxiliary(binary)  # two classes: the non-target part has one probability
    assert critics.non_target.g[0].in_features == 1
    with pytest.raises(ValueError, match="RCD needs at least two classes"):
        method.auxiliary(ERCModel(ModelConfig(hidden=8, heads=1), {"l": 3}, 1))
    with pytest.raises(ValueError, match=r"corrkd's RCD needs its statistics networks: StepContext\.auxiliary"):
        method.loss(_corrkd_context(method, None))


TINY_FRAMES = dict(TINY_SYNTH, frames={"enabled": True, "modalities": ["l", "a"], "mean_frames": {"l": 3, "a": 4},
                                       "max_frames": 7, "signal_share": {"l": 0.5, "a": 0.5}})


@pytest.fixture(scope="module")
def frame_batch():
    return SplitTensors.from_corpus(generate(SynthConfig(**TINY_FRAMES)), "train").batch([0, 1, 2])


def test_corrkd_frame_drops_come_from_the_method_stream_only(frame_batch):
    """The same seeds give the same dropped frames whatever the global RNG did before (same seed, same numbers).
    Kills corrkd.py:113 `generator=None` and the generator left out (the rate from the global RNG); :114
    `frame_keep_masks(..., None)` (the frames from the global RNG)."""
    method = build_method("corrkd")

    def frames(global_seed):
        torch.manual_seed(global_seed)
        view = method.train_view(frame_batch, torch_generator("mask", 0), torch_generator("method", 0)).batch
        return view.frame_mask

    a, b = frames(1), frames(2)
    assert any(not torch.equal(a[m], frame_batch.frame_mask[m]) for m in a)  # frames were dropped
    assert all(torch.equal(a[m], b[m]) for m in a)


def test_corrkd_without_frame_missing_sees_every_students_view_bit_for_bit(frame_batch):
    """frame_missing 0: no frame is dropped and the view is the shared one, features included, bit for bit (a
    "drop nothing" pass would recompute the frame means and move them by rounding). Kills corrkd.py:111
    `frame_missing <= 0 and not ...` and `frame_missing < 0`."""
    off = build_method("corrkd", frame_missing=0.0)
    view = off.train_view(frame_batch, torch_generator("mask", 0), torch_generator("method", 0)).batch
    shared = build_method("no_kd").train_view(frame_batch, torch_generator("mask", 0), torch_generator("method", 0)).batch
    assert torch.equal(view.mask, shared.mask)
    for m in shared.features:
        assert torch.equal(view.features[m], shared.features[m]), m
    for m in shared.frames:
        assert torch.equal(view.frame_mask[m], shared.frame_mask[m]) and torch.equal(view.frames[m], shared.frames[m])


# ================================================================ contrastive_view
def test_contrastive_view_without_contrast_is_smoothed_ce_only():
    """l_contrast = 0: no teacher, no contrast term; label smoothing reaches the CE.
    Kills contrastive_view.py:96 `supervised_loss(ctx.output.logits, ctx.batch, )`; :98 `l_contrast >= 0`."""
    method = build_method("contrastive_view", modalities=["l"], l_contrast=0.0)
    assert not method.needs_teacher
    ctx = _corrkd_context(method, None, label_smoothing=0.2)
    ctx.teacher = None
    total, terms = method.loss(ctx)
    ce = (py_ce(C_S_LOGITS[0][0], 2, 0.2) + py_ce(C_S_LOGITS[0][1], 0, 0.2) + py_ce(C_S_LOGITS[1][0], 2, 0.2)) / 3
    assert set(terms) == {"ce"} and total.item() == pytest.approx(ce, abs=1e-6)


def test_contrastive_view_not_applicable_text():
    """The report's note for conditions other than the student's own. Kills contrastive_view.py:91 `'XX,XX'.join`;
    :92 the wording of "(the contrastive_view method)"."""
    method = build_method("contrastive_view", modalities=["v", "a"])
    note = method.not_applicable(Condition("complete"), ("l", "a", "v"))
    assert note == "this student sees only {a,v} and is scored under fixed:av only (the contrastive_view method)"


# ================================================================ decoupled
def test_decoupled_names_the_prior_sources_field():
    """Kills decoupled.py:235 the field `"XXprior_sourcesXX"`; :236 the upper-cased text."""
    field, text = build_method("decoupled", prior_sources=["a", "x"]).check_modalities(("l", "a", "v"))
    assert field == "prior_sources"
    assert text.startswith("['x'] are not modalities of the corpus (it has ['l', 'a', 'v'])")
    assert "or [] for a uniform edge prior" in text
    assert build_method("decoupled", prior_sources=["a"]).check_modalities(("l", "a", "v")) is None


# ================================================================ batch losses
def test_pair_distances_by_hand():
    """Kills batch_losses.py:27 `clamp(min=1.000000000001)` (distances below 1 clamped to 1)."""
    s = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    t = torch.tensor([[0.0, 0.5], [0.0, 0.0]])
    d = pair_distances(s, t)
    # D[0,0] = 0.5, D[0,1] = 0 (clamped at sqrt(1e-12)), D[1,0] = |(3, 3.5)|, D[1,1] = 5
    assert torch.allclose(d, torch.tensor([[0.5, 0.0], [math.hypot(3.0, 3.5), 5.0]]), atol=1e-5)


def test_cpd_with_one_category_divides_by_one():
    """One category present: K = 1. s: (1, 0), (0, 1), prototype (.5, .5), cos r = 1/sqrt 2 each; t: (1, 0) twice,
    cos 1. Per utterance (r - 1)^2 / 1. Kills batch_losses.py:71 `present.sum().clamp(min=2)`."""
    r = 1 / math.sqrt(2)
    values = prototype_distill(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]),
                               torch.tensor([1, 1]), 3)
    assert torch.allclose(values, torch.full((2,), (r - 1) ** 2), atol=1e-6)


def test_jsd_mutual_information_loss_with_three_utterances():
    """The marginal term is the mean over the N - 1 = 2 other utterances (N = 2 cannot tell / from *).
    scores: diagonal ln 3 (softplus(-ln 3) = ln 4/3); off-diagonal 0 (softplus 0 = ln 2) except F[0, 1] = ln 3
    (softplus = ln 4). Kills batch_losses.py:103 `* (n - 1)`."""
    scores = torch.zeros(3, 3)
    scores.fill_diagonal_(LN3)
    scores[0, 1] = LN3
    expected = torch.tensor([math.log(4 / 3) + (math.log(4.0) + LN2) / 2, math.log(4 / 3) + LN2,
                             math.log(4 / 3) + LN2])
    assert torch.allclose(jsd_mutual_information_loss(scores), expected, atol=1e-6)


def test_separable_critic_is_linear_relu_linear_on_each_side():
    """g(q) = W2 relu(W1 q + b1) + b2 (and h alike): with W1 = (1, -1)^T, the ReLU keeps |q| in one unit; W2 sums
    the units. F(q, u) = g(q) h(u) = |q| * |u|. Kills batch_losses.py:115/116 the ReLU left out (F would be 0) and
    the last Linear left out."""
    critic = SeparableCritic(1, 1, hidden=2)
    with torch.no_grad():
        for mlp in (critic.g, critic.h):
            mlp[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
            mlp[0].bias.zero_()
            mlp[2].weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
            mlp[2].bias.zero_()
        scores = critic(torch.tensor([[-2.0], [3.0]]), torch.tensor([[1.0], [-0.5]]))
    assert torch.allclose(scores, torch.tensor([[2.0, 1.0], [3.0, 1.5]]))
