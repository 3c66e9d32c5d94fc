"""Issue 32's missingness conditions (imbalanced:r1,r2,.., burst:p, features:p) and frames:1.0 (issue 31): names,
refusals, hand-computed mask cases, realised rates over many draws, determinism, training schemes."""

from __future__ import annotations

import re

import pytest
import torch
from pydantic import ValidationError

from corekd.config import EvaluationConfig
from corekd.data.batching import Batch
from corekd.data.protocols import (
    Condition,
    TrainingMissing,
    burst_mask,
    check_burst,
    feature_keep_masks,
    feature_missing_rate,
    frame_keep_masks,
    frames_mask,
    imbalanced_mask,
    independent_frame_keep,
    keep_one_sequence,
    missing_rate_by_modality,
    split_condition_mask,
    split_feature_keep,
    standard_conditions,
)
from corekd.errors import CorekdError
from corekd.seeding import torch_generator

MODS = ("l", "a", "v")


# ---------------------------------------------------------------- names and refusals
@pytest.mark.parametrize(
    "name, kind",
    [
        ("imbalanced:0.1,0.6,0.3", "imbalanced"),
        ("burst:0.3", "burst"),
        ("features:0.5", "features"),
        ("frames:1.0", "frames"),
        ("imbalanced:0.0,0.0,0.5", "imbalanced"),
        ("burst:0.0", "burst"),
    ],
)
def test_new_names_parse_and_round_trip(name, kind):
    c = Condition.parse(name)
    assert c.kind == kind and c.name == name and Condition.parse(c.name) == c


def test_imbalanced_rates_are_kept_in_corpus_order():
    assert Condition.parse("imbalanced:0.1,0.6,0.3").rates == (0.1, 0.6, 0.3)
    assert Condition.parse("imbalanced:0.25,0.5", ("l", "a")).name == "imbalanced:0.25,0.5"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("imbalanced:0.1,0.2", r"expected imbalanced:<3 rates in \[0, 1\), one per modality lav"),
        ("imbalanced:0.1,0.2,0.3,0.4", "expected imbalanced:<3 rates"),
        ("imbalanced:0.1,x,0.3", "expected imbalanced:<3 rates"),
        ("imbalanced:0.1,1.0,0.3", "expected imbalanced:<3 rates"),
        ("imbalanced:", "expected imbalanced:<3 rates"),
        ("burst:1.5", r"expected burst:<rate in \[0, 1\)>"),
        ("burst:1.0", r"expected burst:<rate in \[0, 1\)>"),
        ("burst:abc", r"expected burst:<rate in \[0, 1\)>"),
        ("features:-0.1", r"expected features:<rate in \[0, 1\)>"),
        ("frames:1.01", r"expected frames:<rate in \[0, 1\]>"),
    ],
)
def test_malformed_new_names_are_refused_in_one_line(name, expected):
    with pytest.raises(CorekdError, match=expected) as err:
        Condition.parse(name)
    assert "\n" not in str(err.value)


def test_standard_conditions_lists_the_new_kinds_after_the_old_ones():
    got = [c.name for c in standard_conditions(MODS, [0.5], [], [[0.6, 0.15, 0.15]], [0.3], [0.5])]
    assert got[-4:] == ["random:0.5", "imbalanced:0.6,0.15,0.15", "burst:0.3", "features:0.5"]
    assert standard_conditions(MODS, [0.5]) == standard_conditions(MODS, [0.5], [], [], [], [])  # defaults: nothing


@pytest.mark.parametrize(
    "fields, where",
    [
        ({"burst_rates": [1.5]}, "outside [0, 1)"),
        ({"burst_rates": [0.9]}, "at most L/(L+1) = 0.800"),
        ({"burst_rates": [0.6], "burst_length": 1}, "at most L/(L+1) = 0.500"),
        ({"imbalanced_rates": [[0.1, 1.2, 0.1]]}, "outside [0, 1)"),
        ({"imbalanced_rates": [[]]}, "is empty"),
        ({"imbalanced_rates": [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]]}, "must not repeat"),
        ({"feature_rates": [1.0]}, "outside [0, 1)"),
        ({"frame_rates": [1.1]}, "outside [0, 1]"),
        ({"burst_length": 0.5}, "greater than or equal to 1"),
    ],
)
def test_evaluation_config_refuses_bad_rates(fields, where):
    with pytest.raises(ValidationError, match=re.escape(where)):
        EvaluationConfig(**fields)


