"""Edge cases of the methods, protocols and training contracts that mutation testing found unpinned.

Each test states a behaviour the code documents (donor choice, sentinels, messages, registry
rules, shapes) on a case small enough to check by hand; docs/testing.md lists the mutants they kill.
"""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import corekd
import corekd.methods.registry as registry
import corekd.training as training
from corekd.config import TrainingConfig
from corekd.data.batching import Batch
from corekd.data.protocols import (
    Condition,
    TrainingMissing,
    condition_mask,
    fixed_mask,
    random_mask,
    split_condition_mask,
    standard_conditions,
)
from corekd.errors import CorekdError
from corekd.evaluation.metrics import classification_metrics
from corekd.evaluation.predict import predict, run_model
from corekd.methods import Method, StepContext, TrainView, method_class, register
from corekd.methods.losses import conflict_margin, modality_anchor, state_distance
from corekd.methods.nce import ConflictView, nce_view
from corekd.models.model import ModelConfig, Output
from corekd.reporting.run import render_report, write_report
from corekd.reporting.tables import (
    FIXED_AVG,
    markdown_table,
    mean_std_table,
    records_frame,
)
from corekd.seeding import torch_generator
from corekd.training import Trainer, init_model, load_checkpoint, save_checkpoint


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


# ---------------------------------------------------------------- losses on [B, U, ...] inputs
def test_conflict_margin_on_dialogue_shaped_inputs():
    probs = torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]], [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]])  # [B=2, U=2, C=3]
    target = torch.tensor([[0, 2], [1, 2]])
    donor = torch.tensor([[1, 0], [0, 1]])
    got = conflict_margin(probs.log(), target, donor, 2.0)
    want = torch.tensor([[2.0 - torch.log(torch.tensor(2.0)), 2.0 - torch.log(torch.tensor(7.0))],
                         [2.0 - torch.log(torch.tensor(0.5)), 2.0 - torch.log(torch.tensor(3.0))]])
    assert torch.allclose(got, want.clamp(min=0), atol=1e-6)


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_modality_anchor_uses_the_chosen_distance(kind):
    student = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]])  # [1, M=2, H=2]
    teacher = torch.tensor([[[4.0, 3.0], [0.0, 2.0]]])
    values, _ = modality_anchor(student, teacher, torch.tensor([[True, True]]), kind)
    assert values.item() == pytest.approx(state_distance(student, teacher, kind).mean().item())
    assert values.item() != pytest.approx(state_distance(student, teacher).mean().item())


# ---------------------------------------------------------------- methods and registry
def test_vanilla_kd_with_no_kd_weight_needs_no_teacher(tiny_batch):
    method = method_class("vanilla_kd")(method_class("vanilla_kd").Options(l_kd=0.0), TrainingMissing())
    logits = torch.zeros(*tiny_batch.labels.shape, 6)
    out = Output(logits=logits, fused=torch.zeros(*logits.shape[:2], 4), states=torch.zeros(*logits.shape[:2], 3, 4))
    ctx = StepContext(batch=tiny_batch, view=TrainView(tiny_batch), output=out, teacher=None, model=None,
                      generator=torch_generator("v"))
    total, terms = method.loss(ctx)
    assert set(terms) == {"ce"} and total.item() == pytest.approx(torch.log(torch.tensor(6.0)).item())


def test_registry_adds_new_names_and_rejects_nameless_classes(monkeypatch):
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))

    class Fresh(Method):
        name = "fresh_method_for_a_test"

    assert register(Fresh) is Fresh
    assert method_class("fresh_method_for_a_test") is Fresh
    assert register(Fresh) is Fresh  # registering the same class again is harmless

    class Nameless(Method):
        pass

    with pytest.raises(TypeError, match="Nameless has no name"):
        register(Nameless)


# ---------------------------------------------------------------- protocols
def test_parsed_conditions_are_the_conditions_they_name():
    assert Condition.parse("random:0.5") == Condition("random", rate=0.5)
    assert Condition.parse(" random:0.25 ") == Condition("random", rate=0.25)
    assert Condition.parse("fixed:av") == Condition("fixed", keep=("a", "v"))
    assert Condition.parse("complete") == Condition("complete")


@pytest.mark.parametrize("name,message", [
    ("fixed:lx", r"bad condition 'fixed:lx': expected fixed:<one or more of lav>, e.g. fixed:la"),
    ("random:1.5", r"bad condition 'random:1.5': expected random:<rate in \[0, 1\)>, e.g. random:0.5"),
    ("random:0.5:1", r"bad condition 'random:0.5:1': expected random:<rate"),
    ("dropped:l", r"unknown condition 'dropped:l': expected complete, fixed:<modalities>, random:<rate> or frames:<rate>"),
])
def test_bad_condition_messages_say_what_was_expected(name, message):
    with pytest.raises(CorekdError, match=message):
        Condition.parse(name)


