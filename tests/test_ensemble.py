"""Training an ensemble (training.ensemble: seeds): each member trains as its separate run would, selected and
stopped on its own; runs and grids write what separate training writes."""

import json

import numpy as np
import pytest
import torch

from corekd.config import TrainingConfig, validate_config
from corekd.data.protocols import TrainingMissing
from corekd.ensemble import train_ensemble
from corekd.errors import CorekdError
from corekd.evaluation.metrics import classification_metrics
from corekd.evaluation.predict import predict
from corekd.experiments import run
from corekd.methods import method_class
from corekd.models.model import ModelConfig
from corekd.seeding import torch_generator
from corekd.training import TeacherReference, init_model, train_model
from helpers import TINY_FRAMES, corpus_dims, quick_config

# No dropout: the only difference left between ensemble and separate training is the order of float sums.
MODEL = ModelConfig(hidden=16, heads=2, dropout=0.0)


def _method(name, **options):
    cls = method_class(name)
    return cls(cls.Options(**options), TrainingMissing())


def _models(corpus, seeds, role="student"):
    return [init_model(MODEL, corpus_dims(corpus), len(corpus.labels), s, role) for s in seeds]


def _teachers(corpus, splits, seeds):
    return [
        TeacherReference(m.eval(), splits["train"], cache=True, batch_size=8, device="cpu")
        for m in _models(corpus, seeds, "teacher")
    ]


def _both(corpus, splits, method, cfg, seeds, teachers=None):
    device = torch.device("cpu")
    separate = [
        train_model(
            method,
            model,
            splits["train"],
            splits["dev"],
            cfg,
            seed=s,
            label_names=corpus.labels,
            device=device,
            teacher=teachers[i] if teachers else None,
        )
        for i, (s, model) in enumerate(zip(seeds, _models(corpus, seeds)))
    ]
    ensemble = train_ensemble(
        method,
        _models(corpus, seeds),
        splits["train"],
        splits["dev"],
        cfg,
        seeds=seeds,
        label_names=corpus.labels,
        device=device,
        teachers=teachers,
    )
    return separate, ensemble


@pytest.mark.parametrize("name", ["no_kd", "corekd"])
def test_each_member_trains_on_its_separate_runs_batches_masks_and_draws(tiny_corpus, tiny_splits, name):
    """Same batches, masks and NCE draws, per-member clipping and AdamW: without dropout the first epoch's loss terms
    agree to float precision; another batch order, mask or draw would move them by far more."""
    seeds = [3, 5, 8]
    teachers = _teachers(tiny_corpus, tiny_splits, seeds) if name == "corekd" else None
    cfg = TrainingConfig(epochs=2, patience=5, batch_size=4, grad_clip=0.5)
    separate, ensemble = _both(tiny_corpus, tiny_splits, _method(name), cfg, seeds, teachers)
    for sep, ens in zip(separate, ensemble):
        assert sep.history[0].keys() == ens.history[0].keys()
        for key in ("loss", "ce", *(("kd", "state", "mstate", "nce", "nce_share") if name == "corekd" else ())):
            for epoch in range(2):
                assert ens.history[epoch][key] == pytest.approx(sep.history[epoch][key], rel=1e-4, abs=1e-6), key
        assert ens.history[0]["grad_norm_l"] == pytest.approx(sep.history[0]["grad_norm_l"], rel=1e-3)
    # members differ from one another (their own seeds), so agreeing with the own seed's run is not an accident
    assert ensemble[0].history[0]["loss"] != pytest.approx(ensemble[1].history[0]["loss"], rel=1e-3)


