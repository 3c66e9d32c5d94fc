"""``mmin`` (MMIN's imagination): its cascades' wiring, the completed view, every loss term worked out by hand,
its checkpoint and a tiny ``corekd run`` with a teacher."""

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from corekd.config import validate_config
from corekd.experiments import run
from corekd.methods import StepContext, TrainView
from corekd.methods.mmin import AutoencoderBlock, MMINModel, ResidualCascade, missing_side
from corekd.models.model import ModelConfig, Output
from corekd.seeding import torch_generator
from corekd.training import init_model, load_checkpoint, save_checkpoint
from helpers import build_method, corpus_dims, made_up_batch, py_ce, py_kd, quick_config

LN3 = math.log(3.0)

# One dialogue of three slots (the third is padding), M = 2 modalities (l, a), H = 1, C = 2.
#   u0: the data has l and a, the view hides a;   u1: the data has only l, the view shows it;   u2: padding.
M_UTT = torch.tensor([[True, True, False]])
M_AVAIL = torch.tensor([[[True, True], [True, False], [False, False]]])
M_VIEW = torch.tensor([[[True, False], [True, False], [False, False]]])
M_LABELS = torch.tensor([[1, 1, 0]])
M_LOGITS = [[0.0, LN3], [math.log(7.0), 0.0], [7.0, -7.0]]  # p(label 1) = 3/4, 1/8; the padding never counts
M_TEACHER = [[LN3, 0.0], [0.0, 0.0], [0.0, 5.0]]
M_TARGET = [[[0.0], [1.0]], [[2.0], [0.0]], [[0.0], [0.0]]]  # complete-view encodings t [1, 3, 2, 1]
M_SEEN = [[[2.0], [0.0]], [[1.0], [0.0]], [[0.0], [0.0]]]  # the cascade's input z: hidden ones zeroed
M_IMAGINED = [[[1.0], [3.0]], [[3.0], [5.0]], [[9.0], [9.0]]]
M_BACKWARD = [[[2.0], [7.0]], [[4.0], [9.0]], [[5.0], [5.0]]]
CE_M = (math.log(4 / 3) + math.log(8.0)) / 2  # u0 and u1; label 1 with p = 3/4 and 1/8

# Forward: reverse target r = t where the view hides the modality, 0 where it shows it, over what the data has.
#   u0: l shown -> (1 - 0)^2 = 1, a hidden -> (3 - 1)^2 = 4: mean 2.5;  u1: only l, shown -> (3 - 0)^2 = 9.
FORWARD = (2.5 + 9.0) / 2
# Cycle: towards z over what the data has.  u0: l (2 - 2)^2 = 0, a (7 - 0)^2 = 49: 24.5;  u1: l (4 - 1)^2 = 9.
CYCLE = (24.5 + 9.0) / 2