def test_evaluation_config_defaults_add_no_condition():
    ev = EvaluationConfig()
    assert ev.imbalanced_rates == [] and ev.burst_rates == [] and ev.feature_rates == [] and ev.burst_length == 4.0
    assert EvaluationConfig(frame_rates=[0.5, 1.0]).frame_rates == [0.5, 1.0]


# ---------------------------------------------------------------- imbalanced
def test_imbalanced_mask_by_hand():
    """Rates (0, 0.99999, 0): l and v are never dropped, a almost always; a missing entry stays missing."""
    avail = torch.tensor([[True, True, True], [True, False, True]])
    got = imbalanced_mask(avail, [0.0, 0.99999, 0.0], torch_generator("t", 0))
    assert got.tolist() == [[True, False, True], [True, False, True]]


def test_imbalanced_cap_keeps_one_in_proportion_to_the_keep_probability():
    """Rates (0.9, 0.9, 0.8) on utterances with l and v available: P(empty) = 0.9 * 0.8 = 0.72; the rescue picks l
    with probability 0.1 / (0.1 + 0.2) = 1/3, v with 2/3. Realised missing rate of l = 0.9 - 0.72 / 3 = 0.66,
    of v = 0.8 - 0.72 * 2 / 3 = 0.32; a (not available) is never kept."""
    avail = torch.tensor([True, False, True]).expand(100_000, 3)
    mask = imbalanced_mask(avail, [0.9, 0.9, 0.8], torch_generator("t", 1))
    assert mask.any(-1).all() and not mask[:, 1].any()
    rates = missing_rate_by_modality(mask, avail, MODS)
    assert rates["l"] == pytest.approx(0.66, abs=0.005) and rates["v"] == pytest.approx(0.32, abs=0.005)


def test_imbalanced_realised_rates_match_the_formula():
    """r = (0.6, 0.15, 0.15): prod = 0.0135, sum of keep probabilities 2.1; realised l = 0.6 - 0.0135 * 0.4 / 2.1 =
    0.59743, a = v = 0.15 - 0.0135 * 0.85 / 2.1 = 0.14454."""
    avail = torch.ones(200_000, 3, dtype=torch.bool)
    mask = imbalanced_mask(avail, [0.6, 0.15, 0.15], torch_generator("t", 2))
    rates = missing_rate_by_modality(mask, avail, MODS)
    assert rates["l"] == pytest.approx(0.59743, abs=0.004)
    assert rates["a"] == pytest.approx(0.14454, abs=0.003) and rates["v"] == pytest.approx(0.14454, abs=0.003)


def test_imbalanced_refuses_rates_outside_zero_one():
    with pytest.raises(CorekdError, match=r"missing rates must lie in \[0, 1\)"):
        imbalanced_mask(torch.ones(2, 3, dtype=torch.bool), [0.1, 1.0, 0.1], torch_generator("t"))


def test_imbalanced_condition_with_the_wrong_arity_is_refused_on_the_corpus():
    with pytest.raises(CorekdError, match="gives 2 rates; the corpus has 3 modalities"):
        split_condition_mask(
            Condition("imbalanced", rates=(0.1, 0.2)), torch.ones(2, 4, 3, dtype=torch.bool), MODS, 0, "test"
        )


# ---------------------------------------------------------------- burst
def test_check_burst_bounds():
    """P(observed -> missing) = p / (L (1 - p)): L = 4, p = 0.8 gives exactly 1 (allowed), p = 0.81 above 1."""
    assert check_burst(0.8, 4) is None and check_burst(0.5, 1) is None
    assert "at most L/(L+1) = 0.800" in check_burst(0.81, 4)
    assert "below 1 utterance" in check_burst(0.1, 0.5)


def _single_modality_chain(rate: float, length: float, n: int, u: int, seed: int = 0) -> torch.Tensor:
    """Missing states [n, u] of n chains over u utterances: a second modality at rate 0 is always observed, so the
    keep-one cap never touches the tracked chain."""
    avail = torch.ones(n, u, 2, dtype=torch.bool)
    rates = torch.tensor([rate, 0.0])  # the second modality never goes missing: no utterance is ever emptied
    mask = burst_mask(avail, rates, length, torch_generator("burst", seed))
    return ~mask[..., 0]  # [n, u] True = missing


