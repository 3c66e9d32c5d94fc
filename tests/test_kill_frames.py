"""Follow-up tests for mutation survivors in data/protocols.py's frame masks (``frames:p``).

Each test names the mutants it kills; every kill was checked by applying the mutant by hand.
"""

import pytest
import torch

from corekd.data.protocols import (
    Condition,
    frame_keep_masks,
    frame_missing_rate,
    split_frame_keep,
)
from corekd.errors import CorekdError
from corekd.seeding import torch_generator


def _present(lengths, width):
    """m -> [..., F] bool: the first ``lengths`` frames of each utterance are there."""
    return {"a": torch.arange(width) < torch.as_tensor(lengths)[..., None]}


def test_rate_zero_keeps_every_present_frame():
    """A rate of 0 is valid and drops nothing. Kills protocols.py:193 `rate_t <= 0`."""
    present = _present([[3, 0, 1], [5, 2, 4]], 5)
    keep = frame_keep_masks(present, 0.0, torch_generator("t", 0))
    assert torch.equal(keep["a"], present["a"])
    assert frame_missing_rate(keep, present) == 0.0


@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1])
def test_rates_outside_zero_one_are_refused(rate):
    """Kills protocols.py:193 `bool(None)`, `(rate_t < 0) & (...)`, `rate_t > 1`, `rate_t >= 2`; :194
    `CorekdError(None)`."""
    with pytest.raises(CorekdError, match=r"frame missing rate must lie in \[0, 1\)"):
        frame_keep_masks(_present([[3]], 3), rate, torch_generator("t", 0))


def test_per_row_rates_are_checked_too():
    rates = torch.tensor([0.2, 1.0])  # one rate per row; the second is out of range
    with pytest.raises(CorekdError, match="frame missing rate"):
        frame_keep_masks(_present([[3, 2], [4, 1]], 4), rates, torch_generator("t", 0))


def test_a_rate_just_below_one_is_valid_and_keeps_one_frame_per_utterance():
    """1 - 1e-9 lies in [0, 1) (it rounds to 1.0 only in float32). Kills protocols.py:192
    `torch.as_tensor(rate, dtype=None)` and `torch.as_tensor(rate, )`."""
    present = _present([[4, 1, 0, 6]], 6)
    keep = frame_keep_masks(present, 1 - 1e-9, torch_generator("t", 0))["a"]
    assert keep.sum(-1).tolist() == [[1, 1, 0, 1]]  # the guaranteed frame only
    assert not (keep & ~present["a"]).any()


def test_two_frame_utterances_drop_the_rate():
    """n = 2 frames: one is guaranteed; the other is kept with q = (2 (1 - p) - 1) / (2 - 1) = 1 - 2p, so the share
    dropped is (1 - q) / 2 = p (0.2 -> 0.2). With the divisor clamped at 2 instead of 1, q = (1 - 2p) / 2 and the
    share is (1 + 2p) / 4 = 0.35. Kills protocols.py:198 `(n - 1).clamp(min=2)`."""
    present = _present(torch.full((4000,), 2), 2)
    keep = frame_keep_masks(present, 0.2, torch_generator("t", 0))
    assert keep["a"].any(-1).all()
    assert frame_missing_rate(keep, present) == pytest.approx(0.2, abs=0.02)


def test_split_frame_keep_only_for_frames_conditions():
    """Kills protocols.py:210 `ValueError(None)`."""
    with pytest.raises(ValueError, match="condition complete drops no frames"):
        split_frame_keep(Condition("complete"), _present([[2]], 2), 0, "test")


def test_split_frame_keep_depends_on_the_split():
    """Dev and test frame masks are drawn from their own streams: two splits of the same shape do not get the same
    masks (the docstring: a function of seed, split and condition). Kills protocols.py:211
    `torch_generator("eval-frames", mask_seed, None, condition.name)` and `torch_generator("eval-frames", mask_seed,
    condition.name)`."""
    present = _present(torch.randint(2, 9, (20, 6), generator=torch.Generator().manual_seed(3)), 8)
    c = Condition.parse("frames:0.5")
    dev, test = split_frame_keep(c, present, 0, "dev")["a"], split_frame_keep(c, present, 0, "test")["a"]
    assert torch.equal(test, split_frame_keep(c, present, 0, "test")["a"])
    assert not torch.equal(dev, test)


def test_frame_missing_rate_without_frames_is_zero():
    """Nothing there, nothing dropped: 0, not a division by zero. Kills protocols.py:219 `if (total) or True` and
    `else 1.0`."""
    assert frame_missing_rate({}, {}) == 0.0
    empty = {"a": torch.zeros(2, 3, 4, dtype=torch.bool)}
    assert frame_missing_rate(empty, empty) == 0.0


def test_frame_missing_rate_by_hand():
    present = {"a": torch.tensor([[True, True, True, False]]), "b": torch.tensor([[True, False, False, False]])}
    keep = {"a": torch.tensor([[True, False, False, True]]), "b": torch.tensor([[True, False, False, False]])}
    assert frame_missing_rate(keep, present) == pytest.approx(2 / 4)  # 2 of the 4 present frames are dropped
