"""Exact pins of the missing-modality protocols: masks recomputed by hand (plain Python) from the same draws."""

import math

import pytest
import torch

from corekd.data.protocols import (
    Condition,
    TrainingMissing,
    condition_mask,
    fixed_mask,
    fixed_subsets,
    missing_rate,
    random_mask,
    split_condition_mask,
    standard_conditions,
    training_rate_masks,
)
from corekd.errors import CorekdError
from corekd.seeding import derive_seed

MODS = ("l", "a", "v")


def _gen(seed=0):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _avail():
    """[2, 4, 3]: full rows, one- and two-modality rows and an all-missing (padding) row."""
    rows = [[[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 0]],
            [[1, 1, 0], [1, 1, 1], [0, 1, 1], [1, 1, 1]]]
    return torch.tensor(rows, dtype=torch.bool)


def _calibrated_by_hand(avail, rates, seed):
    """The calibrated scheme in plain Python over the generator's two uniform draws (score, then extra)."""
    g = _gen(seed)
    score = torch.rand(avail.shape, generator=g, dtype=torch.float64).tolist()
    extra = torch.rand(avail.shape, generator=g, dtype=torch.float64).tolist()
    out = []
    for b, row_b in enumerate(avail.tolist()):
        out_b = []
        for u, row in enumerate(row_b):
            p = rates[b][u]
            k = sum(row)
            masked = [s if a else -1.0 for s, a in zip(score[b][u], row)]
            best = masked.index(max(masked))  # first maximum
            q = min(1.0, max(0.0, (k * (1 - p) - 1) / max(k - 1, 1)))
            out_b.append([bool(a and (j == best or extra[b][u][j] < q)) for j, a in enumerate(row)])
        out.append(out_b)
    return torch.tensor(out, dtype=torch.bool)


def _redraw_by_hand(avail, p, seed):
    g = _gen(seed)
    rows = avail.tolist()
    draw = torch.rand(avail.shape, generator=g, dtype=torch.float64).tolist()
    mask = [[[bool(a and d >= p) for a, d in zip(r, dr)] for r, dr in zip(rb, db)] for rb, db in zip(rows, draw)]
    empty = lambda: [[any(r) and not any(m) for r, m in zip(rb, mb)] for rb, mb in zip(rows, mask)]  # noqa: E731
    e = empty()
    while any(any(x) for x in e):
        draw = torch.rand(avail.shape, generator=g, dtype=torch.float64).tolist()
        for b in range(len(rows)):
            for u in range(len(rows[b])):
                if e[b][u]:
                    mask[b][u] = [bool(a and d >= p) for a, d in zip(rows[b][u], draw[b][u])]
        e = empty()
    return torch.tensor(mask, dtype=torch.bool)


# ---------------------------------------------------------------- random_mask
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibrated_mask_is_the_hand_computation(p, seed):
    avail = _avail()
    got = random_mask(avail, p, _gen(seed), "calibrated")
    assert got.dtype == torch.bool and got.shape == avail.shape
    assert torch.equal(got, _calibrated_by_hand(avail, [[p] * 4] * 2, seed))


def test_calibrated_is_the_default_scheme():
    avail = _avail()
    assert torch.equal(random_mask(avail, 0.4, _gen(3)), _calibrated_by_hand(avail, [[0.4] * 4] * 2, 3))


def test_calibrated_by_hand_on_a_bigger_random_availability():
    avail = torch.rand(6, 9, 3, generator=_gen(50)) < 0.7
    assert torch.equal(random_mask(avail, 0.45, _gen(4)), _calibrated_by_hand(avail, [[0.45] * 9] * 6, 4))


def test_per_row_rates_broadcast_over_the_utterances():
    avail = _avail()
    rate = torch.tensor([[0.1], [0.6]], dtype=torch.float64)
    want = _calibrated_by_hand(avail, [[0.1] * 4, [0.6] * 4], 5)
    assert torch.equal(random_mask(avail, rate, _gen(5)), want)


def test_rate_zero_keeps_everything_and_padding_stays_empty():
    avail = _avail()
    for scheme in ("calibrated", "redraw"):
        assert torch.equal(random_mask(avail, 0.0, _gen(0), scheme), avail)


def test_high_rate_keeps_exactly_one_available_modality():
    avail = _avail()
    got = random_mask(avail, 0.95, _gen(1))
    kept = got.sum(-1)
    assert torch.equal(kept, avail.any(-1).long())
    assert not (got & ~avail).any()


