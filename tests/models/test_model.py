"""The model: shapes, masks respected (missingness is never read from zeros), dialogues independent."""

from dataclasses import replace

import pytest
import torch

from corekd.models.model import ERCModel, ModelConfig, Output


@pytest.fixture()
def model(tiny_corpus):
    torch.manual_seed(0)
    dims = {m: s.dim for m, s in tiny_corpus.modalities.items()}
    return ERCModel(ModelConfig(hidden=16, heads=2, dropout=0.0), dims, len(tiny_corpus.labels)).eval()


def test_output_shapes(model, tiny_batch):
    out = model(tiny_batch)
    b, u = tiny_batch.utt_mask.shape
    assert out.logits.shape == (b, u, 6)
    assert out.fused.shape == (b, u, 16)
    assert out.states.shape == (b, u, 3, 16)
    assert torch.isfinite(out.logits).all()


def test_features_of_a_missing_modality_are_ignored(model, tiny_batch):
    mask = tiny_batch.avail.clone()
    mask[:, ::2, 1] = False  # hide `a` on every other utterance
    view = tiny_batch.view(mask)
    noisy = dict(view.features)
    noisy["a"] = noisy["a"] + 100 * torch.randn_like(noisy["a"]) * (~mask[..., 1:2])  # garbage where hidden
    with torch.no_grad():
        a, b = model(view), model(replace(view, features=noisy))
    assert torch.allclose(a.logits, b.logits, atol=1e-5)


def test_the_mask_not_zeros_says_what_is_missing(model, tiny_batch):
    zeros = dict(tiny_batch.features)
    zeros["v"] = torch.zeros_like(zeros["v"])
    observed_zero = replace(tiny_batch, features=zeros)  # v observed, but its values happen to be 0
    mask = tiny_batch.avail.clone()
    mask[..., 2] = False
    missing = replace(tiny_batch, features=zeros, mask=mask)  # same inputs, v declared missing
    with torch.no_grad():
        assert not torch.allclose(model(observed_zero).logits, model(missing).logits, atol=1e-4)


def test_padding_and_batch_neighbours_do_not_change_a_dialogue(model, tiny_splits):
    train = tiny_splits["train"]
    longest = int(train.lengths.argmax())
    shortest = int(train.lengths.argmin())
    with torch.no_grad():
        alone = model(train.batch([shortest]))
        together = model(train.batch([shortest, longest]))
    n = int(train.lengths[shortest])
    assert torch.allclose(alone.logits[0, :n], together.logits[0, :n], atol=1e-5)


def test_no_utterance_observed_still_gives_finite_outputs(model, tiny_batch):
    view = tiny_batch.view(torch.zeros_like(tiny_batch.avail))
    with torch.no_grad():
        out = model(view)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.fused).all()


def test_context_carries_information_across_utterances(model, tiny_batch):
    """With context layers, changing one utterance changes its neighbours' outputs; without, it does not."""
    changed = dict(tiny_batch.features)
    changed["l"] = changed["l"].clone()
    changed["l"][0, 0] += 3.0 * torch.randn_like(changed["l"][0, 0])
    other = replace(tiny_batch, features=changed)
    with torch.no_grad():
        assert not torch.allclose(model(tiny_batch).logits[0, 1:], model(other).logits[0, 1:], atol=1e-6)
    flat = ERCModel(ModelConfig(hidden=16, heads=2, context_layers=0, dropout=0.0), model.dims, 6).eval()
    with torch.no_grad():
        assert torch.allclose(flat(tiny_batch).logits[0, 1:], flat(other).logits[0, 1:], atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda(model, tiny_batch):
    out = model.cuda()(tiny_batch.to("cuda"))
    assert out.logits.is_cuda


def test_output_extra_survives_detach_select_and_split():
    t = torch.arange(24.0).view(4, 1, 2, 3)
    out = Output(torch.zeros(4, 1, 2), torch.zeros(4, 1, 3), t, {"imputed": t * 2})
    halves = out.split(2)
    assert torch.equal(halves[1].extra["imputed"], (t * 2)[2:])
    assert torch.equal(out.select(torch.tensor([3])).extra["imputed"], (t * 2)[3:])
    assert not out.detach().extra["imputed"].requires_grad and set(out.detach().extra) == {"imputed"}
