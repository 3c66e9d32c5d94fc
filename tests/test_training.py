"""The training loop: determinism, dev-only selection, early stopping, checkpoints, test split untouched."""

import copy
import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import corekd
import corekd.evaluation.conditions as conditions
import corekd.experiments.unit as unit_mod
import corekd.training as training
from corekd.config import TrainingConfig, validate_config
from corekd.data.protocols import TrainingMissing
from corekd.errors import CorekdError
from corekd.evaluation.predict import Predictions
from corekd.experiments import run
from corekd.methods import method_class
from corekd.methods.no_kd import NoKD
from corekd.models.model import ERCModel, ModelConfig
from corekd.seeding import derive_seed, torch_generator
from corekd.training import (
    TeacherReference,
    Trainer,
    init_model,
    load_checkpoint,
    save_checkpoint,
    train_model,
)
from helpers import corpus_dims, made_up_batch, split_dims

MODEL = ModelConfig(hidden=16, heads=2)


def _train(corpus, splits, seed, name="no_kd", epochs=3, patience=2):
    cls = method_class(name)
    method = cls(cls.Options(), TrainingMissing())
    dims = {m: s.dim for m, s in corpus.modalities.items()}
    model = init_model(MODEL, dims, len(corpus.labels), seed, "student")
    cfg = TrainingConfig(epochs=epochs, patience=patience, batch_size=4)
    return train_model(
        method,
        model,
        splits["train"],
        splits["dev"],
        cfg,
        seed=seed,
        label_names=corpus.labels,
        device=torch.device("cpu"),
    )


def test_same_seed_same_numbers_other_seed_other_numbers(tiny_corpus, tiny_splits):
    a = _train(tiny_corpus, tiny_splits, seed=7)
    b = _train(tiny_corpus, tiny_splits, seed=7)
    c = _train(tiny_corpus, tiny_splits, seed=8)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.history == b.history
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_training_leaves_the_global_rng_alone(tiny_corpus, tiny_splits):
    torch.manual_seed(99)
    before = torch.random.get_rng_state()
    _train(tiny_corpus, tiny_splits, seed=1, epochs=1)
    assert torch.equal(before, torch.random.get_rng_state())


def test_selected_epoch_is_the_best_dev_epoch_and_stopping_follows_patience(tiny_corpus, tiny_splits):
    result = _train(tiny_corpus, tiny_splits, seed=2, epochs=12, patience=2)
    scores = [h["dev_weighted_f1"] for h in result.history]
    assert result.best_epoch == int(np.argmax(scores)) + 1  # first epoch reaching the maximum
    assert result.best_score == pytest.approx(max(scores))
    assert result.epochs_run == min(12, result.best_epoch + 2)
    assert {"loss", "ce", "epoch"} <= set(result.history[0])


def test_checkpoint_round_trip(tmp_path, tiny_corpus, tiny_splits, tiny_batch):
    result = _train(tiny_corpus, tiny_splits, seed=0, epochs=1)
    folder = save_checkpoint(result.model, tmp_path / "ckpt", {"method": "no_kd", "seed": 0})
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]  # no temp files left
    loaded, info = load_checkpoint(folder)
    assert info["method"] == "no_kd" and info["model"]["hidden"] == 16
    with torch.no_grad():
        assert torch.allclose(result.model(tiny_batch).logits, loaded(tiny_batch).logits)
    # weights under other names (e.g. from another corekd version) are refused with the file named, not half-loaded
    weights = load_file(str(folder / "model.safetensors"))
    renamed = {("old." + k if i == 0 else k): v for i, (k, v) in enumerate(sorted(weights.items()))}
    save_file(renamed, str(folder / "model.safetensors"))
    with pytest.raises(CorekdError, match=r"model\.safetensors: SHA-256 .* differs .*\(weights_sha256\)"):
        load_checkpoint(folder)  # the checksum model.json records catches any change first
    meta = json.loads((folder / "model.json").read_text())
    del meta["weights_sha256"]  # as written before checksums were recorded: still loads, the names are checked
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CorekdError, match=r"model\.safetensors: the weights do not fit .* missing \['"):
        load_checkpoint(folder)


def _tiny_run_config(corpus_dir, **extra):
    raw = {
        "name": "iso",
        "seeds": [0],
        "device": "cpu",
        "data": {"source": "corpus", "path": str(corpus_dir)},
        "model": {"hidden": 16, "heads": 2},
        "training": {"epochs": 3, "patience": 2, "batch_size": 4},
        "methods": [{"name": "teacher"}, {"name": "corekd"}],
        **extra,
    }
    return validate_config(raw)


def test_test_split_cannot_influence_training_or_selection(tmp_path, tiny_corpus):
    """Scramble the test split's labels and features: training, selection and weights stay identical."""
    tiny_corpus.save(tmp_path / "a")
    rng = np.random.default_rng(0)
    scrambled = replace(
        tiny_corpus,
        dialogues=[
            replace(
                d,
                labels=rng.permutation(d.labels),
                features={m: rng.normal(size=x.shape).astype(np.float32) for m, x in d.features.items()},
            )
            if d.split == "test"
            else d
            for d in tiny_corpus.dialogues
        ],
    )
    scrambled.save(tmp_path / "b")
    run_a = run(_tiny_run_config(tmp_path / "a"), tmp_path / "out_a")
    run_b = run(_tiny_run_config(tmp_path / "b"), tmp_path / "out_b")
    untimed = lambda runs: [{k: v for k, v in t.items() if k != "seconds"} for t in runs]  # noqa: E731
    assert untimed(run_a.trainings) == untimed(run_b.trainings)  # same histories, same selected epochs
    for label in ("teacher", "corekd"):
        wa = (tmp_path / "out_a" / "checkpoints" / label / "seed0" / "model.safetensors").read_bytes()
        wb = (tmp_path / "out_b" / "checkpoints" / label / "seed0" / "model.safetensors").read_bytes()
        assert wa == wb
    assert run_a.records != run_b.records  # ...while the test scores do see the change


def test_test_split_is_predicted_only_after_each_model_is_trained(tmp_path, tiny_corpus, monkeypatch):
    tiny_corpus.save(tmp_path / "c")
    events = []
    real_train, real_eval_predict, real_train_predict = unit_mod.train_model, conditions.predict, training.predict

    def spy_train(method, *args, **kwargs):
        events.append(("train-start", method.name))
        result = real_train(method, *args, **kwargs)
        events.append(("train-end", method.name))
        return result

    def spy_predict(where):
        real = real_eval_predict if where == "pipeline" else real_train_predict

        def inner(model, split, *args, **kwargs):
            events.append((f"predict:{where}", split.name))
            return real(model, split, *args, **kwargs)

        return inner

    monkeypatch.setattr(unit_mod, "train_model", spy_train)
    monkeypatch.setattr(conditions, "predict", spy_predict("pipeline"))
    monkeypatch.setattr(training, "predict", spy_predict("training"))
    run(_tiny_run_config(tmp_path / "c"), tmp_path / "out")
    assert {s for kind, s in events if kind == "predict:training"} == {"dev"}  # selection sees dev only
    assert {s for kind, s in events if kind == "predict:pipeline"} == {"dev", "test"}  # dev records, then test
    inside = False
    for kind, what in events:
        inside = {"train-start": True, "train-end": False}.get(kind, inside)
        assert not (inside and what == "test"), "the test split was used while a model was training"
    # each model's test evaluation follows its training: 15 conditions after each train-end
    ends = [i for i, e in enumerate(events) if e[0] == "train-end"]
    assert events[ends[0] + 1] == ("predict:pipeline", "dev")
    assert ("predict:pipeline", "test") in events[ends[0] + 1 : ends[1]]


