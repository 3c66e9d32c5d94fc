"""Backbone options (context, where it runs, fusion), input standardisation, the teacher section,
label smoothing, the training recipe (schedule, weight average, selection window), dev records."""

import itertools
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from corekd.config import TrainingConfig, validate_config
from corekd.data.batching import SplitTensors
from corekd.data.protocols import (
    TrainingMissing,
    split_condition_mask,
    standard_conditions,
)
from corekd.data.standardize import train_statistics
from corekd.data.synth import SynthConfig, generate
from corekd.errors import CorekdError
from corekd.experiments import run
from corekd.methods import method_class
from corekd.methods.losses import cross_entropy
from corekd.models.fusion import ObservedMeanFusion
from corekd.models.model import ERCModel, ModelConfig
from corekd.models.recurrent import GRUContextEncoder, reversal_index
from corekd.reporting.run import render_report
from corekd.training import Trainer, init_model, load_checkpoint, train_model
from helpers import TINY_SYNTH

COMBOS = list(
    itertools.product(
        ["attention", "gru", "none"], ["modality", "fused"], ["token", "observed_mean", "observed_attention"]
    )
)


def _model(corpus, **kw):
    torch.manual_seed(0)
    dims = {m: s.dim for m, s in corpus.modalities.items()}
    return ERCModel(ModelConfig(hidden=16, heads=2, dropout=0.0, **kw), dims, len(corpus.labels)).eval()


@pytest.mark.parametrize("context,over,fusion", COMBOS)
def test_every_backbone_keeps_one_state_per_modality_and_ignores_padding(
    context, over, fusion, tiny_corpus, tiny_splits
):
    model = _model(tiny_corpus, context=context, context_over=over, fusion=fusion)
    train = tiny_splits["train"]
    shortest, longest = int(train.lengths.argmin()), int(train.lengths.argmax())
    with torch.no_grad():
        alone = model(train.batch([shortest]))
        together = model(train.batch([shortest, longest]))
    n = int(train.lengths[shortest])
    assert together.states.shape == (2, int(train.lengths[longest]), 3, 16)  # [B, U, M, H] in every configuration
    assert together.fused.shape == (2, int(train.lengths[longest]), 16)
    assert torch.allclose(alone.logits[0, :n], together.logits[0, :n], atol=1e-5)  # padding never reaches real ones
    assert torch.allclose(alone.states[0, :n], together.states[0, :n], atol=1e-5)


@pytest.mark.parametrize("context,over,fusion", COMBOS)
def test_every_backbone_ignores_the_features_of_missing_modalities(context, over, fusion, tiny_corpus, tiny_batch):
    model = _model(tiny_corpus, context=context, context_over=over, fusion=fusion)
    mask = tiny_batch.avail.clone()
    mask[:, ::2, 1] = False
    view = tiny_batch.view(mask)
    noisy = dict(view.features)
    noisy["a"] = noisy["a"] + 100 * torch.randn_like(noisy["a"]) * (~mask[..., 1:2])
    with torch.no_grad():
        assert torch.allclose(model(view).logits, model(replace(view, features=noisy)).logits, atol=1e-5)
        empty = model(tiny_batch.view(torch.zeros_like(tiny_batch.avail)))
    assert torch.isfinite(empty.logits).all()


def test_context_kinds_carry_context_or_not(tiny_corpus, tiny_batch):
    changed = dict(tiny_batch.features)
    changed["l"] = changed["l"].clone()
    changed["l"][0, 0] += 3.0 * torch.randn(changed["l"].shape[-1], generator=torch.Generator().manual_seed(0))
    other = replace(tiny_batch, features=changed)
    for context, over in (("gru", "modality"), ("gru", "fused"), ("attention", "fused")):
        model = _model(tiny_corpus, context=context, context_over=over, fusion="observed_mean")
        with torch.no_grad():
            assert not torch.allclose(model(tiny_batch).logits[0, 1:], model(other).logits[0, 1:], atol=1e-6)
    flat = _model(tiny_corpus, context="none", fusion="observed_mean")
    with torch.no_grad():
        assert torch.allclose(flat(tiny_batch).logits[0, 1:], flat(other).logits[0, 1:], atol=1e-6)


def test_gru_is_speaker_aware_only_when_asked(tiny_corpus, tiny_batch):
    swapped = replace(tiny_batch, speakers=1 - tiny_batch.speakers.clamp(max=1))
    aware = _model(tiny_corpus, context="gru", fusion="observed_mean")
    blind = _model(tiny_corpus, context="gru", fusion="observed_mean", speaker_aware=False)
    with torch.no_grad():
        assert not torch.allclose(aware(tiny_batch).logits, aware(swapped).logits, atol=1e-6)
        assert torch.allclose(blind(tiny_batch).logits, blind(swapped).logits, atol=1e-6)


