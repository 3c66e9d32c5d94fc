"""``gcnet`` (GCNet's graph completion): the dialogue graphs, the graph convolutions and the loss worked out by
hand, the completion's dependence on the dialogue, its checkpoint and a tiny ``corekd run``."""

import math

import pytest
import torch

from corekd.config import validate_config
from corekd.experiments import run
from corekd.methods import StepContext, TrainView
from corekd.methods.gcnet import (
    GCNetModel,
    GraphConv,
    RelationalGraphConv,
    dialogue_relations,
    missing_reconstruction_loss,
)
from corekd.models.model import ModelConfig, Output
from corekd.seeding import torch_generator
from corekd.training import init_model, load_checkpoint, save_checkpoint
from helpers import build_method, corpus_dims, made_up_batch, quick_config

LN3 = math.log(3.0)


# ---------------------------------------------------------------- the graphs by hand
def test_dialogue_relations_by_hand():
    """Three real utterances (speakers 0, 1, 0) and a padding slot; one utterance back, none ahead."""
    utt = torch.tensor([[True, True, True, False]])
    speakers = torch.tensor([[0, 1, 0, 0]])
    temporal, speaker = dialogue_relations(utt, speakers, window_past=1, window_future=0)
    assert temporal.shape == (1, 3, 4, 4) and speaker.shape == (1, 2, 4, 4)
    edges = lambda a: sorted(map(tuple, a.nonzero().tolist()))  # noqa: E731  (i, j) pairs: i reads j
    assert edges(temporal[0, 0]) == [(1, 0), (2, 1)]  # j before i
    assert edges(temporal[0, 1]) == [(0, 0), (1, 1), (2, 2)]  # j is i
    assert edges(temporal[0, 2]) == []  # nothing ahead
    assert edges(speaker[0, 0]) == [(0, 0), (1, 1), (2, 2)]  # same speaker (u0 and u2 are two apart)
    assert edges(speaker[0, 1]) == [(1, 0), (2, 1)]  # another speaker
    _, wide = dialogue_relations(utt, speakers, window_past=2, window_future=2)
    assert (2, 0) in edges(wide[0, 0]) and (0, 2) in edges(wide[0, 0])  # same speaker, two apart, both ways
    assert not wide[0, :, 3].any() and not wide[0, :, :, 3].any()  # padding joins nothing


def _set(linear, w, b=0.0):
    with torch.no_grad():
        linear.weight.fill_(w)
        if linear.bias is not None:
            linear.bias.fill_(b)


def test_relational_graph_conv_by_hand():
    """Width 1: root 1, relation 0 weight 2 (mean over its neighbours), relation 1 weight 10.
    u2 reads u0, u1 through relation 0 (mean 1.5 -> 3) and itself through relation 1 (40): 4 + 3 + 40 = 47;
    u0 reads nothing: 1 (+ bias 0.5 on every node)."""
    conv = RelationalGraphConv(1, 2)
    _set(conv.root, 1.0, 0.5), _set(conv.rel[0], 2.0), _set(conv.rel[1], 10.0)
    h = torch.tensor([[[1.0], [2.0], [4.0]]])
    adj = torch.zeros(1, 2, 3, 3)
    adj[0, 0, 2, 0] = adj[0, 0, 2, 1] = adj[0, 1, 2, 2] = 1.0
    assert conv(h, adj).flatten().tolist() == pytest.approx([1.5, 2.5, 47.5])


def test_graph_conv_sums_each_neighbour_once():
    """Root 1, neighbours 1: u2 reads u0 through two relations, counted once: 4 + 1 = 5."""
    conv = GraphConv(1)
    _set(conv.root, 1.0), _set(conv.neighbours, 1.0)
    h = torch.tensor([[[1.0], [2.0], [4.0]]])
    adj = torch.zeros(1, 2, 3, 3)
    adj[0, 0, 2, 0] = adj[0, 1, 2, 0] = 1.0
    adj[0, 1, 1, 0] = adj[0, 1, 1, 2] = 1.0
    assert conv(h, adj).flatten().tolist() == pytest.approx([1.0, 2.0 + 1.0 + 4.0, 5.0])


