"""NCE's conflict views: donors of another label; only the chosen nonverbal modalities change."""

import pytest
import torch

from corekd.errors import CorekdError
from corekd.methods.nce import nce_view
from corekd.seeding import torch_generator


def _random_view(batch, seed=0):
    gen = torch_generator("view", seed)
    return batch.view(torch.rand(batch.avail.shape, generator=gen) < 0.7)


@pytest.mark.parametrize("types", [("a",), ("v",), ("av",), ("a", "v", "av")])
def test_conflict_view_swaps_only_the_chosen_modalities(tiny_batch, types):
    view = _random_view(tiny_batch)
    cv = nce_view(view, tiny_batch, prob=1.0, types=types, generator=torch_generator("nce", 0))
    b, u = view.utt_mask.shape
    flat_labels = view.labels.reshape(-1)
    sel = cv.selected
    assert sel.any()
    assert not (sel & ~view.utt_mask).any()  # padding is never a target
    donors = cv.donor[sel]
    assert (flat_labels[donors] != view.labels[sel]).all()  # donor label differs
    assert view.utt_mask.reshape(-1)[donors].all()  # donors are real utterances
    # Target's language, label, speaker and dialogue context are kept.
    assert torch.equal(cv.batch.features["l"], view.features["l"])
    assert torch.equal(cv.batch.mask[..., 0], view.mask[..., 0])
    assert torch.equal(cv.batch.labels, view.labels)
    assert torch.equal(cv.batch.speakers, view.speakers)
    assert torch.equal(cv.batch.utt_mask, view.utt_mask)
    for j, m in enumerate(view.modalities):
        if m == "l":
            continue
        x_new = cv.batch.features[m].reshape(b * u, -1)
        x_old = view.features[m].reshape(b * u, -1)
        x_src = tiny_batch.features[m].reshape(b * u, -1)
        swapped = torch.zeros(b * u, dtype=torch.bool)
        for t_idx, t in enumerate(types):
            if m in t:
                swapped |= cv.kind.reshape(-1) == t_idx
        assert torch.equal(x_new[~swapped], x_old[~swapped])  # everything else untouched
        idx = torch.nonzero(swapped).squeeze(1)
        assert torch.equal(x_new[idx], x_src[cv.donor.reshape(-1)[idx]])  # the donor's own features
        assert cv.batch.mask[..., j].reshape(-1)[idx].all()  # observed, as the donor has it


def test_conflict_probability_and_type_mix(tiny_splits):
    train = tiny_splits["train"]
    batch = train.batch(list(range(len(train))))
    counts, selected, total = torch.zeros(3), 0, 0
    for seed in range(40):
        cv = nce_view(batch, batch, prob=0.2, types=("a", "v", "av"), generator=torch_generator("p", seed))
        selected += int(cv.selected.sum())
        total += int(batch.utt_mask.sum())
        counts += torch.bincount(cv.kind[cv.selected], minlength=3)
    assert selected / total == pytest.approx(0.2, abs=0.02)
    assert (counts / counts.sum() - 1 / 3).abs().max() < 0.05


def test_same_generator_state_same_conflicts(tiny_batch):
    a = nce_view(tiny_batch, tiny_batch, 0.5, ("a", "v"), torch_generator("s", 3))
    b = nce_view(tiny_batch, tiny_batch, 0.5, ("a", "v"), torch_generator("s", 3))
    assert torch.equal(a.selected, b.selected) and torch.equal(a.donor, b.donor) and torch.equal(a.kind, b.kind)


def test_no_donor_no_conflict(tiny_batch):
    one_label = tiny_batch.labels.clone().zero_()
    from dataclasses import replace

    batch = replace(tiny_batch, labels=one_label)
    cv = nce_view(batch, batch, 1.0, ("av",), torch_generator("none"))
    assert not cv.selected.any()
    assert torch.equal(cv.batch.features["a"], batch.features["a"])


def test_language_cannot_be_a_conflict_type(tiny_batch):
    with pytest.raises(CorekdError):
        nce_view(tiny_batch, tiny_batch, 0.2, ("l",), torch_generator("x"))


def test_targets_keep_their_language_by_default(tiny_batch):
    mask = tiny_batch.avail.clone()
    mask[:, ::2, 0] = False  # language hidden on every other utterance
    view = tiny_batch.view(mask)
    cv = nce_view(view, tiny_batch, 1.0, ("av",), torch_generator("lang"))
    assert cv.selected.any()
    assert view.mask[..., 0][cv.selected].all()  # no target without its language
    loose = nce_view(view, tiny_batch, 1.0, ("av",), torch_generator("lang"), require_language=False)
    assert (~view.mask[..., 0][loose.selected]).any()