def test_same_seeds_same_numbers_and_the_global_rng_left_alone(tiny_corpus, tiny_splits):
    cfg = TrainingConfig(epochs=2, patience=2, batch_size=4)
    method = _method("no_kd")
    torch.manual_seed(99)
    before = torch.random.get_rng_state()
    runs = [
        train_ensemble(
            method,
            _models(tiny_corpus, [0, 1]),
            tiny_splits["train"],
            tiny_splits["dev"],
            cfg,
            seeds=[0, 1],
            label_names=tiny_corpus.labels,
            device=torch.device("cpu"),
        )
        for _ in range(2)
    ]
    assert torch.equal(before, torch.random.get_rng_state())
    for a, b in zip(*runs):
        assert a.history == b.history
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_members_stop_on_their_own_curves_and_keep_their_selected_weights(tiny_corpus, tiny_splits):
    seeds = [0, 1, 2, 3]
    cfg = TrainingConfig(epochs=9, patience=1, batch_size=4, lr=3e-3)
    method = _method("no_kd")
    results = train_ensemble(
        method,
        _models(tiny_corpus, seeds),
        tiny_splits["train"],
        tiny_splits["dev"],
        cfg,
        seeds=seeds,
        label_names=tiny_corpus.labels,
        device=torch.device("cpu"),
    )
    dev = tiny_splits["dev"]
    for seed, r in zip(seeds, results):
        scores = [h["dev_weighted_f1"] for h in r.history]
        assert r.best_epoch == int(np.argmax(scores)) + 1
        assert r.epochs_run == len(r.history) and (r.epochs_run == 9 or r.epochs_run - r.best_epoch == 1)
        # the returned model is the selected epoch's: its dev score under the member's own dev masks is the best
        masks = method.dev_masks(dev.avail, torch_generator("dev-mask", seed), dev.modalities)
        preds = predict(r.model, dev, masks, 32, "cpu")
        score = classification_metrics(preds.y_true, preds.y_pred, tiny_corpus.labels)["weighted_f1"]
        assert score == pytest.approx(r.best_score, abs=1e-9)
    assert len({r.epochs_run for r in results}) > 1, "members stopped at different epochs"


def test_an_ensemble_needs_a_seed_per_model_and_a_teacher_per_member(tiny_corpus, tiny_splits):
    cfg = TrainingConfig(epochs=1, batch_size=4)
    with pytest.raises(ValueError, match="one distinct seed per model"):
        train_ensemble(
            _method("no_kd"), _models(tiny_corpus, [0, 1]), tiny_splits["train"], tiny_splits["dev"], cfg,
            seeds=[0, 0], label_names=tiny_corpus.labels, device=torch.device("cpu"),
        )  # fmt: skip
    with pytest.raises(ValueError, match="needs a teacher"):
        train_ensemble(
            _method("vanilla_kd"), _models(tiny_corpus, [0]), tiny_splits["train"], tiny_splits["dev"], cfg,
            seeds=[0], label_names=tiny_corpus.labels, device=torch.device("cpu"),
        )  # fmt: skip


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_run_trained_as_ensembles_writes_what_a_separate_run_writes(tmp_path, tiny_config_dict):
    raw = dict(tiny_config_dict, methods=[{"name": "teacher"}, {"name": "no_kd"}, {"name": "corekd"}])
    separate = run(validate_config(raw), tmp_path / "separate")
    raw["training"] = dict(raw["training"], ensemble="seeds")
    ensemble = run(validate_config(raw), tmp_path / "ensemble")
    assert _files(tmp_path / "separate") == _files(tmp_path / "ensemble")
    key = lambda r: (r["variant"], r["seed"], r["split"], r["condition"])  # noqa: E731
    assert sorted(map(key, separate.records)) == sorted(map(key, ensemble.records))
    trained = json.loads((tmp_path / "ensemble" / "results.json").read_text())["trainings"]
    assert {(t["variant"], t["seed"], t.get("ensemble")) for t in trained} == {
        (v, s, 2) for v in ("teacher", "no_kd", "corekd") for s in (0, 1)
    }
    assert all(
        "ensemble" not in t for t in json.loads((tmp_path / "separate" / "results.json").read_text())["trainings"]
    )
    config = (tmp_path / "ensemble" / "config.yaml").read_text()
    assert "ensemble: seeds" in config


def test_a_run_refuses_an_ensemble_of_models_that_read_frames(tmp_path):
    raw = quick_config(data={"source": "synthetic", "synth": dict(TINY_FRAMES)})
    raw["training"] = dict(raw["training"], ensemble="seeds")
    with pytest.raises(CorekdError, match="sequence_encoder") as err:
        run(validate_config(raw), tmp_path / "run")
    assert err.value.field == "training.ensemble"
    assert not (tmp_path / "run").exists()
    raw["model"] = dict(raw["model"], sequence_encoder="mean")
    assert len(run(validate_config(raw), tmp_path / "mean").records) > 0