def test_results_and_checkpoints_written(tmp_path, tiny_corpus):
    tiny_corpus.save(tmp_path / "d")
    run(_tiny_run_config(tmp_path / "d"), tmp_path / "out")
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {t["variant"] for t in payload["trainings"]} == {"teacher", "corekd"}
    info = json.loads(Path(tmp_path / "out/checkpoints/corekd/seed0/model.json").read_text())
    assert info["options"]["l_state"] == 0.5 and info["labels"] == tiny_corpus.labels


def test_an_unlisted_teacher_is_trained_for_its_students_but_not_reported(tmp_path, tiny_corpus):
    tiny_corpus.save(tmp_path / "e")
    cfg = _tiny_run_config(tmp_path / "e", methods=[{"name": "vanilla_kd"}, {"name": "no_kd"}])
    result = run(cfg, tmp_path / "out")
    assert [t["variant"] for t in result.trainings] == ["teacher", "vanilla_kd", "no_kd"]
    assert {r["variant"] for r in result.records} == {"vanilla_kd", "no_kd"}
    # No method needs a teacher: none is trained.
    result = run(_tiny_run_config(tmp_path / "e", methods=[{"name": "no_kd"}]), tmp_path / "out2")
    assert [t["variant"] for t in result.trainings] == ["no_kd"]


CPU = torch.device("cpu")
CFG = ModelConfig(hidden=16, heads=2, dropout=0.0)
NC = 6  # the tiny corpus's classes


def _no_kd():
    return NoKD(NoKD.Options(), TrainingMissing())


def _states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class AuxMethod(NoKD):
    """no_kd plus a training-only module whose output enters the loss (large gradients: clipping shows)."""

    name = "pin_aux"

    def auxiliary(self, model):
        return nn.Linear(3, 2).eval()  # eval: the trainer must put it in train mode

    def loss(self, ctx):
        ce, terms = super().loss(ctx)
        aux = 50.0 * ctx.auxiliary(torch.ones(1, 3)).pow(2).sum()
        return ce + aux, {**terms, "aux": aux}


class SpyMethod(NoKD):
    """no_kd that needs a teacher and records what the trainer hands it."""

    name = "pin_spy"
    needs_teacher = True

    def __init__(self, *args):
        super().__init__(*args)
        self.views, self.contexts = [], []

    def train_view(self, batch, mask_generator, generator):
        self.views.append((mask_generator, generator))
        return super().train_view(batch, mask_generator, generator)

    def loss(self, ctx):
        self.contexts.append(ctx)
        return super().loss(ctx)


# ---------------------------------------------------------------- init_model
def test_init_model_seeds_from_init_seed_and_role_and_leaves_the_global_rng(tiny_splits):
    dims = split_dims(tiny_splits)
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    got = init_model(CFG, dims, NC, 3, "student")
    assert torch.equal(before, torch.random.get_rng_state())
    torch.manual_seed(derive_seed("init", 3, "student"))
    want = ERCModel(CFG, dims, NC)
    assert _states_equal(got.state_dict(), want.state_dict())
    assert type(got) is ERCModel and got.num_classes == NC and got.dims == dims
    assert not _states_equal(got.state_dict(), init_model(CFG, dims, NC, 3, "teacher").state_dict())


def test_init_model_calls_build_with_the_config_dims_classes_and_kinds(tiny_splits):
    dims = split_dims(tiny_splits)
    calls = []
    kinds = {m: "vector" for m in dims}

    def build(*args, **kwargs):
        calls.append((args, kwargs))
        return ERCModel(*args, **kwargs)

    model = init_model(CFG, dims, 3, 0, "student", kinds=kinds, build=build)
    assert calls == [((CFG, dims, 3), {"kinds": kinds})]
    assert _states_equal(model.state_dict(), init_model(CFG, dims, 3, 0, "student").state_dict())


# ---------------------------------------------------------------- Trainer.__init__
def test_trainer_keeps_its_parts_and_derives_its_streams_from_the_seed(tiny_splits):
    model = init_model(CFG, split_dims(tiny_splits), NC, 0, "student")
    method, cfg = _no_kd(), TrainingConfig(lr=0.02, weight_decay=0.25)
    trainer = Trainer(method, model, cfg, seed=7, device=CPU)
    assert trainer.method is method and trainer.cfg is cfg and trainer.device == CPU and trainer.teacher is None
    assert trainer.model is model and trainer.eval_model is model
    assert trainer.auxiliary is None and trainer.ema_model is None and trainer.steps_done == 0
    assert len(trainer.optimizer.param_groups) == 1
    group = trainer.optimizer.param_groups[0]
    assert [id(p) for p in group["params"]] == [id(p) for p in model.parameters()]
    assert group["lr"] == 0.02 and group["weight_decay"] == 0.25
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert trainer.shuffle_gen.initial_seed() == derive_seed("shuffle", 7)
    assert trainer.mask_gen.initial_seed() == derive_seed("train-mask", 7)
    assert trainer.method_gen.initial_seed() == derive_seed("method", 7, "no_kd")


def test_trainer_refuses_a_missing_teacher_only_when_the_method_needs_one(tiny_splits):
    model = init_model(CFG, split_dims(tiny_splits), NC, 0, "student")
    Trainer(_no_kd(), model, TrainingConfig(), seed=0, device=CPU)  # no teacher needed, none given: fine
    with pytest.raises(ValueError, match=r"^method 'pin_spy' needs a teacher$"):
        Trainer(SpyMethod(SpyMethod.Options(), TrainingMissing()), model, TrainingConfig(), seed=0, device=CPU)