# ---------------------------------------------------------------- checkpoints
def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(CorekdError, match=r"model\.json: file not found \(a checkpoint folder holds model\.json and "
                                          r"model\.safetensors\)"):
        load_checkpoint(tmp_path / "nowhere")


# ---------------------------------------------------------------- CoRe-KD's conflict views and margin
def _corekd(**options):
    cls = method_class("corekd")
    return cls(cls.Options(**options), TrainingMissing())


def test_corekd_conflicts_come_from_its_own_stream_only(tiny_batch):
    method = _corekd(nce_prob=0.5)
    views = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # the global RNG must not matter
        views.append(method.train_view(tiny_batch, torch_generator("m", 3), torch_generator("nce", 3)).extra["conflict"])
    assert views[0].selected.any()
    assert torch.equal(views[0].selected, views[1].selected) and torch.equal(views[0].donor, views[1].donor)


def test_nce_targets_option_decides_whether_targets_keep_their_language(tiny_batch):
    found = {}
    for targets in ("language_observed", "all"):
        method = _corekd(nce_prob=1.0, nce_targets=targets)
        method.missing = TrainingMissing(low=0.6, high=0.6)  # language hidden on a good share of utterances
        view = method.train_view(tiny_batch, torch_generator("m", 0), torch_generator("nce", 0))
        conflict = view.extra["conflict"]
        drawn = method.missing.masks(tiny_batch.avail, torch_generator("m", 0))
        found[targets] = drawn[..., 0][conflict.selected]
    assert found["language_observed"].numel() > 0 and found["language_observed"].all()
    assert not found["all"].all()


def test_margin_reads_the_donor_label_at_flat_index_zero():
    """Target (0, 1) has label 0; its donor is flat index 0, label 1: the margin uses that label."""
    labels = torch.tensor([[1, 0]])
    avail = torch.ones(1, 2, 3, dtype=torch.bool)
    batch = Batch(features={m: torch.zeros(1, 2, 1) for m in "lav"}, mask=avail, avail=avail,
                  speakers=torch.zeros(1, 2, dtype=torch.long), labels=labels, utt_mask=torch.ones(1, 2, dtype=torch.bool),
                  modalities=("l", "a", "v"), index=torch.tensor([0]))
    conflict = ConflictView(batch=batch, selected=torch.tensor([[False, True]]), donor=torch.tensor([[-1, 0]]),
                            kind=torch.tensor([[-1, 0]]), types=("av",))
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])
    out = Output(logits=logits, fused=torch.zeros(1, 2, 2), states=torch.zeros(1, 2, 3, 2))
    method = _corekd(nce_mode="inline", l_kd=0.0, l_state=0.0, l_mstate=0.0, l_nce=0.0, l_nce_margin=1.0, nce_margin=2.0,
                     nce_average="targets")
    ctx = StepContext(batch=batch, view=TrainView(batch, {"conflict": conflict}), output=out, teacher=None,
                      model=None, generator=torch_generator("x"))
    _, terms = method.loss(ctx)
    assert terms["nce_margin"].item() == pytest.approx(2.0 - math.log(3.0), abs=1e-6)


# ---------------------------------------------------------------- state distances
def test_state_distance_defaults_and_shapes():
    s, t = torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[4.0, 3.0], [1.0, 2.0]])
    assert torch.allclose(state_distance(s, t), state_distance(s, t, "normalized_sq"))
    assert torch.allclose(state_distance(s, t, "mse"), torch.tensor([1.0, 2.0]))  # one value per row
    with pytest.raises(ValueError, match="unknown state distance 'manhattan'"):
        state_distance(s, t, "manhattan")


# ---------------------------------------------------------------- report tables
def _rows(variant, seed, values):
    return [{"method": variant, "variant": variant, "seed": seed, "condition": c, "accuracy": v, "weighted_f1": v,
             "macro_f1": v / 2, "uar": v / 4, "per_class_f1": {"x": v}, "missing_rate": 0.0} for c, v in values.items()]


FIXED = ["fixed:l", "fixed:a", "fixed:v", "fixed:la", "fixed:lv", "fixed:av"]