def test_burst_transition_probabilities_and_stationary_rate():
    """p = 0.3, L = 4: P(m -> m) = 0.75, P(o -> m) = 0.3 / (4 * 0.7) = 0.10714; every position missing w.p. 0.3."""
    missing = _single_modality_chain(0.3, 4.0, 4000, 40)
    prev, nxt = missing[:, :-1], missing[:, 1:]
    stay = (prev & nxt).sum() / prev.sum()
    enter = (~prev & nxt).sum() / (~prev).sum()
    assert float(stay) == pytest.approx(0.75, abs=0.01)
    assert float(enter) == pytest.approx(0.3 / 2.8, abs=0.005)
    assert float(missing[:, 0].float().mean()) == pytest.approx(0.3, abs=0.02)  # stationary first state
    assert float(missing.float().mean()) == pytest.approx(0.3, abs=0.01)


def test_burst_runs_have_mean_length_l():
    missing = _single_modality_chain(0.5, 4.0, 3000, 60, seed=1)
    starts = (missing[:, 1:] & ~missing[:, :-1]).sum()  # runs that start after the first utterance
    ends = (~missing[:, 1:] & missing[:, :-1]).sum()
    inside = (missing[:, 1:] & missing[:, :-1]).sum()
    # each missing -> next step ends the run with probability 1/L: mean run length L = (stays + ends) / ends
    assert float((inside + ends) / ends) == pytest.approx(4.0, rel=0.05)
    assert int(starts) > 0


def test_burst_keeps_one_modality_and_realises_p_minus_p_k_over_k():
    """Three available modalities at p = 0.5: all three in a run w.p. 0.125, then one is kept uniformly, so the
    realised rate is 0.5 - 0.125 / 3 = 0.45833."""
    avail = torch.ones(3000, 30, 3, dtype=torch.bool)
    mask = burst_mask(avail, 0.5, 4.0, torch_generator("b", 2))
    assert mask.any(-1).all()
    assert float((~mask).float().mean()) == pytest.approx(0.5 - 0.125 / 3, abs=0.01)


def test_burst_rate_zero_drops_nothing_and_padding_stays_off():
    avail = torch.ones(2, 5, 3, dtype=torch.bool)
    avail[1, 3:] = False  # padding
    assert torch.equal(burst_mask(avail, 0.0, 4.0, torch_generator("b")), avail)


def test_burst_mask_refuses_impossible_rates():
    avail = torch.ones(2, 5, 3, dtype=torch.bool)
    with pytest.raises(CorekdError, match="at most L/"):
        burst_mask(avail, 0.9, 4.0, torch_generator("b"))
    with pytest.raises(CorekdError, match=r"must lie in \[0, 1\)"):
        burst_mask(avail, 1.0, 4.0, torch_generator("b"))


def test_burst_outages_last_longer_than_random_drops():
    """Same stationary rate, run length 4 vs 1 utterance: the mean run of the chain with L = 4 is about 4x."""
    long_runs = _single_modality_chain(0.3, 4.0, 500, 40, seed=3)
    short_runs = _single_modality_chain(0.3, 1.0 / (1 - 0.3), 500, 40, seed=3)  # L = 1/(1-p): independent draws

    def mean_run(m):
        ends = (m[:, :-1] & ~m[:, 1:]).sum()
        return float(((m[:, :-1] & m[:, 1:]).sum() + ends) / ends)

    assert mean_run(long_runs) > 2 * mean_run(short_runs)  # about 4 vs 1 / (1 - 0.3) = 1.43


# ---------------------------------------------------------------- determinism: every method sees the same masks
@pytest.mark.parametrize("name", ["imbalanced:0.6,0.15,0.15", "burst:0.3"])
def test_masks_are_a_function_of_seed_split_and_name(name):
    avail = torch.ones(6, 12, 3, dtype=torch.bool)
    c = Condition.parse(name)
    first = split_condition_mask(c, avail, MODS, 0, "test")
    assert torch.equal(first, split_condition_mask(c, avail, MODS, 0, "test"))  # a second method: the same
    assert torch.equal(first, split_condition_mask(c, avail, MODS, 0, "test", "redraw"))  # no scheme dependence
    assert not torch.equal(first, split_condition_mask(c, avail, MODS, 1, "test"))
    assert not torch.equal(first, split_condition_mask(c, avail, MODS, 0, "dev"))