def test_a_non_bool_availability_is_read_as_bool():
    avail = _avail()
    as_int = avail.to(torch.uint8)
    got = random_mask(as_int, 0.5, _gen(2))
    assert got.dtype == torch.bool
    assert torch.equal(got, random_mask(avail, 0.5, _gen(2)))
    assert torch.equal(random_mask(avail.long(), 0.5, _gen(2), "redraw"), random_mask(avail, 0.5, _gen(2), "redraw"))


def test_a_mask_of_an_autograd_tensor_and_its_device():
    avail = _avail().float().requires_grad_(True)
    got = random_mask(avail, 0.3, _gen(0))
    assert got.device == avail.device and got.dtype == torch.bool and not got.requires_grad


@pytest.mark.parametrize("p", [0.0, 0.3, 0.6, 0.8])
@pytest.mark.parametrize("seed", [0, 7])
def test_redraw_mask_is_the_hand_computation(p, seed):
    avail = _avail()
    assert torch.equal(random_mask(avail, p, _gen(seed), "redraw"), _redraw_by_hand(avail, p, seed))


def test_redraw_redraws_empty_rows_until_each_keeps_one():
    avail = torch.ones(20, 6, 3, dtype=torch.bool)
    avail[:, 5] = False  # padding: never redrawn
    got = random_mask(avail, 0.85, _gen(9), "redraw")
    assert torch.equal(got, _redraw_by_hand(avail, 0.85, 9))
    assert bool(got[:, :5].any(-1).all()) and not got[:, 5].any()


@pytest.mark.parametrize("rate", [-0.01, 1.0, 1.5])
def test_rates_outside_zero_one_are_refused_with_the_rate(rate):
    with pytest.raises(CorekdError, match=rf"^missing rate must lie in \[0, 1\), got {rate}$"):
        random_mask(_avail(), rate, _gen(0))


def test_one_bad_per_row_rate_is_refused():
    with pytest.raises(CorekdError, match=r"missing rate must lie in \[0, 1\)"):
        random_mask(_avail(), torch.tensor([[0.2], [1.0]]), _gen(0))
    random_mask(_avail(), torch.tensor([[0.0], [0.999]]), _gen(0))  # both ends of the range are fine


def test_an_unknown_scheme_is_refused_by_name():
    with pytest.raises(CorekdError, match=r"^unknown random-missing scheme 'nope': expected calibrated or redraw$"):
        random_mask(_avail(), 0.5, _gen(0), "nope")


# ---------------------------------------------------------------- fixed
def test_fixed_subsets_in_order():
    assert [c.name for c in fixed_subsets(MODS)] == ["fixed:l", "fixed:a", "fixed:v", "fixed:la", "fixed:lv", "fixed:av"]
    assert fixed_subsets(MODS)[3] == Condition("fixed", keep=("l", "a"))
    assert [c.keep for c in fixed_subsets(("x", "y"))] == [("x",), ("y",)]
    assert fixed_subsets(("x",)) == []


def test_standard_conditions_list():
    got = standard_conditions(("l", "a"), [0.1, 0.5], [0.3])
    assert got == [Condition("complete"), Condition("fixed", keep=("l",)), Condition("fixed", keep=("a",)),
                   Condition("random", rate=0.1), Condition("random", rate=0.5), Condition("frames", rate=0.3)]
    assert [c.name for c in got] == ["complete", "fixed:l", "fixed:a", "random:0.1", "random:0.5", "frames:0.3"]
    assert standard_conditions(("l", "a"), []) == [Condition("complete"), Condition("fixed", keep=("l",)),
                                                    Condition("fixed", keep=("a",))]


def test_fixed_mask_keeps_the_named_available_modalities():
    avail = _avail()
    got = fixed_mask(avail, ("l", "v"), MODS)
    want = avail.clone()
    want[..., 1] = False
    assert got.dtype == torch.bool and torch.equal(got, want)
    assert torch.equal(fixed_mask(avail, ("a",), MODS), avail & torch.tensor([False, True, False]))


def test_fixed_mask_names_every_unknown_modality_sorted():
    with pytest.raises(CorekdError, match=r"^condition keeps \['x', 'y'\], but the corpus has only \['l', 'a', 'v'\]$"):
        fixed_mask(_avail(), ("y", "l", "x"), MODS)