def test_the_auxiliary_module_is_seeded_apart_trained_and_a_second_parameter_group(tiny_splits):
    model = init_model(CFG, split_dims(tiny_splits), NC, 0, "student")
    torch.manual_seed(11)
    before = torch.random.get_rng_state()
    trainer = Trainer(
        AuxMethod(AuxMethod.Options(), TrainingMissing()),
        model,
        TrainingConfig(lr=0.03, weight_decay=0.2),
        seed=4,
        device=CPU,
    )
    assert torch.equal(before, torch.random.get_rng_state())
    torch.manual_seed(derive_seed("init", 4, "pin_aux", "auxiliary"))
    want = nn.Linear(3, 2)
    assert _states_equal(trainer.auxiliary.state_dict(), want.state_dict())
    assert trainer.auxiliary.training
    groups = trainer.optimizer.param_groups
    assert len(groups) == 2
    assert [id(p) for p in groups[0]["params"]] == [id(p) for p in model.parameters()]
    assert [id(p) for p in groups[1]["params"]] == [id(p) for p in trainer.auxiliary.parameters()]
    assert all(g["lr"] == 0.03 and g["weight_decay"] == 0.2 for g in groups)


def test_ema_makes_a_frozen_copy_that_is_scored_in_place_of_the_model(tiny_splits):
    model = init_model(CFG, split_dims(tiny_splits), NC, 0, "student")
    trainer = Trainer(_no_kd(), model, TrainingConfig(ema=0.5), seed=0, device=CPU)
    assert trainer.ema_model is not None and trainer.ema_model is not model
    assert trainer.eval_model is trainer.ema_model
    assert _states_equal(trainer.ema_model.state_dict(), model.state_dict())
    assert not any(p.requires_grad for p in trainer.ema_model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    initial = copy.deepcopy(trainer.ema_model.state_dict())
    trainer.step(tiny_splits["train"].batch([0, 1, 2, 3]))
    assert not _states_equal(initial, trainer.ema_model.state_dict())  # the average moved with the step


# ---------------------------------------------------------------- Trainer.loss
def test_loss_hands_the_method_the_batch_its_view_outputs_teacher_and_streams(tiny_splits):
    train = tiny_splits["train"]
    dims = split_dims(tiny_splits)
    teacher = TeacherReference(init_model(CFG, dims, NC, 0, "teacher"), train, cache=True, batch_size=8, device=CPU)
    method = SpyMethod(SpyMethod.Options(), TrainingMissing())
    model = init_model(CFG, dims, NC, 0, "student")
    trainer = Trainer(method, model, TrainingConfig(label_smoothing=0.2), seed=2, device=CPU, teacher=teacher)
    batch = train.batch([0, 1, 2, 3])
    total, terms = trainer.loss(batch)
    assert method.views == [(trainer.mask_gen, trainer.method_gen)]
    (ctx,) = method.contexts
    assert ctx.batch is batch and ctx.model is model and ctx.generator is trainer.method_gen
    assert ctx.label_smoothing == 0.2 and ctx.auxiliary is None
    want_mask = method.missing.masks(batch.avail, torch_generator("train-mask", 2))
    assert torch.equal(ctx.view.batch.mask, want_mask & batch.avail)
    with torch.no_grad():
        assert torch.equal(ctx.output.logits, model(ctx.view.batch).logits)
        assert torch.equal(ctx.teacher.logits, teacher.outputs(batch).logits)
    from corekd.methods.losses import cross_entropy, masked_mean

    want = masked_mean(cross_entropy(ctx.output.logits, batch.labels, 0.2), batch.utt_mask)
    assert torch.allclose(total, want) and terms == {"ce": total}
    plain = masked_mean(cross_entropy(ctx.output.logits, batch.labels), batch.utt_mask)
    assert float(total.detach()) != pytest.approx(float(plain.detach()))


def test_loss_gives_no_teacher_to_a_method_without_one_and_passes_the_auxiliary(tiny_splits):
    model = init_model(CFG, split_dims(tiny_splits), NC, 0, "student")
    trainer = Trainer(AuxMethod(AuxMethod.Options(), TrainingMissing()), model, TrainingConfig(), seed=0, device=CPU)
    seen = []
    real = trainer.method.loss
    trainer.method.loss = lambda ctx: (seen.append(ctx), real(ctx))[1]
    total, terms = trainer.loss(tiny_splits["train"].batch([0, 1]))
    assert seen[0].teacher is None and seen[0].auxiliary is trainer.auxiliary
    assert set(terms) == {"ce", "aux"} and torch.allclose(total, terms["ce"] + terms["aux"])


# ---------------------------------------------------------------- Trainer.step
def _replica_step(method_cls, tiny_splits, cfg, batch, seed=0):
    """One step by hand: the same loss, backward, separate clipping of model and auxiliary, AdamW."""
    model = init_model(CFG, split_dims(tiny_splits), NC, 0, "student")
    trainer = Trainer(method_cls(method_cls.Options(), TrainingMissing()), model, cfg, seed=seed, device=CPU)
    total, _ = trainer.loss(batch)
    total.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if trainer.auxiliary is not None:
            torch.nn.utils.clip_grad_norm_(trainer.auxiliary.parameters(), cfg.grad_clip)
    trainer.optimizer.step()
    return trainer, float(total.detach())


@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_a_step_is_one_clipped_adamw_update_and_returns_the_detached_terms(tiny_splits, clip):
    batch = tiny_splits["train"].batch([0, 1, 2, 3])
    cfg = TrainingConfig(lr=0.01, weight_decay=0.0, grad_clip=clip)
    model = init_model(CFG, split_dims(tiny_splits), NC, 0, "student")
    trainer = Trainer(AuxMethod(AuxMethod.Options(), TrainingMissing()), model, cfg, seed=0, device=CPU)
    out = trainer.step(batch)
    want, want_loss = _replica_step(AuxMethod, tiny_splits, cfg, batch)
    norms = {"grad_norm_l", "grad_norm_a", "grad_norm_v"}  # each modality encoder's gradient norm, before clipping
    assert set(out) == {"loss", "ce", "aux", *norms} and not any(v.requires_grad for v in out.values())
    assert float(out["loss"]) == pytest.approx(want_loss, rel=1e-6)
    assert _states_equal(trainer.model.state_dict(), want.model.state_dict())
    assert _states_equal(trainer.auxiliary.state_dict(), want.auxiliary.state_dict())
    assert trainer.steps_done == 1
    trainer.step(batch)
    assert trainer.steps_done == 2


def test_clipping_acts_on_the_model_and_the_auxiliary_separately(tiny_splits):
    batch = tiny_splits["train"].batch([0, 1, 2, 3])
    clipped, _ = _replica_step(AuxMethod, tiny_splits, TrainingConfig(lr=0.01, weight_decay=0.0, grad_clip=0.05), batch)
    model_norm = torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in clipped.model.parameters() if p.grad is not None])
    )
    aux_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in clipped.auxiliary.parameters()]))
    assert float(model_norm) == pytest.approx(0.05, rel=1e-3) and float(aux_norm) == pytest.approx(0.05, rel=1e-3)


class OnceAuxMethod(AuxMethod):
    """Uses its auxiliary module in the first loss only."""

    name = "pin_once_aux"
    calls = 0

    def loss(self, ctx):
        type(self).calls += 1
        if type(self).calls == 1:
            return super().loss(ctx)
        return NoKD.loss(self, ctx)


