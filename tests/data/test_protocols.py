"""Missing-modality protocols: realised rates, at least one modality kept, seeded and shared masks."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from corekd.data.protocols import (
    Condition,
    TrainingMissing,
    fixed_mask,
    missing_rate,
    random_mask,
    split_condition_mask,
    standard_conditions,
)
from corekd.errors import CorekdError
from corekd.seeding import torch_generator

MODS = ("l", "a", "v")
LARGE = torch.ones(2000, 50, 3, dtype=torch.bool)  # 100,000 utterances


@settings(max_examples=25, deadline=None)
@given(p=st.floats(0.0, 0.66), seed=st.integers(0, 2**31))
def test_realised_rate_matches_p_and_every_utterance_keeps_one(p, seed):
    mask = random_mask(LARGE, p, torch_generator("t", seed))
    assert abs(missing_rate(mask, LARGE) - p) <= 0.01
    assert bool(mask.any(-1).all())


@pytest.mark.parametrize("p", [round(0.1 * k, 1) for k in range(7)])
def test_standard_rates_within_tolerance(p):
    mask = random_mask(LARGE, p, torch_generator("rates", p))
    assert abs(missing_rate(mask, LARGE) - p) <= 0.01
    assert bool(mask.any(-1).all())


def test_rate_above_the_cap_keeps_exactly_one():
    mask = random_mask(LARGE, 0.7, torch_generator("cap"))
    assert bool((mask.sum(-1) == 1).all())
    assert missing_rate(mask, LARGE) == pytest.approx(2 / 3)


def test_same_seed_same_mask_other_seed_other_mask():
    a = random_mask(LARGE[:100], 0.5, torch_generator("x", 1))
    b = random_mask(LARGE[:100], 0.5, torch_generator("x", 1))
    c = random_mask(LARGE[:100], 0.5, torch_generator("x", 2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_respects_data_availability_and_padding():
    gen = torch.Generator().manual_seed(0)
    avail = torch.rand(500, 40, 3, generator=gen) < 0.7
    avail[:, 30:] = False  # padding
    mask = random_mask(avail, 0.5, torch_generator("avail"))
    assert not bool((mask & ~avail).any())  # never "observes" what the data lacks
    has = avail.any(-1)
    assert bool(mask.any(-1)[has].all())  # >= 1 kept wherever the data has one
    assert not bool(mask[:, 30:].any())
    # An utterance with one available modality must keep it; where two or more are there the rate holds.
    several = avail.sum(-1) >= 2
    assert abs(missing_rate(mask[several], avail[several]) - 0.5) < 0.01


def test_redraw_scheme_keeps_one_and_undershoots():
    mask = random_mask(LARGE, 0.5, torch_generator("redraw"), scheme="redraw")
    assert bool(mask.any(-1).all())
    # conditional on at least one kept: E[missing] = (3p - 3p^3) / (1 - p^3) / 3 = 0.4286 at p = 0.5
    assert missing_rate(mask, LARGE) == pytest.approx((1.5 - 0.375) / 0.875 / 3, abs=0.01)


def test_fixed_masks_keep_exactly_the_named_modalities():
    avail = torch.ones(2, 3, 3, dtype=torch.bool)
    la = fixed_mask(avail, ("l", "a"), MODS)
    assert la[..., 0].all() and la[..., 1].all() and not la[..., 2].any()
    assert Condition.parse("fixed:v").keep == ("v",)
    with pytest.raises(CorekdError):
        fixed_mask(avail, ("x",), MODS)


def test_condition_names_round_trip_and_standard_list():
    names = [c.name for c in standard_conditions(MODS, [round(0.1 * k, 1) for k in range(8)])]
    assert names == [
        "complete", "fixed:l", "fixed:a", "fixed:v", "fixed:la", "fixed:lv", "fixed:av",
        "random:0.0", "random:0.1", "random:0.2", "random:0.3", "random:0.4", "random:0.5", "random:0.6", "random:0.7",
    ]
    for name in names:
        assert Condition.parse(name).name == name


@pytest.mark.parametrize("bad", ["fixed:", "fixed:lx", "fixed:ll", "random:1.0", "random:-0.1", "random:abc", "dropped"])
def test_bad_condition_names(bad):
    with pytest.raises(CorekdError):
        Condition.parse(bad)


def test_evaluation_masks_depend_only_on_seed_split_condition():
    avail = torch.ones(30, 20, 3, dtype=torch.bool)
    cond = Condition.parse("random:0.4")
    a = split_condition_mask(cond, avail, MODS, mask_seed=0, split="test")
    torch.rand(100)  # unrelated global draws must not matter
    b = split_condition_mask(cond, avail, MODS, mask_seed=0, split="test")
    c = split_condition_mask(cond, avail, MODS, mask_seed=1, split="test")
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_training_masks_draw_one_rate_per_batch():
    """per="batch": every row of a batch is masked at the batch's one rate; the rate varies between batches."""
    missing = TrainingMissing(low=0.2, high=0.6)
    avail = torch.ones(8, 500, 3, dtype=torch.bool)  # 1,500 entries a row: a row's realised rate is within ~0.04
    gen = torch_generator("train")
    batch_rates = []
    for _ in range(12):
        mask = missing.masks(avail, gen)
        row_rates = [missing_rate(mask[i], avail[i]) for i in range(8)]
        assert max(row_rates) - min(row_rates) < 0.08  # one rate for the whole batch
        batch_rates.append(missing_rate(mask, avail))
    assert min(batch_rates) >= 0.2 - 0.02 and max(batch_rates) <= 0.6 + 0.02
    assert max(batch_rates) - min(batch_rates) > 0.15  # ... drawn afresh per batch
    per_row = missing.masks(avail, torch_generator("train"), per="row")
    row_rates = [missing_rate(per_row[i], avail[i]) for i in range(8)]
    assert max(row_rates) - min(row_rates) > 0.15  # rows drew their own rates


def test_training_missing_validates_range():
    with pytest.raises(ValueError):
        TrainingMissing(low=0.5, high=0.2)