# ---------------------------------------------------------------- condition_mask / split_condition_mask
def test_condition_mask_per_kind():
    avail = _avail()
    for cond in (Condition("complete"), Condition("frames", rate=0.5)):
        got = condition_mask(cond, avail, MODS)
        assert torch.equal(got, avail) and got is not avail
    assert torch.equal(condition_mask(Condition("fixed", keep=("a",)), avail, MODS), fixed_mask(avail, ("a",), MODS))
    assert torch.equal(condition_mask(Condition("random", rate=0.5), avail, MODS, _gen(4)),
                       _calibrated_by_hand(avail, [[0.5] * 4] * 2, 4))
    assert torch.equal(condition_mask(Condition("random", rate=0.5), avail, MODS, _gen(4), "redraw"),
                       _redraw_by_hand(avail, 0.5, 4))
    with pytest.raises(ValueError, match=r"^a random condition needs a generator$"):
        condition_mask(Condition("random", rate=0.5), avail, MODS)


def test_split_condition_mask_draws_from_seed_split_condition_and_scheme():
    avail = torch.rand(8, 6, 3, generator=_gen(1)) < 0.8
    cond = Condition("random", rate=0.4)
    got = split_condition_mask(cond, avail, MODS, 3, "test")
    seed = derive_seed("eval-mask", 3, "test", "random:0.4", "calibrated")
    assert torch.equal(got, _calibrated_by_hand(avail, [[0.4] * 6] * 8, seed))
    got = split_condition_mask(cond, avail, MODS, 3, "dev", "redraw")
    assert torch.equal(got, _redraw_by_hand(avail, 0.4, derive_seed("eval-mask", 3, "dev", "random:0.4", "redraw")))
    assert torch.equal(split_condition_mask(Condition("fixed", keep=("l",)), avail, MODS, 0, "dev"),
                       fixed_mask(avail, ("l",), MODS))


# ---------------------------------------------------------------- training masks
def test_training_rate_masks_draw_one_rate_per_batch_then_the_mask():
    avail = _avail()
    g = _gen(6)
    u = float(torch.rand((), generator=g, dtype=torch.float64))
    rate = 0.2 + (0.6 - 0.2) * u
    # the mask's draws follow the rate's on the same generator: replay them
    g2 = _gen(6)
    torch.rand((), generator=g2, dtype=torch.float64)
    want = random_mask(avail, torch.tensor(rate, dtype=torch.float64), g2)
    assert torch.equal(training_rate_masks(avail, 0.2, 0.6, _gen(6)), want)
    assert torch.equal(TrainingMissing(low=0.2, high=0.6).masks(avail, _gen(6)), want)


def test_training_rate_masks_per_row_and_scheme():
    avail = torch.ones(5, 30, 3, dtype=torch.bool)
    g = _gen(8)
    rates = 0.1 + (0.5 - 0.1) * torch.rand((5, 1), generator=g, dtype=torch.float64)
    want = random_mask(avail, rates, g, "redraw")
    assert torch.equal(training_rate_masks(avail, 0.1, 0.5, _gen(8), "redraw", per="row"), want)
    assert torch.equal(TrainingMissing(low=0.1, high=0.5, scheme="redraw").masks(avail, _gen(8), per="row"), want)
    g = _gen(8)
    rates = 0.1 + (0.5 - 0.1) * torch.rand((5, 1), generator=g, dtype=torch.float64)
    cal = random_mask(avail, rates, g)
    assert torch.equal(training_rate_masks(avail, 0.1, 0.5, _gen(8), per="row"), cal)


def test_a_fixed_training_rate_is_that_rate():
    avail = _avail()
    g = _gen(2)
    torch.rand((), generator=g, dtype=torch.float64)  # the rate's draw, then the mask's
    want = random_mask(avail, 0.3, g)
    assert torch.equal(TrainingMissing(low=0.3, high=0.3).masks(avail, _gen(2)), want)


# ---------------------------------------------------------------- missing_rate
def test_missing_rate_counts_hidden_available_entries():
    avail = _avail()  # 16 available entries
    mask = avail.clone()
    mask[0, 0] = False  # hides 3
    mask[1, 3, 0] = False  # hides 1
    assert missing_rate(mask, avail) == pytest.approx(4 / 16)
    assert missing_rate(mask, torch.zeros_like(avail)) == 0.0
    assert missing_rate(avail, avail) == 0.0
    assert math.isclose(missing_rate(torch.zeros_like(avail), avail), 1.0)