def test_reversal_index_by_hand():
    rev, real = reversal_index(torch.tensor([3, 0, 1]), 4)
    assert rev.tolist() == [[2, 1, 0, 3], [0, 1, 2, 3], [0, 1, 2, 3]]
    assert real.tolist() == [[True, True, True, False], [False] * 4, [True, False, False, False]]


@pytest.mark.parametrize("layers", [1, 2])
def test_unpacked_gru_equals_a_packed_bidirectional_gru(layers):
    """Same weights, same outputs and gradients as nn.GRU(bidirectional) on packed sequences; padding reaches nothing."""
    torch.manual_seed(0)
    enc = GRUContextEncoder(8, layers, 0.0, speaker_aware=False).eval()
    ref = torch.nn.GRU(8, 4, num_layers=layers, batch_first=True, bidirectional=True)
    for i in range(layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ref, f"{name}_l{i}").data.copy_(getattr(enc.forward_grus[i], f"{name}_l0"))
            getattr(ref, f"{name}_l{i}_reverse").data.copy_(getattr(enc.backward_grus[i], f"{name}_l0"))
    lengths = torch.tensor([5, 2, 0, 4])
    x = torch.randn(4, 5, 8, requires_grad=True)
    real = torch.arange(5)[None, :] < lengths[:, None]
    keep = lengths > 0
    packed = torch.nn.utils.rnn.pack_padded_sequence(x[keep], lengths[keep], batch_first=True, enforce_sorted=False)
    seq, _ = torch.nn.utils.rnn.pad_packed_sequence(ref(packed)[0], batch_first=True, total_length=5)
    expected = torch.zeros(4, 5, 8).index_copy(0, keep.nonzero().squeeze(1), seq)
    expected = enc.norm(x + expected)
    got = enc(x, lengths, None)
    assert torch.allclose(got, expected, atol=1e-5)
    # padding values do not reach real positions, in either direction
    noisy = x.detach().clone()
    noisy[~real] = 50.0
    assert torch.allclose(enc(noisy, lengths, None)[real], got[real], atol=1e-5)
    (g_got,) = torch.autograd.grad(got[real].sum(), x)
    (g_exp,) = torch.autograd.grad(expected[real].sum(), x)
    assert torch.allclose(g_got, g_exp, atol=1e-5)


def test_observed_mean_fusion_by_hand():
    states = torch.tensor([[[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]]])  # [1, 1, 3, 2]
    mask = torch.tensor([[[True, True, False]]])
    assert torch.equal(ObservedMeanFusion()(states, mask), torch.tensor([[[2.0, 3.0]]]))
    assert torch.equal(ObservedMeanFusion()(states, torch.zeros_like(mask)), torch.zeros(1, 1, 2))


@pytest.mark.parametrize("fusion", ["observed_mean", "observed_attention"])
def test_observed_fusions_have_no_missing_token(fusion, tiny_corpus, tiny_batch):
    """The incomplete-view floor uses only observed modalities: no parameter stands in for a missing one."""
    model = _model(tiny_corpus, fusion=fusion, context="none")
    assert all(enc.missing is None for enc in model.encoders.values())
    assert not any("missing" in name or "tag" in name for name, _ in model.named_parameters())
    mask = tiny_batch.avail.clone()
    mask[..., 1:] = False  # language only
    with torch.no_grad():
        out = model(tiny_batch.view(mask))
        if fusion == "observed_mean":  # fused = the language state alone
            assert torch.allclose(out.fused, out.states[:, :, 0], atol=1e-6)


def test_label_smoothing_by_hand():
    logits = torch.tensor([[math.log(3.0), 0.0]])  # p = [0.75, 0.25]
    labels = torch.tensor([0])
    assert cross_entropy(logits, labels).item() == pytest.approx(-math.log(0.75))
    # 0.8 * -ln 0.75 + 0.2 * (-ln 0.75 - ln 0.25) / 2
    assert cross_entropy(logits, labels, 0.2).item() == pytest.approx(0.8 * 0.2876821 + 0.2 * 0.8369882, abs=1e-6)


