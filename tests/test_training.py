"""The training loop: determinism, dev-only selection, early stopping, checkpoints, test split untouched."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import corekd.pipeline as pipeline
import corekd.training as training
from corekd.config import TrainingConfig, validate_config
from corekd.data.protocols import TrainingMissing
from corekd.errors import CorekdError
from corekd.methods import method_class
from corekd.models.model import ModelConfig
from corekd.training import init_model, load_checkpoint, save_checkpoint, train_model

MODEL = ModelConfig(hidden=16, heads=2)


def _train(corpus, splits, seed, name="no_kd", epochs=3, patience=2):
    cls = method_class(name)
    method = cls(cls.Options(), TrainingMissing())
    dims = {m: s.dim for m, s in corpus.modalities.items()}
    model = init_model(MODEL, dims, len(corpus.labels), seed, "student")
    cfg = TrainingConfig(epochs=epochs, patience=patience, batch_size=4)
    return train_model(method, model, splits["train"], splits["dev"], cfg, seed=seed,
                       label_names=corpus.labels, device=torch.device("cpu"))


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
        "name": "iso", "seeds": [0], "device": "cpu",
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
    scrambled = replace(tiny_corpus, dialogues=[
        replace(d, labels=rng.permutation(d.labels), features={m: rng.normal(size=x.shape).astype(np.float32)
                                                               for m, x in d.features.items()})
        if d.split == "test" else d
        for d in tiny_corpus.dialogues
    ])
    scrambled.save(tmp_path / "b")
    run_a = pipeline.run(_tiny_run_config(tmp_path / "a"), tmp_path / "out_a")
    run_b = pipeline.run(_tiny_run_config(tmp_path / "b"), tmp_path / "out_b")
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
    real_train, real_eval_predict, real_train_predict = pipeline.train_model, pipeline.predict, training.predict

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

    monkeypatch.setattr(pipeline, "train_model", spy_train)
    monkeypatch.setattr(pipeline, "predict", spy_predict("pipeline"))
    monkeypatch.setattr(training, "predict", spy_predict("training"))
    pipeline.run(_tiny_run_config(tmp_path / "c"), tmp_path / "out")
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
    pipeline.run(_tiny_run_config(tmp_path / "d"), tmp_path / "out")
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {t["variant"] for t in payload["trainings"]} == {"teacher", "corekd"}
    info = json.loads(Path(tmp_path / "out/checkpoints/corekd/seed0/model.json").read_text())
    assert info["options"]["l_state"] == 0.5 and info["labels"] == tiny_corpus.labels


def test_an_unlisted_teacher_is_trained_for_its_students_but_not_reported(tmp_path, tiny_corpus):
    tiny_corpus.save(tmp_path / "e")
    cfg = _tiny_run_config(tmp_path / "e", methods=[{"name": "vanilla_kd"}, {"name": "no_kd"}])
    result = pipeline.run(cfg, tmp_path / "out")
    assert [t["variant"] for t in result.trainings] == ["teacher", "vanilla_kd", "no_kd"]
    assert {r["variant"] for r in result.records} == {"vanilla_kd", "no_kd"}
    # No method needs a teacher: none is trained.
    result = pipeline.run(_tiny_run_config(tmp_path / "e", methods=[{"name": "no_kd"}]), tmp_path / "out2")
    assert [t["variant"] for t in result.trainings] == ["no_kd"]