class _Encoder(nn.Module):
    """ctx.model for the forward target: ``encode`` gives ``scale * M_TARGET``, recording the batch it saw."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.seen = []

    def encode(self, batch):
        self.seen.append(batch)
        return self.scale * torch.tensor([M_TARGET]), batch.mask


def _mmin_loss(label_smoothing=0.0, backward=M_BACKWARD, **options):
    complete = made_up_batch(M_AVAIL, M_AVAIL, M_LABELS, M_UTT)
    view = TrainView(made_up_batch(M_AVAIL, M_VIEW, M_LABELS, M_UTT))
    seen = torch.tensor([M_SEEN], requires_grad=True)
    out = Output(
        logits=torch.tensor([M_LOGITS], requires_grad=True),
        fused=torch.zeros(1, 3, 1),
        states=torch.zeros(1, 3, 2, 1),
        extra={"seen": seen, "imagined": torch.tensor([M_IMAGINED]), "backward": torch.tensor([backward])},
    )
    teacher = Output(logits=torch.tensor([M_TEACHER]), fused=torch.zeros(1, 3, 1), states=torch.zeros(1, 3, 2, 1))
    method, encoder = build_method("mmin", **options), _Encoder()
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
    return total, terms, encoder, seen


# ---------------------------------------------------------------- the loss terms by hand
def test_missing_side_by_hand():
    """r = t where the modality is hidden, 0 where it is shown: a 2-modality, 2-dim case."""
    target = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # [M = 2, H = 2]
    assert missing_side(target, torch.tensor([True, False])).tolist() == [[0.0, 0.0], [3.0, 4.0]]
    assert missing_side(target, torch.tensor([False, False])).tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_mmin_loss_by_hand():
    total, terms, encoder, _ = _mmin_loss(l_forward=0.5, l_cycle=0.25)
    assert set(terms) == {"ce", "forward", "cycle"}
    assert terms["ce"].item() == pytest.approx(CE_M, abs=1e-6)
    assert terms["forward"].item() == pytest.approx(FORWARD, abs=1e-6)
    assert terms["cycle"].item() == pytest.approx(CYCLE, abs=1e-6)
    assert total.item() == pytest.approx(CE_M + 0.5 * FORWARD + 0.25 * CYCLE, abs=1e-6)
    (target_batch,) = encoder.seen  # the forward target is the encoding of the complete view
    assert torch.equal(target_batch.mask, M_AVAIL)


def test_mmin_defaults_are_the_release_weights():
    total, terms, _, _ = _mmin_loss()
    assert total.item() == pytest.approx(CE_M + 4.0 * FORWARD + 2.0 * CYCLE, abs=1e-5)


def test_cycle_is_zero_when_the_backward_imagination_gives_the_input_back():
    """g = z: no cycle loss, whatever the forward imagination is."""
    _, terms, _, seen = _mmin_loss(backward=M_SEEN)
    assert terms["cycle"].item() == 0.0


def test_cycle_target_is_detached_and_the_forward_target_follows_the_option():
    total, _, encoder, seen = _mmin_loss()
    total.backward()
    assert seen.grad is None  # the available side z is a fixed target (MMIN's release detaches it)
    assert encoder.scale.grad is None
    total, _, encoder, _ = _mmin_loss(target="attached", l_cycle=0.0)
    total.backward()
    # d forward / d scale at scale 1, through r = scale * t on the hidden entries: u0's a, 2 (3 - 1)(-1) / 2 = -2;
    # u1 has no hidden entry: mean over u0, u1 = -1; times l_forward 4
    assert encoder.scale.grad.item() == pytest.approx(-4.0, abs=1e-6)


def test_zero_weights_switch_terms_off_and_compute_no_target():
    total, terms, encoder, _ = _mmin_loss(l_forward=0.0, l_cycle=0.0)
    assert set(terms) == {"ce"} and encoder.seen == []
    assert total.item() == pytest.approx(CE_M, abs=1e-6)


def test_mmin_with_label_smoothing_and_kd_by_hand():
    total, terms, _, _ = _mmin_loss(label_smoothing=0.1, l_forward=0.0, l_cycle=0.0, l_kd=0.5, temperature=2.0)
    ce = (py_ce(M_LOGITS[0], 1, 0.1) + py_ce(M_LOGITS[1], 1, 0.1)) / 2
    kd = (py_kd(M_LOGITS[0], M_TEACHER[0], 2.0) + py_kd(M_LOGITS[1], M_TEACHER[1], 2.0)) / 2
    assert set(terms) == {"ce", "kd"}
    assert terms["kd"].item() == pytest.approx(kd, abs=1e-6)
    assert total.item() == pytest.approx(ce + 0.5 * kd, abs=1e-6)
    assert build_method("mmin", l_kd=0.5).needs_teacher and not build_method("mmin").needs_teacher


def test_options_refuse_bad_widths():
    with pytest.raises(ValidationError, match="positive widths"):
        build_method("mmin", block_hidden=[8, 0])
    with pytest.raises(ValidationError):
        build_method("mmin", blocks=0)


# ---------------------------------------------------------------- the cascades
def test_autoencoder_block_layers():
    block = AutoencoderBlock(4, [3, 2])
    kinds = [type(x).__name__ for x in block.encoder] + ["|"] + [type(x).__name__ for x in block.decoder]
    assert kinds == ["Linear", "LeakyReLU", "Linear", "|", "Linear", "ReLU", "Linear"]
    shapes = [(x.in_features, x.out_features) for x in [*block.encoder, *block.decoder] if isinstance(x, nn.Linear)]
    assert shapes == [(4, 3), (3, 2), (2, 3), (3, 4)]
    out, latent = block(torch.randn(5, 4))
    assert out.shape == (5, 4) and latent.shape == (5, 2)


def _constant_decoders(cascade, values):
    """Every block's decoder gives the constant ``values[k]`` (last layer: weight 0, bias the value)."""
    with torch.no_grad():
        for block, v in zip(cascade.blocks, values):
            block.decoder[-1].weight.zero_()
            block.decoder[-1].bias.fill_(v)


