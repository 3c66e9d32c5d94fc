"""``reconstruction`` (MMIN/GCNet family): its model (imputer, encodings) and every loss term on made-up
outputs, worked out by hand."""

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from corekd.methods import StepContext, TrainView
from corekd.methods.reconstruction import ReconstructionModel, imputation_loss
from corekd.models.model import ModelConfig, Output
from corekd.seeding import torch_generator
from helpers import build_method, corpus_dims, made_up_batch, py_ce, py_kd

LN3 = math.log(3.0)


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
    out = Output(
        logits=torch.tensor([R_LOGITS], requires_grad=True),
        fused=torch.zeros(1, 3, 1),
        states=torch.zeros(1, 3, 2, 1),
        extra={"imputed": imputed},
    )
    teacher = Output(logits=torch.tensor([R_TEACHER]), fused=torch.zeros(1, 3, 1), states=torch.zeros(1, 3, 2, 1))
    method, encoder = build_method("reconstruction", **options), _Encoder()
    ctx = StepContext(
        batch=complete,
        view=view,
        output=out,
        teacher=teacher if method.needs_teacher else None,
        model=encoder,
        generator=torch_generator("unused"),
        label_smoothing=label_smoothing,
    )
    total, terms = method.loss(ctx)
    return total, terms, encoder


CE_R = (math.log(4 / 3) + math.log(8.0)) / 2  # u0 and u1; label 1 with p = 3/4 and 1/8


def test_reconstruction_loss_by_hand_over_all_modalities():
    """rec_over all: every modality the data has, of the real utterances: u0 (1 + 4) / 2, u1 1 / 1 (a is not in
    the data, so not scored). Kills reconstruction.Reconstruction.loss `batch.avail | real`; Reconstruction.loss
    `(rec_over == "all") and False`, `!= "all"`, `"XXallXX"`, `"ALL"`; Reconstruction.loss `total - ...`, `l_rec / rec`;
    imputation_loss `clamp(min=2.0)`, `count > 1` (u1 has one selected modality)."""
    total, terms, encoder = _reconstruction_loss(l_rec=0.5)
    assert set(terms) == {"ce", "rec"}
    assert terms["ce"].item() == pytest.approx(CE_R, abs=1e-6)
    assert terms["rec"].item() == pytest.approx((2.5 + 1.0) / 2, abs=1e-6)
    assert total.item() == pytest.approx(CE_R + 0.5 * 1.75, abs=1e-6)
    (target_batch,) = encoder.seen  # the target is the encoding of the complete view
    assert torch.equal(target_batch.mask, R_AVAIL)


def test_reconstruction_loss_by_hand_over_the_hidden_modalities():
    """rec_over missing: only what the data has and the view hides: u0's a (error 4); u1 hides nothing, so it is
    not usable and leaves the mean. Kills reconstruction.Reconstruction.loss `(rec_over == "all") or True`, `has |
    ~mask`, `has & mask`; Reconstruction.loss `real | usable`."""
    total, terms, _ = _reconstruction_loss(l_rec=2.0, rec_over="missing")
    assert terms["rec"].item() == pytest.approx(4.0, abs=1e-6)
    assert total.item() == pytest.approx(CE_R + 2.0 * 4.0, abs=1e-6)


