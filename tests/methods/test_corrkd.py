"""The issue-14 baselines ``corrkd`` and ``contrastive_view``: their options, views, tasks, and a tiny run of both."""

import math

import pytest
import torch

from corekd.config import TrainingConfig, validate_config
from corekd.data.batching import SplitTensors
from corekd.data.synth import SynthConfig, generate
from corekd.errors import CorekdError
from corekd.experiments import run
from corekd.methods import method_class
from corekd.methods.batch_losses import contrastive_distill
from corekd.methods.corrkd import Critics
from corekd.models.model import ERCModel, ModelConfig
from corekd.seeding import torch_generator
from corekd.training import TeacherReference, Trainer, init_model
from helpers import (
    C_S_FUSED,
    C_S_LOGITS,
    C_T_LOGITS,
    TINY_FRAMES,
    build_method,
    loss_before_and_after_one_step,
    made_up_context,
    method_loss,
    py_ce,
    py_softmax,
    quick_config,
)


# ------------------------------------------------------------------ corrkd
def test_corrkd_defaults_are_the_papers_weights_and_zero_weights_switch_terms_off(tiny_corpus, tiny_splits, tiny_batch):
    o = method_class("corrkd").Options()
    assert (o.l_scd, o.l_cpd, o.l_rcd, o.eta) == (1.0, 1.0, 1.0, 1.4)
    (total, terms), _, _ = method_loss(build_method("corrkd", l_cpd=0, l_rcd=0), tiny_batch, tiny_splits, tiny_corpus)
    assert set(terms) == {"ce", "scd"}
    assert torch.isclose(total, terms["ce"] + terms["scd"])
    off = build_method("corrkd", l_scd=0, l_cpd=0, l_rcd=0)
    assert not off.needs_teacher and off.auxiliary(ERCModel(ModelConfig(hidden=16, heads=2), {"l": 3}, 4)) is None


def test_corrkd_total_weighs_each_term(tiny_corpus, tiny_splits, tiny_batch):
    (total, terms), _, _ = method_loss(
        build_method("corrkd", l_scd=0.5, l_cpd=2.0, l_rcd=3.0), tiny_batch, tiny_splits, tiny_corpus
    )
    expected = terms["ce"] + 0.5 * terms["scd"] + 2.0 * terms["cpd"] + 3.0 * terms["rcd"]
    assert torch.isclose(total, expected)


def test_corrkd_scd_uses_the_fused_states_of_real_utterances_and_its_reduction(tiny_corpus, tiny_splits, tiny_batch):
    valid = tiny_batch.utt_mask
    assert not bool(valid.all())  # the batch has padding, which must not enter the term
    for space in ("raw", "normalized"):
        (_, terms), out, t_out = method_loss(
            build_method("corrkd", l_cpd=0, l_rcd=0, scd_space=space, eta=3.0), tiny_batch, tiny_splits, tiny_corpus
        )
        s, t = out.fused[valid], t_out.fused[valid]
        if space == "normalized":
            s, t = torch.nn.functional.normalize(s, dim=-1), torch.nn.functional.normalize(t, dim=-1)
        assert torch.isclose(terms["scd"], contrastive_distill(s, t, 3.0).mean())
    n = int(valid.sum())
    (_, mean_terms), _, _ = method_loss(build_method("corrkd", l_cpd=0, l_rcd=0), tiny_batch, tiny_splits, tiny_corpus)
    (_, sum_terms), _, _ = method_loss(
        build_method("corrkd", l_cpd=0, l_rcd=0, scd_reduction="sum"), tiny_batch, tiny_splits, tiny_corpus
    )
    assert torch.isclose(sum_terms["scd"], mean_terms["scd"] * n * (n - 1), rtol=1e-5)  # eq. 1 as printed