def test_train_statistics_use_observed_train_utterances_only(tiny_corpus):
    train = SplitTensors.from_corpus(tiny_corpus, "train")
    avail = train.avail.clone()
    avail[0, 0, 0] = False  # one language input genuinely missing (its zero row must not count)
    train = replace(train, avail=avail)
    stats = train_statistics(train)
    rows = np.concatenate([d.features["l"] for d in tiny_corpus.split("train")])[1:]  # minus that utterance
    assert torch.allclose(stats["l"][0], torch.from_numpy(rows.mean(0)), atol=1e-5)
    assert torch.allclose(stats["l"][1], torch.from_numpy(rows.std(0)), atol=1e-5)
    with pytest.raises(ValueError, match="train split only"):
        train_statistics(SplitTensors.from_corpus(tiny_corpus, "dev"))


def _standardized_run(tmp_path, corpus, name, **extra):
    corpus.save(tmp_path / name)
    raw = {
        "name": name,
        "seeds": [0],
        "device": "cpu",
        "data": {"source": "corpus", "path": str(tmp_path / name), "standardize": True},
        "model": {"hidden": 16, "heads": 2},
        "training": {"epochs": 2, "patience": 2, "batch_size": 4},
        "methods": [{"name": "teacher"}, {"name": "no_kd"}],
        **extra,
    }
    return run(validate_config(raw), tmp_path / f"out_{name}")


def test_standardisation_statistics_come_from_train_and_travel_with_every_checkpoint(
    tmp_path, tiny_corpus, tiny_splits
):
    shifted = replace(
        tiny_corpus,
        dialogues=[  # dev and test features moved far away
            replace(d, features={m: x * 50 + 1000 for m, x in d.features.items()}) if d.split != "train" else d
            for d in tiny_corpus.dialogues
        ],
    )
    _standardized_run(tmp_path, tiny_corpus, "a")
    _standardized_run(tmp_path, shifted, "b")
    expected = train_statistics(tiny_splits["train"])
    for out in ("out_a", "out_b"):
        for label in ("teacher", "no_kd"):
            model, info = load_checkpoint(tmp_path / out / "checkpoints" / label / "seed0")
            assert info["input_statistics"] == "train split"
            for m, (mean, std) in model.standardizer.statistics().items():
                assert torch.allclose(mean, expected[m][0]) and torch.allclose(std, expected[m][1])
    # The loaded model standardises with those statistics: raw features in, same outputs as a model told them.
    model, _ = load_checkpoint(tmp_path / "out_a" / "checkpoints" / "teacher" / "seed0")
    fresh = ERCModel(model.cfg, model.dims, model.num_classes)
    fresh.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith("standardizer.")}, strict=False
    )
    batch = tiny_splits["test"].batch([0, 1])
    with torch.no_grad():
        assert not torch.allclose(fresh.eval()(batch).logits, model(batch).logits, atol=1e-4)
        fresh.set_input_statistics(expected)
        assert torch.allclose(fresh(batch).logits, model(batch).logits, atol=1e-5)


def test_teacher_section_overrides_the_teacher_only(tmp_path, tiny_corpus):
    cfg = validate_config(
        {
            "model": {"dropout": 0.2},
            "training": {"epochs": 5, "label_smoothing": 0.0},
            "teacher": {"dropout": 0.4, "label_smoothing": 0.1, "epochs": 7, "patience": 3},
        }
    )
    assert cfg.model_for("teacher").dropout == 0.4 and cfg.model_for("no_kd").dropout == 0.2
    t, s = cfg.training_for("teacher"), cfg.training_for("corekd")
    assert (t.label_smoothing, t.epochs, t.patience) == (0.1, 7, 3)
    assert (s.label_smoothing, s.epochs, s.patience) == (0.0, 5, cfg.training.patience)
    with pytest.raises(CorekdError, match="teacher.hidden"):
        validate_config({"teacher": {"hidden": 64}})  # only training-recipe settings, not the architecture
    result = _standardized_run(tmp_path, tiny_corpus, "t", teacher={"dropout": 0.35, "epochs": 1})
    info = json.loads((result.out_dir / "checkpoints/teacher/seed0/model.json").read_text())
    assert info["model"]["dropout"] == 0.35
    assert {t["variant"]: t["epochs_run"] for t in result.trainings} == {"teacher": 1, "no_kd": 2}


@pytest.mark.parametrize("field,value", [("context", "lstm"), ("fusion", "max"), ("context_over", "both")])
def test_bad_backbone_option_names_the_field(field, value):
    with pytest.raises(CorekdError, match=f"model.{field}"):
        validate_config({"model": {field: value}})


def _trainer(corpus, splits, **cfg):
    cls = method_class("teacher")
    dims = {m: s.dim for m, s in corpus.modalities.items()}
    model = init_model(ModelConfig(hidden=16, heads=2), dims, len(corpus.labels), 0, "teacher")
    return Trainer(
        cls(cls.Options(), TrainingMissing()),
        model,
        TrainingConfig(batch_size=4, **cfg),
        seed=0,
        device=torch.device("cpu"),
    )


