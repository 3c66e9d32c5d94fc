"""Missing-modality protocols: realised rates, at least one modality kept, seeded and shared masks."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from corekd.data.protocols import (
    Condition,
    TrainingMissing,
    condition_mask,
    fixed_mask,
    fixed_subsets,
    frame_keep_masks,
    frame_missing_rate,
    missing_rate,
    random_mask,
    split_condition_mask,
    split_frame_keep,
    standard_conditions,
    training_rate_masks,
)
from corekd.errors import CorekdError
from corekd.seeding import derive_seed, torch_generator

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
        "complete",
        "fixed:l",
        "fixed:a",
        "fixed:v",
        "fixed:la",
        "fixed:lv",
        "fixed:av",
        "random:0.0",
        "random:0.1",
        "random:0.2",
        "random:0.3",
        "random:0.4",
        "random:0.5",
        "random:0.6",
        "random:0.7",
    ]
    for name in names:
        assert Condition.parse(name).name == name


@pytest.mark.parametrize(
    "bad", ["fixed:", "fixed:lx", "fixed:ll", "random:1.0", "random:-0.1", "random:abc", "dropped"]
)
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


def _gen(seed=0):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _avail():
    """[2, 4, 3]: full rows, one- and two-modality rows and an all-missing (padding) row."""
    rows = [[[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 0]], [[1, 1, 0], [1, 1, 1], [0, 1, 1], [1, 1, 1]]]
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
    assert [c.name for c in fixed_subsets(MODS)] == [
        "fixed:l",
        "fixed:a",
        "fixed:v",
        "fixed:la",
        "fixed:lv",
        "fixed:av",
    ]
    assert fixed_subsets(MODS)[3] == Condition("fixed", keep=("l", "a"))
    assert [c.keep for c in fixed_subsets(("x", "y"))] == [("x",), ("y",)]
    assert fixed_subsets(("x",)) == []


def test_standard_conditions_list():
    got = standard_conditions(("l", "a"), [0.1, 0.5], [0.3])
    assert got == [
        Condition("complete"),
        Condition("fixed", keep=("l",)),
        Condition("fixed", keep=("a",)),
        Condition("random", rate=0.1),
        Condition("random", rate=0.5),
        Condition("frames", rate=0.3),
    ]
    assert [c.name for c in got] == ["complete", "fixed:l", "fixed:a", "random:0.1", "random:0.5", "frames:0.3"]
    assert standard_conditions(("l", "a"), []) == [
        Condition("complete"),
        Condition("fixed", keep=("l",)),
        Condition("fixed", keep=("a",)),
    ]


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
    assert torch.equal(
        condition_mask(Condition("random", rate=0.5), avail, MODS, _gen(4)),
        _calibrated_by_hand(avail, [[0.5] * 4] * 2, 4),
    )
    assert torch.equal(
        condition_mask(Condition("random", rate=0.5), avail, MODS, _gen(4), "redraw"), _redraw_by_hand(avail, 0.5, 4)
    )
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
    assert torch.equal(
        split_condition_mask(Condition("fixed", keep=("l",)), avail, MODS, 0, "dev"), fixed_mask(avail, ("l",), MODS)
    )


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


def _present(lengths, width):
    """m -> [..., F] bool: the first ``lengths`` frames of each utterance are there."""
    return {"a": torch.arange(width) < torch.as_tensor(lengths)[..., None]}


def test_rate_zero_keeps_every_present_frame():
    """A rate of 0 is valid and drops nothing. Kills protocols.frame_keep_masks `rate_t <= 0`."""
    present = _present([[3, 0, 1], [5, 2, 4]], 5)
    keep = frame_keep_masks(present, 0.0, torch_generator("t", 0))
    assert torch.equal(keep["a"], present["a"])
    assert frame_missing_rate(keep, present) == 0.0


@pytest.mark.parametrize("rate", [1.0001, 1.5, -0.1])
def test_rates_outside_zero_one_are_refused(rate):
    """Kills protocols.frame_keep_masks `bool(None)`, `(rate_t < 0) & (...)`, `rate_t >= 2`;
    frame_keep_masks `CorekdError(None)`. Rate 1 is valid: every frame dropped (issue 31)."""
    with pytest.raises(CorekdError, match=r"frame missing rate must lie in \[0, 1\]"):
        frame_keep_masks(_present([[3]], 3), rate, torch_generator("t", 0))


def test_per_row_rates_are_checked_too():
    rates = torch.tensor([0.2, 1.5])  # one rate per row; the second is out of range
    with pytest.raises(CorekdError, match="frame missing rate"):
        frame_keep_masks(_present([[3, 2], [4, 1]], 4), rates, torch_generator("t", 0))


def test_a_rate_just_below_one_is_valid_and_keeps_one_frame_per_utterance():
    """1 - 1e-9 lies in [0, 1) (it rounds to 1.0 only in float32). Kills protocols.frame_keep_masks
    `torch.as_tensor(rate, dtype=None)` and `torch.as_tensor(rate, )`."""
    present = _present([[4, 1, 0, 6]], 6)
    keep = frame_keep_masks(present, 1 - 1e-9, torch_generator("t", 0))["a"]
    assert keep.sum(-1).tolist() == [[1, 1, 0, 1]]  # the guaranteed frame only
    assert not (keep & ~present["a"]).any()


def test_two_frame_utterances_drop_the_rate():
    """n = 2 frames: one is guaranteed; the other is kept with q = (2 (1 - p) - 1) / (2 - 1) = 1 - 2p, so the share
    dropped is (1 - q) / 2 = p (0.2 -> 0.2). With the divisor clamped at 2 instead of 1, q = (1 - 2p) / 2 and the
    share is (1 + 2p) / 4 = 0.35. Kills protocols.frame_keep_masks `(n - 1).clamp(min=2)`."""
    present = _present(torch.full((4000,), 2), 2)
    keep = frame_keep_masks(present, 0.2, torch_generator("t", 0))
    assert keep["a"].any(-1).all()
    assert frame_missing_rate(keep, present) == pytest.approx(0.2, abs=0.02)


def test_split_frame_keep_only_for_frames_conditions():
    """Kills protocols.split_frame_keep `ValueError(None)`."""
    with pytest.raises(ValueError, match="condition complete drops no frames"):
        split_frame_keep(Condition("complete"), _present([[2]], 2), 0, "test")


def test_split_frame_keep_depends_on_the_split():
    """Dev and test frame masks are drawn from their own streams: two splits of the same shape do not get the same
    masks (the docstring: a function of seed, split and condition). Kills protocols.split_frame_keep
    `torch_generator("eval-frames", mask_seed, None, condition.name)` and `torch_generator("eval-frames", mask_seed,
    condition.name)`."""
    present = _present(torch.randint(2, 9, (20, 6), generator=torch.Generator().manual_seed(3)), 8)
    c = Condition.parse("frames:0.5")
    dev, test = split_frame_keep(c, present, 0, "dev")["a"], split_frame_keep(c, present, 0, "test")["a"]
    assert torch.equal(test, split_frame_keep(c, present, 0, "test")["a"])
    assert not torch.equal(dev, test)


def test_frame_missing_rate_without_frames_is_zero():
    """Nothing there, nothing dropped: 0, not a division by zero. Kills protocols.frame_missing_rate `if (total) or
    True` and `else 1.0`."""
    assert frame_missing_rate({}, {}) == 0.0
    empty = {"a": torch.zeros(2, 3, 4, dtype=torch.bool)}
    assert frame_missing_rate(empty, empty) == 0.0


def test_frame_missing_rate_by_hand():
    present = {"a": torch.tensor([[True, True, True, False]]), "b": torch.tensor([[True, False, False, False]])}
    keep = {"a": torch.tensor([[True, False, False, True]]), "b": torch.tensor([[True, False, False, False]])}
    assert frame_missing_rate(keep, present) == pytest.approx(2 / 4)  # 2 of the 4 present frames are dropped


# ---------------------------------------------------------------- rate checks, calibration, redraw, empty splits
@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, torch.tensor([0.2, 1.0])])
def test_random_mask_checks_its_own_rate_range(rate):
    """Kills protocols.random_mask `bool(None)`, `&` for `|`, `rate_t > 1` and `rate_t >= 2`
    (-0.1 kills `bool(None)` and `&`; 1.0 all four; 1.5 `bool(None)`, `&` and `>= 2`)."""
    avail = torch.ones(2, 3, dtype=torch.bool)
    for scheme in ("calibrated", "redraw"):
        with pytest.raises(CorekdError, match=r"missing rate must lie in \[0, 1\)"):
            random_mask(avail, rate, torch_generator("range"), scheme)


@pytest.mark.parametrize("rate", [0.0, 0.999])
def test_random_mask_accepts_rates_in_range(rate):
    avail = torch.ones(2, 3, dtype=torch.bool)
    mask = random_mask(avail, rate, torch_generator("range"))
    assert mask.any(-1).all()


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_calibrated_rate_with_exactly_two_modalities(p):
    """Kills protocols.random_mask `(k - 1).clamp(min=2)`.

    With k = 2 available, one modality is always kept and the other is kept with probability
    q = (k(1-p) - 1) / (k - 1) = 1 - 2p, so the expected missing entries per utterance are
    1 - q = 2p out of 2: a missing rate of exactly p (0.3 -> 0.3). The mutant divides by 2
    instead of 1: q = (1 - 2p) / 2, a rate of (1 - q) / 2 = 1/4 + p/2 (0.3 -> 0.4).
    With 20,000 utterances the realised rate's standard deviation is below 0.0025.
    """
    avail = torch.zeros(20_000, 3, dtype=torch.bool)
    avail[:, 0] = avail[:, 2] = True  # l and v available, a absent
    mask = random_mask(avail, p, torch_generator("k2", p))
    assert not (mask & ~avail).any() and mask.any(-1).all()
    assert missing_rate(mask, avail) == pytest.approx(p, abs=0.01)
    assert abs(missing_rate(mask, avail) - (0.25 + p / 2)) > 0.05  # far from the mutant's rate


def test_training_masks_honour_the_redraw_scheme():
    """Kills protocols.training_rate_masks `random_mask(avail, rate, generator, )` (the scheme dropped: calibrated).

    A fixed rate (low = high = 0.5) makes the training mask the redraw mask drawn right after the
    rate draw. Redraw's realised rate at p = 0.5 with 3 modalities: the expected missing count given
    that not all three are dropped is (3 * 0.5 - 3 * 0.5**3) / (1 - 0.5**3) = 1.125 / 0.875 = 9/7,
    a rate of 3/7 = 0.4286; calibrated's is 0.5.
    """
    avail = torch.ones(20_000, 3, dtype=torch.bool)
    redraw = TrainingMissing(low=0.5, high=0.5, scheme="redraw").masks(avail, torch_generator("tm"))
    calibrated = TrainingMissing(low=0.5, high=0.5, scheme="calibrated").masks(avail, torch_generator("tm"))
    gen = torch_generator("tm")
    torch.rand((), generator=gen, dtype=torch.float64)  # the batch's rate draw
    assert torch.equal(redraw, random_mask(avail, 0.5, gen, "redraw"))
    assert not torch.equal(redraw, calibrated)
    assert missing_rate(redraw, avail) == pytest.approx(3 / 7, abs=0.01)
    assert missing_rate(calibrated, avail) == pytest.approx(0.5, abs=0.01)


def test_missing_rate_of_a_split_with_nothing_available_is_zero():
    """Kills protocols.missing_rate `if (total) or True` (division by zero) and `else 1.0`."""
    nothing = torch.zeros(2, 4, 3, dtype=torch.bool)
    assert missing_rate(nothing, nothing) == 0.0
    assert missing_rate(torch.ones(2, 4, 3, dtype=torch.bool), nothing) == 0.0
    avail = torch.tensor([[True, True, False], [True, False, False]])
    assert missing_rate(torch.tensor([[True, False, False], [False, False, False]]), avail) == 2 / 3


# ---------------------------------------------------------------- parsing and standard conditions
def test_parsed_conditions_are_the_conditions_they_name():
    assert Condition.parse("random:0.5") == Condition("random", rate=0.5)
    assert Condition.parse(" random:0.25 ") == Condition("random", rate=0.25)
    assert Condition.parse("fixed:av") == Condition("fixed", keep=("a", "v"))
    assert Condition.parse("complete") == Condition("complete")


@pytest.mark.parametrize(
    "name,message",
    [
        ("fixed:lx", r"bad condition 'fixed:lx': expected fixed:<one or more of lav>, e.g. fixed:la"),
        ("random:1.5", r"bad condition 'random:1.5': expected random:<rate in \[0, 1\)>, e.g. random:0.5"),
        ("random:0.5:1", r"bad condition 'random:0.5:1': expected random:<rate"),
        (
            "dropped:l",
            r"unknown condition 'dropped:l': expected complete, fixed:<modalities>, random:<rate>, frames:<rate>, "
            r"imbalanced:<rates>, burst:<rate> or features:<rate>",
        ),
    ],
)
def test_bad_condition_messages_say_what_was_expected(name, message):
    with pytest.raises(CorekdError, match=message):
        Condition.parse(name)


# ---------------------------------------------------------------- conditions and masks
def test_standard_conditions_are_real_conditions():
    conds = standard_conditions(("l", "a", "v"), [0.5])
    assert conds[0] == Condition("complete") and conds[-1] == Condition("random", rate=0.5)
    assert conds[1:7] == [
        Condition("fixed", keep=k) for k in (("l",), ("a",), ("v",), ("l", "a"), ("l", "v"), ("a", "v"))
    ]


def test_condition_mask_defaults_to_the_calibrated_scheme():
    avail = torch.ones(200, 10, 3, dtype=torch.bool)
    cond = Condition("random", rate=0.5)
    default = condition_mask(cond, avail, ("l", "a", "v"), torch_generator("d"))
    calibrated = condition_mask(cond, avail, ("l", "a", "v"), torch_generator("d"), "calibrated")
    assert torch.equal(default, calibrated)


def test_fixed_mask_names_the_unknown_modality():
    with pytest.raises(CorekdError, match=r"condition keeps \['x'\], but the corpus has only \['l', 'a', 'v'\]"):
        fixed_mask(torch.ones(1, 1, 3, dtype=torch.bool), ("x",), ("l", "a", "v"))


def test_complete_needs_no_generator_and_random_follows_the_scheme():
    avail = torch.rand(50, 8, 3, generator=torch_generator("avail")) < 0.8
    mods = ("l", "a", "v")
    assert torch.equal(condition_mask(Condition("complete"), avail, mods), avail)
    with pytest.raises(ValueError, match="a random condition needs a generator"):
        condition_mask(Condition("random", rate=0.5), avail, mods)
    cond = Condition("random", rate=0.5)
    for scheme in ("calibrated", "redraw"):
        want = random_mask(avail, 0.5, torch_generator("s"), scheme)
        assert torch.equal(condition_mask(cond, avail, mods, torch_generator("s"), scheme), want)
        name_seeded = split_condition_mask(cond, avail, mods, 0, "test", scheme)
        assert torch.equal(
            name_seeded, random_mask(avail, 0.5, torch_generator("eval-mask", 0, "test", cond.name, scheme), scheme)
        )


def test_evaluation_masks_of_other_splits_and_rates_come_from_their_own_streams():
    """Masks at two rates are not nested (one stream per condition), and dev and test masks differ."""
    avail = torch.ones(100, 10, 3, dtype=torch.bool)
    mods = ("l", "a", "v")
    low = split_condition_mask(Condition("random", rate=0.3), avail, mods, 0, "test")
    high = split_condition_mask(Condition("random", rate=0.5), avail, mods, 0, "test")
    assert (high & ~low).any()  # a shared stream would hide a superset of the entries at the higher rate
    dev = split_condition_mask(Condition("random", rate=0.3), avail, mods, 0, "dev")
    assert not torch.equal(dev, low)