def test_reconstruction_with_label_smoothing_and_kd_by_hand():
    """Label smoothing reaches the CE; l_kd = 0.5 (below 1) adds KD at temperature 2 over the real utterances.
    Kills reconstruction.Reconstruction.loss `supervised_loss(out.logits, batch, )`; Reconstruction.loss `l_kd > 1`;
    Reconstruction.loss every KD-term mutant (`None`, the key, the arguments, `targets is None`); Reconstruction.loss
    `total = None`, `-`, `/`, the key."""
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
    Kills reconstruction.Reconstruction.loss `distill_loss(..., o.temperature, None)` (None: the classification
    branch)."""
    batch = replace(made_up_batch(R_AVAIL, R_AVAIL, R_LABELS, R_UTT), targets=torch.tensor([[1.0, -2.0, 0.0]]))
    out = Output(
        logits=torch.tensor([[[0.5], [-1.0], [3.0]]]),
        fused=torch.zeros(1, 3, 1),
        states=torch.zeros(1, 3, 2, 1),
        extra={"imputed": torch.zeros(1, 3, 2, 1)},
    )
    teacher = Output(
        logits=torch.tensor([[[1.5], [0.0], [9.0]]]), fused=torch.zeros(1, 3, 1), states=torch.zeros(1, 3, 2, 1)
    )
    method = build_method("reconstruction", l_rec=0.0, l_kd=0.5)
    total, terms = method.loss(
        StepContext(
            batch=batch,
            view=TrainView(batch),
            output=out,
            teacher=teacher,
            model=_Encoder(),
            generator=torch_generator("unused"),
        )
    )
    assert terms["ce"].item() == pytest.approx(0.75) and terms["kd"].item() == pytest.approx(1.0)
    assert total.item() == pytest.approx(0.75 + 0.5 * 1.0)


def test_reconstruction_without_rec_weight_computes_no_target():
    """l_rec = 0 switches the term off: no second encoder pass. Kills reconstruction.Reconstruction.loss `l_rec >=
    0`."""
    total, terms, encoder = _reconstruction_loss(l_rec=0.0)
    assert set(terms) == {"ce"} and encoder.seen == []
    assert total.item() == pytest.approx(CE_R, abs=1e-6)


@pytest.mark.parametrize("rec_target,reaches_encoder", [("detached", False), ("attached", True)])
def test_reconstruction_target_detached_or_attached(rec_target, reaches_encoder):
    """Kills reconstruction.Reconstruction.loss `!= "detached"`, `"XXdetachedXX"`, `"DETACHED"`."""
    total, _, encoder = _reconstruction_loss(rec_target=rec_target)
    total.backward()
    assert (encoder.scale.grad is not None) == reaches_encoder
    if reaches_encoder:
        # d rec / d scale at scale 1: u0 (2 (1-0)(-0) + 2 (3-1)(-1)) / 2 = -2; u1 2 (3-2)(-2) = -4; mean -3
        assert encoder.scale.grad.item() == pytest.approx(-3.0, abs=1e-6)


def test_imputation_loss_of_one_selected_modality():
    """The mean over one selected modality is its error, and the utterance is usable. Kills
    reconstruction.imputation_loss `count.clamp(min=2.0)` and `count > 1`."""
    values, usable = imputation_loss(
        torch.tensor([[[2.0, 0.0], [9.0, 9.0]]]), torch.zeros(1, 2, 2), torch.tensor([[True, False]])
    )
    assert values.tolist() == [2.0] and usable.tolist() == [True]  # mean_H (4, 0) = 2


def test_reconstruction_model_is_built_with_the_corpus_kinds_and_imputer_width():
    """Kills reconstruction.Reconstruction.build_model `kinds` -> None / left out, `imputer_hidden` -> None / left out;
    ReconstructionModel.__init__ the base model built without `kinds`."""
    cfg, dims = ModelConfig(hidden=8, heads=1), {"l": 3, "a": 2}
    model = build_method("reconstruction", imputer_hidden=5).build_model(cfg, dims, 4, {"a": "sequence"})
    assert isinstance(model, ReconstructionModel)
    assert model.kinds == {"l": "vector", "a": "sequence"} and model.imputer_hidden == 5
    assert model.imputer[0].out_features == 5 and model.architecture_options() == {"imputer_hidden": 5}
    assert ReconstructionModel(cfg, dims, 4, {"a": "sequence"}).kinds["a"] == "sequence"
    assert build_method("reconstruction").build_model(cfg, dims, 4).imputer_hidden == 16  # default: 2 * hidden


def test_reconstruction_imputer_is_linear_gelu_dropout_linear():
    """Hand-set imputer (hidden 8, M = 2, one hidden unit): the first layer gives -1, GELU(-1) = -Phi(-1) = -0.158655,
    the last layer copies it to the M * H = 16 outputs. In training mode dropout 0.5 zeroes the unit or doubles it.
    Kills reconstruction.ReconstructionModel.__init__ the GELU left out (the outputs would be -1) and the Dropout left
    out (train mode would give -0.158655 everywhere). The default width is 2 * hidden: kills its `3 * h`."""
    cfg = ModelConfig(hidden=8, heads=1, dropout=0.5)
    assert ReconstructionModel(cfg, {"l": 3, "a": 2}, 3).imputer_hidden == 16
    model = ReconstructionModel(cfg, {"l": 3, "a": 2}, 3, imputer_hidden=1)
    first, last = model.imputer[0], model.imputer[-1]
    with torch.no_grad():
        first.weight.zero_(), first.bias.fill_(-1.0), last.weight.fill_(1.0), last.bias.zero_()
    encoded, mask = torch.randn(1, 20, 2, 8), torch.ones(1, 20, 2, dtype=torch.bool)
    gelu_minus_one = -0.5 * (1 + math.erf(-1 / math.sqrt(2.0)))  # -1 * Phi(-1)
    model.eval()
    assert model.impute(encoded, mask).flatten().tolist() == pytest.approx([gelu_minus_one] * 320, abs=1e-6)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        values = set(round(v, 5) for v in model.impute(encoded, mask).flatten().tolist())
    assert values == {0.0, round(2 * gelu_minus_one, 5)}


CFG = ModelConfig(hidden=16, heads=2, dropout=0.0)


def test_imputation_loss_by_hand():
    imputed = torch.tensor(
        [[[1.0, 1.0], [0.0, 0.0], [3.0, 3.0]], [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]]
    )  # [2, M=3, H=2]
    target = torch.tensor([[[0.0, 2.0], [4.0, 4.0], [3.0, 5.0]], [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]])
    selected = torch.tensor([[True, False, True], [False, False, False]])
    values, usable = imputation_loss(imputed, target, selected)
    # utterance 1: modality 0 -> (1 + 1) / 2 = 1, modality 2 -> (0 + 4) / 2 = 2; mean 1.5. utterance 2: nothing.
    assert values.tolist() == pytest.approx([1.5, 0.0]) and usable.tolist() == [True, False]


def test_reconstruction_model_keeps_observed_encodings_and_never_reads_missing_features(tiny_corpus, tiny_batch):
    model = ReconstructionModel(CFG, corpus_dims(tiny_corpus), len(tiny_corpus.labels)).eval()
    mask = tiny_batch.avail.clone()
    mask[..., 1:] = False  # language only
    view = tiny_batch.view(mask)
    noisy = tiny_batch.view(mask)
    noisy.features = {k: v + (0 if k == "l" else 5.0) for k, v in view.features.items()}  # junk where missing
    noisy.features["l"] = view.features["l"]
    a, b = model(view), model(noisy)
    assert torch.allclose(a.logits, b.logits)  # missing modalities' features never reach the prediction
    x, _ = model.encode(view)
    assert torch.allclose(model.impute(x, view.mask & view.utt_mask[..., None]), a.extra["imputed"])
    # the imputation depends on what is observed: another language input changes it
    other = tiny_batch.view(mask)
    other.features = {**view.features, "l": view.features["l"] + 1.0}
    assert not torch.allclose(model(other).extra["imputed"], a.extra["imputed"])
