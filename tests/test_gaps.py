"""Follow-up tests for the mutation-testing survivors docs/testing.md listed as real gaps.

Each test names the mutant(s) it kills; every kill was checked by applying the mutant by hand.
"""

import numpy as np
import pytest
import torch

from corekd.config import TrainingConfig
from corekd.data.protocols import TrainingMissing, missing_rate, random_mask
from corekd.errors import CorekdError
from corekd.evaluation.metrics import classification_metrics
from corekd.methods import method_class
from corekd.models.model import ModelConfig
from corekd.seeding import torch_generator
from corekd.training import Trainer, init_model


# ---------------------------------------------------------------- training.py: seeded streams
def _dims(corpus):
    return {m: s.dim for m, s in corpus.modalities.items()}


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_initial_weights_depend_on_the_seed_and_role(tiny_corpus):
    """Kills training.py:70 `derive_seed("init", None, role)` and `derive_seed("init", role)`."""
    cfg, dims, n = ModelConfig(hidden=16, heads=2), _dims(tiny_corpus), len(tiny_corpus.labels)
    s0 = _weights(init_model(cfg, dims, n, 0, "student"))
    assert _same(s0, _weights(init_model(cfg, dims, n, 0, "student")))  # same (seed, role): same weights
    assert not _same(s0, _weights(init_model(cfg, dims, n, 1, "student")))  # another seed: other weights
    assert not _same(s0, _weights(init_model(cfg, dims, n, 0, "teacher")))  # another role: other weights


def _seeded_trainer(tiny_corpus, seed, name="no_kd", **options):
    model = init_model(ModelConfig(hidden=16, heads=2), _dims(tiny_corpus), len(tiny_corpus.labels), 0, "student")
    cls = method_class(name)
    return Trainer(cls(cls.Options(**options), TrainingMissing(low=0.3, high=0.6)), model,
                   TrainingConfig(batch_size=4), seed=seed, device=torch.device("cpu"))


def test_training_masks_depend_on_the_seed(tiny_corpus, tiny_splits):
    """Kills training.py:89 `torch_generator("train-mask", None)`: the first batch's training masks of the
    same student method differ between seeds, and are the same for the same seed."""
    batch = tiny_splits["train"].batch([0, 1, 2, 3])

    def first_mask(seed):
        trainer = _seeded_trainer(tiny_corpus, seed)
        return trainer.method.train_view(batch, trainer.mask_gen, trainer.method_gen).batch.mask

    m0 = first_mask(0)
    assert torch.equal(m0, first_mask(0))
    assert not torch.equal(m0, first_mask(1))


def test_method_draws_depend_on_the_seed(tiny_corpus, tiny_splits):
    """Kills training.py:90 `torch_generator("method", None, method.name)`: with the training masks held
    fixed, corekd's NCE conflict targets (drawn from the method stream) differ between seeds."""
    batch = tiny_splits["train"].batch([0, 1, 2, 3])

    def targets(seed):
        trainer = _seeded_trainer(tiny_corpus, seed, "corekd", l_kd=0.0, l_state=0.0, l_mstate=0.0,
                                  nce_prob=0.3)  # below the cap: the draw among the eligible is random
        view = trainer.method.train_view(batch, torch_generator("fixed masks"), trainer.method_gen)
        return view.extra["conflict"].selected

    t0 = targets(0)
    assert t0.any() and torch.equal(t0, targets(0))
    assert not torch.equal(t0, targets(1))


# ---------------------------------------------------------------- data/protocols.py
@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, torch.tensor([0.2, 1.0])])
def test_random_mask_checks_its_own_rate_range(rate):
    """Kills protocols.py:109 `bool(None)`, `&` for `|`, `rate_t > 1` and `rate_t >= 2`
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
    """Kills protocols.py:117 `(k - 1).clamp(min=2)`.

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
    """Kills protocols.py:172 `random_mask(avail, rate, generator, )` (the scheme dropped: calibrated).

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
    """Kills protocols.py:178 `if (total) or True` (division by zero) and `else 1.0`."""
    nothing = torch.zeros(2, 4, 3, dtype=torch.bool)
    assert missing_rate(nothing, nothing) == 0.0
    assert missing_rate(torch.ones(2, 4, 3, dtype=torch.bool), nothing) == 0.0
    avail = torch.tensor([[True, True, False], [True, False, False]])
    assert missing_rate(torch.tensor([[True, False, False], [False, False, False]]), avail) == 2 / 3


# ---------------------------------------------------------------- evaluation/metrics.py
def test_classes_never_predicted_or_never_true_score_zero():
    """Hand-computed scores with a present class never predicted (b) and a class predicted but never true (c).

    This pins the values; it does NOT kill metrics.py:21-23 `zero_division=1`: scikit-learn >= 1.4
    computes F1 as 2TP / (2TP + FP + FN), so zero_division only enters for a class with
    TP + FP + FN = 0 (absent from both truth and prediction), which weighs 0 in weighted F1 and is
    left out of macro F1 and UAR (those average over the classes present in the truth or the predictions, as
    scikit-learn's labels=None; the *_present pair over the truth's classes, whose recall always has TP + FN > 0). The mutants are equivalent on valid inputs.

    y_true = a a a b b, y_pred = a a c a a (d never occurs):
      a: TP 2, FP 2, FN 1 -> F1 = 4 / (4 + 2 + 1) = 4/7, recall 2/3
      b: TP 0, FP 0, FN 2 -> F1 = 0, recall 0 (precision 0 under zero_division=0)
      c: TP 0, FP 1, FN 0 -> F1 = 0
      d: TP 0, FP 0, FN 0 -> F1 = 0 (zero_division)
    weighted F1 = (3 * 4/7 + 2 * 0) / 5 = 12/35; macro F1 over {a, b, c} = 4/21; UAR = (2/3 + 0 + 0) / 3 = 2/9;
    over the truth's {a, b}: 2/7 and 1/3.
    """
    m = classification_metrics(np.array([0, 0, 0, 1, 1]), np.array([0, 0, 2, 0, 0]), ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(2 / 5)
    assert m["weighted_f1"] == pytest.approx(12 / 35)
    assert m["macro_f1"] == pytest.approx(4 / 21)
    assert m["uar"] == pytest.approx(2 / 9)
    assert m["macro_f1_present"] == pytest.approx(2 / 7)
    assert m["uar_present"] == pytest.approx(1 / 3)
    assert m["per_class_f1"] == pytest.approx({"a": 4 / 7, "b": 0.0, "c": 0.0, "d": 0.0})
