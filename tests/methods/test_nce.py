"""NCE's conflict views: donors of another label; only the chosen nonverbal modalities change."""

from dataclasses import replace

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


# ---------------------------------------------------------------- NCE conflict views
def _labelled(batch, labels):
    return replace(batch, labels=labels)


def test_the_first_utterance_can_be_a_donor(tiny_batch):
    """Flat index 0 is a real donor: only (0, 0) differs in label, so every other target takes it."""
    labels = torch.ones_like(tiny_batch.labels)
    labels[0, 0] = 0
    batch = _labelled(tiny_batch, labels)
    cv = nce_view(batch, batch, 1.0, ("av",), torch_generator("first"))
    others = batch.utt_mask.clone()
    others[0, 0] = False
    assert cv.selected[others].all()  # every other real utterance is a target...
    assert (cv.donor[others] == 0).all()  # ...with the one donor of another label: utterance (0, 0)
    b, u = batch.utt_mask.shape
    for m in ("a", "v"):
        got = cv.batch.features[m].reshape(b * u, -1)[others.reshape(-1)]
        assert torch.equal(got, batch.features[m][0, 0].expand_as(got))


def test_unselected_utterances_carry_minus_one(tiny_batch):
    cv = nce_view(tiny_batch, tiny_batch, 0.3, ("a", "v"), torch_generator("sentinel", 1))
    assert cv.selected.any() and (~cv.selected).any()
    assert (cv.donor[~cv.selected] == -1).all() and (cv.kind[~cv.selected] == -1).all()
    assert (cv.donor[cv.selected] >= 0).all() and (cv.kind[cv.selected] >= 0).all()
    assert cv.donor.dtype == torch.long and cv.kind.dtype == torch.long
    assert cv.types == ("a", "v")  # kind indexes into these


def test_each_target_draws_its_own_donor(tiny_batch):
    """Targets with the same candidate donors do not all get the same one."""
    labels = (torch.arange(tiny_batch.labels.numel()) % 2).view_as(tiny_batch.labels)
    batch = _labelled(tiny_batch, labels)
    cv = nce_view(batch, batch, 1.0, ("a",), torch_generator("own"))
    zero_targets = cv.selected & (labels == 0)
    assert zero_targets.sum() >= 5
    assert len(set(cv.donor[zero_targets].tolist())) > 1


def test_a_donor_without_the_modality_leaves_it_missing(tiny_batch):
    """The swapped modality is observed only where the donor's data has it."""
    labels = (torch.arange(tiny_batch.labels.numel()) % 2).view_as(tiny_batch.labels)
    avail = tiny_batch.avail.clone()
    avail[..., 1] &= labels == 0  # label-1 utterances (the donors of label-0 targets) have no acoustic features
    source = replace(tiny_batch, labels=labels, avail=avail, mask=avail.clone())
    cv = nce_view(source, source, 1.0, ("a",), torch_generator("missing"))
    zero_targets = cv.selected & (labels == 0)
    assert zero_targets.any()
    assert not cv.batch.mask[..., 1][zero_targets].any() and not cv.batch.avail[..., 1][zero_targets].any()
    assert (cv.batch.features["a"][zero_targets] == 0).all()


@pytest.mark.parametrize("types", [("x",), ("",), ("la",)])
def test_conflict_types_must_be_nonverbal_modalities_of_the_corpus(tiny_batch, types):
    with pytest.raises(CorekdError, match="must name nonverbal modalities of this corpus"):
        nce_view(tiny_batch, tiny_batch, 0.2, types, torch_generator("x"))