def test_burst_mask_depends_on_the_run_length():
    avail = torch.ones(6, 12, 3, dtype=torch.bool)
    c = Condition.parse("burst:0.3")
    assert not torch.equal(
        split_condition_mask(c, avail, MODS, 0, "test", burst_length=4.0),
        split_condition_mask(c, avail, MODS, 0, "test", burst_length=2.0),
    )


# ---------------------------------------------------------------- features
@pytest.mark.parametrize("rate, d, dropped", [(0.3, 10, 3), (0.5, 10, 5), (0.25, 6, 2), (0.0, 7, 0), (0.33, 3, 1)])
def test_feature_keep_masks_zero_exactly_round_p_d_dims_per_row(rate, d, dropped):
    keep = feature_keep_masks({"l": torch.zeros(4, 5, d)}, rate, torch_generator("f", 0))["l"]
    assert keep.shape == (4, 5, d)
    assert ((~keep).sum(-1) == dropped).all()  # round(0.25 * 6) = round(1.5) = 2 (banker's rounding)


def test_feature_keep_masks_draw_other_dims_per_row_and_are_seeded():
    a = split_feature_keep(Condition.parse("features:0.5"), {"l": torch.zeros(30, 4, 8)}, 0, "test")["l"]
    assert torch.equal(
        a, split_feature_keep(Condition.parse("features:0.5"), {"l": torch.zeros(30, 4, 8)}, 0, "test")["l"]
    )
    assert len({tuple(r.tolist()) for r in a.reshape(-1, 8)}) > 10
    b = split_feature_keep(Condition.parse("features:0.5"), {"l": torch.zeros(30, 4, 8)}, 0, "dev")["l"]
    assert not torch.equal(a, b)


def test_feature_missing_rate_by_hand():
    keep = {"l": torch.tensor([[[True, False, False, True], [False, False, False, False]]])}  # [1, 2, 4]
    observed = {"l": torch.tensor([[True, False]])}  # the second utterance is not observed: not counted
    assert feature_missing_rate(keep, observed) == pytest.approx(2 / 4)


def _vector_batch() -> Batch:
    x = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])  # [1, 2, 3]
    mask = torch.tensor([[[True], [False]]])
    return Batch(
        features={"l": x * mask.float()},
        mask=mask,
        avail=torch.ones(1, 2, 1, dtype=torch.bool),
        speakers=torch.zeros(1, 2, dtype=torch.long),
        labels=torch.zeros(1, 2, dtype=torch.long),
        utt_mask=torch.ones(1, 2, dtype=torch.bool),
        modalities=("l",),
        index=torch.tensor([0]),
    )


def test_hide_features_fills_hidden_dims_and_leaves_unobserved_entries_zero():
    keep = {"l": torch.tensor([[[True, False, True], [False, False, False]]])}
    got = _vector_batch().hide_features(keep, {"l": torch.tensor([10.0, 20.0, 30.0])})
    assert got.features["l"].tolist() == [[[1.0, 20.0, 3.0], [0.0, 0.0, 0.0]]]
    assert _vector_batch().hide_features(keep).features["l"].tolist() == [[[1.0, 0.0, 3.0], [0.0, 0.0, 0.0]]]


# ---------------------------------------------------------------- frames:1.0
def test_frame_rate_one_drops_every_frame_and_turns_the_modality_off():
    present = {"a": torch.tensor([[[True, True, False], [True, False, False], [False, False, False]]])}  # [1, 3, 3]
    keep = frame_keep_masks(present, 1.0, torch_generator("f"))
    assert not keep["a"].any()
    mask = torch.tensor([[[True, True], [True, True], [True, False]]])  # modalities (l, a); a missing at utterance 3
    got = frames_mask(mask, keep, present, ("l", "a"))
    assert got.tolist() == [[[True, False], [True, False], [True, False]]]  # l, a vector here, stays


