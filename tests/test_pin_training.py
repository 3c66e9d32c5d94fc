"""Fast, exact pins of the training loop's pieces: init_model, Trainer (init, loss, step, _set_lr, epoch),
train_model's selection and bookkeeping (dev scores scripted, a real but tiny training) and save_checkpoint."""

import copy
import hashlib
import json
import math

import pytest
import torch
from torch import nn

import corekd
import corekd.training as training
from corekd.config import TrainingConfig
from corekd.data.protocols import TrainingMissing
from corekd.errors import CorekdError
from corekd.evaluation.predict import Predictions
from corekd.methods.no_kd import NoKD
from corekd.models.model import ERCModel, ModelConfig
from corekd.seeding import derive_seed, torch_generator
from corekd.training import TeacherReference, Trainer, init_model, save_checkpoint

CPU = torch.device("cpu")
CFG = ModelConfig(hidden=16, heads=2, dropout=0.0)
NC = 6  # the tiny corpus's classes


def _dims(splits):
    return {m: int(x.shape[-1]) for m, x in splits["train"].features.items()}


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
    dims = _dims(tiny_splits)
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
    dims = _dims(tiny_splits)
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
    model = init_model(CFG, _dims(tiny_splits), NC, 0, "student")
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
    model = init_model(CFG, _dims(tiny_splits), NC, 0, "student")
    Trainer(_no_kd(), model, TrainingConfig(), seed=0, device=CPU)  # no teacher needed, none given: fine
    with pytest.raises(ValueError, match=r"^method 'pin_spy' needs a teacher$"):
        Trainer(SpyMethod(SpyMethod.Options(), TrainingMissing()), model, TrainingConfig(), seed=0, device=CPU)


def test_the_auxiliary_module_is_seeded_apart_trained_and_a_second_parameter_group(tiny_splits):
    model = init_model(CFG, _dims(tiny_splits), NC, 0, "student")
    torch.manual_seed(11)
    before = torch.random.get_rng_state()
    trainer = Trainer(AuxMethod(AuxMethod.Options(), TrainingMissing()), model, TrainingConfig(lr=0.03, weight_decay=0.2),
                      seed=4, device=CPU)
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
    model = init_model(CFG, _dims(tiny_splits), NC, 0, "student")
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
    dims = _dims(tiny_splits)
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
    model = init_model(CFG, _dims(tiny_splits), NC, 0, "student")
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
    model = init_model(CFG, _dims(tiny_splits), NC, 0, "student")
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
    model = init_model(CFG, _dims(tiny_splits), NC, 0, "student")
    trainer = Trainer(AuxMethod(AuxMethod.Options(), TrainingMissing()), model, cfg, seed=0, device=CPU)
    out = trainer.step(batch)
    want, want_loss = _replica_step(AuxMethod, tiny_splits, cfg, batch)
    assert set(out) == {"loss", "ce", "aux"} and not any(v.requires_grad for v in out.values())
    assert float(out["loss"]) == pytest.approx(want_loss, rel=1e-6)
    assert _states_equal(trainer.model.state_dict(), want.model.state_dict())
    assert _states_equal(trainer.auxiliary.state_dict(), want.auxiliary.state_dict())
    assert trainer.steps_done == 1
    trainer.step(batch)
    assert trainer.steps_done == 2


def test_clipping_acts_on_the_model_and_the_auxiliary_separately(tiny_splits):
    batch = tiny_splits["train"].batch([0, 1, 2, 3])
    clipped, _ = _replica_step(AuxMethod, tiny_splits, TrainingConfig(lr=0.01, weight_decay=0.0, grad_clip=0.05), batch)
    model_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in clipped.model.parameters() if p.grad is not None]))
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
    model = init_model(CFG, _dims(tiny_splits), NC, 0, "student")
    trainer = Trainer(OnceAuxMethod(OnceAuxMethod.Options(), TrainingMissing()), model,
                      TrainingConfig(lr=0.01, weight_decay=0.0), seed=0, device=CPU)
    batch = tiny_splits["train"].batch([0, 1, 2, 3])
    trainer.step(batch)
    after_first = copy.deepcopy(trainer.auxiliary.state_dict())
    trainer.step(batch)
    assert all(p.grad is None for p in trainer.auxiliary.parameters())
    assert _states_equal(trainer.auxiliary.state_dict(), after_first)


# ---------------------------------------------------------------- Trainer._set_lr
def _aux_trainer(tiny_splits, **cfg):
    model = init_model(CFG, _dims(tiny_splits), NC, 0, "student")
    return Trainer(AuxMethod(AuxMethod.Options(), TrainingMissing()), model, TrainingConfig(**cfg), seed=0, device=CPU)