def test_a_parameter_without_a_gradient_this_step_is_not_moved(tiny_splits):
    """Gradients are reset to None, so AdamW skips a module the step's loss did not use (no momentum drift)."""
    OnceAuxMethod.calls = 0
    model = init_model(CFG, split_dims(tiny_splits), NC, 0, "student")
    trainer = Trainer(
        OnceAuxMethod(OnceAuxMethod.Options(), TrainingMissing()),
        model,
        TrainingConfig(lr=0.01, weight_decay=0.0),
        seed=0,
        device=CPU,
    )
    batch = tiny_splits["train"].batch([0, 1, 2, 3])
    trainer.step(batch)
    after_first = copy.deepcopy(trainer.auxiliary.state_dict())
    trainer.step(batch)
    assert all(p.grad is None for p in trainer.auxiliary.parameters())
    assert _states_equal(trainer.auxiliary.state_dict(), after_first)


# ---------------------------------------------------------------- the learning-rate schedule
def _aux_trainer(tiny_splits, **cfg):
    model = init_model(CFG, split_dims(tiny_splits), NC, 0, "student")
    return Trainer(AuxMethod(AuxMethod.Options(), TrainingMissing()), model, TrainingConfig(**cfg), seed=0, device=CPU)


def _rates_of_an_epoch(trainer, train):
    """The learning rate of every parameter group at each step of ``trainer.epoch`` (the steps only count)."""
    seen = []

    def counting_step(batch):
        seen.append([g["lr"] for g in trainer.optimizer.param_groups])
        trainer.steps_done += 1
        return {"loss": torch.tensor(0.0)}

    trainer.step = counting_step
    trainer.epoch(train)
    return seen


@pytest.mark.parametrize(
    "steps_done, batch_size, factor",
    [
        (0, 4, 1.0),  # start: the full rate (10 dialogues in batches of 4: 3 steps per epoch)
        (2, 4, 0.75),  # total 2 epochs x 3 steps = 6: 0.5 (1 + cos(pi/3))
        (3, 4, 0.5),  # half way
        (9, 4, 0.0),  # past the end: held at 0
        (1, 10, 0.5),  # one step per epoch: total 2, 0.5 (1 + cos(pi/2))
        (2, 10, 0.0),
    ],
)
def test_cosine_schedule_sets_every_group(tiny_splits, steps_done, batch_size, factor):
    trainer = _aux_trainer(tiny_splits, lr=0.04, epochs=2, schedule="cosine", batch_size=batch_size, bucket=0)
    trainer.steps_done = steps_done
    first = _rates_of_an_epoch(trainer, tiny_splits["train"])[0]
    assert first == pytest.approx([0.04 * factor] * 2, abs=1e-12)


def test_cosine_schedule_counts_epochs_times_steps(tiny_splits):
    trainer = _aux_trainer(tiny_splits, lr=1.0, epochs=4, schedule="cosine", batch_size=5, bucket=0)
    trainer.steps_done = 2
    rates = _rates_of_an_epoch(trainer, tiny_splits["train"])  # 2 steps per epoch, total 8: 0.5 (1 + cos(pi s / 8))
    assert [r[0] for r in rates] == pytest.approx([0.5 * (1 + math.cos(math.pi * s / 8)) for s in (2, 3)])


def test_constant_schedule_leaves_the_rate(tiny_splits):
    trainer = _aux_trainer(tiny_splits, lr=0.04, epochs=2, schedule="constant", batch_size=3, bucket=0)
    trainer.steps_done = 3
    assert _rates_of_an_epoch(trainer, tiny_splits["train"]) == [[0.04, 0.04]] * 4


# ---------------------------------------------------------------- Trainer.epoch
def test_an_epoch_trains_the_model_sets_the_rate_per_step_and_averages(tiny_splits):
    train = tiny_splits["train"]  # 10 dialogues
    model = init_model(ModelConfig(hidden=16, heads=2, dropout=0.0), split_dims(tiny_splits), 4, 0, "student").eval()
    trainer = Trainer(
        _no_kd(), model, TrainingConfig(batch_size=3, bucket=0, schedule="cosine", epochs=1, lr=1.0), seed=0, device=CPU
    )
    rates, sizes, modes = [], [], []
    values = iter([1.0, 2.0, 4.0, 9.0])

    def fake_step(batch):
        rates.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.steps_done += 1
        sizes.append(len(batch.index))
        modes.append(trainer.model.training)
        v = next(values)
        return {"loss": torch.tensor(v), "x": torch.tensor(-v)}

    trainer.step = fake_step
    terms = trainer.epoch(train)
    # ceil(10 / 3) = 4 steps per epoch, the rate set before each step: 0.5 (1 + cos(pi s / 4))
    assert rates == pytest.approx([0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)])
    assert sizes == [3, 3, 3, 1] and modes == [True] * 4
    assert terms == {"loss": 4.0, "x": -4.0}
    assert all(type(v) is float for v in terms.values())


def test_an_epoch_steps_on_the_shuffled_batches_of_its_own_stream(tiny_splits):
    train = tiny_splits["train"]
    trainer = Trainer(
        _no_kd(),
        init_model(CFG, split_dims(tiny_splits), NC, 0, "student"),
        TrainingConfig(batch_size=4, bucket=0),
        seed=3,
        device=CPU,
    )
    seen = []
    trainer.step = lambda batch: (seen.append(batch), {"loss": torch.tensor(1.0)})[1]
    trainer.epoch(train)
    want = list(train.batches(4, shuffle=True, generator=torch_generator("shuffle", 3), device=CPU))
    assert [b.index.tolist() for b in seen] == [b.index.tolist() for b in want]
    assert all(torch.equal(a.labels, b.labels) for a, b in zip(seen, want))


# ---------------------------------------------------------------- train_model
def _scripted(
    tiny_corpus,
    tiny_splits,
    monkeypatch,
    scores,
    *,
    metric="weighted_f1",
    task="classification",
    method=None,
    eval_batch_size=None,
    teacher=None,
    **cfg,
):
    """train_model with dev scores given in advance (``metric``), spying on predict and the metric calls."""
    it = iter(scores)
    metric_calls, predict_calls, epoch_terms, snapshots, on_epoch_calls = [], [], [], [], []
    real_predict, real_epoch = training.predict, Trainer.epoch

    def fake_metrics(*args):
        metric_calls.append(args)
        return {metric: next(it)}

    def spy_predict(model, split, masks, batch_size, device):
        preds = real_predict(model, split, masks, batch_size, device)
        if task == "regression":
            preds = Predictions(preds.y_true.astype(float), preds.y_pred.astype(float), preds.probs, task="regression")
        predict_calls.append((model, split, masks, batch_size, device, preds))
        snapshots.append(copy.deepcopy(model.state_dict()))
        return preds

    def spy_epoch(self, train):
        terms = real_epoch(self, train)
        epoch_terms.append(terms)
        return terms

    monkeypatch.setattr(
        training, "classification_metrics" if task == "classification" else "regression_metrics", fake_metrics
    )
    monkeypatch.setattr(training, "predict", spy_predict)
    monkeypatch.setattr(Trainer, "epoch", spy_epoch)
    model = init_model(CFG, split_dims(tiny_splits), len(tiny_corpus.labels), 0, "student")
    method = method or _no_kd()
    kwargs = {} if eval_batch_size is None else {"eval_batch_size": eval_batch_size}
    if teacher is not None:
        kwargs["teacher"] = teacher
    result = training.train_model(
        method,
        model,
        tiny_splits["train"],
        tiny_splits["dev"],
        TrainingConfig(batch_size=5, select_metric=metric, **cfg),
        seed=0,
        label_names=tiny_corpus.labels,
        device=CPU,
        on_epoch=lambda e, s: on_epoch_calls.append((e, s)),
        **kwargs,
    )
    return dict(
        result=result,
        model=model,
        metric_calls=metric_calls,
        predict_calls=predict_calls,
        epoch_terms=epoch_terms,
        snapshots=snapshots,
        on_epoch=on_epoch_calls,
    )