# ---------------------------------------------------------------- the loss by hand
def test_missing_reconstruction_loss_by_hand():
    """Summed (not averaged) over the missing modalities: (1 + 1) / 2 + (0 + 4) / 2 = 3; none missing: 0."""
    imputed = torch.tensor([[[1.0, 1.0], [9.0, 9.0], [3.0, 3.0]], [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    target = torch.tensor([[[0.0, 2.0], [0.0, 0.0], [3.0, 5.0]], [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]])
    hidden = torch.tensor([[True, False, True], [False, False, False]])
    assert missing_reconstruction_loss(imputed, target, hidden).tolist() == [3.0, 0.0]


# One dialogue of three slots (the third is padding), M = 2 (l, a), H = 1, C = 2.
#   u0: the data has l and a, the view hides a;   u1: the data has only l, the view shows it;   u2: padding.
G_UTT = torch.tensor([[True, True, False]])
G_AVAIL = torch.tensor([[[True, True], [True, False], [False, False]]])
G_VIEW = torch.tensor([[[True, False], [True, False], [False, False]]])
G_LABELS = torch.tensor([[1, 1, 0]])
G_LOGITS = [[0.0, LN3], [math.log(7.0), 0.0], [7.0, -7.0]]
G_IMPUTED = [[[1.0], [3.0]], [[3.0], [5.0]], [[9.0], [9.0]]]
G_TARGET = [[[0.0], [1.0]], [[2.0], [0.0]], [[0.0], [0.0]]]
CE_G = (math.log(4 / 3) + math.log(8.0)) / 2


class _Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.0))
        self.seen = []

    def encode(self, batch):
        self.seen.append(batch)
        return self.scale * torch.tensor([G_TARGET]), batch.mask


def _gcnet_loss(**options):
    complete = made_up_batch(G_AVAIL, G_AVAIL, G_LABELS, G_UTT)
    view = TrainView(made_up_batch(G_AVAIL, G_VIEW, G_LABELS, G_UTT))
    out = Output(
        logits=torch.tensor([G_LOGITS], requires_grad=True),
        fused=torch.zeros(1, 3, 1),
        states=torch.zeros(1, 3, 2, 1),
        extra={"imputed": torch.tensor([G_IMPUTED])},
    )
    method, encoder = build_method("gcnet", **options), _Encoder()
    ctx = StepContext(complete, view, out, None, encoder, torch_generator("unused"))
    total, terms = method.loss(ctx)
    return total, terms, encoder


def test_gcnet_loss_by_hand():
    """Only u0's a is missing (error (3 - 1)^2 = 4); u1 hides nothing and counts 0: mean over u0, u1 = 2."""
    total, terms, encoder = _gcnet_loss(l_rec=0.5)
    assert set(terms) == {"ce", "rec"}
    assert terms["ce"].item() == pytest.approx(CE_G, abs=1e-6)
    assert terms["rec"].item() == pytest.approx(2.0, abs=1e-6)
    assert total.item() == pytest.approx(CE_G + 0.5 * 2.0, abs=1e-6)
    (target_batch,) = encoder.seen
    assert torch.equal(target_batch.mask, G_AVAIL)


def test_gcnet_target_option_and_zero_weight():
    total, _, encoder = _gcnet_loss(target="attached")
    total.backward()
    # d rec / d scale: u0's a, 2 (3 - 1)(-1) = -4, over two utterances: -2
    assert encoder.scale.grad.item() == pytest.approx(-2.0, abs=1e-6)
    total, _, encoder = _gcnet_loss()
    total.backward()
    assert encoder.scale.grad is None
    total, terms, encoder = _gcnet_loss(l_rec=0.0)
    assert set(terms) == {"ce"} and encoder.seen == [] and total.item() == pytest.approx(CE_G, abs=1e-6)


# ---------------------------------------------------------------- the model
CFG = ModelConfig(hidden=8, heads=2, dropout=0.0, modality_state="encoding")  # states = the completed view


def test_model_imputes_only_the_missing_and_never_reads_their_features(tiny_corpus, tiny_batch):
    model = GCNetModel(CFG, corpus_dims(tiny_corpus), len(tiny_corpus.labels), window_past=2, window_future=1).eval()
    mask = tiny_batch.avail.clone()
    mask[..., 1:] = False  # language only
    view = tiny_batch.view(mask)
    out = model(view)
    x, observed = model.encode(view)
    assert torch.equal(out.extra["imputed"], model.complete_graph(x, observed, view))
    real = view.utt_mask
    shown, hidden = observed[real], ~observed[real]
    assert torch.equal(out.states[real][shown], x[real][shown])
    assert torch.equal(out.states[real][hidden], out.extra["imputed"][real][hidden])
    noisy = tiny_batch.view(mask)
    noisy.features = {k: v + (0 if k == "l" else 5.0) for k, v in view.features.items()}
    assert torch.allclose(model(noisy).logits, out.logits)


@pytest.mark.parametrize("window,reaches", [(0, False), (1, True)])
def test_completion_reads_the_neighbouring_utterances(window, reaches, tiny_corpus, tiny_batch):
    """Another language input at u0 changes u1's completion only when the window joins them."""
    model = GCNetModel(CFG, corpus_dims(tiny_corpus), len(tiny_corpus.labels), window_past=window, window_future=0)
    model.eval()
    assert bool(tiny_batch.utt_mask[0, :2].all())
    mask = tiny_batch.avail.clone()
    mask[..., 1:] = False
    view = tiny_batch.view(mask)
    other = tiny_batch.view(mask)
    language = view.features["l"].clone()
    language[0, 0] += 3.0
    other.features = {**view.features, "l": language}
    a, b = model(view).extra["imputed"], model(other).extra["imputed"]
    assert not torch.allclose(a[0, 0], b[0, 0])  # its own completion moves
    assert (not torch.allclose(a[0, 1], b[0, 1])) == reaches


def test_architecture_options_and_checkpoint(tiny_corpus, tiny_batch, tmp_path):
    dims, c = corpus_dims(tiny_corpus), len(tiny_corpus.labels)
    method = build_method("gcnet", graph_hidden=6, window_past=3, window_future=2)
    model = init_model(CFG, dims, c, 0, "student", build=method.build_model).eval()
    assert isinstance(model, GCNetModel)
    assert model.architecture_options() == {"graph_hidden": 6, "window_past": 3, "window_future": 2}
    assert build_method("gcnet").build_model(CFG, dims, c).graph_hidden == CFG.hidden
    plain = init_model(CFG, dims, c, 0, "student").state_dict()
    got = model.state_dict()
    assert set(plain) < set(got) and all(torch.equal(plain[k], got[k]) for k in plain)
    save_checkpoint(model, tmp_path / "ck", {"method": "gcnet"})
    loaded, info = load_checkpoint(tmp_path / "ck")
    assert type(loaded) is GCNetModel and info["architecture"]["name"] == "gcnet"
    assert loaded.architecture_options() == model.architecture_options()
    assert torch.allclose(loaded(tiny_batch).logits, model(tiny_batch).logits)


def test_run_with_a_teacher_trains_saves_reloads_and_predicts_the_same(tmp_path):
    raw = quick_config(methods=[{"name": "teacher"}, {"name": "gcnet", "options": {"window_past": 2}}])
    out = tmp_path / "out"
    first = run(validate_config(raw), out)
    model, info = load_checkpoint(out / "checkpoints" / "gcnet" / "seed0")
    assert type(model) is GCNetModel and info["architecture"]["options"]["window_past"] == 2
    assert {r["condition"] for r in first.records if r["variant"] == "gcnet"} >= {"complete"}
    second = run(validate_config(raw), out, resume=True)
    key = lambda r: (r["variant"], r["split"], r["condition"])  # noqa: E731
    same = {key(r): r for r in first.records}
    assert sorted(map(key, second.records)) == sorted(map(key, first.records))
    assert all(r == same[key(r)] for r in second.records)