@pytest.mark.parametrize("steps_done, steps_per_epoch, factor", [
    (0, 3, 1.0),  # start: the full rate
    (2, 3, 0.75),  # total 2 epochs x 3 steps = 6: 0.5 (1 + cos(pi/3))
    (3, 3, 0.5),  # half way
    (9, 3, 0.0),  # past the end: held at 0
    (1, 0, 0.0),  # no steps per epoch: total is at least 1
    (0, 0, 1.0),
])
def test_cosine_schedule_sets_every_group(tiny_splits, steps_done, steps_per_epoch, factor):
    trainer = _aux_trainer(tiny_splits, lr=0.04, epochs=2, schedule="cosine")
    trainer.steps_done = steps_done
    trainer._set_lr(steps_per_epoch)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([0.04 * factor] * 2, abs=1e-12)


def test_cosine_schedule_counts_epochs_times_steps(tiny_splits):
    trainer = _aux_trainer(tiny_splits, lr=1.0, epochs=4, schedule="cosine")
    trainer.steps_done = 2
    trainer._set_lr(2)  # total 8: 0.5 (1 + cos(pi / 4))
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_constant_schedule_leaves_the_rate(tiny_splits):
    trainer = _aux_trainer(tiny_splits, lr=0.04, epochs=2, schedule="constant")
    trainer.steps_done = 3
    trainer._set_lr(3)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [0.04, 0.04]


# ---------------------------------------------------------------- Trainer.epoch
def test_an_epoch_trains_the_model_sets_the_rate_per_step_and_averages(tiny_splits):
    train = tiny_splits["train"]  # 10 dialogues
    model = init_model(ModelConfig(hidden=16, heads=2, dropout=0.0), _dims(tiny_splits), 4, 0, "student").eval()
    trainer = Trainer(_no_kd(), model, TrainingConfig(batch_size=3, bucket=0), seed=0, device=CPU)
    lr_calls, sizes, modes = [], [], []
    trainer._set_lr = lr_calls.append
    values = iter([1.0, 2.0, 4.0, 9.0])

    def fake_step(batch):
        sizes.append(len(batch.index))
        modes.append(trainer.model.training)
        v = next(values)
        return {"loss": torch.tensor(v), "x": torch.tensor(-v)}

    trainer.step = fake_step
    terms = trainer.epoch(train)
    assert lr_calls == [4, 4, 4, 4]  # ceil(10 / 3) steps per epoch, set before each step
    assert sizes == [3, 3, 3, 1] and modes == [True] * 4
    assert terms == {"loss": 4.0, "x": -4.0}
    assert all(type(v) is float for v in terms.values())


def test_an_epoch_steps_on_the_shuffled_batches_of_its_own_stream(tiny_splits):
    train = tiny_splits["train"]
    trainer = Trainer(_no_kd(), init_model(CFG, _dims(tiny_splits), NC, 0, "student"),
                      TrainingConfig(batch_size=4, bucket=0), seed=3, device=CPU)
    seen = []
    trainer.step = lambda batch: (seen.append(batch), {"loss": torch.tensor(1.0)})[1]
    trainer.epoch(train)
    want = list(train.batches(4, shuffle=True, generator=torch_generator("shuffle", 3), device=CPU))
    assert [b.index.tolist() for b in seen] == [b.index.tolist() for b in want]
    assert all(torch.equal(a.labels, b.labels) for a, b in zip(seen, want))


# ---------------------------------------------------------------- train_model
def _scripted(tiny_corpus, tiny_splits, monkeypatch, scores, *, metric="weighted_f1", task="classification",
              method=None, eval_batch_size=None, teacher=None, **cfg):
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

    monkeypatch.setattr(training, "classification_metrics" if task == "classification" else "regression_metrics",
                        fake_metrics)
    monkeypatch.setattr(training, "predict", spy_predict)
    monkeypatch.setattr(Trainer, "epoch", spy_epoch)
    model = init_model(CFG, _dims(tiny_splits), len(tiny_corpus.labels), 0, "student")
    method = method or _no_kd()
    kwargs = {} if eval_batch_size is None else {"eval_batch_size": eval_batch_size}
    if teacher is not None:
        kwargs["teacher"] = teacher
    result = training.train_model(method, model, tiny_splits["train"], tiny_splits["dev"],
                                  TrainingConfig(batch_size=5, select_metric=metric, **cfg), seed=0,
                                  label_names=tiny_corpus.labels, device=CPU,
                                  on_epoch=lambda e, s: on_epoch_calls.append((e, s)), **kwargs)
    return dict(result=result, model=model, metric_calls=metric_calls, predict_calls=predict_calls,
                epoch_terms=epoch_terms, snapshots=snapshots, on_epoch=on_epoch_calls)