def test_train_model_history_records_and_callbacks(tiny_corpus, tiny_splits, monkeypatch):
    run = _scripted(tiny_corpus, tiny_splits, monkeypatch, [0.2, 0.5, 0.4], epochs=3, patience=5)
    result = run["result"]
    assert run["on_epoch"] == [(1, 0.2), (2, 0.5), (3, 0.4)]
    assert result.history == [
        {"epoch": i + 1, **terms, "dev_weighted_f1": s}
        for i, (terms, s) in enumerate(zip(run["epoch_terms"], [0.2, 0.5, 0.4]))
    ]
    norms = {"grad_norm_l", "grad_norm_a", "grad_norm_v"}
    assert set(result.history[0]) == {"epoch", "loss", "ce", *norms, "dev_weighted_f1"}  # no smoothed score at window 1
    assert result.best_epoch == 2 and result.selected_epoch == 2 and result.best_score == 0.5
    assert type(result.best_score) is float and result.epochs_run == 3
    assert 0 < result.seconds < 60
    assert result.model is run["model"] and not result.model.training
    assert _states_equal(result.model.state_dict(), run["snapshots"][1])
    assert not _states_equal(result.model.state_dict(), run["snapshots"][2])


def test_train_model_scores_the_dev_split_under_the_methods_dev_masks(tiny_corpus, tiny_splits, monkeypatch):
    run = _scripted(tiny_corpus, tiny_splits, monkeypatch, [0.2, 0.5], epochs=2, patience=5)
    dev = tiny_splits["dev"]
    want_masks = _no_kd().dev_masks(dev.avail, torch_generator("dev-mask", 0), dev.modalities)
    for (model, split, masks, batch_size, device, preds), args in zip(run["predict_calls"], run["metric_calls"]):
        assert model is run["model"] and split is dev and batch_size == 32 and device == CPU
        assert torch.equal(masks, want_masks)
        assert args[0] is preds.y_true and args[1] is preds.y_pred and args[2] is tiny_corpus.labels
    assert len(run["predict_calls"]) == 2


class DevSpy(NoKD):
    name = "pin_dev_spy"

    def __init__(self, *args):
        super().__init__(*args)
        self.calls = []

    def dev_masks(self, avail, generator, modalities=()):
        self.calls.append((avail, generator.initial_seed(), modalities))
        return super().dev_masks(avail, generator, modalities)


def test_train_model_asks_the_method_for_dev_masks_with_the_corpus_modalities(tiny_corpus, tiny_splits, monkeypatch):
    method = DevSpy(DevSpy.Options(), TrainingMissing())
    _scripted(tiny_corpus, tiny_splits, monkeypatch, [0.5], method=method, epochs=1, patience=1)
    dev = tiny_splits["dev"]
    ((avail, seed, modalities),) = method.calls
    assert avail is dev.avail and seed == derive_seed("dev-mask", 0) and modalities == dev.modalities == ("l", "a", "v")


def test_train_model_passes_its_eval_batch_size_and_scores_the_average_with_ema(tiny_corpus, tiny_splits, monkeypatch):
    run = _scripted(tiny_corpus, tiny_splits, monkeypatch, [0.2], epochs=1, patience=5, eval_batch_size=3, ema=0.5)
    model, _, _, batch_size, _, _ = run["predict_calls"][0]
    assert batch_size == 3 and model is not run["model"]  # the weight average is scored
    assert _states_equal(run["result"].model.state_dict(), run["snapshots"][0])  # and its weights are kept


def test_train_model_hands_its_teacher_to_the_trainer(tiny_corpus, tiny_splits, monkeypatch):
    teacher = TeacherReference(
        init_model(CFG, split_dims(tiny_splits), NC, 0, "teacher"),
        tiny_splits["train"],
        cache=True,
        batch_size=8,
        device=CPU,
    )
    method = SpyMethod(SpyMethod.Options(), TrainingMissing())
    _scripted(tiny_corpus, tiny_splits, monkeypatch, [0.5], method=method, teacher=teacher, epochs=1, patience=1)
    ctx = method.contexts[0]
    assert torch.equal(ctx.teacher.logits, teacher.outputs(ctx.batch).logits)


def test_train_model_stops_patience_epochs_after_the_best(tiny_corpus, tiny_splits, monkeypatch):
    run = _scripted(tiny_corpus, tiny_splits, monkeypatch, [0.3, 0.6, 0.6, 0.5, 0.9], epochs=5, patience=2)
    result = run["result"]
    assert result.epochs_run == 4 and len(run["on_epoch"]) == 4  # epochs 3 and 4 bring nothing better
    assert result.best_epoch == 2 and result.best_score == 0.6
    assert _states_equal(result.model.state_dict(), run["snapshots"][1])


def test_train_model_patience_one_stops_at_the_first_worse_epoch(tiny_corpus, tiny_splits, monkeypatch):
    run = _scripted(tiny_corpus, tiny_splits, monkeypatch, [0.5, 0.4, 0.9], epochs=3, patience=1)
    assert run["result"].epochs_run == 2 and run["result"].best_epoch == 1


def test_train_model_lower_is_better_for_mae(tiny_corpus, tiny_splits, monkeypatch):
    run = _scripted(
        tiny_corpus,
        tiny_splits,
        monkeypatch,
        [0.5, 0.3, 0.4, 0.3, 0.1],
        metric="mae",
        task="regression",
        epochs=5,
        patience=2,
    )
    result = run["result"]
    assert result.epochs_run == 4 and result.best_epoch == 2 and result.selected_epoch == 2
    assert result.best_score == 0.3
    assert result.history[1]["dev_mae"] == 0.3
    assert _states_equal(result.model.state_dict(), run["snapshots"][1])
    for args, call in zip(run["metric_calls"], run["predict_calls"]):  # regression_metrics(y_true, y_pred)
        assert len(args) == 2 and args[0] is call[5].y_true and args[1] is call[5].y_pred