def test_cosine_schedule_and_weight_average(tiny_corpus, tiny_splits):
    train = tiny_splits["train"]
    trainer = _trainer(tiny_corpus, tiny_splits, epochs=4, lr=0.01, schedule="cosine", ema=0.9)
    steps = math.ceil(len(train) / 4)
    trainer.epoch(train)
    trainer.epoch(train)  # halfway: the last step ran at the rate for step 2*steps - 1
    expected = 0.5 * 0.01 * (1 + math.cos(math.pi * (2 * steps - 1) / (4 * steps)))
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    raw, avg = dict(trainer.model.named_parameters()), dict(trainer.eval_model.named_parameters())
    assert trainer.eval_model is not trainer.model
    assert not all(torch.equal(raw[k], avg[k]) for k in raw)  # the average lags the raw weights
    plain = _trainer(tiny_corpus, tiny_splits, epochs=4, lr=0.01, schedule="constant", ema=0.0)
    plain.epoch(train)
    assert plain.eval_model is plain.model and plain.optimizer.param_groups[0]["lr"] == 0.01


def test_selection_window_selects_on_the_trailing_mean(tiny_corpus, tiny_splits):
    cls = method_class("no_kd")
    dims = {m: s.dim for m, s in tiny_corpus.modalities.items()}
    model = init_model(ModelConfig(hidden=16, heads=2), dims, len(tiny_corpus.labels), 3, "student")
    result = train_model(
        cls(cls.Options(), TrainingMissing()),
        model,
        tiny_splits["train"],
        tiny_splits["dev"],
        TrainingConfig(epochs=10, patience=3, batch_size=4, select_window=3),
        seed=3,
        label_names=tiny_corpus.labels,
        device=torch.device("cpu"),
    )
    scores = [h["dev_weighted_f1"] for h in result.history]
    smoothed = [float(np.mean(scores[max(0, i - 2) : i + 1])) for i in range(len(scores))]
    assert result.best_epoch == int(np.argmax(scores)) + 1
    assert result.selected_epoch == int(np.argmax(smoothed)) + 1
    assert [h["dev_weighted_f1_smoothed"] for h in result.history] == pytest.approx(smoothed)
    assert result.epochs_run == min(10, result.selected_epoch + 3)


def test_dev_records_use_dev_masks_seeded_like_test_masks(tmp_path, tiny_corpus, tiny_splits):
    result = _standardized_run(tmp_path, tiny_corpus, "d")
    dev_rows = [r for r in result.records if r["split"] == "dev"]
    test_rows = [r for r in result.records if r["split"] == "test"]
    assert {(r["variant"], r["condition"]) for r in dev_rows} == {(r["variant"], r["condition"]) for r in test_rows}
    dev = tiny_splits["dev"]
    for cond in standard_conditions(tiny_corpus.modality_names, [0.5]):
        if cond.name != "random:0.5":
            continue
        mask = split_condition_mask(cond, dev.avail, tiny_corpus.modality_names, 0, "dev")
        rate = float((dev.avail & ~mask).sum()) / float(dev.avail.sum())
        assert {r["missing_rate"] for r in dev_rows if r["condition"] == cond.name} == {round(rate, 4)}
    trainings = result.trainings
    assert all({"best_epoch", "selected_epoch"} <= set(t) for t in trainings)
    report = (result.out_dir / "report.md").read_text()
    assert "## Dev split" in report and "## Dev curves: best and selected epochs" in report
    # every test table also exists on dev: the per-condition tables, from the dev records
    assert "Dev, fixed missing modalities (weighted_f1):" in report and "Dev, random missing at rate p" in report
    dev_section = report[report.index("Dev, fixed missing modalities") :]
    dev_fixed_l = np.mean(
        [r["weighted_f1"] for r in dev_rows if r["variant"] == "no_kd" and r["condition"] == "fixed:l"]
    )
    assert f"{100 * dev_fixed_l:.2f}" in dev_section.split("Dev, random missing")[0]


