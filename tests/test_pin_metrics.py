"""Exact pins of scoring and of the supervised objective: classification_metrics by hand, task_metrics' dispatch,
predict (classification and regression), length_sorted_batches, cross_entropy / supervised_loss / masked_mean,
no_kd's loss and the Method defaults, the registry's error."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import made_up_batch, py_ce

from corekd.data.protocols import TrainingMissing
from corekd.errors import CorekdError
from corekd.evaluation.metrics import (
    classification_metrics,
    regression_metrics,
    task_metrics,
)
from corekd.evaluation.predict import length_sorted_batches, predict, run_model
from corekd.methods import method_class
from corekd.methods.base import Method, StepContext, TrainView
from corekd.methods.losses import cross_entropy, masked_mean, supervised_loss
from corekd.methods.no_kd import NoKD
from corekd.models.model import ERCModel, ModelConfig
from corekd.seeding import torch_generator
from corekd.training import init_model

CFG = ModelConfig(hidden=16, heads=2, dropout=0.0)
NAMES = ["a", "b", "c", "d", "e"]
# class 0: tp 2 fp 2 fn 0 (P 1/2, R 1, F1 2/3); class 1: tp 1 fp 0 fn 2 (P 1, R 1/3, F1 1/2); class 2: F1 0, R 0;
# class 3 only predicted (F1 0); class 4 in neither (F1 0 by zero_division=0)
Y_TRUE = np.array([0, 0, 1, 1, 1, 2])
Y_PRED = np.array([0, 0, 1, 0, 0, 3])


def _dims(splits):
    return {m: int(x.shape[-1]) for m, x in splits["train"].features.items()}


# ---------------------------------------------------------------- metrics
def test_classification_metrics_by_hand():
    m = classification_metrics(Y_TRUE, Y_PRED, NAMES)
    assert set(m) == {"accuracy", "weighted_f1", "macro_f1", "uar", "macro_f1_present", "uar_present", "per_class_f1"}
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["weighted_f1"] == pytest.approx((2 * 2 / 3 + 3 * 1 / 2) / 6)  # supports 2, 3, 1
    # scikit-learn's labels=None: over the classes in the truth or the predictions (a, b, c, d)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0 + 0) / 4)
    assert m["uar"] == pytest.approx((1 + 1 / 3 + 0 + 0) / 4)
    assert m["macro_f1_present"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)  # over the classes in the truth only
    assert m["uar_present"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert m["per_class_f1"] == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 0.0, "d": 0.0, "e": 0.0})
    assert list(m["per_class_f1"]) == NAMES
    assert all(type(v) is float for k, v in m.items() if k != "per_class_f1")
    assert all(type(v) is float for v in m["per_class_f1"].values())


def test_classification_metrics_from_lists_and_a_perfect_prediction():
    m = classification_metrics([2, 2, 0], [2, 2, 0], ["x", "y", "z"])
    assert m["accuracy"] == m["weighted_f1"] == m["macro_f1"] == m["uar"] == 1.0
    assert m["per_class_f1"] == {"x": 1.0, "y": 0.0, "z": 1.0}


def test_task_metrics_dispatches_on_the_task():
    assert task_metrics(Y_TRUE, Y_PRED, NAMES, "classification") == classification_metrics(Y_TRUE, Y_PRED, NAMES)
    t, p = np.array([-1.0, 0.5, 2.0]), np.array([-0.5, -0.2, 2.5])
    assert task_metrics(t, p, [], "regression") == regression_metrics(t, p)
    assert task_metrics(t, p, [], "regression")["mae"] == pytest.approx((0.5 + 0.7 + 0.5) / 3)


# ---------------------------------------------------------------- predict
def test_length_sorted_batches_group_by_length_each_in_split_order(tiny_splits):
    train = tiny_splits["train"]
    assert train.lengths.tolist() == [8, 4, 9, 9, 7, 13, 12, 9, 10, 12]
    # by length (stable): 1, 4, 0, 2, 3, 7, 8, 6, 9, 5
    assert [b.tolist() for b in length_sorted_batches(train, 3)] == [[0, 1, 4], [2, 3, 7], [6, 8, 9], [5]]
    assert [b.tolist() for b in length_sorted_batches(train, 4)] == [[0, 1, 2, 4], [3, 6, 7, 8], [5, 9]]
    assert [b.tolist() for b in length_sorted_batches(train, 10)] == [list(range(10))]


def test_predict_classification_under_masks(tiny_corpus, tiny_splits):
    dev = tiny_splits["train"]
    model = init_model(CFG, _dims(tiny_splits), len(tiny_corpus.labels), 0, "student")
    masks = TrainingMissing(low=0.5, high=0.6).masks(dev.avail, torch_generator("pin-predict"), per="row")
    preds = predict(model, dev, masks, 4, "cpu")
    logits = run_model(model, dev, masks, 4, "cpu").logits[dev.utt_mask]
    full = run_model(model, dev, None, 4, "cpu").logits[dev.utt_mask]
    assert not torch.allclose(logits, full)  # the masks matter...
    assert torch.allclose(torch.from_numpy(preds.probs), logits.softmax(-1), atol=1e-6)  # ...and are used
    assert np.array_equal(preds.y_pred, logits.argmax(-1).numpy())
    assert np.array_equal(preds.y_true, dev.labels[dev.utt_mask].numpy())
    assert preds.task == "classification" and preds.y_true.shape == (int(dev.utt_mask.sum()),)


def test_predict_regression_takes_the_one_output_head(tiny_splits):
    dev = tiny_splits["train"]
    targets = torch.linspace(-3, 3, dev.labels.numel()).reshape(dev.labels.shape) * dev.utt_mask
    split = replace(dev, targets=targets.float())
    model = ERCModel(CFG, _dims(tiny_splits), 1)
    preds = predict(model, split, None, 3, "cpu")
    out = run_model(model, split, None, 3, "cpu").logits[..., 0][dev.utt_mask]
    assert preds.task == "regression"
    assert np.array_equal(preds.y_true, targets[dev.utt_mask].numpy())
    assert np.allclose(preds.y_pred, out.numpy()) and preds.probs.shape == (out.shape[0], 1)
    assert np.array_equal(preds.probs[:, 0], preds.y_pred)


# ---------------------------------------------------------------- losses
def test_cross_entropy_by_hand_with_and_without_smoothing():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    labels = torch.tensor([1, 0])
    assert cross_entropy(logits, labels).tolist() == pytest.approx([py_ce([1.0, 2.0, 0.5], 1), py_ce([0.0, -1.0, 3.0], 0)])
    assert cross_entropy(logits, labels, 0.0).tolist() == pytest.approx([py_ce([1.0, 2.0, 0.5], 1), py_ce([0.0, -1.0, 3.0], 0)])
    got = cross_entropy(logits, labels, 0.3).tolist()
    assert got == pytest.approx([py_ce([1.0, 2.0, 0.5], 1, 0.3), py_ce([0.0, -1.0, 3.0], 0, 0.3)])
    assert all(v > 0 for v in got)
    # at smoothing 1 only the uniform part is left: mean_c(-log p[c])
    uniform = [sum(py_ce(row, c) for c in range(3)) / 3 for row in ([1.0, 2.0, 0.5], [0.0, -1.0, 3.0])]
    assert cross_entropy(logits, labels, 1.0).tolist() == pytest.approx(uniform)


def test_supervised_loss_dispatches_on_the_batch_task():
    avail = torch.ones(1, 2, 3, dtype=torch.bool)
    batch = made_up_batch(avail, avail, torch.tensor([[2, 0]]), torch.tensor([[True, True]]))
    logits = torch.tensor([[[0.5, 1.0, -1.0], [2.0, 0.0, 1.0]]])
    assert supervised_loss(logits, batch)[0].tolist() == pytest.approx([py_ce([0.5, 1.0, -1.0], 2), py_ce([2.0, 0.0, 1.0], 0)])
    assert supervised_loss(logits, batch, 0.2)[0].tolist() == pytest.approx(
        [py_ce([0.5, 1.0, -1.0], 2, 0.2), py_ce([2.0, 0.0, 1.0], 0, 0.2)])
    reg = replace(batch, targets=torch.tensor([[1.5, -1.0]]))
    assert supervised_loss(logits, reg)[0].tolist() == pytest.approx([1.0, 3.0])  # |0.5 - 1.5|, |2 - (-1)|
    assert supervised_loss(logits, reg, 0.2)[0].tolist() == pytest.approx([1.0, 3.0])  # no smoothing in regression


def test_masked_mean_weights_and_bool_masks():
    values = torch.tensor([[1.0, 2.0], [4.0, 8.0]])
    assert float(masked_mean(values, torch.tensor([[True, False], [True, True]]))) == pytest.approx(13 / 3)
    assert float(masked_mean(values, torch.tensor([[0.5, 0.0], [0.0, 1.5]]))) == pytest.approx((0.5 + 12) / 2)
    assert float(masked_mean(values, torch.zeros(2, 2, dtype=torch.bool))) == 0.0
    half = masked_mean(torch.tensor([1.0, 3.0], dtype=torch.float16), torch.tensor([1.0, 1.0]))
    assert half.dtype == torch.float16 and float(half) == 2.0  # the weights take the values' dtype


# ---------------------------------------------------------------- no_kd, Method defaults, registry
def test_no_kd_loss_is_the_masked_smoothed_cross_entropy():
    avail = torch.ones(1, 3, 3, dtype=torch.bool)
    utt = torch.tensor([[True, True, False]])
    batch = made_up_batch(avail, avail, torch.tensor([[1, 0, 0]]), utt)
    logits = torch.tensor([[[0.0, 1.0], [2.0, -1.0], [9.0, -9.0]]])
    method = NoKD(NoKD.Options(), TrainingMissing())
    out = type("O", (), {"logits": logits})()
    ctx = StepContext(batch=batch, view=TrainView(batch), output=out, teacher=None, model=None,
                      generator=torch.Generator(), label_smoothing=0.1)
    total, terms = method.loss(ctx)
    want = (py_ce([0.0, 1.0], 1, 0.1) + py_ce([2.0, -1.0], 0, 0.1)) / 2
    assert float(total) == pytest.approx(want) and list(terms) == ["ce"] and terms["ce"] is total


def test_method_defaults(tiny_splits):
    missing = TrainingMissing(low=0.2, high=0.5)
    options = NoKD.Options()
    method = NoKD(options, missing)
    assert method.options is options and method.missing is missing
    dims = _dims(tiny_splits)
    torch.manual_seed(0)
    built = method.build_model(CFG, dims, 3)
    torch.manual_seed(0)
    plain = ERCModel(CFG, dims, 3)
    assert type(built) is ERCModel and built.num_classes == 3 and built.cfg == CFG and built.dims == dims
    kinds = {"l": "vector", "a": "sequence", "v": "vector"}
    assert method.build_model(CFG, dims, 3, kinds).kinds == kinds
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), plain.state_dict().values()))
    batch = tiny_splits["train"].batch([0, 1, 2])
    view = method.train_view(batch, torch_generator("m"), torch_generator("x"))
    want = missing.masks(batch.avail, torch_generator("m"))
    assert isinstance(view, TrainView) and view.extra == {}
    assert torch.equal(view.batch.mask, want & batch.avail)
    with torch.no_grad():
        assert torch.equal(method.forward(plain, view).logits, plain(view.batch).logits)
    dev = tiny_splits["train"]  # ten dialogues: one rate per row differs from one per split
    assert torch.equal(method.dev_masks(dev.avail, torch_generator("d")),
                       missing.masks(dev.avail, torch_generator("d"), per="row"))
    assert not torch.equal(method.dev_masks(dev.avail, torch_generator("d")), missing.masks(dev.avail, torch_generator("d")))
    assert method.auxiliary(plain) is None
    with pytest.raises(NotImplementedError):
        Method(options, missing).loss(None)


def test_unknown_method_names_the_registered_ones():
    with pytest.raises(CorekdError) as err:
        method_class("nope")
    text = str(err.value)
    from corekd.methods.registry import registered
    assert text == f"unknown method 'nope' (registered: {', '.join(registered())})" and "no_kd" in text
    assert method_class("no_kd") is NoKD


def test_classification_metrics_scores_absent_classes_zero_without_warnings():
    """A class never predicted (c), only predicted (d) or in neither (e): zero_division=0, so sklearn stays silent."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(Y_TRUE, Y_PRED, NAMES)
    assert m["per_class_f1"]["e"] == 0.0 and m["per_class_f1"]["c"] == 0.0