def test_train_model_selects_on_the_trailing_mean_with_a_window(tiny_corpus, tiny_splits, monkeypatch):
    # curve (window 2): 0.2, 0.4, 0.45, 0.4, 0.5, 0.3; raw best: 0.6 at epoch 2
    scores = [0.2, 0.6, 0.3, 0.5, 0.5, 0.1]
    run = _scripted(tiny_corpus, tiny_splits, monkeypatch, scores, epochs=6, patience=2, select_window=2)
    result = run["result"]
    assert result.best_epoch == 2 and result.selected_epoch == 5 and result.best_score == 0.5
    assert result.epochs_run == 6
    assert [h["dev_weighted_f1_smoothed"] for h in result.history] == pytest.approx([0.2, 0.4, 0.45, 0.4, 0.5, 0.3])
    assert [h["dev_weighted_f1"] for h in result.history] == scores
    assert _states_equal(result.model.state_dict(), run["snapshots"][4])


def test_train_model_diverged_score_is_an_error_naming_epoch_method_and_seed(tiny_corpus, tiny_splits, monkeypatch):
    with pytest.raises(CorekdError) as err:
        _scripted(tiny_corpus, tiny_splits, monkeypatch, [float("inf")], epochs=2, patience=2)
    assert err.value.field == "method no_kd, seed 0"
    assert err.value.detail.startswith("training diverged at epoch 1 ({'epoch': 1, 'loss': ")
    assert err.value.detail.endswith("'dev_weighted_f1': inf}); lower training.lr or check the features")


def test_train_model_is_the_trainer_loop_under_the_seeded_dropout_stream(tiny_corpus, tiny_splits):
    """Two real epochs with dropout equal a hand-run Trainer loop; the global RNG is left alone."""
    cfg_model = ModelConfig(hidden=16, heads=2, dropout=0.3)
    dims, train, dev = split_dims(tiny_splits), tiny_splits["train"], tiny_splits["dev"]
    cfg = TrainingConfig(epochs=2, patience=5, batch_size=5)
    torch.manual_seed(1)
    before = torch.random.get_rng_state()
    result = training.train_model(
        _no_kd(),
        init_model(cfg_model, dims, NC, 6, "student"),
        train,
        dev,
        cfg,
        seed=6,
        label_names=tiny_corpus.labels,
        device=CPU,
    )
    assert torch.equal(before, torch.random.get_rng_state())
    trainer = Trainer(_no_kd(), init_model(cfg_model, dims, NC, 6, "student"), cfg, seed=6, device=CPU)
    states, history = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed("dropout", 6, "no_kd"))
        for _ in range(2):
            history.append(trainer.epoch(train))
            states.append(copy.deepcopy(trainer.model.state_dict()))
    best = result.best_epoch
    assert [{k: v for k, v in h.items() if k not in ("epoch", "dev_weighted_f1")} for h in result.history] == history
    assert _states_equal(result.model.state_dict(), states[best - 1])


# ---------------------------------------------------------------- save_checkpoint
def test_save_checkpoint_writes_the_weights_and_the_exact_model_json(tmp_path, tiny_splits):
    dims = split_dims(tiny_splits)
    model = init_model(CFG, dims, NC, 0, "student")
    folder = save_checkpoint(model, str(tmp_path / "a" / "b"), {"method": "no_kd", "seed": 3})
    assert folder == tmp_path / "a" / "b"
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    info = {
        "corekd_version": corekd.__version__,
        "model": CFG.model_dump(mode="json"),
        "architecture": {"name": "erc", "options": {}},
        "dims": dims,
        "num_classes": NC,
        "method": "no_kd",
        "seed": 3,
        "weights_sha256": hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest(),
    }
    text = (folder / "model.json").read_text()
    assert json.loads(text) == info
    assert text == json.dumps(info, indent=2)
    from safetensors.torch import load_file

    weights = load_file(str(folder / "model.safetensors"))
    assert _states_equal(weights, {k: v.contiguous() for k, v in model.state_dict().items()})


def test_save_checkpoint_records_kinds_only_when_a_modality_is_not_a_vector(tmp_path):
    dims = {"l": 4, "a": 3}
    seq = ERCModel(CFG, dims, 2, kinds={"a": "sequence"})
    save_checkpoint(seq, tmp_path / "s", {})
    assert json.loads((tmp_path / "s" / "model.json").read_text())["kinds"] == {"l": "vector", "a": "sequence"}
    save_checkpoint(ERCModel(CFG, dims, 2), tmp_path / "v", {})
    assert "kinds" not in json.loads((tmp_path / "v" / "model.json").read_text())


def test_save_checkpoint_into_an_existing_folder_replaces_both_files(tmp_path, tiny_splits):
    model = init_model(CFG, split_dims(tiny_splits), NC, 0, "student")
    save_checkpoint(model, tmp_path / "ck", {"seed": 1})
    other = init_model(CFG, split_dims(tiny_splits), NC, 1, "student")
    save_checkpoint(other, tmp_path / "ck", {"seed": 2})
    assert json.loads((tmp_path / "ck" / "model.json").read_text())["seed"] == 2
    from safetensors.torch import load_file

    assert _states_equal(load_file(str(tmp_path / "ck" / "model.safetensors")), other.state_dict())


def test_train_model_an_undefined_dev_score_is_the_worst(tiny_corpus, tiny_splits, monkeypatch):
    """corr is None on a constant dev prediction: that epoch is never selected over a defined one, whatever the
    direction, and a history/record keeps the None (null in JSON)."""
    run = _scripted(
        tiny_corpus,
        tiny_splits,
        monkeypatch,
        [None, 0.1, None, 0.05],
        metric="corr",
        task="regression",
        epochs=4,
        patience=5,
    )
    result = run["result"]
    assert result.selected_epoch == 2 and result.best_epoch == 2 and result.best_score == 0.1
    assert [h["dev_corr"] for h in result.history] == [None, 0.1, None, 0.05]
    assert run["on_epoch"] == [(1, None), (2, 0.1), (3, None), (4, 0.05)]
    assert _states_equal(result.model.state_dict(), run["snapshots"][1])


def test_train_model_every_dev_score_undefined_keeps_the_first_epoch(tiny_corpus, tiny_splits, monkeypatch):
    run = _scripted(
        tiny_corpus, tiny_splits, monkeypatch, [None] * 6, metric="corr", task="regression", epochs=6, patience=2
    )
    result = run["result"]
    assert result.selected_epoch == 1 and result.best_score is None and result.epochs_run == 3  # stops on patience
    assert _states_equal(result.model.state_dict(), run["snapshots"][0])