def test_train_model_history_records_and_callbacks(tiny_corpus, tiny_splits, monkeypatch):
    run = _scripted(tiny_corpus, tiny_splits, monkeypatch, [0.2, 0.5, 0.4], epochs=3, patience=5)
    result = run["result"]
    assert run["on_epoch"] == [(1, 0.2), (2, 0.5), (3, 0.4)]
    assert result.history == [{"epoch": i + 1, **terms, "dev_weighted_f1": s}
                              for i, (terms, s) in enumerate(zip(run["epoch_terms"], [0.2, 0.5, 0.4]))]
    assert set(result.history[0]) == {"epoch", "loss", "ce", "dev_weighted_f1"}  # no smoothed score at window 1
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
    teacher = TeacherReference(init_model(CFG, _dims(tiny_splits), NC, 0, "teacher"), tiny_splits["train"], cache=True,
                               batch_size=8, device=CPU)
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
    run = _scripted(tiny_corpus, tiny_splits, monkeypatch, [0.5, 0.3, 0.4, 0.3, 0.1], metric="mae", task="regression",
                    epochs=5, patience=2)
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
    dims, train, dev = _dims(tiny_splits), tiny_splits["train"], tiny_splits["dev"]
    cfg = TrainingConfig(epochs=2, patience=5, batch_size=5)
    torch.manual_seed(1)
    before = torch.random.get_rng_state()
    result = training.train_model(_no_kd(), init_model(cfg_model, dims, NC, 6, "student"), train, dev, cfg, seed=6,
                                  label_names=tiny_corpus.labels, device=CPU)
    assert torch.equal(before, torch.random.get_rng_state())
    trainer = Trainer(_no_kd(), init_model(cfg_model, dims, NC, 6, "student"), cfg, seed=6, device=CPU)
    states, history = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed("dropout", 6, "no_kd"))
        for _ in range(2):
            history.append(trainer.epoch(train))
            states.append(copy.deepcopy(trainer.model.state_dict()))
    best = result.best_epoch
    assert [{k: h[k] for k in ("loss", "ce")} for h in result.history] == history
    assert _states_equal(result.model.state_dict(), states[best - 1])


# ---------------------------------------------------------------- save_checkpoint
def test_save_checkpoint_writes_the_weights_and_the_exact_model_json(tmp_path, tiny_splits):
    dims = _dims(tiny_splits)
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
    model = init_model(CFG, _dims(tiny_splits), NC, 0, "student")
    save_checkpoint(model, tmp_path / "ck", {"seed": 1})
    other = init_model(CFG, _dims(tiny_splits), NC, 1, "student")
    save_checkpoint(other, tmp_path / "ck", {"seed": 2})
    assert json.loads((tmp_path / "ck" / "model.json").read_text())["seed"] == 2
    from safetensors.torch import load_file
    assert _states_equal(load_file(str(tmp_path / "ck" / "model.safetensors")), other.state_dict())


def test_train_model_an_undefined_dev_score_is_the_worst(tiny_corpus, tiny_splits, monkeypatch):
    """corr is None on a constant dev prediction: that epoch is never selected over a defined one, whatever the
    direction, and a history/record keeps the None (null in JSON)."""
    run = _scripted(tiny_corpus, tiny_splits, monkeypatch, [None, 0.1, None, 0.05], metric="corr", task="regression",
                    epochs=4, patience=5)
    result = run["result"]
    assert result.selected_epoch == 2 and result.best_epoch == 2 and result.best_score == 0.1
    assert [h["dev_corr"] for h in result.history] == [None, 0.1, None, 0.05]
    assert run["on_epoch"] == [(1, None), (2, 0.1), (3, None), (4, 0.05)]
    assert _states_equal(result.model.state_dict(), run["snapshots"][1])


def test_train_model_every_dev_score_undefined_keeps_the_first_epoch(tiny_corpus, tiny_splits, monkeypatch):
    run = _scripted(tiny_corpus, tiny_splits, monkeypatch, [None] * 6, metric="corr", task="regression",
                    epochs=6, patience=2)
    result = run["result"]
    assert result.selected_epoch == 1 and result.best_score is None and result.epochs_run == 3  # stops on patience
    assert _states_equal(result.model.state_dict(), run["snapshots"][0])


def test_train_model_a_smoothed_window_over_an_undefined_score_is_the_worst(tiny_corpus, tiny_splits, monkeypatch):
    run = _scripted(tiny_corpus, tiny_splits, monkeypatch, [0.2, None, 0.9, 0.3, 0.1], metric="corr",
                    task="regression", epochs=5, patience=9, select_window=2)
    result = run["result"]
    # trailing means: 0.2, None, None, 0.6, 0.2 -> epoch 4
    assert [h["dev_corr_smoothed"] for h in result.history] == pytest.approx([0.2, None, None, 0.6, 0.2])
    assert result.selected_epoch == 4 and result.best_score == 0.3 and result.best_epoch == 3