def test_report_warns_when_a_student_beats_the_teacher_on_complete_dev_views():
    def rec(variant, split, value):
        return {
            "method": variant,
            "variant": variant,
            "seed": 0,
            "split": split,
            "condition": "complete",
            "accuracy": value,
            "weighted_f1": value,
            "macro_f1": 0,
            "uar": 0,
            "per_class_f1": {},
            "missing_rate": 0,
        }

    meta = {"seeds": [0], "splits": {"test": {"dialogues": 1, "utterances": 1}}}
    weak = render_report(
        meta,
        [rec("teacher", "dev", 0.5), rec("no_kd", "dev", 0.6), rec("teacher", "test", 0.9), rec("no_kd", "test", 0.1)],
        [],
    )
    assert "**Warning:** student `no_kd` beats the teacher on complete dev views (60.00 vs 50.00)" in weak
    strong = render_report(meta, [rec("teacher", "dev", 0.7), rec("no_kd", "dev", 0.6)], [])
    assert "Warning" not in strong
    assert "| teacher | 90.00 |" in weak  # the main tables stay test tables (one seed: no std)


def test_heavy_tailed_synthetic_setting_changes_features_only():
    base = generate(SynthConfig(**TINY_SYNTH))
    heavy = generate(SynthConfig(**TINY_SYNTH, scale={"a": 20.0}, heavy_columns=2, heavy_scale=100.0))
    assert [(d.id, d.split, d.labels.tolist()) for d in base.dialogues] == [
        (d.id, d.split, d.labels.tolist()) for d in heavy.dialogues
    ]
    a0, a1 = (np.concatenate([d.features["a"] for d in c.dialogues]) for c in (base, heavy))
    big = np.abs(a1).mean(0) > 50  # the two heavy columns
    assert big.sum() == 2 and np.allclose(a1[:, ~big], 20.0 * a0[:, ~big], rtol=1e-5, atol=1e-4)
    l0, l1 = (np.concatenate([d.features["l"] for d in c.dialogues]) for c in (base, heavy))
    assert (np.abs(l1).mean(0) > 50).sum() == 2
    with pytest.raises(ValueError):
        SynthConfig(**TINY_SYNTH, scale={"x": 2.0})


def test_input_norm_off_lets_a_constant_shift_through(tiny_corpus, tiny_batch):
    """The per-utterance LayerNorm removes a constant shift of an utterance's features; without it the shift counts."""
    shifted = dict(tiny_batch.features)
    shifted["l"] = shifted["l"] + 5.0
    other = replace(tiny_batch, features=shifted)
    with_norm = _model(tiny_corpus, context="none", fusion="observed_mean", input_norm=True)
    without = _model(tiny_corpus, context="none", fusion="observed_mean", input_norm=False)
    with torch.no_grad():
        assert torch.allclose(with_norm(tiny_batch).logits, with_norm(other).logits, atol=1e-4)
        assert not torch.allclose(without(tiny_batch).logits, without(other).logits, atol=1e-4)


def test_encoder_layers_stack_hidden_blocks(tiny_corpus, tiny_batch):
    """encoder_layers N: N linear layers per modality (D -> H, then H -> H); outputs keep their shapes."""
    one = _model(tiny_corpus, context="none", fusion="observed_mean")
    three = _model(tiny_corpus, context="none", fusion="observed_mean", encoder_layers=3)
    for model, n in ((one, 1), (three, 3)):
        linears = [m for m in model.encoders["l"].modules() if isinstance(m, torch.nn.Linear)]
        assert [(lin.in_features, lin.out_features) for lin in linears] == [(tiny_corpus.modalities["l"].dim, 16)] + [
            (16, 16)
        ] * (n - 1)
    with torch.no_grad():
        assert three(tiny_batch).states.shape == one(tiny_batch).states.shape
    with pytest.raises(CorekdError, match="model.encoder_layers"):
        validate_config({"model": {"encoder_layers": 0}})


def test_students_above_the_teacher_by_hand():
    import pandas as pd

    from corekd.reporting.tables import students_above_teacher

    table = pd.DataFrame(
        {"complete": [(0.60, 0.01), (0.60, 0.02), (0.61, 0.0), "n/a"]},
        index=["teacher", "no_kd", "corekd", "vanilla_kd"],
    )
    assert students_above_teacher(table) == [("corekd", 0.61, 0.60)]  # equal is not above; n/a cells skipped
    assert students_above_teacher(table.drop(index="teacher")) == []
    assert students_above_teacher(table.rename(columns={"complete": "fixed:avg"})) == []
    # lower is better (MAE): a student below the teacher is the better one; equal is still not better
    mae = pd.DataFrame(
        {"complete": [(1.10, 0.0), (1.05, 0.0), (1.10, 0.0), (1.20, 0.0)]},
        index=["teacher", "no_kd", "corekd", "vanilla_kd"],
    )
    assert students_above_teacher(mae, lower_is_better=True) == [("no_kd", 1.05, 1.10)]
    table.loc["teacher", "complete"] = "n/a"
    assert students_above_teacher(table) == []