def test_train_model_a_smoothed_window_over_an_undefined_score_is_the_worst(tiny_corpus, tiny_splits, monkeypatch):
    run = _scripted(
        tiny_corpus,
        tiny_splits,
        monkeypatch,
        [0.2, None, 0.9, 0.3, 0.1],
        metric="corr",
        task="regression",
        epochs=5,
        patience=9,
        select_window=2,
    )
    result = run["result"]
    # trailing means: 0.2, None, None, 0.6, 0.2 -> epoch 4
    assert [h["dev_corr_smoothed"] for h in result.history] == pytest.approx([0.2, None, None, 0.6, 0.2])
    assert result.selected_epoch == 4 and result.best_score == 0.3 and result.best_epoch == 3


# ---------------------------------------------------------------- seeded streams
def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_initial_weights_depend_on_the_seed_and_role(tiny_corpus):
    """Kills training.init_model `derive_seed("init", None, role)` and `derive_seed("init", role)`."""
    cfg, dims, n = ModelConfig(hidden=16, heads=2), corpus_dims(tiny_corpus), len(tiny_corpus.labels)
    s0 = _weights(init_model(cfg, dims, n, 0, "student"))
    assert _same(s0, _weights(init_model(cfg, dims, n, 0, "student")))  # same (seed, role): same weights
    assert not _same(s0, _weights(init_model(cfg, dims, n, 1, "student")))  # another seed: other weights
    assert not _same(s0, _weights(init_model(cfg, dims, n, 0, "teacher")))  # another role: other weights


def _seeded_trainer(tiny_corpus, seed, name="no_kd", **options):
    model = init_model(ModelConfig(hidden=16, heads=2), corpus_dims(tiny_corpus), len(tiny_corpus.labels), 0, "student")
    cls = method_class(name)
    return Trainer(
        cls(cls.Options(**options), TrainingMissing(low=0.3, high=0.6)),
        model,
        TrainingConfig(batch_size=4),
        seed=seed,
        device=torch.device("cpu"),
    )


def test_training_masks_depend_on_the_seed(tiny_corpus, tiny_splits):
    """Kills training.Trainer.__init__ `torch_generator("train-mask", None)`: the first batch's training masks of the
    same student method differ between seeds, and are the same for the same seed."""
    batch = tiny_splits["train"].batch([0, 1, 2, 3])

    def first_mask(seed):
        trainer = _seeded_trainer(tiny_corpus, seed)
        return trainer.method.train_view(batch, trainer.mask_gen, trainer.method_gen).batch.mask

    m0 = first_mask(0)
    assert torch.equal(m0, first_mask(0))
    assert not torch.equal(m0, first_mask(1))


def test_method_draws_depend_on_the_seed(tiny_corpus, tiny_splits):
    """Kills training.Trainer.__init__ `torch_generator("method", None, method.name)`: with the training masks held
    fixed, corekd's NCE conflict targets (drawn from the method stream) differ between seeds."""
    batch = tiny_splits["train"].batch([0, 1, 2, 3])

    def targets(seed):
        trainer = _seeded_trainer(
            tiny_corpus, seed, "corekd", l_kd=0.0, l_state=0.0, l_mstate=0.0, nce_prob=0.3
        )  # below the cap: the draw among the eligible is random
        view = trainer.method.train_view(batch, torch_generator("fixed masks"), trainer.method_gen)
        return view.extra["conflict"].selected

    t0 = targets(0)
    assert t0.any() and torch.equal(t0, targets(0))
    assert not torch.equal(t0, targets(1))


# ---------------------------------------------------------------- checkpoints
def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(
        CorekdError,
        match=r"model\.json: file not found \(a checkpoint folder holds model\.json and "
        r"model\.safetensors\)",
    ):
        load_checkpoint(tmp_path / "nowhere")


def test_a_checkpoint_can_be_saved_again_and_records_the_version(tmp_path, tiny_corpus):
    dims = {m: s.dim for m, s in tiny_corpus.modalities.items()}
    model = init_model(ModelConfig(hidden=16, heads=2), dims, len(tiny_corpus.labels), 0, "student")
    save_checkpoint(model, tmp_path / "ck", {"method": "no_kd"})
    save_checkpoint(model, tmp_path / "ck", {"method": "no_kd", "seed": 1})  # the same folder again
    _, info = load_checkpoint(tmp_path / "ck")
    assert info["corekd_version"] == corekd.__version__ and info["seed"] == 1
    assert info["model"] == ModelConfig(hidden=16, heads=2).model_dump(mode="json")


# ---------------------------------------------------------------- the training loop
def _trainer(tiny_corpus, seed=0, name="no_kd", **options):
    dims = {m: s.dim for m, s in tiny_corpus.modalities.items()}
    model = init_model(ModelConfig(hidden=16, heads=2), dims, len(tiny_corpus.labels), 0, "student")
    cls = method_class(name)
    return Trainer(
        cls(cls.Options(**options), TrainingMissing()),
        model,
        TrainingConfig(batch_size=3),
        seed=seed,
        device=torch.device("cpu"),
    )


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
        training.train_model(
            cls(cls.Options(), TrainingMissing()),
            model,
            tiny_splits["train"],
            tiny_splits["dev"],
            TrainingConfig(epochs=1, batch_size=4),
            seed=seed,
            label_names=tiny_corpus.labels,
            device=torch.device("cpu"),
        )
    assert seeds == [torch_generator("shuffle", 3).initial_seed(), torch_generator("shuffle", 4).initial_seed()]


def test_trainer_uses_the_configured_optimiser_settings_and_needs_its_teacher(tiny_corpus):
    dims = {m: s.dim for m, s in tiny_corpus.modalities.items()}
    model = init_model(ModelConfig(hidden=16, heads=2), dims, len(tiny_corpus.labels), 0, "student")
    cls = method_class("no_kd")
    trainer = Trainer(
        cls(cls.Options(), TrainingMissing()),
        model,
        TrainingConfig(lr=0.05, weight_decay=0.3),
        seed=0,
        device=torch.device("cpu"),
    )
    group = trainer.optimizer.param_groups[0]
    assert group["lr"] == 0.05 and group["weight_decay"] == 0.3
    kd = method_class("vanilla_kd")
    with pytest.raises(ValueError, match="method 'vanilla_kd' needs a teacher"):
        Trainer(kd(kd.Options(), TrainingMissing()), model, TrainingConfig(), seed=0, device=torch.device("cpu"))


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
        cls(cls.Options(), TrainingMissing()),
        model,
        tiny_splits["train"],
        tiny_splits["dev"],
        TrainingConfig(epochs=epochs, patience=patience, batch_size=4),
        seed=0,
        label_names=tiny_corpus.labels,
        device=torch.device("cpu"),
        on_epoch=on_epoch,
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
        norm = torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in trainer.model.parameters() if p.grad is not None])
        )
        assert norm <= clip * 1.001  # clipped to grad_clip
    assert seen[0].any() and torch.equal(seen[0], seen[1])