def test_corrkd_trains_its_statistics_networks_without_touching_the_students_initial_weights(tiny_splits):
    _, _, trainer = loss_before_and_after_one_step("corrkd", tiny_splits)
    critics = trainer.auxiliary
    assert critics is not None and len(trainer.optimizer.param_groups) == 2
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in critics.parameters())
    # the critics are not part of the model: its state dict (what is saved and evaluated) is the plain model's
    assert not any(k.startswith(("target", "non_target")) for k in trainer.model.state_dict())
    # built from its own seeded stream: the same critics for the same seed, the global RNG untouched
    dims = {m: int(x.shape[-1]) for m, x in tiny_splits["train"].features.items()}
    cfg = ModelConfig(hidden=16, heads=2)
    ref = TeacherReference(
        init_model(cfg, dims, 4, 0, "teacher"),
        tiny_splits["train"],
        cache=True,
        batch_size=8,
        device=torch.device("cpu"),
    )
    state = torch.get_rng_state()
    first, second = (
        Trainer(
            build_method("corrkd"),
            init_model(cfg, dims, 4, 0, "student"),
            TrainingConfig(),
            seed=0,
            device=torch.device("cpu"),
            teacher=ref,
        )
        for _ in range(2)
    )
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(first.auxiliary.parameters(), second.auxiliary.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(first.model.state_dict().values(), init_model(cfg, dims, 4, 0, "student").state_dict().values()):
        assert torch.equal(a, b)  # the student's initial weights are every student's of the seed


def test_corrkd_on_regression_refuses_rcd_and_runs_scd_and_cpd_on_the_sentiment_sign(
    tiny_corpus, tiny_splits, tiny_batch
):
    field, text = build_method("corrkd").check_task("regression")
    assert field == "l_rcd" and "no regression form" in text
    method = build_method("corrkd", l_rcd=0)
    assert method.check_task("regression") is None and build_method("corrkd").check_task("classification") is None
    targets = torch.linspace(-3, 3, tiny_batch.utt_mask.numel()).view_as(tiny_batch.utt_mask)
    from dataclasses import replace

    batch = replace(tiny_batch, targets=targets)
    (total, terms), _, _ = method_loss(method, batch, tiny_splits, tiny_corpus, targets=targets)
    assert set(terms) == {"ce", "scd", "cpd"} and torch.isfinite(total)


def test_corrkd_regression_run_is_refused_with_the_option_named(tmp_path):
    cfg = quick_config(methods=[{"name": "corrkd"}])
    cfg["data"]["synth"]["task"] = "regression"
    with pytest.raises(CorekdError) as err:
        run(validate_config(cfg), tmp_path / "out")
    assert err.value.field == "methods[0].options.l_rcd"


# CorrKD by hand on helpers.made_up_context: two dialogues of two slots, (1,1) padding: N = 3 real utterances, C = 3 classes, H = 2 (U = 2 < C: the class
# count comes from the logits' last axis, not the slot axis).
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


def test_corrkd_loss_by_hand_cpd_and_rcd():
    """CE (label smoothing 0.1), CPD over the 2 categories present (0 and 2 of 3), RCD with identity critics;
    l_scd = 0 leaves SCD out. Kills corrkd.CorrKD.loss `supervised_loss(out.logits, ctx.batch, )`; CorrKD.loss `l_scd >=
    0`; CorrKD.loss `out.logits.shape[+1]`, `shape[-2]`; CorrKD.loss `mi_target - mi_non_target`."""
    method = build_method("corrkd", l_scd=0.0, l_cpd=2.0, l_rcd=0.5, critic_hidden=2)
    critics = _identity_critics(Critics(3, 2))
    total, terms = method.loss(made_up_context(method, critics, label_smoothing=0.1))
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
    Kills corrkd.CorrKD.loss `n * (n - 2)`."""
    method = build_method("corrkd", l_cpd=0.0, l_rcd=0.0, scd_reduction="sum", l_scd=1.0)
    ctx = made_up_context(method, None)
    ctx.batch.utt_mask[1, 0] = False  # only row 0: N = 2
    total, terms = method.loss(ctx)
    assert terms["scd"].item() == pytest.approx((1.96 + 2.0) / 2 * 2 * 1, abs=1e-4)


def test_corrkd_rcd_needs_two_classes_and_its_critics():
    """Kills corrkd.CorrKD.auxiliary `num_classes <= 2`, `< 3`; CorrKD.auxiliary `ValueError(None)`, lower- and
    upper-cased text; CorrKD.loss `ValueError(None)`, lower- and upper-cased text."""
    method = build_method("corrkd")
    binary = ERCModel(ModelConfig(hidden=8, heads=1), {"l": 3}, 2)
    critics = method.auxiliary(binary)  # two classes: the non-target part has one probability
    assert critics.non_target.g[0].in_features == 1
    with pytest.raises(ValueError, match="RCD needs at least two classes"):
        method.auxiliary(ERCModel(ModelConfig(hidden=8, heads=1), {"l": 3}, 1))
    with pytest.raises(ValueError, match=r"corrkd's RCD needs its statistics networks: StepContext\.auxiliary"):
        method.loss(made_up_context(method, None))


@pytest.fixture(scope="module")
def frame_batch():
    return SplitTensors.from_corpus(generate(SynthConfig(**TINY_FRAMES)), "train").batch([0, 1, 2])


def test_corrkd_frame_drops_come_from_the_method_stream_only(frame_batch):
    """The same seeds give the same dropped frames whatever the global RNG did before (same seed, same numbers).
    Kills corrkd.CorrKD.train_view `generator=None` and the generator left out (the rate from the global RNG);
    CorrKD.train_view `frame_keep_masks(..., None)` (the frames from the global RNG)."""
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
    "drop nothing" pass would recompute the frame means and move them by rounding). Kills corrkd.CorrKD.train_view
    `frame_missing <= 0 and not ...` and `frame_missing < 0`."""
    off = build_method("corrkd", frame_missing=0.0)
    view = off.train_view(frame_batch, torch_generator("mask", 0), torch_generator("method", 0)).batch
    shared = (
        build_method("no_kd").train_view(frame_batch, torch_generator("mask", 0), torch_generator("method", 0)).batch
    )
    assert torch.equal(view.mask, shared.mask)
    for m in shared.features:
        assert torch.equal(view.features[m], shared.features[m]), m
    for m in shared.frames:
        assert torch.equal(view.frame_mask[m], shared.frame_mask[m]) and torch.equal(view.frames[m], shared.frames[m])