def test_cascade_blocks_with_zeroed_weights_pass_the_input_through():
    cascade = ResidualCascade(4, [3, 2], blocks=3, transition=False)
    _constant_decoders(cascade, [0.0, 0.0, 0.0])
    z = torch.randn(2, 5, 4)  # [B, U, M*H]
    out, latents = cascade(z)
    assert torch.equal(out, z) and latents.shape == (2, 5, 3 * 2)


def test_cascade_residual_wiring_by_hand():
    """Block k reads a_k = a_{k-1} + d_{k-1}; the output is a_K + d_K: with constant decoders 1, 10, 100 the
    blocks read z, z + 1, z + 11 and the output is z + 111."""
    cascade = ResidualCascade(2, [3], blocks=3, transition=False)
    _constant_decoders(cascade, [1.0, 10.0, 100.0])
    reads = []
    for block in cascade.blocks:
        block.register_forward_pre_hook(lambda module, args: reads.append(args[0].clone()))
    z = torch.tensor([[0.5, -2.0]])
    out, _ = cascade(z)
    assert [r.tolist() for r in reads] == [[[0.5, -2.0]], [[1.5, -1.0]], [[11.5, 9.0]]]
    assert out.tolist() == [[111.5, 109.0]]


def test_cascade_transition_reads_the_sum():
    cascade = ResidualCascade(2, [3], blocks=1, transition=True)
    _constant_decoders(cascade, [1.0])
    z = torch.tensor([[0.5, -2.0]])
    out, _ = cascade(z)
    assert torch.allclose(out, cascade.transition(z + 1.0))
    assert [type(x).__name__ for x in cascade.transition] == ["Linear", "ReLU", "Linear"]


CFG = ModelConfig(hidden=8, heads=2, dropout=0.0, modality_state="encoding")  # states = the completed view


def test_model_imputes_only_the_missing_and_never_reads_their_features(tiny_corpus, tiny_batch):
    model = MMINModel(CFG, corpus_dims(tiny_corpus), len(tiny_corpus.labels), blocks=2, block_hidden=[6, 4]).eval()
    mask = tiny_batch.avail.clone()
    mask[..., 1:] = False  # language only
    view = tiny_batch.view(mask)
    out = model(view)
    x, observed = model.encode(view)
    seen, imagined, backward = model.imagine(x, observed)
    assert torch.equal(out.extra["imagined"], imagined) and torch.equal(out.extra["backward"], backward)
    assert torch.equal(seen, x * observed[..., None]) and torch.equal(out.extra["seen"], seen)
    real = view.utt_mask
    shown, hidden = observed[real], ~observed[real]
    assert torch.equal(out.states[real][shown], x[real][shown])  # the observed encodings untouched
    assert torch.equal(out.states[real][hidden], imagined[real][hidden])  # the imagination where missing
    noisy = tiny_batch.view(mask)
    noisy.features = {k: v + (0 if k == "l" else 5.0) for k, v in view.features.items()}
    assert torch.allclose(model(noisy).logits, out.logits)  # missing modalities' features never reach it
    # the backward cascade reads the forward imagination
    assert torch.allclose(backward.flatten(2), model.backward_cascade(imagined.flatten(2))[0])