def test_fixed_average_covers_every_metric_and_drops_per_class():
    records = _rows("m", 0, {c: 0.1 * (k + 1) for k, c in enumerate(FIXED)})
    frame = records_frame(records)
    assert "per_class_f1" not in frame.columns
    avg = frame[frame.condition == FIXED_AVG].iloc[0]
    assert avg.accuracy == pytest.approx(0.35) and avg.weighted_f1 == pytest.approx(0.35)
    assert avg.macro_f1 == pytest.approx(0.175) and avg.uar == pytest.approx(0.0875)


def test_mean_std_table_keeps_every_variant_and_one_seed_has_no_std():
    records = _rows("a", 0, {"complete": 0.5}) + _rows("b", 0, {"fixed:l": 0.2})
    table = mean_std_table(records_frame(records), "weighted_f1", ["complete"])
    assert list(table.index) == ["a", "b"]  # b has no complete record: a row of gaps, not a missing row
    assert table.loc["a", "complete"] == (0.5, None, 1)  # sample std is undefined for one seed
    assert markdown_table(table, ["complete"]) == "| method | complete |\n|---|---|\n| a | 50.00 |\n| b | – |"
    assert markdown_table(table, ["all"], first="x").splitlines()[0] == "| x | all |"


def test_report_headers_and_file(tmp_path):
    records = _rows("m", 0, {**{c: 0.5 for c in FIXED}, "complete": 0.6})
    meta = {"corpus": "c", "seeds": [0], "splits": {"test": {"dialogues": 1, "utterances": 2}}}
    trainings = [{"variant": "m", "best_epoch": 1, "epochs_run": 2, "dev_weighted_f1": 0.5, "seconds": 1.0}]
    path = write_report(tmp_path, meta, records, trainings)
    assert path == tmp_path / "report.md"
    text = path.read_text()
    assert text == render_report(meta, records, trainings)
    assert "| method | {l} | {a} | {v} | {l,a} | {l,v} | {a,v} | Avg | complete |" in text
    assert "## Training" in text


# ---------------------------------------------------------------- conditions and masks
def test_standard_conditions_are_real_conditions():
    conds = standard_conditions(("l", "a", "v"), [0.5])
    assert conds[0] == Condition("complete") and conds[-1] == Condition("random", rate=0.5)
    assert conds[1:7] == [Condition("fixed", keep=k) for k in (("l",), ("a",), ("v",), ("l", "a"), ("l", "v"), ("a", "v"))]


def test_condition_mask_defaults_to_the_calibrated_scheme():
    avail = torch.ones(200, 10, 3, dtype=torch.bool)
    cond = Condition("random", rate=0.5)
    default = condition_mask(cond, avail, ("l", "a", "v"), torch_generator("d"))
    calibrated = condition_mask(cond, avail, ("l", "a", "v"), torch_generator("d"), "calibrated")
    assert torch.equal(default, calibrated)


def test_fixed_mask_names_the_unknown_modality():
    with pytest.raises(CorekdError, match=r"condition keeps \['x'\], but the corpus has only \['l', 'a', 'v'\]"):
        fixed_mask(torch.ones(1, 1, 3, dtype=torch.bool), ("x",), ("l", "a", "v"))


# ---------------------------------------------------------------- checkpoints
def test_a_checkpoint_can_be_saved_again_and_records_the_version(tmp_path, tiny_corpus):
    dims = {m: s.dim for m, s in tiny_corpus.modalities.items()}
    model = init_model(ModelConfig(hidden=16, heads=2), dims, len(tiny_corpus.labels), 0, "student")
    save_checkpoint(model, tmp_path / "ck", {"method": "no_kd"})
    save_checkpoint(model, tmp_path / "ck", {"method": "no_kd", "seed": 1})  # the same folder again
    _, info = load_checkpoint(tmp_path / "ck")
    assert info["corekd_version"] == corekd.__version__ and info["seed"] == 1
    assert info["model"] == ModelConfig(hidden=16, heads=2).model_dump(mode="json")


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
        assert torch.equal(name_seeded, random_mask(avail, 0.5, torch_generator("eval-mask", 0, "test", cond.name, scheme),
                                                    scheme))


def test_evaluation_masks_of_other_splits_and_rates_come_from_their_own_streams():
    """Masks at two rates are not nested (one stream per condition), and dev and test masks differ."""
    avail = torch.ones(100, 10, 3, dtype=torch.bool)
    mods = ("l", "a", "v")
    low = split_condition_mask(Condition("random", rate=0.3), avail, mods, 0, "test")
    high = split_condition_mask(Condition("random", rate=0.5), avail, mods, 0, "test")
    assert (high & ~low).any()  # a shared stream would hide a superset of the entries at the higher rate
    dev = split_condition_mask(Condition("random", rate=0.3), avail, mods, 0, "dev")
    assert not torch.equal(dev, low)


