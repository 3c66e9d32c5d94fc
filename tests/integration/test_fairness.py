"""The fair-comparison guarantees and CoRe-KD's composition, pinned through public behaviour.

- ``CoReKD.loss`` on made-up outputs with a fixed conflict view, every term and the total worked
  out by hand (inline and separate NCE);
- ``evaluate_model`` with a recording model: every condition is scored under its own mask;
- ``corekd.experiments.run`` with a recording ``Trainer``: students of one seed start from the same
  weights, see the same batches and training masks, and are selected on the same masked dev
  views; the teacher trains and is selected on complete views.
"""

import math
from dataclasses import replace

import pytest
import torch

import corekd.experiments.unit as unit_mod
import corekd.training as training
from corekd.config import TrainingConfig, validate_config
from corekd.data.batching import Batch, SplitTensors
from corekd.data.protocols import (
    TrainingMissing,
    missing_rate,
    split_condition_mask,
    standard_conditions,
)
from corekd.data.synth import SynthConfig, generate
from corekd.evaluation.conditions import evaluate_model
from corekd.experiments import run
from corekd.methods import StepContext, TrainView, method_class
from corekd.methods.nce import ConflictView
from corekd.models.model import ModelConfig, Output
from corekd.seeding import torch_generator
from corekd.training import init_model
from helpers import TINY_SYNTH

LN3, LN4 = math.log(3.0), math.log(4.0)