def test_grad_clip_zero_means_no_clipping(tiny_corpus, tiny_splits):
    trainer = _trainer(tiny_corpus)
    trainer.cfg = TrainingConfig(batch_size=3, grad_clip=0.0)
    trainer.optimizer = torch.optim.AdamW(
        trainer.model.parameters(), lr=1e-3, weight_decay=0.0
    )  # only gradients move it
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.step(tiny_splits["train"].batch([0, 1, 2, 3]))
    assert not all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


# ---------------------------------------------------------------- the weight average
def _ema_trainer(ema):
    torch.manual_seed(0)
    model = ERCModel(ModelConfig(hidden=8, heads=1, dropout=0.0), {"l": 1}, 2)
    cls = method_class("no_kd")
    trainer = Trainer(
        cls(cls.Options(), TrainingMissing()), model, TrainingConfig(ema=ema), seed=0, device=torch.device("cpu")
    )
    trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.0)  # a step leaves the weights as they are
    return trainer


@pytest.mark.parametrize(
    "steps_done,ema,decay",
    [
        (1, 0.99, 2 / 11),  # warm-up: (1 + s) / (10 + s) below the configured decay
        (3, 0.99, 4 / 13),
        (1000, 0.9, 0.9),  # late: the configured decay
    ],
)
def test_weight_average_update_by_hand(steps_done, ema, decay):
    """average <- decay * average + (1 - decay) * weights, decay = min(ema, (1 + s) / (10 + s)) after s steps.

    Through Trainer.step, whose optimiser has a zero rate (only the average moves). Kills the mutants of
    training.Trainer._update_average `(1 + s) * (10 + s)`, `(1 - s)`, `(2 + s)`, `(10 - s)`, `(11 + s)`, `1.0 + decay`,
    `2.0 - decay`."""
    trainer = _ema_trainer(ema)
    with torch.no_grad():
        for i, (p, a) in enumerate(zip(trainer.model.parameters(), trainer.ema_model.parameters())):
            p.fill_(1.0 + i)  # the current weights
            a.fill_(-1.0)  # the average so far
    trainer.steps_done = steps_done - 1  # the step counts itself, then averages
    utt = torch.ones(1, 2, dtype=torch.bool)
    trainer.step(made_up_batch(utt[..., None].clone(), utt[..., None].clone(), torch.tensor([[0, 1]]), utt, ("l",)))
    for i, a in enumerate(trainer.ema_model.parameters()):
        expected = decay * -1.0 + (1 - decay) * (1.0 + i)
        assert torch.allclose(a, torch.full_like(a, expected), atol=1e-6), (i, float(a.flatten()[0]), expected)
    assert math.isclose(min(ema, (1 + steps_done) / (10 + steps_done)), decay)


TINY_CFG, TINY_DIMS = ModelConfig(hidden=8, heads=1, dropout=0.0), {"l": 3, "a": 2}


def _saved(folder, model=None, edit=None):
    """A tiny checkpoint in ``folder``; ``edit`` changes its parsed model.json before it is written back."""
    save_checkpoint(model or ERCModel(TINY_CFG, TINY_DIMS, 3), folder, {"method": "no_kd"})
    meta = folder / "model.json"
    if edit is not None:
        info = json.loads(meta.read_text())
        edit(info)
        meta.write_text(json.dumps(info))
    return meta


def test_load_checkpoint_unknown_architecture_names_the_file_field_known_names_and_versions(tmp_path):
    """The error names model.json, the field architecture.name, the known architectures and the version that wrote
    the checkpoint. Kills training.load_checkpoint `'XX, XX'.join`; load_checkpoint `path=None`, `field=None`, path or
    field left out, `"XXarchitecture.nameXX"`, `"ARCHITECTURE.NAME"`, `info.get(None, '?')`, `info.get('?')`,
    `"XXcorekd_versionXX"`, `"COREKD_VERSION"` (these lose the recorded version)."""
    from corekd import __version__
    from corekd.models.model import ARCHITECTURES

    def unknown(info):
        info["architecture"] = {"name": "nonesuch", "options": {}}
        info["corekd_version"] = "0.0.1-old"

    meta = _saved(tmp_path / "ck", edit=unknown)
    with pytest.raises(CorekdError) as caught:
        load_checkpoint(tmp_path / "ck")
    err = caught.value
    assert err.path == str(meta) and err.field == "architecture.name"
    assert {"erc", "decoupled", "reconstruction"} <= set(ARCHITECTURES)
    assert (
        f"(known: {', '.join(sorted(ARCHITECTURES))}; written by corekd 0.0.1-old, this is {__version__})" in err.detail
    )


def test_load_checkpoint_unknown_architecture_without_a_recorded_version(tmp_path):
    """No corekd_version in model.json: '?' stands for it. Kills training.load_checkpoint `info.get('corekd_version',
    None)`, `info.get('corekd_version', )` (both print None) and `'XX?XX'`."""

    def unknown(info):
        info["architecture"] = {"name": "nonesuch"}
        del info["corekd_version"]

    _saved(tmp_path / "ck", edit=unknown)
    with pytest.raises(CorekdError, match=r"written by corekd \?, this is "):
        load_checkpoint(tmp_path / "ck")


def test_load_checkpoint_architecture_without_options_uses_the_defaults(tmp_path):
    """An architecture entry with a name and no options rebuilds that class with its default options (decoupled:
    graph_size 32) and loads the weights. Kills training.load_checkpoint `arch.get("options", None)` and
    `arch.get("options", )` (no options: None, not a mapping)."""
    from corekd.methods.decoupled import DecoupledModel

    model = DecoupledModel(TINY_CFG, TINY_DIMS, 3).eval()
    _saved(tmp_path / "ck", model=model, edit=lambda info: info.update(architecture={"name": "decoupled"}))
    loaded, info = load_checkpoint(tmp_path / "ck")
    assert type(loaded) is DecoupledModel and loaded.graph_size == 32 and info["architecture"] == {"name": "decoupled"}
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_load_checkpoint_refuses_unexpected_weights_and_restores_kinds(tmp_path):
    """A weight the model has no place for is named (not dropped) with the weights file as the path; a model with a
    sequence modality comes back with its kinds."""
    from helpers import edit_weights

    model = ERCModel(TINY_CFG, TINY_DIMS, 3, {"a": "sequence"}).eval()
    _saved(tmp_path / "ck", model=model)
    loaded, info = load_checkpoint(tmp_path / "ck")
    assert loaded.kinds == {"l": "vector", "a": "sequence"} and info["kinds"] == {"l": "vector", "a": "sequence"}
    weights_file = tmp_path / "ck" / "model.safetensors"
    edit_weights(tmp_path / "ck", lambda w: w.update({"extra.weight": torch.zeros(2)}))  # checksum recorded anew
    with pytest.raises(CorekdError, match=r"missing \[\], unexpected \['extra\.weight'\]") as caught:
        load_checkpoint(tmp_path / "ck")
    assert caught.value.path == str(weights_file)