# ---------------------------------------------------------------- the training loop
def _trainer(tiny_corpus, seed=0, name="no_kd", **options):
    dims = {m: s.dim for m, s in tiny_corpus.modalities.items()}
    model = init_model(ModelConfig(hidden=16, heads=2), dims, len(tiny_corpus.labels), 0, "student")
    cls = method_class(name)
    return Trainer(cls(cls.Options(**options), TrainingMissing()), model, TrainingConfig(batch_size=3), seed=seed,
                   device=torch.device("cpu"))


def test_an_epoch_visits_every_dialogue_once_in_a_seeded_shuffle_and_averages_the_terms(tiny_corpus, tiny_splits):
    train = tiny_splits["train"]
    orders = {}
    for seed in (0, 1):
        trainer = _trainer(tiny_corpus, seed)
        seen, values = [], iter([1.0, 2.0, 6.0, 3.0])

        def fake_step(batch):
            seen.append(batch.index.tolist())
            v = next(values)
            return {"loss": torch.tensor(v), "ce": torch.tensor(2 * v)}

        trainer.step = fake_step
        terms = trainer.epoch(train)
        assert len(seen) == 4  # 10 dialogues in batches of 3
        assert terms == pytest.approx({"loss": 3.0, "ce": 6.0})  # means over the epoch's steps
        flat = [i for b in seen for i in b]
        assert sorted(flat) == list(range(len(train)))
        orders[seed] = flat
    assert orders[0] != list(range(len(train)))  # shuffled...
    assert orders[0] != orders[1]  # ...by the seed's own stream


def test_train_model_passes_its_seed_to_the_trainer(tiny_corpus, tiny_splits, monkeypatch):
    seeds = []
    real_init = training.Trainer.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        seeds.append(self.shuffle_gen.initial_seed())

    monkeypatch.setattr(training.Trainer, "__init__", spy)
    dims = {m: s.dim for m, s in tiny_corpus.modalities.items()}
    cls = method_class("no_kd")
    for seed in (3, 4):
        model = init_model(ModelConfig(hidden=16, heads=2), dims, len(tiny_corpus.labels), seed, "student")
        training.train_model(cls(cls.Options(), TrainingMissing()), model, tiny_splits["train"], tiny_splits["dev"],
                             TrainingConfig(epochs=1, batch_size=4), seed=seed, label_names=tiny_corpus.labels,
                             device=torch.device("cpu"))
    assert seeds == [torch_generator("shuffle", 3).initial_seed(), torch_generator("shuffle", 4).initial_seed()]


def test_trainer_uses_the_configured_optimiser_settings_and_needs_its_teacher(tiny_corpus):
    dims = {m: s.dim for m, s in tiny_corpus.modalities.items()}
    model = init_model(ModelConfig(hidden=16, heads=2), dims, len(tiny_corpus.labels), 0, "student")
    cls = method_class("no_kd")
    trainer = Trainer(cls(cls.Options(), TrainingMissing()), model, TrainingConfig(lr=0.05, weight_decay=0.3),
                      seed=0, device=torch.device("cpu"))
    group = trainer.optimizer.param_groups[0]
    assert group["lr"] == 0.05 and group["weight_decay"] == 0.3
    kd = method_class("vanilla_kd")
    with pytest.raises(ValueError, match="method 'vanilla_kd' needs a teacher"):
        Trainer(kd(kd.Options(), TrainingMissing()), model, TrainingConfig(), seed=0, device=torch.device("cpu"))


def test_dev_masks_draw_one_rate_per_dialogue():
    method = method_class("no_kd")(method_class("no_kd").Options(), TrainingMissing(low=0.0, high=0.6))
    avail = torch.ones(12, 400, 3, dtype=torch.bool)
    masks = method.dev_masks(avail, torch_generator("dev"))
    rates = [float((~masks[i]).float().mean()) for i in range(12)]
    assert max(rates) - min(rates) > 0.2  # per dialogue, not one rate for the whole split


def _scripted_training(tiny_corpus, tiny_splits, monkeypatch, scores, epochs, patience):
    """train_model with the dev scores given in advance; returns the result, the on_epoch calls, weight snapshots."""
    it = iter(scores)
    monkeypatch.setattr(training, "classification_metrics", lambda *a, **k: {"weighted_f1": next(it)})
    dims = {m: s.dim for m, s in tiny_corpus.modalities.items()}
    model = init_model(ModelConfig(hidden=16, heads=2), dims, len(tiny_corpus.labels), 0, "student")
    calls, snapshots = [], []

    def on_epoch(epoch, score):
        calls.append((epoch, score))
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})

    cls = method_class("no_kd")
    result = training.train_model(
        cls(cls.Options(), TrainingMissing()), model, tiny_splits["train"], tiny_splits["dev"],
        TrainingConfig(epochs=epochs, patience=patience, batch_size=4), seed=0, label_names=tiny_corpus.labels,
        device=torch.device("cpu"), on_epoch=on_epoch,
    )
    return result, calls, snapshots


