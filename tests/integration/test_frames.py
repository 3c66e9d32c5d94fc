"""Frame sequences: batches with frames, the sequence encoder, frames:p, the synthetic frame mode, runs."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from corekd.config import TrainingConfig, validate_config
from corekd.data.batching import Batch, SplitTensors
from corekd.data.corpus import load_corpus
from corekd.data.protocols import (
    Condition,
    TrainingMissing,
    frame_keep_masks,
    frame_missing_rate,
    split_frame_keep,
)
from corekd.data.standardize import train_statistics
from corekd.data.synth import SynthConfig, generate
from corekd.errors import CorekdError
from corekd.evaluation.analyses import conflict_pairs, conflict_view
from corekd.evaluation.conditions import evaluation_masks
from corekd.experiments import run
from corekd.experiments.folder import corpus_fingerprint
from corekd.methods import method_class
from corekd.methods.nce import nce_view
from corekd.models.encoders import SequenceEncoder
from corekd.models.model import ERCModel, ModelConfig
from corekd.seeding import torch_generator
from corekd.training import (
    TeacherReference,
    init_model,
    load_checkpoint,
    save_checkpoint,
    train_model,
)
from helpers import TINY_FRAMES, TINY_SYNTH, corpus_dims, quick_config

TINY_FINGERPRINT = "ab2d21ca73368a9aa8c69d2ba951b3fc2b0387147341334df08f59a7765bad07"  # as in test_analyses.py


@pytest.fixture(scope="module")
def frame_corpus():
    return generate(SynthConfig(**TINY_FRAMES))


@pytest.fixture(scope="module")
def frame_splits(frame_corpus):
    return {s: SplitTensors.from_corpus(frame_corpus, s) for s in ("train", "dev", "test")}


@pytest.fixture()
def frame_batch(frame_splits):
    return frame_splits["train"].batch([0, 1, 2])


def _kinds(corpus):
    return {m: s.kind for m, s in corpus.modalities.items()}


# ------------------------------------------------------------------ batching
def test_batches_carry_padded_frames_equal_to_the_corpus_frames(frame_corpus, frame_splits, frame_batch):
    train = frame_splits["train"]
    assert set(frame_batch.frames) == {"l", "a"} and "v" not in frame_batch.frame_mask  # v is a vector
    dialogues = frame_corpus.split("train")[:3]
    u = max(len(d) for d in dialogues)
    for m in ("l", "a"):
        f = max(int(d.frames[m][1].max()) for d in dialogues)
        assert frame_batch.frames[m].shape == (3, u, f, frame_corpus.modalities[m].dim)
        assert frame_batch.frame_mask[m].shape == (3, u, f)
        for i, d in enumerate(dialogues):
            flat, lens = d.frames[m]
            starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
            for k in range(len(d)):
                n = int(lens[k])
                assert frame_batch.frame_mask[m][i, k].tolist() == [True] * n + [False] * (f - n)
                np.testing.assert_array_equal(frame_batch.frames[m][i, k, :n].numpy(), flat[starts[k] : starts[k] + n])
                assert not frame_batch.frames[m][i, k, n:].any()  # padding frames are zeros
            assert not frame_batch.frame_mask[m][i, len(d) :].any()  # padding utterances have no frame
        # the split keeps frames flat: exactly the train frames, no padding
        assert train.frame_data[m].shape[0] == sum(len(d.frames[m][0]) for d in frame_corpus.split("train"))


def test_view_hides_the_frames_of_a_missing_modality(frame_batch):
    mask = frame_batch.avail.clone()
    mask[0, 1, 1] = False  # hide a of utterance (0, 1)
    mask[1, :, 0] = False  # hide l of dialogue 1
    view = frame_batch.view(mask)
    assert not view.frame_mask["a"][0, 1].any() and not view.frames["a"][0, 1].any()
    assert not view.frame_mask["l"][1].any() and not view.frames["l"][1].any()
    assert torch.equal(view.frame_mask["a"][0, 0], frame_batch.frame_mask["a"][0, 0])  # the rest untouched
    assert torch.equal(view.frames["a"][2], frame_batch.frames["a"][2])
    assert torch.equal(view.features["v"][0], frame_batch.features["v"][0])  # vector modality as before
    assert torch.equal(view.complete().frames["a"][2], frame_batch.frames["a"][2])


def test_stack_and_to_carry_frames(frame_batch):
    half = frame_batch.view(frame_batch.avail & torch.tensor([True, False, True]))
    stacked = Batch.stack([frame_batch, half])
    assert stacked.frames["a"].shape[0] == 6
    assert torch.equal(stacked.frames["a"][:3], frame_batch.frames["a"])
    assert torch.equal(stacked.frame_mask["a"][3:], half.frame_mask["a"])
    assert not stacked.frame_mask["a"][3:].any()  # a hidden in the second view
    short = SplitTensors.from_corpus(generate(SynthConfig(**TINY_FRAMES)), "train").batch([0])
    padded = Batch.stack(
        [
            short,
            replace(
                short,
                frames={m: x[:, :, :1] for m, x in short.frames.items()},
                frame_mask={m: x[:, :, :1] for m, x in short.frame_mask.items()},
            ),
        ]
    )
    assert padded.frames["a"].shape[2] == short.frames["a"].shape[2]  # the shorter view is padded
    assert not padded.frame_mask["a"][1, :, 1:].any()
    moved = frame_batch.to("cpu")
    assert torch.equal(moved.frames["l"], frame_batch.frames["l"]) and torch.equal(
        moved.frame_mask["l"], frame_batch.frame_mask["l"]
    )


def test_drop_frames_hides_frames_recomputes_the_mean_and_keeps_one_frame(frame_batch):
    shown = frame_batch.frame_mask["a"]
    keep = torch.zeros_like(shown)
    keep[..., 1::2] = True  # keep odd frames only (an utterance of one frame would lose all: its first stays)
    dropped = frame_batch.drop_frames({"a": keep})
    expect = shown & (keep | ((shown.cumsum(-1) == 1) & ~(shown & keep).any(-1, keepdim=True)))
    assert torch.equal(dropped.frame_mask["a"], expect)
    assert (dropped.frame_mask["a"].any(-1) == shown.any(-1)).all()  # an observed modality keeps >= 1 frame
    assert not dropped.frames["a"][~expect].any()
    assert torch.equal(dropped.frames["a"][expect], frame_batch.frames["a"][expect])
    i, k = 0, 0
    kept = frame_batch.frames["a"][i, k][expect[i, k]]
    assert torch.allclose(dropped.features["a"][i, k], kept.mean(0))
    assert torch.equal(dropped.frames["l"], frame_batch.frames["l"])  # not in keep: untouched
    assert torch.equal(dropped.mask, frame_batch.mask) and torch.equal(dropped.avail, frame_batch.avail)
    with pytest.raises(ValueError, match="not sequence modalities"):
        frame_batch.drop_frames({"v": keep})
    with pytest.raises(ValueError, match="expected"):
        frame_batch.drop_frames({"a": keep[..., :1]})


def test_standardisation_statistics_come_from_the_train_frames(frame_corpus, frame_splits):
    stats = train_statistics(frame_splits["train"])
    frames = np.concatenate([d.frames["a"][0] for d in frame_corpus.split("train")]).astype(np.float64)
    np.testing.assert_allclose(stats["a"][0].numpy(), frames.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["a"][1].numpy(), frames.std(0), rtol=1e-5, atol=1e-6)
    v = np.concatenate([d.features["v"] for d in frame_corpus.split("train")]).astype(np.float64)
    np.testing.assert_allclose(stats["v"][0].numpy(), v.mean(0), rtol=1e-5, atol=1e-6)  # vectors: utterances


# ------------------------------------------------------------------ the sequence encoder
@pytest.mark.parametrize(
    "kind,pool", [("conv", "attention"), ("conv", "mean"), ("transformer", "attention"), ("none", "mean")]
)
def test_the_sequence_encoder_ignores_padded_and_dropped_frames(kind, pool):
    torch.manual_seed(0)
    enc = SequenceEncoder(5, 8, dropout=0.0, kind=kind, layers=2, kernel=3, pool=pool, heads=2).eval()
    x = torch.randn(2, 3, 6, 5)  # [B, U, F, D]
    mask = torch.tensor(
        [
            [[1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]],
            [[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 0, 1, 0, 0]],
        ],
        dtype=torch.bool,
    )
    observed = torch.tensor([[True, True, True], [True, False, True]])
    out = enc(x, mask, observed)
    noisy = torch.where(mask[..., None], x, torch.randn_like(x) * 100)  # change only hidden frames
    assert torch.allclose(enc(noisy, mask, observed), out, atol=1e-5)
    shifted = x.clone()
    shifted[0, 0, 1] += torch.arange(5.0)  # a shown frame (not a constant shift: the input LayerNorm removes that)
    assert not torch.allclose(enc(shifted, mask, observed)[0, 0], out[0, 0])
    assert torch.equal(out[1, 1], enc.missing)  # not observed: the missing token


def test_the_model_reads_frames_and_ignores_hidden_ones(frame_corpus, frame_batch):
    model = ERCModel(
        ModelConfig(hidden=16, heads=2, dropout=0.0), corpus_dims(frame_corpus), 6, _kinds(frame_corpus)
    ).eval()
    keep = {"a": torch.rand(frame_batch.frame_mask["a"].shape, generator=torch.Generator().manual_seed(0)) < 0.5}
    view = frame_batch.drop_frames(keep)
    out = model(view).logits
    noisy = {m: torch.where(view.frame_mask[m][..., None], x, torch.randn_like(x) * 50) for m, x in view.frames.items()}
    assert torch.allclose(model(replace(view, frames=noisy)).logits, out, atol=1e-5)
    assert not torch.allclose(model(frame_batch).logits, out)  # the dropped frames mattered before
    mean_model = ERCModel(
        ModelConfig(hidden=16, heads=2, dropout=0.0, sequence_encoder="mean"),
        corpus_dims(frame_corpus),
        6,
        _kinds(frame_corpus),
    ).eval()
    assert torch.allclose(mean_model(replace(view, frames=noisy)).logits, mean_model(view).logits, atol=1e-5)
    with pytest.raises(ValueError, match="carries no frames"):
        model(replace(frame_batch, frames={}, frame_mask={}))


# ------------------------------------------------------------------ frames:p
def test_condition_frames_parses_and_names():
    c = Condition.parse("frames:0.3")
    assert c.kind == "frames" and c.rate == 0.3 and c.name == "frames:0.3"
    assert Condition.parse(c.name) == c
    assert Condition.parse("frames:1.0").name == "frames:1.0"  # every frame dropped (issue 31)
    with pytest.raises(CorekdError, match=r"frames:<rate in \[0, 1\]>"):
        Condition.parse("frames:1.5")


def test_frame_keep_masks_realise_the_rate_and_keep_one_frame():
    lengths = torch.randint(1, 30, (200, 20), generator=torch.Generator().manual_seed(1))
    lengths[0, :5] = 0  # utterances without frames
    present = {"a": torch.arange(30)[None, None] < lengths[..., None]}
    for p in (0.1, 0.3, 0.7):
        keep = frame_keep_masks(present, p, torch_generator("t", 0))["a"]
        assert not (keep & ~present["a"]).any()  # only present frames are kept
        assert (keep.any(-1) == (lengths > 0)).all()  # every utterance with frames keeps one
        # expected drop share per utterance: p while p <= (n-1)/n, else (n-1)/n
        n = lengths[lengths > 0].double()
        expected = float(torch.minimum(torch.full_like(n, p), (n - 1) / n).mul(n).sum() / n.sum())
        assert frame_missing_rate({"a": keep}, present) == pytest.approx(expected, abs=0.01)
    one = {"a": torch.tensor([[[True, False]]])}
    assert frame_keep_masks(one, 0.9, torch_generator("t", 0))["a"].tolist() == [[[True, False]]]


def test_frames_masks_are_a_function_of_seed_split_condition_and_shared(frame_corpus, frame_splits):
    test = frame_splits["test"]
    present = test.frame_presence()
    c = Condition.parse("frames:0.5")
    a = split_frame_keep(c, present, 0, "test")
    assert all(torch.equal(a[m], split_frame_keep(c, present, 0, "test")[m]) for m in a)
    assert not torch.equal(a["a"], split_frame_keep(c, present, 1, "test")["a"])
    assert not torch.equal(a["a"], split_frame_keep(Condition.parse("frames:0.4"), present, 0, "test")["a"])
    conditions = [Condition("complete"), c]
    m1 = evaluation_masks(conditions, test, test.modalities, 0, "calibrated")
    m2 = evaluation_masks(conditions, test, test.modalities, 0, "calibrated")
    assert set(m1.frames) == {"frames:0.5"} and torch.equal(m1["frames:0.5"], test.avail)  # every modality observed
    assert all(torch.equal(m1.frames["frames:0.5"][m], m2.frames["frames:0.5"][m]) for m in ("l", "a"))


# ------------------------------------------------------------------ donor swaps
def test_nce_swaps_the_donor_frames(frame_batch):
    cv = nce_view(frame_batch, frame_batch, prob=1.0, types=("a",), generator=torch_generator("nce", 0))
    b, u, f = frame_batch.frame_mask["a"].shape
    sel = cv.selected.reshape(-1).nonzero().flatten()
    assert len(sel)
    donors = cv.donor.reshape(-1)[sel]
    flat = lambda t: t.reshape(b * u, *t.shape[2:])  # noqa: E731
    assert torch.equal(flat(cv.batch.frames["a"])[sel], flat(frame_batch.frames["a"])[donors])
    assert torch.equal(flat(cv.batch.frame_mask["a"])[sel], flat(frame_batch.frame_mask["a"])[donors])
    assert torch.equal(cv.batch.frame_lengths["a"].reshape(-1)[sel], frame_batch.frame_lengths["a"].reshape(-1)[donors])
    assert torch.equal(cv.batch.frames["l"], frame_batch.frames["l"])  # language kept


def test_analyses_conflict_view_points_targets_at_donor_frames(frame_splits):
    test = frame_splits["test"]
    pairs = conflict_pairs(test, 0)
    view = conflict_view(test, pairs, ("a",))
    full, swapped = test.batch(torch.arange(len(test))), view.batch(torch.arange(len(view)))
    (tr, tu), (dr, du) = pairs.target.T, pairs.donor.T
    f = min(full.frames["a"].shape[2], swapped.frames["a"].shape[2])
    assert torch.equal(swapped.frames["a"][tr, tu, :f], full.frames["a"][dr, du, :f])
    assert torch.equal(swapped.frame_mask["a"][tr, tu, :f], full.frame_mask["a"][dr, du, :f])
    assert torch.equal(swapped.frames["l"], full.frames["l"])


def test_teacher_reference_cache_matches_the_teacher_on_frame_batches(frame_corpus, frame_splits, tmp_path):
    teacher = init_model(
        ModelConfig(hidden=16, heads=2), corpus_dims(frame_corpus), 6, 0, "teacher", _kinds(frame_corpus)
    ).eval()
    train = frame_splits["train"]
    cached = TeacherReference(teacher, train, cache=True, batch_size=4, device=torch.device("cpu"))
    direct = TeacherReference(teacher, train, cache=False, batch_size=4, device=torch.device("cpu"))
    batch = train.batch([2, 0])
    a, b = cached.outputs(batch), direct.outputs(batch)
    valid = batch.utt_mask
    assert torch.allclose(a.logits[valid], b.logits[valid], atol=1e-5)
    save_checkpoint(teacher, tmp_path / "t", {})
    back, info = load_checkpoint(tmp_path / "t")
    assert info["kinds"] == _kinds(frame_corpus)
    assert torch.allclose(back(batch).logits, teacher(batch).logits, atol=1e-5)


def test_corekd_on_frames_same_seed_same_numbers(frame_corpus, frame_splits):
    """NCE swaps frames, the teacher reference holds frame outputs; one seed gives one set of numbers."""
    teacher = init_model(
        ModelConfig(hidden=16, heads=2), corpus_dims(frame_corpus), 6, 0, "teacher", _kinds(frame_corpus)
    )
    ref = TeacherReference(teacher, frame_splits["train"], cache=True, batch_size=4, device=torch.device("cpu"))
    cls = method_class("corekd")

    def train(seed):
        model = init_model(
            ModelConfig(hidden=16, heads=2), corpus_dims(frame_corpus), 6, seed, "student", _kinds(frame_corpus)
        )
        return train_model(
            cls(cls.Options(nce_prob=0.5), TrainingMissing()),
            model,
            frame_splits["train"],
            frame_splits["dev"],
            TrainingConfig(epochs=2, patience=2, batch_size=4),
            seed=seed,
            label_names=frame_corpus.labels,
            device=torch.device("cpu"),
            teacher=ref,
        )

    a, b, c = train(3), train(3), train(4)
    assert a.history == b.history and a.history[0]["nce"] > 0
    sa, sb, sc = (r.model.state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


# ------------------------------------------------------------------ the synthetic frame mode
def test_synthetic_frame_mode_is_deterministic_and_spreads_the_signal(frame_corpus):
    again = generate(SynthConfig(**TINY_FRAMES))
    assert corpus_fingerprint(again) == corpus_fingerprint(frame_corpus)
    other = generate(SynthConfig(**dict(TINY_FRAMES, seed=1)))
    assert corpus_fingerprint(other) != corpus_fingerprint(frame_corpus)
    assert frame_corpus.name.endswith("-frames") and frame_corpus.sequence_modalities() == ["l", "a"]
    assert frame_corpus.modalities["v"].kind == "vector"
    lengths = np.concatenate([d.frames["a"][1] for d in frame_corpus.dialogues])
    assert lengths.min() >= 1 and lengths.max() <= 7 and len(set(lengths.tolist())) > 2  # varying lengths
    for d in frame_corpus.dialogues[:3]:  # features are the frame means
        flat, lens = d.frames["a"]
        np.testing.assert_allclose(d.features["a"][0], flat[: lens[0]].mean(0), rtol=1e-5, atol=1e-6)
    # same dialogues, labels and splits as the vector corpus of the same knobs
    vector = generate(SynthConfig(**TINY_SYNTH))
    assert [(d.id, d.split, d.labels.tolist()) for d in vector.dialogues] == [
        (d.id, d.split, d.labels.tolist()) for d in frame_corpus.dialogues
    ]
    np.testing.assert_array_equal(vector.dialogues[0].features["v"], frame_corpus.dialogues[0].features["v"])


def test_the_vector_corpus_is_unchanged_by_the_frame_option():
    plain = generate(SynthConfig(**TINY_SYNTH))
    off = generate(SynthConfig(**TINY_SYNTH, frames={"enabled": False, "mean_frames": {"a": 9}}))
    assert corpus_fingerprint(plain) == corpus_fingerprint(off) == TINY_FINGERPRINT
    assert "frames" not in plain.info["config"] and plain.info == off.info
    assert all(not d.frames for d in plain.dialogues)


def test_bad_frame_knobs_are_rejected():
    with pytest.raises(ValueError, match="mean_frames"):
        SynthConfig(frames={"enabled": True, "mean_frames": {"l": 12, "a": 99, "v": 5}})
    with pytest.raises(ValueError, match="scale or heavy_columns"):
        SynthConfig(frames={"enabled": True}, heavy_columns=1)
    with pytest.raises(ValueError, match="must give sequence modality 'v'"):
        SynthConfig(frames={"enabled": True, "signal_share": {"l": 0.5, "a": 0.5}})


def test_frame_corpus_round_trips_through_the_format(frame_corpus, tmp_path):
    back = load_corpus(frame_corpus.save(tmp_path / "c"))
    assert corpus_fingerprint(back) == corpus_fingerprint(frame_corpus)
    assert back.modalities["a"].kind == "sequence" and back.modalities["v"].kind == "vector"
    for d, e in zip(frame_corpus.dialogues, back.dialogues):
        for m in ("l", "a"):
            np.testing.assert_array_equal(d.frames[m][0], e.frames[m][0])
            np.testing.assert_array_equal(d.frames[m][1], e.frames[m][1])
            np.testing.assert_allclose(d.features[m], e.features[m], rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ a whole run
def test_a_tiny_frame_run_trains_every_method_and_records_frames_conditions(tmp_path):
    cfg = quick_config(
        data={"source": "synthetic", "synth": TINY_FRAMES},
        methods=[{"name": "teacher"}, {"name": "no_kd"}, {"name": "vanilla_kd"}, {"name": "corekd"}],
        evaluation={"batch_size": 8, "random_rates": [0.0, 0.5], "frame_rates": [0.3, 0.6], "figures": False},
    )
    result = run(validate_config(cfg), tmp_path / "run")
    records = json.loads((tmp_path / "run" / "results.json").read_text())["records"]
    frames = [r for r in records if r["condition"].startswith("frames:")]
    assert {(r["variant"], r["split"], r["condition"]) for r in frames} == {
        (v, s, c)
        for v in ("teacher", "no_kd", "vanilla_kd", "corekd")
        for s in ("dev", "test")
        for c in ("frames:0.3", "frames:0.6")
    }
    test_rates = {r["condition"]: r["frame_missing_rate"] for r in frames if r["split"] == "test"}
    assert 0.15 < test_rates["frames:0.3"] < test_rates["frames:0.6"] < 0.7
    assert all(r["missing_rate"] == 0 and "weighted_f1" in r for r in frames)
    report = result.report.read_text()
    assert "## Frame missing, rate p (weighted F1)" in report and "Dev, frame missing at rate p" in report
    assert "this run reads its frames, by the conv sequence encoder" in report
    analyses = json.loads((tmp_path / "run" / "analyses.json").read_text())
    assert any(r["condition"] == "frames:0.3" for r in analyses["drift"])
    assert {r["type"] for r in analyses["rejection"]} == {"a", "v", "av"}


def test_a_vector_run_has_no_frames_conditions(tmp_path):
    cfg = quick_config(evaluation={"batch_size": 8, "random_rates": [0.0], "frame_rates": [0.3], "analyses": False})
    run(validate_config(cfg), tmp_path / "run")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert not any(r["condition"].startswith("frames:") for r in results["records"])
    assert any(
        "evaluation.frame_rates is set, but the corpus has no sequence modality" in w
        for w in results["meta"]["warnings"]
    )


def test_corrkd_mrm_drops_frames_on_top_of_the_shared_modality_masks(frame_batch):
    """CorrKD's MRM: the modality masks are every student's (the mask stream), and on sequence modalities a share
    of the observed frames is dropped from the method's own stream; frame_missing 0 (or a vector batch) drops none."""
    missing = TrainingMissing()
    corrkd = method_class("corrkd")(method_class("corrkd").Options(), missing)
    no_kd = method_class("no_kd")(method_class("no_kd").Options(), missing)
    view = corrkd.train_view(frame_batch, torch_generator("mask", 0), torch_generator("method", 0)).batch
    shared = no_kd.train_view(frame_batch, torch_generator("mask", 0), torch_generator("method", 0)).batch
    assert torch.equal(view.mask, shared.mask)  # inter-modality: the same masks as every other student
    dropped = {m: int((shared.frame_mask[m] & ~view.frame_mask[m]).sum()) for m in view.frame_mask}
    assert sum(dropped.values()) > 0  # intra-modality: some shown frames hidden
    for m in view.frame_mask:
        assert not bool((view.frame_mask[m] & ~shared.frame_mask[m]).any())  # nothing shown that was hidden
        observed = view.mask[..., list(view.modalities).index(m)] & view.utt_mask
        assert bool(view.frame_mask[m].any(-1)[observed].all())  # an observed modality keeps a frame
    off = method_class("corrkd")(method_class("corrkd").Options(frame_missing=0.0), missing)
    same = off.train_view(frame_batch, torch_generator("mask", 0), torch_generator("method", 0)).batch
    assert all(torch.equal(same.frame_mask[m], shared.frame_mask[m]) for m in shared.frame_mask)