def test_predict_passes_the_frames_to_keep(tiny_splits):
    from helpers import TINY_SYNTH

    from corekd.data.batching import SplitTensors
    from corekd.data.protocols import Condition, split_frame_keep
    from corekd.data.synth import SynthConfig, generate

    frames = dict(TINY_SYNTH, frames={"enabled": True, "modalities": ["l", "a"], "mean_frames": {"l": 3, "a": 4},
                                      "max_frames": 7, "signal_share": {"l": 0.5, "a": 0.5}})
    corpus = generate(SynthConfig(**frames))
    test = SplitTensors.from_corpus(corpus, "test")
    model = ERCModel(CFG, {m: s.dim for m, s in corpus.modalities.items()}, 6,
                     {m: s.kind for m, s in corpus.modalities.items()})
    keep = split_frame_keep(Condition("frames", rate=0.6), test.frame_presence(), 0, "test")
    preds = predict(model, test, None, 2, "cpu", keep)
    want = run_model(model, test, None, 2, "cpu", keep).logits[test.utt_mask].softmax(-1)
    full = run_model(model, test, None, 2, "cpu").logits[test.utt_mask].softmax(-1)
    assert not torch.allclose(want, full)  # the dropped frames matter...
    assert torch.allclose(torch.from_numpy(preds.probs), want, atol=1e-6)  # ...and predict drops them