def test_frame_rates_below_one_keep_the_modality_on():
    present = {"a": torch.ones(50, 4, 5, dtype=torch.bool)}
    keep = frame_keep_masks(present, 0.99, torch_generator("f"))
    mask = torch.ones(50, 4, 2, dtype=torch.bool)
    assert keep["a"].any(-1).all() and torch.equal(frames_mask(mask, keep, present, ("l", "a")), mask)


# ---------------------------------------------------------------- training
def test_training_missing_defaults_are_the_old_ones():
    t = TrainingMissing()
    assert (t.low, t.high, t.scheme, t.rates, t.burst_length) == (0.0, 0.7, "calibrated", None, 4.0)


def test_training_missing_per_modality_rates():
    t = TrainingMissing(rates=[0.0, 0.99999, 0.0])
    mask = t.masks(torch.ones(3, 4, 3, dtype=torch.bool), torch_generator("t"))
    assert mask[..., 0].all() and mask[..., 2].all() and not mask[..., 1].any()
    with pytest.raises(CorekdError, match="gives 3 rates; the corpus has 2 modalities"):
        t.masks(torch.ones(3, 4, 2, dtype=torch.bool), torch_generator("t"))


def test_training_missing_burst_scheme_draws_runs():
    t = TrainingMissing(scheme="burst", low=0.5, high=0.5, burst_length=6)
    avail = torch.ones(400, 40, 3, dtype=torch.bool)
    mask = t.masks(avail, torch_generator("t"), per="row")
    assert mask.any(-1).all()
    assert float((~mask).float().mean()) == pytest.approx(0.5 - 0.125 / 3, abs=0.02)
    m = ~mask[..., 0]
    ends = (m[:, :-1] & ~m[:, 1:]).sum()
    assert float(((m[:, :-1] & m[:, 1:]).sum() + ends) / ends) > 4  # long runs (6 before the cap)


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"scheme": "burst", "high": 0.7, "burst_length": 2}, "scheme burst: burst rate 0.7"),
        ({"rates": [0.1, 1.0]}, r"rates: missing rate 1.0 is outside \[0, 1\)"),
        ({"scheme": "sometimes"}, "scheme"),
    ],
)
def test_training_missing_refusals(fields, match):
    with pytest.raises(ValidationError, match=match):
        TrainingMissing(**fields)


# ---------------------------------------------------------------- frame_scheme: independent
def test_independent_frames_realise_p_for_every_length_and_may_lose_a_whole_sequence():
    """n = 2 frames at p = 0.7: keep_one drops 1 of 2 (0.5); independent drops 0.7 in expectation and loses both
    frames with probability 0.49."""
    present = {"a": torch.ones(40_000, 2, dtype=torch.bool)}
    keep = independent_frame_keep(present, 0.7, torch_generator("i", 0))["a"]
    assert float((~keep).float().mean()) == pytest.approx(0.7, abs=0.01)
    assert float((~keep.any(-1)).float().mean()) == pytest.approx(0.49, abs=0.01)
    assert not independent_frame_keep(present, 1.0, torch_generator("i", 0))["a"].any()


def test_keep_one_sequence_gives_an_emptied_utterance_one_frame_back():
    """Utterance 1: both sequences lost every frame and nothing else is observed: one frame of one of them returns.
    Utterance 2: the vector l is observed: nothing returns."""
    present = {"a": torch.tensor([[[True, True], [True, False]]]), "v": torch.tensor([[[True, False], [True, True]]])}
    keep = {m: torch.zeros_like(p) for m, p in present.items()}
    avail = torch.ones(1, 2, 3, dtype=torch.bool)
    mask = frames_mask(torch.tensor([[[False, True, True], [True, True, True]]]), keep, present, MODS)
    assert mask.tolist() == [[[False, False, False], [True, False, False]]]
    mask2, keep2 = keep_one_sequence(mask, keep, present, avail, MODS, torch_generator("k", 0))
    assert int(mask2[0, 0].sum()) == 1 and mask2[0, 1].tolist() == [True, False, False]
    back = [m for m in ("a", "v") if keep2[m][0, 0].any()]
    assert len(back) == 1 and int(keep2[back[0]][0, 0].sum()) == 1
    assert mask2[0, 0, MODS.index(back[0])] and not keep2["a"][0, 1].any() and not keep2["v"][0, 1].any()
