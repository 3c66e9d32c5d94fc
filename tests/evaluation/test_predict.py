"""Prediction (corekd.evaluation.predict): length-sorted batches, probabilities and argmax, regression
heads, masks and frames passed to the model."""

from dataclasses import replace

import numpy as np
import torch

from corekd.data.protocols import TrainingMissing
from corekd.evaluation.predict import length_sorted_batches, predict, run_model
from corekd.models.model import ERCModel, ModelConfig
from corekd.seeding import torch_generator
from corekd.training import init_model
from helpers import split_dims


def test_predictions_are_the_argmax_of_per_utterance_probabilities(tiny_corpus, tiny_splits):
    dims = {m: s.dim for m, s in tiny_corpus.modalities.items()}
    model = init_model(ModelConfig(hidden=16, heads=2), dims, len(tiny_corpus.labels), 0, "student")
    test = tiny_splits["test"]
    preds = predict(model, test, None, 2, "cpu")
    logits = run_model(model, test, None, 2, "cpu").logits[test.utt_mask]
    assert preds.probs.shape == (test.num_utterances, len(tiny_corpus.labels))
    assert torch.allclose(torch.from_numpy(preds.probs), logits.softmax(-1), atol=1e-6)
    assert (preds.y_pred == logits.argmax(-1).numpy()).all()


CFG = ModelConfig(hidden=16, heads=2, dropout=0.0)


def test_length_sorted_batches_group_by_length_each_in_split_order(tiny_splits):
    train = tiny_splits["train"]
    assert train.lengths.tolist() == [8, 4, 9, 9, 7, 13, 12, 9, 10, 12]
    # by length (stable): 1, 4, 0, 2, 3, 7, 8, 6, 9, 5
    assert [b.tolist() for b in length_sorted_batches(train, 3)] == [[0, 1, 4], [2, 3, 7], [6, 8, 9], [5]]
    assert [b.tolist() for b in length_sorted_batches(train, 4)] == [[0, 1, 2, 4], [3, 6, 7, 8], [5, 9]]
    assert [b.tolist() for b in length_sorted_batches(train, 10)] == [list(range(10))]


def test_predict_classification_under_masks(tiny_corpus, tiny_splits):
    dev = tiny_splits["train"]
    model = init_model(CFG, split_dims(tiny_splits), len(tiny_corpus.labels), 0, "student")
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
    model = ERCModel(CFG, split_dims(tiny_splits), 1)
    preds = predict(model, split, None, 3, "cpu")
    out = run_model(model, split, None, 3, "cpu").logits[..., 0][dev.utt_mask]
    assert preds.task == "regression"
    assert np.array_equal(preds.y_true, targets[dev.utt_mask].numpy())
    assert np.allclose(preds.y_pred, out.numpy()) and preds.probs.shape == (out.shape[0], 1)
    assert np.array_equal(preds.probs[:, 0], preds.y_pred)


def test_predict_passes_the_frames_to_keep(tiny_splits):
    from corekd.data.batching import SplitTensors
    from corekd.data.protocols import Condition, split_frame_keep
    from corekd.data.synth import SynthConfig, generate
    from helpers import TINY_FRAMES as frames

    corpus = generate(SynthConfig(**frames))
    test = SplitTensors.from_corpus(corpus, "test")
    model = ERCModel(
        CFG, {m: s.dim for m, s in corpus.modalities.items()}, 6, {m: s.kind for m, s in corpus.modalities.items()}
    )
    keep = split_frame_keep(Condition("frames", rate=0.6), test.frame_presence(), 0, "test")
    preds = predict(model, test, None, 2, "cpu", keep)
    want = run_model(model, test, None, 2, "cpu", keep).logits[test.utt_mask].softmax(-1)
    full = run_model(model, test, None, 2, "cpu").logits[test.utt_mask].softmax(-1)
    assert not torch.allclose(want, full)  # the dropped frames matter...
    assert torch.allclose(torch.from_numpy(preds.probs), want, atol=1e-6)  # ...and predict drops them