def test_selection_keeps_the_first_best_epoch_and_its_weights(tiny_corpus, tiny_splits, monkeypatch):
    result, calls, snapshots = _scripted_training(tiny_corpus, tiny_splits, monkeypatch, [0.4, 0.6, 0.6, 0.5], 4, 5)
    assert calls == [(1, 0.4), (2, 0.6), (3, 0.6), (4, 0.5)]
    assert result.best_epoch == 2 and result.best_score == 0.6 and result.epochs_run == 4  # a tie keeps the first
    final = result.model.state_dict()
    assert all(torch.equal(final[k], snapshots[1][k]) for k in final)  # epoch 2's weights, not the last ones
    assert not all(torch.equal(final[k], snapshots[3][k]) for k in final)


def test_diverged_training_names_the_epoch_method_and_seed(tiny_corpus, tiny_splits, monkeypatch):
    with pytest.raises(CorekdError, match=r"method no_kd, seed 0: training diverged at epoch 2 .*lower training\.lr"):
        _scripted_training(tiny_corpus, tiny_splits, monkeypatch, [0.4, float("nan")], 3, 5)


def test_a_step_hands_the_loss_its_model_and_own_stream_and_clips_gradients(tiny_corpus, tiny_splits):
    batch = tiny_splits["train"].batch([0, 1, 2, 3])
    seen = []
    for global_seed, clip in ((1, 1e-3), (2, 1e-3)):
        trainer = _trainer(tiny_corpus, 0, "corekd", l_kd=0.0, l_state=0.0, l_mstate=0.0, nce_prob=0.5)
        trainer.cfg = TrainingConfig(batch_size=3, grad_clip=clip)
        real_loss = trainer.method.loss

        def spy(ctx, real_loss=real_loss, trainer=trainer):
            assert ctx.model is trainer.model and ctx.generator is trainer.method_gen
            seen.append(ctx.view.extra["conflict"].selected.clone())
            return real_loss(ctx)

        trainer.method.loss = spy
        torch.manual_seed(global_seed)  # the global RNG must not reach the method's draws
        trainer.step(batch)
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.model.parameters()
                                                     if p.grad is not None]))
        assert norm <= clip * 1.001  # clipped to grad_clip
    assert seen[0].any() and torch.equal(seen[0], seen[1])


def test_grad_clip_zero_means_no_clipping(tiny_corpus, tiny_splits):
    trainer = _trainer(tiny_corpus)
    trainer.cfg = TrainingConfig(batch_size=3, grad_clip=0.0)
    trainer.optimizer = torch.optim.AdamW(trainer.model.parameters(), lr=1e-3, weight_decay=0.0)  # only gradients move it
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.step(tiny_splits["train"].batch([0, 1, 2, 3]))
    assert not all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_predictions_are_the_argmax_of_per_utterance_probabilities(tiny_corpus, tiny_splits):
    dims = {m: s.dim for m, s in tiny_corpus.modalities.items()}
    model = init_model(ModelConfig(hidden=16, heads=2), dims, len(tiny_corpus.labels), 0, "student")
    test = tiny_splits["test"]
    preds = predict(model, test, None, 2, "cpu")
    logits = run_model(model, test, None, 2, "cpu").logits[test.utt_mask]
    assert preds.probs.shape == (test.num_utterances, len(tiny_corpus.labels))
    assert torch.allclose(torch.from_numpy(preds.probs), logits.softmax(-1), atol=1e-6)
    assert (preds.y_pred == logits.argmax(-1).numpy()).all()


def test_macro_scores_average_as_scikit_learn_and_the_present_pair_over_the_truths_classes():
    # class 2 is predicted but absent from the truth: it enters macro F1 and UAR with 0 (scikit-learn's
    # average="macro", labels=None), not macro_f1_present / uar_present
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1]), ["a", "b", "c"])
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1.0 + 0) / 3)  # a: P=1 R=1/2; b: 1; c: 0
    assert m["uar"] == pytest.approx((0.5 + 1.0 + 0) / 3)
    assert m["macro_f1_present"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert m["uar_present"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["weighted_f1"] == pytest.approx((2 / 3 + 1.0) / 2)
