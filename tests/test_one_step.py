"""Every registered method: one training step (the real Trainer.step) lowers its loss on a fixed batch."""

import pytest
from helpers import loss_before_and_after_one_step

from corekd.methods import registered

# method -> the options of its one-step case ({} = defaults). A registered method missing here fails the
# meta-test below: a new method comes with its one-step case (one entry).
ONE_STEP_CASES = {
    "teacher": {},
    "no_kd": {},
    "vanilla_kd": {},
    "corekd": {},
    "corrkd": {},
    "contrastive_view": {},
    "decoupled": {},
    "reconstruction": {},
}


def test_every_registered_method_has_a_one_step_case():
    assert set(registered()) == set(ONE_STEP_CASES), "add the new method's one-step case to ONE_STEP_CASES"


@pytest.mark.parametrize("name", sorted(ONE_STEP_CASES))
def test_one_step_lowers_the_loss_on_a_fixed_batch(name, tiny_splits):
    before, after, _ = loss_before_and_after_one_step(name, tiny_splits, ONE_STEP_CASES[name])
    assert after < before, f"{name}: loss {before:.6f} -> {after:.6f} after one step"
