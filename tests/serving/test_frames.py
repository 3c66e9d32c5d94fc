"""Serving a model that reads frames (a sequence modality, ``sequence_encoder`` conv/transformer/none).

A one-epoch ``corekd run`` on the synthetic frame corpus (l and a sequences, v a vector) is bundled;
the API, the corpus-folder reader, the HTTP app and the ONNX graph must give what
``evaluation.predict`` gives on the same corpus (frames padded per batch, not averaged), and a
``sequence_encoder: mean`` model must keep taking the mean of the frames.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

import corekd
from corekd.cli import app as cli_app
from corekd.data.batching import SplitTensors
from corekd.data.synth import SynthConfig, generate
from corekd.errors import CorekdError
from corekd.evaluation.predict import predict as eval_predict
from corekd.models.model import ModelConfig
from corekd.serving.app import create_app
from corekd.serving.bundle import bundle_checkpoint, read_bundle
from corekd.serving.inputs import CorpusReader, predict_stream
from corekd.serving.onnx_export import export_onnx
from corekd.serving.predictor import (
    DialogueInput,
    Predictor,
    ServingModule,
    encode,
    parse_dialogue,
)
from corekd.training import init_model, save_checkpoint
from helpers import TINY_FRAMES, quick_config


@pytest.fixture(scope="module")
def frame_corpus():
    return generate(SynthConfig(**TINY_FRAMES))


@pytest.fixture(scope="module")
def frame_bundle(tmp_path_factory, frame_corpus):
    """A finished one-epoch run on the frame corpus (default sequence_encoder: conv) and its bundle; the corpus saved."""
    from corekd.config import validate_config
    from corekd.experiments import run
    from corekd.serving.bundle import export_bundle

    root = tmp_path_factory.mktemp("serving-frames")
    cfg = quick_config(
        data={"source": "synthetic", "synth": TINY_FRAMES},
        evaluation={"batch_size": 8, "random_rates": [0.0], "analyses": False},
    )
    run(validate_config(cfg, "cfg.yaml"), root / "run")
    frame_corpus.save(root / "corpus")
    return {"bundle": export_bundle(root / "run", "no_kd", root / "bundle"), "corpus": root / "corpus", "root": root}


def as_frames_interchange(dialogue, corpus, mask=None):
    """A corpus dialogue as a mapping whose sequence modalities are given as frames (lists of lists)."""
    mods = corpus.modality_names
    utterances = []
    for i, uid in enumerate(dialogue.utterance_ids):
        u = {"id": uid, "speaker": dialogue.speakers[i]}
        for j, m in enumerate(mods):
            if not dialogue.available[i, j] or (mask is not None and not mask[i, j]):
                continue
            if m in dialogue.frames:
                flat, lens = dialogue.frames[m]
                start = int(lens[:i].sum())
                u[m] = flat[start : start + int(lens[i])].tolist()
            else:
                u[m] = dialogue.features[m][i].tolist()
        utterances.append(u)
    return {"dialogue_id": dialogue.id, "utterances": utterances}


def _probs(rows, labels):
    return np.array([[r["probabilities"][k] for k in labels] for r in rows])


def _test_masks(split, seed=0):
    gen = torch.Generator().manual_seed(seed)
    masks = torch.rand(split.avail.shape, generator=gen) > 0.4  # [N, U, M]
    masks &= split.avail
    masks[..., 0] |= ~masks.any(-1)  # at least one modality per utterance
    return masks


def call(app, method, url, **kwargs):
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(go())


def test_a_frame_model_predicts_what_evaluation_predicts(frame_bundle, frame_corpus):
    """API, HTTP (plain and batching) and ONNX on frames = evaluation.predict under the same missing pattern."""
    predictor = corekd.load(frame_bundle["bundle"])
    model = predictor.bundle.model
    assert model.kinds == {"l": "sequence", "a": "sequence", "v": "vector"} and model.cfg.sequence_encoder == "conv"
    assert {m: s["input"] for m, s in predictor.modalities.items()} == {"l": "frames", "a": "frames", "v": "vector"}
    labels = frame_corpus.labels
    split = SplitTensors.from_corpus(frame_corpus, "test")
    masks = _test_masks(split)
    reference = eval_predict(model, split, masks, 4, "cpu").probs  # [n_utterances, C]
    dialogues = [
        as_frames_interchange(d, frame_corpus, masks[i].numpy()) for i, d in enumerate(frame_corpus.split("test"))
    ]
    api = _probs([r for rs in predictor.predict_many(dialogues) for r in rs], labels)
    assert api.shape == reference.shape and np.abs(api - reference).max() < 1e-5
    alone = _probs(predictor.predict(dialogues[2]), labels)  # its own padding: fewer frames, fewer utterances
    n0, n1 = sum(len(d["utterances"]) for d in dialogues[:2]), sum(len(d["utterances"]) for d in dialogues[:3])
    assert np.abs(alone - reference[n0:n1]).max() < 1e-5
    # the frames matter: the same dialogues with each utterance's frames replaced by their mean predict otherwise
    averaged = [
        {
            **d,
            "utterances": [
                {k: (np.mean(v, 0).tolist() if k in ("l", "a") else v) for k, v in u.items()} for u in d["utterances"]
            ],
        }
        for d in dialogues
    ]
    other = _probs([r for rs in predictor.predict_many(averaged) for r in rs], labels)
    assert np.abs(other - reference).max() > 1e-3
    # HTTP, one request per dialogue through the dynamic batcher (one padded forward) and a list without it
    for batching in (True, False):
        app = create_app(predictor, batching=batching, max_batch=64, batch_wait_ms=50)
        if batching:

            async def go():
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
                    return await asyncio.gather(*(client.post("/v1/predict", json=d) for d in dialogues))

            answers = asyncio.run(go())
            assert all(a.status_code == 200 for a in answers), answers[0].text
            rows = [r for a in answers for r in a.json()["utterances"]]
            assert app.state.batcher.batches < len(dialogues)
        else:
            answer = call(app, "POST", "/v1/predict", json=dialogues)
            assert answer.status_code == 200, answer.text
            rows = [r for d in answer.json() for r in d["utterances"]]
        assert np.abs(_probs(rows, labels) - reference).max() < 1e-5
    info = call(create_app(predictor), "GET", "/v1/model").json()
    assert info["modalities"]["a"]["input"] == "frames" and info["modalities"]["a"]["kind"] == "sequence"
    # ONNX: frames as inputs, the same probabilities
    onnx_predictor = corekd.load(frame_bundle["bundle"], runtime="onnx")
    assert onnx_predictor.runtime.inputs == [
        "mask",
        "speakers",
        "lengths",
        "l_frames",
        "l_frame_mask",
        "a_frames",
        "a_frame_mask",
        "v",
    ]
    got = _probs([r for rs in onnx_predictor.predict_many(dialogues) for r in rs], labels)
    assert np.abs(got - reference).max() < 1e-5


def test_the_corpus_reader_passes_frames(frame_bundle, frame_corpus):
    predictor = corekd.load(frame_bundle["bundle"])
    rows: list[dict] = []
    reader = CorpusReader(frame_bundle["corpus"], predictor.modalities)
    first = next(iter(reader))
    flat, lens = frame_corpus.dialogues[0].frames["a"]
    assert first.features["a"][1].shape == (int(lens[1]), 10)
    np.testing.assert_array_equal(first.features["a"][1], flat[int(lens[0]) : int(lens[:2].sum())])
    predict_stream(predictor, reader, rows.append, batch_size=3)
    every = SplitTensors.from_dialogues("all", frame_corpus.dialogues, frame_corpus)
    reference = eval_predict(predictor.bundle.model, every, None, 4, "cpu").probs
    assert [r["utterance_id"] for r in rows] == [u for d in frame_corpus.dialogues for u in d.utterance_ids]
    assert np.abs(_probs(rows, frame_corpus.labels) - reference).max() < 1e-5


def test_frame_inputs_are_checked_frame_by_frame(frame_bundle):
    predictor = corekd.load(frame_bundle["bundle"])
    good = [[0.1] * 10, [0.2] * 10]

    def bad(value, field, message):
        d = {"dialogue_id": "d", "utterances": [{"l": [[0.0] * 12]}, {"a": good, "v": [0.0] * 16}, {"a": value}]}
        with pytest.raises(CorekdError, match=message) as err:
            predictor.predict(d)
        assert err.value.field == field

    bad([[0.0] * 10, [0.0] * 9], "utterances[2].a[1]", "frame of 9 numbers; expected 10")
    bad([[0.0] * 10] * 5 + [[0.0] * 4 + [float("nan")] + [0.0] * 5], "utterances[2].a[5]", "non-finite value.*index 4")
    bad([], "utterances[2].a", "at least one frame")
    bad([[0.0] * 10, 3.0], "utterances[2].a[1]", "expected a frame")
    bad([["x"] * 10], "utterances[2].a[0]", "expected a frame of 10 numbers")
    bad([0.0] * 9, "utterances[2].a", "got 9 numbers; expected 10")
    # one vector given for a frame-reading modality is an utterance of one frame
    one = parse_dialogue({"dialogue_id": "d", "utterances": [{"a": [0.5] * 10}]}, predictor.modalities)
    assert one.features["a"][0].shape == (1, 10)
    same = predictor.predict({"dialogue_id": "d", "utterances": [{"a": [0.5] * 10}, {"l": [[1.0] * 12] * 2}]})
    again = predictor.predict({"dialogue_id": "d", "utterances": [{"a": [[0.5] * 10]}, {"l": [[1.0] * 12] * 2}]})
    assert same == again
    # HTTP: the schema names the frame and the dim
    app = create_app(predictor)
    body = {"dialogue_id": "d", "utterances": [{"v": [0.0] * 16}] * 2 + [{"a": [[0.0] * 10] * 5 + [[0.0] * 9]}]}
    r = call(app, "POST", "/v1/predict", json=body)
    assert r.status_code == 422 and [e["field"] for e in r.json()["detail"]] == ["body.utterances[2].a[5]"]
    body["utterances"][2]["a"] = [[0.0] * 10] * 5 + [[0.0] * 9 + ["NaN"]]
    r = call(
        app,
        "POST",
        "/v1/predict",
        content=json.dumps(body).replace('"NaN"', "NaN"),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body.utterances[2].a[5][9]"
    body["utterances"][2]["a"] = []
    r = call(app, "POST", "/v1/predict", json=body)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body.utterances[2].a"
    body["utterances"][2]["a"] = [0.0] * 10  # one frame
    assert call(app, "POST", "/v1/predict", json=body).status_code == 200


def _frame_model_bundle(tmp_path, encoder, dims=None, kinds=None, seed=0):
    dims = dims or {"l": 12, "a": 10, "v": 16}
    kinds = kinds or {"l": "sequence", "a": "sequence", "v": "vector"}
    m = init_model(
        ModelConfig(hidden=16, heads=2, sequence_encoder=encoder, sequence_layers=2),
        dims,
        3,
        seed,
        "student",
        kinds=kinds,
    )
    gen = torch.Generator().manual_seed(seed + 1)
    m.set_input_statistics(
        {k: (torch.randn(d, generator=gen), torch.rand(d, generator=gen) + 0.5) for k, d in dims.items()}
    )
    save_checkpoint(m, tmp_path / f"ckpt-{encoder}", {"labels": ["x", "y", "z"], "task": "classification"})
    return read_bundle(bundle_checkpoint(tmp_path / f"ckpt-{encoder}", tmp_path / f"bundle-{encoder}"))


def _random_frames(gen, b, u, max_frames, missing, frame_mods):
    """Random dialogues (lengths 1..u, the first u; frames 1..max_frames per utterance; modalities dropped) as arrays."""
    lengths = torch.randint(1, u + 1, (b,), generator=gen)
    lengths[0] = u
    keep = torch.rand(b, u, 3, generator=gen) >= missing
    keep[..., 0] |= ~keep.any(-1)
    dialogues = []
    for i in range(b):
        n = int(lengths[i])
        feats = {}
        for j, (m, d) in enumerate({"l": 12, "a": 10, "v": 16}.items()):
            rows = []
            for t in range(n):
                if not keep[i, t, j]:
                    rows.append(None)
                elif m in frame_mods:
                    f = int(torch.randint(1, max_frames + 1, (1,), generator=gen))
                    rows.append((torch.randn(f, d, generator=gen) * 3 + 1).numpy())
                else:
                    rows.append((torch.randn(d, generator=gen) * 3 + 1).numpy())
            feats[m] = rows
        dialogues.append(
            DialogueInput(
                id=f"d{i}",
                utterance_ids=[str(t) for t in range(n)],
                speakers=[str(int(s)) for s in torch.randint(0, 3, (n,), generator=gen)],
                features=feats,
            )
        )
    return encode(dialogues, {"l": 12, "a": 10, "v": 16}, frame_mods)


def test_a_transformer_frame_model_is_refused_for_onnx_naming_the_op(tmp_path):
    bundle = _frame_model_bundle(tmp_path, "transformer")
    with pytest.raises(CorekdError, match="torch.nn.MultiheadAttention.*does not export with dynamic shapes") as err:
        export_onnx(bundle, tmp_path / "t.onnx")
    assert err.value.field == "model.sequence_encoder" and not (tmp_path / "t.onnx").exists()
    with pytest.raises(CorekdError, match="transformer sequence encoder"):
        Predictor(bundle, runtime="onnx")
    result = CliRunner().invoke(cli_app, ["export", str(bundle.path), "--out", str(tmp_path / "t.onnx")])
    assert result.exit_code == 2 and "MultiheadAttention" in result.output
    # the torch runtime serves it
    rows = Predictor(bundle).predict({"dialogue_id": "d", "utterances": [{"a": [[0.1] * 10] * 3}, {"v": [0.0] * 16}]})
    assert [r["modalities"] for r in rows] == [["a"], ["v"]]


@pytest.mark.parametrize("encoder", ["conv", "none"])
def test_frame_models_export_with_parity(tmp_path, encoder):
    """The ONNX graph of a frame-reading model = PyTorch at several lengths, frame counts and missing patterns."""
    bundle = _frame_model_bundle(tmp_path, encoder)
    path = export_onnx(bundle, tmp_path / "m.onnx")
    sidecar = json.loads((tmp_path / "m.onnx.json").read_text())
    assert sidecar["frame_modalities"] == ["l", "a"] and "a_frame_mask" in sidecar["inputs"]
    module = ServingModule(bundle.model, bundle.task).eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert (
        names
        == module.input_names
        == ["mask", "speakers", "lengths", "l_frames", "l_frame_mask", "a_frames", "a_frame_mask", "v"]
    )
    gen = torch.Generator().manual_seed(3)
    worst, frame_counts = 0.0, set()
    for b, u, f, p in ((1, 1, 1, 0.0), (1, 6, 9, 0.3), (3, 9, 2, 0.5), (4, 17, 12, 0.6), (2, 30, 5, 0.2)):
        arrays = _random_frames(gen, b, u, f, p, ("l", "a"))
        frame_counts.add(arrays["a_frames"].shape[2])
        with torch.inference_mode():
            ref = module(*(torch.from_numpy(arrays[n]) for n in names)).numpy()
        got = session.run(None, {n: arrays[n] for n in names})[0]
        assert got.shape == ref.shape
        real = np.arange(ref.shape[1])[None, :] < arrays["lengths"][:, None]
        worst = max(worst, float(np.abs(got - ref)[real].max()))
    assert len(frame_counts) >= 4  # the frame axis really varied
    assert worst <= 1e-4


def test_a_mean_sequence_model_keeps_averaging(tmp_path, frame_corpus):
    """sequence_encoder mean: the predictor averages the frames (what the model was trained on) and equals evaluation."""
    bundle = _frame_model_bundle(tmp_path, "mean")
    assert {m: s["input"] for m, s in bundle.modalities.items()} == {"l": "vector", "a": "vector", "v": "vector"}
    predictor = Predictor(bundle)
    split = SplitTensors.from_corpus(frame_corpus, "test")
    masks = _test_masks(split, 1)
    reference = eval_predict(bundle.model, split, masks, 4, "cpu").probs
    dialogues = [
        as_frames_interchange(d, frame_corpus, masks[i].numpy()) for i, d in enumerate(frame_corpus.split("test"))
    ]
    got = _probs([r for rs in predictor.predict_many(dialogues) for r in rs], ["x", "y", "z"])
    assert np.abs(got - reference).max() < 1e-5
    path = export_onnx(bundle, tmp_path / "mean.onnx")
    onnx_rows = Predictor(bundle, runtime="onnx", onnx_path=path).predict_many(dialogues)
    assert onnx_rows and np.abs(_probs([r for rs in onnx_rows for r in rs], ["x", "y", "z"]) - reference).max() < 1e-5
    # a graph that takes averaged vectors is refused for the frame-reading model of the same modalities
    frames = _frame_model_bundle(tmp_path, "conv")
    with pytest.raises(CorekdError, match="takes inputs.*l_frames"):
        Predictor(frames, runtime="onnx", onnx_path=path)


def test_a_bundle_contradicting_the_model_kind_is_refused(tmp_path):
    bundle = _frame_model_bundle(tmp_path, "conv")
    info = json.loads((bundle.path / "model.json").read_text())
    info["bundle"]["modalities"]["a"]["kind"] = "vector"
    (bundle.path / "model.json").write_text(json.dumps(info))
    with pytest.raises(CorekdError, match="reads 'a' as a sequence") as err:
        read_bundle(bundle.path)
    assert err.value.field == "bundle.modalities.a.kind"