# ---------------------------------------------------------------- CoRe-KD.loss by hand
def _softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def _kd(student, teacher, t):
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)) for one utterance, from first principles."""
    ps, pt = _softmax([v / t for v in student]), _softmax([v / t for v in teacher])
    return t * t * sum(q * math.log(q / p) for p, q in zip(ps, pt))


def _ce(logits, label):
    return -math.log(_softmax(logits)[label])


# Two dialogues of two slots, C = 2 classes, M = 3 modalities (l, a, v), H = 2:
#   (0,0) label 0, clean   (0,1) label 1, clean   (1,0) label 0, the conflict target   (1,1) padding
# The conflict target's donor is flat index 1 = utterance (0,1), whose label is 1.
LABELS = torch.tensor([[0, 1], [0, 0]])
UTT = torch.tensor([[True, True], [True, False]])
S_LOGITS = [[[0.0, LN3], [0.0, LN3]], [[LN3, 0.0], [5.0, -5.0]]]
T_LOGITS = [[[0.0, LN3], [0.0, 0.0]], [[0.0, 2.0], [0.0, 0.0]]]
S_FUSED = [[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]]]
T_FUSED = [[[0.0, 1.0], [2.0, 0.0]], [[-1.0, 0.0], [0.0, 1.0]]]  # normalized_sq distances 2, 0, 4, (pad)
# Teacher modality states; the student's are all [1, 0]. Distances per modality (l, a, v):
#   (0,0): 0, 2, 4     (0,1): 2, 0, 0     (1,0): 4, 2, 4
T_STATES = [
    [[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]],
    [[[-1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]],
]
VIEW_MASK = torch.tensor(
    [[[True, True, False], [True, False, False]], [[True, False, True], [False, False, False]]]
)  # the student's random-missing view
CONFLICT_MASK = VIEW_MASK.clone()
CONFLICT_MASK[1, 0] = True  # the donor's acoustic and visual swapped in (the donor has both)
WEIGHTS = dict(
    l_kd=0.3, l_state=0.7, l_mstate=0.11, l_nce=1.3, l_nce_kd=0.17, l_nce_margin=0.23, temperature=2.0, nce_margin=2.0
)


def _batch(mask):
    avail = UTT[..., None].expand(2, 2, 3).clone()
    return Batch(
        features={m: torch.zeros(2, 2, 1) for m in "lav"},
        mask=mask & avail,
        avail=avail,
        speakers=torch.zeros(2, 2, dtype=torch.long),
        labels=LABELS,
        utt_mask=UTT,
        modalities=("l", "a", "v"),
        index=torch.tensor([0, 1]),
    )


def _output(logits, fused, states):
    return Output(logits=torch.tensor(logits), fused=torch.tensor(fused), states=torch.tensor(states))


def _context(mode, c_logits=None, **options):
    """A CoRe-KD step with the fixed conflict view above; ``c_logits`` = the second forward (separate mode)."""
    complete = _batch(UTT[..., None].expand(2, 2, 3))
    conflict = ConflictView(
        batch=_batch(CONFLICT_MASK),
        selected=torch.tensor([[False, False], [True, False]]),
        donor=torch.tensor([[-1, -1], [1, -1]]),
        kind=torch.tensor([[-1, -1], [0, -1]]),
        types=("av",),
    )
    student = _output(S_LOGITS, S_FUSED, [[[[1.0, 0.0]] * 3] * 2] * 2)
    teacher = _output(T_LOGITS, T_FUSED, T_STATES)
    if mode == "inline":
        view, model = TrainView(conflict.batch, {"conflict": conflict}), None
    else:
        view = TrainView(_batch(VIEW_MASK), {"conflict": conflict})
        c_out = replace(student, logits=torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [c_logits, [0.0, 0.0]]]))

        def model(batch):
            assert batch is conflict.batch  # the second forward sees the conflict view
            return c_out

    method_cls = method_class("corekd")
    # the hand-computed values below are the mean over the targets unless a test asks for the other average
    method = method_cls(
        method_cls.Options(nce_mode=mode, **{"nce_average": "targets", **WEIGHTS, **options}), TrainingMissing()
    )
    ctx = StepContext(
        batch=complete, view=view, output=student, teacher=teacher, model=model, generator=torch_generator("unused")
    )
    return method.loss(ctx)


def _check(total, terms, expected):
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value, abs=1e-5), name
    w = {"ce": 1.0, "kd": 0.3, "state": 0.7, "mstate": 0.11, "nce": 1.3, "nce_kd": 0.17, "nce_margin": 0.23}
    assert total.item() == pytest.approx(sum(w[k] * v for k, v in expected.items()), abs=1e-5)


def test_corekd_loss_by_hand_inline():
    """Inline NCE: the conflict target is scored by the NCE terms only; CE and CSA by the clean utterances."""
    total, terms = _context("inline")
    _check(
        total,
        terms,
        {
            "ce": (LN4 + math.log(4 / 3)) / 2,  # (0,0) and (0,1) only
            "kd": (0.0 + _kd([0, LN3], [0, 0], 2.0)) / 2,
            "state": (2.0 + 0.0) / 2,
            "mstate": (1.0 + 2.0) / 2,  # over the modalities the student's view observes: (0+2)/2 and 2/1
            "nce": math.log(4 / 3),  # CE of the target (label 0) on the conflict view
            "nce_kd": _kd([LN3, 0], [0, 2], 2.0),
            "nce_margin": 2.0 - LN3,  # target 0 over the donor's label 1: log(3/4) - log(1/4) = ln 3
        },
    )


def test_corekd_loss_by_hand_separate():
    """Separate NCE: CE and CSA see every real utterance of the incomplete view; NCE the second forward."""
    c = [math.log(2.0), 0.0]  # the student on the conflict view: p = [2/3, 1/3]
    total, terms = _context("separate", c_logits=c)
    _check(
        total,
        terms,
        {
            "ce": (LN4 + 2 * math.log(4 / 3)) / 3,
            "kd": (0.0 + _kd([0, LN3], [0, 0], 2.0) + _kd([LN3, 0], [0, 2], 2.0)) / 3,
            "state": (2.0 + 0.0 + 4.0) / 3,
            "mstate": (1.0 + 2.0 + 4.0) / 3,  # (1,0) observes l and v in its incomplete view: (4+4)/2
            "nce": _ce(c, 0),
            "nce_kd": _kd(c, [0, 2], 2.0),
            "nce_margin": 2.0 - math.log(2.0),
        },
    )


def test_corekd_nce_average_over_utterances_by_hand():
    """nce_average: utterances: the NCE terms summed over the targets (1) and divided by the real utterances (3)."""
    c = [math.log(2.0), 0.0]
    _, per_target = _context("separate", c_logits=c)
    total, terms = _context("separate", c_logits=c, nce_average="utterances")
    assert terms["nce"].item() == pytest.approx(_ce(c, 0) / 3, abs=1e-6)
    for name in ("nce_kd", "nce_margin"):
        assert terms[name].item() == pytest.approx(per_target[name].item() / 3, abs=1e-6), name
    for name in ("ce", "kd", "state", "mstate"):
        assert terms[name].item() == pytest.approx(per_target[name].item(), abs=1e-7), name


def test_corekd_loss_follows_the_state_distance_and_mstate_options():
    """cosine = half of normalized_sq per utterance; mstate_over=all averages over every modality."""
    _, terms = _context("inline", state_distance="cosine", mstate_over="all")
    assert terms["state"].item() == pytest.approx((1.0 + 0.0) / 2, abs=1e-6)
    assert terms["mstate"].item() == pytest.approx((1.0 + 1.0 / 3) / 2, abs=1e-6)  # (0+1+2)/3 and (1+0+0)/3


def test_nce_terms_with_zero_weight_are_not_computed():
    _, terms = _context("inline", l_nce=0.0)
    assert "nce" not in terms and {"nce_kd", "nce_margin"} <= set(terms)
    _, terms = _context("inline", l_nce_kd=0.0, l_nce_margin=0.0)
    assert "nce" in terms and not {"nce_kd", "nce_margin"} & set(terms)


# ---------------------------------------------------------------- evaluation masks
def test_evaluate_model_scores_every_condition_under_its_own_mask(tiny_corpus, tiny_splits):
    test = tiny_splits["test"]
    mods = tiny_corpus.modality_names
    masks = {
        c.name: split_condition_mask(c, test.avail, mods, 0, "test") for c in standard_conditions(mods, [0.3, 0.6])
    }
    dims = {m: s.dim for m, s in tiny_corpus.modalities.items()}
    model = init_model(ModelConfig(hidden=16, heads=2), dims, len(tiny_corpus.labels), 0, "student")
    seen = []  # (dialogue rows, the mask the model was given) per forward
    model.register_forward_pre_hook(lambda module, args: seen.append((args[0].index.clone(), args[0].mask.clone())))
    rows = evaluate_model(model, test, masks, tiny_corpus.labels, 2, torch.device("cpu"))
    assert [r["condition"] for r in rows] == list(masks)
    assert len(seen) % len(masks) == 0
    per_condition = len(seen) // len(masks)  # conditions are scored one after another, each over the whole split
    for k, (name, mask) in enumerate(masks.items()):
        given = torch.zeros_like(mask)
        covered = torch.zeros(len(test), dtype=torch.long)
        for index, m in seen[k * per_condition : (k + 1) * per_condition]:
            given[index, : m.shape[1]] = m
            covered[index] += 1
        assert (covered == 1).all(), name  # every dialogue once
        assert torch.equal(given, mask & test.avail), name
    real = test.utt_mask
    rates = {r["condition"]: r["missing_rate"] for r in rows}
    assert rates["complete"] == 0.0 and rates["fixed:l"] == pytest.approx(2 / 3, abs=1e-4)
    assert rates["random:0.3"] == pytest.approx(missing_rate(masks["random:0.3"][real], test.avail[real]), abs=1e-4)
    assert all(r["n_utterances"] == test.num_utterances for r in rows)


# ---------------------------------------------------------------- one seed, several students
FAIR_SYNTH = {**TINY_SYNTH, "n_dialogues": 20}


def _recorded_run(tmp_path):
    """One seed of teacher + five students (two with their own extra modules), every Trainer's initial weights and
    forwards recorded."""
    raw = {
        "name": "fair",
        "seeds": [1],
        "device": "cpu",
        "data": {"source": "synthetic", "synth": FAIR_SYNTH},
        "model": {"hidden": 16, "heads": 2},
        "training": {"epochs": 1, "patience": 1, "batch_size": 2},
        "evaluation": {"batch_size": 64, "random_rates": [0.5]},
        "methods": [
            {"name": "teacher"},
            {"name": "no_kd"},
            {"name": "vanilla_kd"},
            {"name": "corekd", "options": {"nce_prob": 0.5}},
            {"name": "decoupled"},
            {"name": "reconstruction"},
        ],
    }
    records = {}
    scoring = {"on": False}  # the run's own dev/test scoring after training: not a selection pass
    real_init = training.Trainer.__init__
    real_evaluate = unit_mod.evaluate_model

    def spy_evaluate(*args, **kwargs):
        scoring["on"] = True
        try:
            return real_evaluate(*args, **kwargs)
        finally:
            scoring["on"] = False

    def spy_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        rec = records.setdefault(self.method.name, {"train": [], "eval": []})
        rec["init"] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

        def hook(module, args):
            if scoring["on"]:
                return
            batch = args[0]
            (rec["train"] if module.training else rec["eval"]).append(
                (
                    batch.index.clone(),
                    batch.mask.clone(),
                    batch.avail.clone(),
                    batch.labels.clone(),
                    batch.utt_mask.clone(),
                )
            )

        self.model.register_forward_pre_hook(hook)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training.Trainer, "__init__", spy_init)
        mp.setattr(unit_mod, "evaluate_model", spy_evaluate)
        run(validate_config(raw), tmp_path / "out")
    return records


def _dev_view(forwards, dev):
    """The dev-split mask a model was selected under, from its eval-mode forwards on the dev split."""
    mask = torch.zeros_like(dev.avail)
    found = 0
    for index, m, avail, labels, utt in forwards:
        u = m.shape[1]
        if int(index.max()) >= len(dev) or u > dev.utt_mask.shape[1] or labels.shape != dev.labels[index, :u].shape:
            continue  # another split
        if (
            torch.equal(labels, dev.labels[index, :u])
            and torch.equal(utt, dev.utt_mask[index, :u])
            and torch.equal(avail, dev.avail[index, :u])
        ):
            mask[index, :u] = m
            found += len(index)
    assert found == len(dev)  # one selection pass (one epoch) over every dev dialogue
    return mask


STUDENTS = ("no_kd", "vanilla_kd", "corekd")
# Students whose model adds its own modules to the base model (Method.build_model): same base weights, plus theirs.
EXTENDED = ("decoupled", "reconstruction")


def test_students_of_a_seed_share_initial_weights_batches_training_masks_and_dev_views(tmp_path):
    """corekd.experiments.run, one seed: what each Trainer was given and what each model was shown.

    One run in the test body (not a fixture), so that mutation testing sees its cost and what it calls.
    """
    records = _recorded_run(tmp_path)
    dev = SplitTensors.from_corpus(generate(SynthConfig(**FAIR_SYNTH)), "dev")

    # 1. Every student of the seed starts from the same weights.
    first = records[STUDENTS[0]]["init"]
    for name in STUDENTS[1:]:
        other = records[name]["init"]
        assert other.keys() == first.keys()
        assert all(torch.equal(first[k], other[k]) for k in first), f"{name} starts from other weights than no_kd"
    for name in EXTENDED:
        other = records[name]["init"]
        assert set(first) < set(other), f"{name} lacks base weights, or has no modules of its own"
        assert all(torch.equal(first[k], other[k]) for k in first), f"{name} starts from other base weights than no_kd"

    # 2. ... sees the same batches in the same order, under the same training masks.
    ref = records["no_kd"]["train"]
    assert len(ref) >= 4  # several batches: a shifted stream would show
    assert sum(int((avail & ~m).sum()) for _, m, avail, _, _ in ref) > 0  # students train on incomplete views
    for name in ("vanilla_kd", "corekd", *EXTENDED):
        got = records[name]["train"]
        assert len(got) == len(ref), name
        for (i_a, m_a, *_), (i_b, m_b, *_) in zip(ref, got):
            b = len(i_a)
            if name == "corekd":
                # One stacked forward: the training view (rows :B), then its conflict copy (rows B:).
                assert torch.equal(i_b, torch.cat([i_a, i_a])), f"{name} sees other batches"
                assert torch.equal(m_a, m_b[:b]), "corekd's training masks differ from no_kd's"
                # NCE swaps only the nonverbal inputs of its targets, for the donor's (every modality is
                # present in this corpus): the language mask is the drawn one, and nothing drawn is lost.
                assert torch.equal(m_a[..., 0], m_b[b:, ..., 0]), "corekd's conflict copy changed the language mask"
                assert not (m_a & ~m_b[b:]).any(), "corekd's conflict copy lost an observed modality"
            else:
                assert torch.equal(i_a, i_b), f"{name} sees other batches"
                assert torch.equal(m_a, m_b), f"{name}'s training masks differ from no_kd's"
    for _, m, avail, _, _ in records["teacher"]["train"]:
        assert torch.equal(m, avail)  # the teacher trains on complete views

    # 3. ... and is selected on the same dev views, masked like its training; the teacher on complete ones.
    assert torch.equal(_dev_view(records["teacher"]["eval"], dev), dev.avail)
    views = {name: _dev_view(records[name]["eval"], dev) for name in STUDENTS + EXTENDED}
    real = dev.utt_mask
    assert missing_rate(views["no_kd"][real], dev.avail[real]) > 0.05, "students selected on complete dev views"
    for name in STUDENTS[1:] + EXTENDED:
        assert torch.equal(views[name], views["no_kd"]), f"{name} selected on other dev views"


# ---------------------------------------------------------------- the frozen teacher
@pytest.mark.parametrize("cache", [True, False])
def test_a_student_step_leaves_the_frozen_teacher_unchanged(cache, tiny_corpus, tiny_splits):
    train = tiny_splits["train"]
    dims = {m: s.dim for m, s in tiny_corpus.modalities.items()}
    cfg = ModelConfig(hidden=16, heads=2)
    teacher = init_model(cfg, dims, len(tiny_corpus.labels), 0, "teacher")  # fresh: train mode, trainable
    student = init_model(cfg, dims, len(tiny_corpus.labels), 0, "student")
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    s_before = {k: v.clone() for k, v in student.state_dict().items()}
    ref = training.TeacherReference(teacher, train, cache=cache, batch_size=4, device="cpu")
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert (ref.cached is not None) == cache  # computed once per seed when asked
    batch = train.batch([0, 1, 2, 3])
    first, again = ref.outputs(batch), ref.outputs(batch)
    assert not first.logits.requires_grad and torch.equal(first.logits, again.logits)  # no dropout, no graph
    cls = method_class("corekd")
    trainer = training.Trainer(
        cls(cls.Options(), TrainingMissing()),
        student,
        TrainingConfig(batch_size=4),
        seed=0,
        device=torch.device("cpu"),
        teacher=ref,
    )
    terms = trainer.step(batch)
    assert {"kd", "state", "mstate"} <= set(terms)
    assert all(torch.equal(t_before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    assert not all(torch.equal(s_before[k], v) for k, v in student.state_dict().items())  # the student did move


# ---------------------------------------------------------------- splits
def test_splits_hold_whole_dialogues_each_in_one_split(tiny_corpus, tiny_splits):
    by_id = {d.id: d for d in tiny_corpus.dialogues}
    seen = []
    for name, split in tiny_splits.items():
        for i, did in enumerate(split.dialogue_ids):
            d = by_id[did]
            assert d.split == name
            assert split.utterance_ids[i] == list(d.utterance_ids)  # every utterance of the dialogue, in order
            assert int(split.lengths[i]) == len(d) == int(split.utt_mask[i].sum())
        seen += split.dialogue_ids
    assert sorted(seen) == sorted(by_id)  # each dialogue exactly once