def test_model_with_identity_cascades_gives_zero_cycle(tiny_corpus, tiny_batch):
    """Zeroed decoders, no transition: f = z and g = f, so the backward imagination is z and the cycle term is 0."""
    model = MMINModel(
        CFG, corpus_dims(tiny_corpus), len(tiny_corpus.labels), blocks=2, block_hidden=[6], transition=False
    )
    _constant_decoders(model.forward_cascade, [0.0, 0.0])
    _constant_decoders(model.backward_cascade, [0.0, 0.0])
    method = build_method("mmin", blocks=2, block_hidden=[6], transition=False)
    view = method.train_view(tiny_batch, torch_generator("mask", 0), torch_generator("method", 0))
    out = model(view.batch)
    ctx = StepContext(tiny_batch, view, out, None, model, torch_generator("method", 0))
    _, terms = method.loss(ctx)
    assert terms["cycle"].item() == 0.0 and terms["forward"].item() > 0


def test_shared_cascade_and_architecture_options(tiny_corpus):
    dims, c = corpus_dims(tiny_corpus), len(tiny_corpus.labels)
    model = build_method("mmin", blocks=2, block_hidden=[5, 3], share_backward=True).build_model(CFG, dims, c)
    assert isinstance(model, MMINModel) and model.backward_cascade is model.forward_cascade
    assert model.architecture_options() == {
        "blocks": 2,
        "block_hidden": [5, 3],
        "transition": True,
        "share_backward": True,
    }
    assert len(model.forward_cascade.blocks) == 2
    assert model.forward_cascade.blocks[0].encoder[0].in_features == len(dims) * CFG.hidden
    default = build_method("mmin").build_model(CFG, dims, c, {"l": "vector"})
    assert default.blocks == 5 and default.block_hidden == [256, 128, 64] and default.kinds["l"] == "vector"
    assert default.backward_cascade is not default.forward_cascade


def test_base_weights_are_the_plain_models_of_the_same_seed(tiny_corpus):
    dims, c = corpus_dims(tiny_corpus), len(tiny_corpus.labels)
    plain = init_model(CFG, dims, c, 3, "student").state_dict()
    got = init_model(CFG, dims, c, 3, "student", build=build_method("mmin", blocks=2).build_model).state_dict()
    assert set(plain) < set(got) and all(torch.equal(plain[k], got[k]) for k in plain)


def test_checkpoint_rebuilds_the_architecture(tiny_corpus, tiny_batch, tmp_path):
    method = build_method("mmin", blocks=2, block_hidden=[7, 3], transition=False)
    model = init_model(CFG, corpus_dims(tiny_corpus), len(tiny_corpus.labels), 0, "student", build=method.build_model)
    model.eval()
    save_checkpoint(model, tmp_path / "ck", {"method": "mmin"})
    loaded, info = load_checkpoint(tmp_path / "ck")
    assert type(loaded) is MMINModel and info["architecture"]["name"] == "mmin"
    assert loaded.architecture_options() == model.architecture_options()
    assert torch.allclose(loaded(tiny_batch).logits, model(tiny_batch).logits)


# ---------------------------------------------------------------- end to end
def test_run_with_a_teacher_trains_saves_reloads_and_predicts_the_same(tmp_path):
    raw = quick_config(
        methods=[{"name": "teacher"}, {"name": "mmin", "options": {"blocks": 2, "block_hidden": [16, 8], "l_kd": 0.5}}]
    )
    out = tmp_path / "out"
    first = run(validate_config(raw), out)
    model, info = load_checkpoint(out / "checkpoints" / "mmin" / "seed0")
    assert type(model) is MMINModel and info["architecture"]["options"]["block_hidden"] == [16, 8]
    mine = [r for r in first.records if r["variant"] == "mmin"]
    assert {r["condition"] for r in mine} >= {"complete"}
    # --resume of a finished run reloads every model from its checkpoint and scores it again: the same records
    second = run(validate_config(raw), out, resume=True)
    key = lambda r: (r["variant"], r["split"], r["condition"])  # noqa: E731
    same = {key(r): r for r in first.records}
    assert sorted(map(key, second.records)) == sorted(map(key, first.records))
    assert all(r == same[key(r)] for r in second.records)
