"""Stacked ensembles: the unrolled GRU, K models as one vmapped model, member weights in and out."""

import copy

import pytest
import torch

from corekd.data.batching import SplitTensors
from corekd.data.protocols import TrainingMissing
from corekd.data.synth import SynthConfig, generate
from corekd.evaluation.predict import run_model, run_stacked
from corekd.methods import method_class
from corekd.models.model import ERCModel, ModelConfig
from corekd.models.recurrent import GRUContextEncoder, gru_scan, unroll_recurrences
from corekd.models.stacked import StackedModels, stack_batches, stack_problem
from helpers import TINY_FRAMES, corpus_dims

MODEL = ModelConfig(hidden=16, heads=2, dropout=0.0)


def _models(corpus, k, cfg=MODEL, build=ERCModel):
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(build(cfg, corpus_dims(corpus), len(corpus.labels)).eval())
    return out


def test_gru_scan_is_nn_gru_in_outputs_and_gradients():
    torch.manual_seed(0)
    grus = [torch.nn.GRU(6, 4, batch_first=True) for _ in range(2)]
    x = torch.randn(2, 3, 5, 6, requires_grad=True)  # [D, N, U, I]
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    weights = [torch.stack([getattr(g, f"{n}_l0") for g in grus]) for n in names]
    scanned = gru_scan(x, *weights)  # [D, N, U, G]
    reference = torch.stack([g(x[d])[0] for d, g in enumerate(grus)])
    assert torch.allclose(scanned, reference, atol=1e-6)
    (scanned**2).sum().backward()
    grad_scan = [grus[0].weight_hh_l0.grad.clone(), x.grad.clone()]
    for g in grus:
        g.zero_grad()
    x.grad = None
    (reference**2).sum().backward()
    assert torch.allclose(grad_scan[0], grus[0].weight_hh_l0.grad, atol=1e-5)
    assert torch.allclose(grad_scan[1], x.grad, atol=1e-5)


def test_unrolled_context_encoder_gives_the_same_states_with_padding_and_empty_sequences():
    torch.manual_seed(1)
    enc = GRUContextEncoder(16, 2, 0.0, speaker_aware=True).eval()
    x, lengths, speakers = torch.randn(3, 7, 16), torch.tensor([7, 4, 0]), torch.randint(0, 2, (3, 7))
    fused = enc(x, lengths, speakers)
    unroll_recurrences(enc)
    assert enc.unrolled
    assert torch.allclose(enc(x, lengths, speakers), fused, atol=1e-5)


def test_stacked_forward_is_each_models_own_forward_on_its_own_batch(tiny_corpus, tiny_splits):
    models = _models(tiny_corpus, 3)
    train = tiny_splits["train"]
    batches = [train.batch([0, 1, 2]), train.batch([3]), train.batch([4, 5])]  # other rows, other lengths
    batches[1] = batches[1].view(torch.zeros_like(batches[1].mask).index_fill_(-1, torch.tensor([0]), True))
    stacked = StackedModels(models).eval()
    with torch.no_grad():
        outs = stacked.forward(batches)
        for model, batch, out in zip(models, batches, outs):
            own = model(batch)
            assert out.logits.shape == own.logits.shape and out.states.shape == own.states.shape
            assert torch.allclose(out.logits, own.logits, atol=1e-5)
            assert torch.allclose(out.fused, own.fused, atol=1e-5)
            assert torch.allclose(out.states, own.states, atol=1e-5)


def test_padding_of_stacked_batches_is_padding(tiny_splits):
    train = tiny_splits["train"]
    tensors, mods = stack_batches([train.batch([0, 1]), train.batch([2])])
    assert tensors["utt_mask"].shape[:2] == (2, 2)
    assert not tensors["utt_mask"][1, 1].any() and not tensors["avail"][1, 1].any()
    assert mods == train.modalities


def test_an_architecture_of_a_method_stacks_too(tiny_corpus, tiny_splits):
    cls = method_class("gcnet")
    method = cls(cls.Options(), TrainingMissing())
    models = _models(tiny_corpus, 2, build=method.build_model)
    batches = [tiny_splits["train"].batch([0, 1]), tiny_splits["train"].batch([2])]
    with torch.no_grad():
        outs = StackedModels(models).eval().forward(batches)
        for model, batch, out in zip(models, batches, outs):
            own = model(batch)
            assert set(out.extra) == set(own.extra)
            assert torch.allclose(out.logits, own.logits, atol=1e-5)
            for key in own.extra:
                assert torch.allclose(out.extra[key], own.extra[key], atol=1e-5), key


def test_members_come_out_with_their_weights_and_losses_reach_only_their_slice(tiny_corpus, tiny_splits):
    models = _models(tiny_corpus, 2)
    stacked = StackedModels(copy.deepcopy(models))
    back = stacked.member(1)
    assert not any(m.unrolled for m in back.modules() if isinstance(m, GRUContextEncoder))
    for key, value in models[1].state_dict().items():
        assert torch.equal(back.state_dict()[key], value)
    batch = tiny_splits["train"].batch([0, 1])
    loss = stacked.call_member(1, lambda model: model(batch).logits.square().sum())
    loss.backward()
    grad = stacked.params["head.weight"].grad
    assert grad[0].abs().sum() == 0 and grad[1].abs().sum() > 0


def test_keep_drops_members_in_order(tiny_corpus):
    models = _models(tiny_corpus, 3)
    stacked = StackedModels(models)
    old = stacked.params["head.weight"]
    moved = stacked.keep([2, 0])
    assert stacked.size == 2 and moved[old] is stacked.params["head.weight"]
    assert torch.equal(stacked.params["head.weight"][0], models[2].head.weight.detach())


def test_stacked_dev_outputs_are_each_models_under_its_own_masks(tiny_corpus, tiny_splits):
    models = _models(tiny_corpus, 2)
    dev = tiny_splits["dev"]
    masks = [None, dev.avail & (torch.rand(dev.avail.shape, generator=torch.Generator().manual_seed(0)) > 0.4)]
    outs = run_stacked(StackedModels(models), dev, masks, 3, "cpu")
    for model, mask, out in zip(models, masks, outs):
        own = run_model(model, dev, mask, 3, "cpu")
        assert torch.allclose(out.logits, own.logits, atol=1e-5)


def test_models_that_read_frames_are_refused_with_the_reason():
    corpus = generate(SynthConfig(**TINY_FRAMES))
    kinds = {m: s.kind for m, s in corpus.modalities.items()}
    model = ERCModel(MODEL, corpus_dims(corpus), len(corpus.labels), kinds=kinds)
    assert "sequence_encoder" in stack_problem(model)
    with pytest.raises(ValueError, match="vmap"):
        StackedModels([model])
    mean = ERCModel(
        MODEL.model_copy(update={"sequence_encoder": "mean"}), corpus_dims(corpus), len(corpus.labels), kinds=kinds
    )
    assert stack_problem(mean) is None
    split = SplitTensors.from_corpus(corpus, "train")
    batch = split.batch([0, 1])
    with torch.no_grad():
        out = StackedModels([mean.eval()]).eval().forward([batch])[0]
        assert torch.allclose(out.logits, mean(batch).logits, atol=1e-5)
