"""The on-disk corpus format: round trip, and a clear error for every kind of bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from corekd.cli import app
from corekd.config import load_config
from corekd.data.batching import SplitTensors
from corekd.data.corpus import Corpus, Dialogue, ModalitySpec, load_corpus
from corekd.data.splits import carve_dev
from corekd.data.summary import summarize
from corekd.errors import CorekdError
from helpers import edit_features, edit_meta, quick_config


@pytest.fixture()
def corpus_dir(tmp_path, tiny_corpus):
    return tiny_corpus.save(tmp_path / "corpus")


def test_round_trip(corpus_dir, tiny_corpus):
    loaded = load_corpus(corpus_dir)
    assert loaded.labels == tiny_corpus.labels
    assert loaded.modality_names == ("l", "a", "v")
    assert [d.id for d in loaded.dialogues] == [d.id for d in tiny_corpus.dialogues]
    for a, b in zip(loaded.dialogues, tiny_corpus.dialogues):
        assert a.split == b.split and a.speakers == b.speakers and a.utterance_ids == b.utterance_ids
        assert np.array_equal(a.labels, b.labels)
        for m in ("l", "a", "v"):
            assert np.array_equal(a.features[m], b.features[m])


def test_genuinely_missing_modalities_survive_and_stay_missing(corpus_dir):
    meta = json.loads((corpus_dir / "corpus.json").read_text())
    meta["dialogues"][0]["utterances"][1]["missing"] = ["v"]
    (corpus_dir / "corpus.json").write_text(json.dumps(meta))
    corpus = load_corpus(corpus_dir)
    d = corpus.dialogues[0]
    assert d.available[1].tolist() == [True, True, False]
    assert not d.features["v"][1].any()  # no information where the data has none
    split = SplitTensors.from_dialogues("x", [d], corpus)
    assert not split.avail[0, 1, 2]
    assert summarize(corpus)["modalities"]["v"]["missing_utterances"] == 1


def test_missing_folder_and_files(tmp_path, corpus_dir):
    with pytest.raises(CorekdError, match="no such corpus folder"):
        load_corpus(tmp_path / "nowhere")
    (corpus_dir / "features.safetensors").unlink()
    with pytest.raises(CorekdError, match="features.safetensors: file not found"):
        load_corpus(corpus_dir)
    (corpus_dir / "corpus.json").unlink()
    with pytest.raises(CorekdError, match="corpus.json: file not found"):
        load_corpus(corpus_dir)


def test_dims_disagreeing_with_metadata(corpus_dir):
    edit_features(corpus_dir, lambda t: t.update(a=t["a"][:, :-1].copy()))
    with pytest.raises(CorekdError) as info:
        load_corpus(corpus_dir)
    assert info.value.field == "a" and "expected shape" in str(info.value) and "features.safetensors" in str(info.value)


def test_nan_and_inf_features(corpus_dir):
    def poison(t):
        t["v"][3, 2] = np.nan
        t["v"][5, 0] = np.inf

    edit_features(corpus_dir, poison)
    with pytest.raises(CorekdError) as info:
        load_corpus(corpus_dir)
    assert info.value.field == "v" and "2 non-finite values" in str(info.value) and "utterance" in str(info.value)


def test_unknown_label(corpus_dir):
    edit_meta(corpus_dir, lambda m: m["dialogues"][2]["utterances"][0].update(label="bored"))
    with pytest.raises(CorekdError) as info:
        load_corpus(corpus_dir)
    assert info.value.field == "dialogues[2].utterances[0].label" and "unknown label 'bored'" in str(info.value)


def test_empty_dialogue(corpus_dir):
    def empty(meta):
        meta["dialogues"][1]["utterances"] = []

    edit_meta(corpus_dir, empty)
    with pytest.raises(CorekdError) as info:
        load_corpus(corpus_dir)
    assert info.value.field == "dialogues[1].utterances" and "empty dialogue" in str(info.value)


@pytest.mark.parametrize(
    "edit,field",
    [
        (lambda m: m.update(version=7), "version"),
        (lambda m: m["dialogues"][0].update(split="validation"), "dialogues[0].split"),
        (lambda m: m["dialogues"][0]["utterances"][0].pop("speaker"), "dialogues[0].utterances[0].speaker"),
        (lambda m: m["dialogues"][0]["utterances"][0].update(mood="x"), "dialogues[0].utterances[0].mood"),
        (lambda m: m["modalities"]["l"].update(dim=0), "modalities.l.dim"),
    ],
)
def test_schema_errors_name_the_field(corpus_dir, edit, field):
    edit_meta(corpus_dir, edit)
    with pytest.raises(CorekdError) as info:
        load_corpus(corpus_dir)
    assert info.value.field == field


def test_invalid_json_names_the_line(corpus_dir):
    (corpus_dir / "corpus.json").write_text('{"format": "corekd-corpus",\n  oops}')
    with pytest.raises(CorekdError, match=r"not valid JSON \(line 2"):
        load_corpus(corpus_dir)
    (corpus_dir / "corpus.json").write_bytes(b'{"format": "caf\xe9"}')  # latin-1: the file is named, not only the byte
    with pytest.raises(CorekdError, match=r"corpus\.json: not a UTF-8 text file") as info:
        load_corpus(corpus_dir)
    assert info.value.path == str(corpus_dir / "corpus.json")


def test_duplicate_ids(corpus_dir):
    edit_meta(corpus_dir, lambda m: m["dialogues"][1].update(id=m["dialogues"][0]["id"]))
    with pytest.raises(CorekdError, match="duplicate dialogue id"):
        load_corpus(corpus_dir)


def test_problems_are_reported_not_hidden(tiny_corpus):
    from dataclasses import replace

    no_dev = replace(tiny_corpus, dialogues=[d for d in tiny_corpus.dialogues if d.split != "dev"])
    assert "split 'dev' has no dialogues" in summarize(no_dev)["problems"]


runner = CliRunner()


def _corpus(
    *, sequence=False, sentiment=True, splits=("train", "train", "train", "train", "dev", "test"), speakers=None
):
    """Six 3-utterance dialogues; 'a' as frame sequences when ``sequence``."""
    rng = np.random.default_rng(0)
    dialogues = []
    for k, split in enumerate(splits):
        frames = {}
        feats = {"l": rng.normal(size=(3, 4)).astype(np.float32)}
        if sequence:
            lengths = np.array([2, 1, 3], dtype=np.int64)
            flat = rng.normal(size=(int(lengths.sum()), 2)).astype(np.float32)
            frames["a"] = (flat, lengths)
            feats["a"] = np.stack([flat[:2].mean(0), flat[2:3].mean(0), flat[3:].mean(0)])
        else:
            feats["a"] = rng.normal(size=(3, 2)).astype(np.float32)
        dialogues.append(
            Dialogue(
                id=f"d{k}",
                split=split,
                utterance_ids=[f"d{k}_u{i}" for i in range(3)],
                speakers=(speakers[k] if speakers else ["A", "B", "A"]),
                labels=np.array([0, 1, k % 2]),
                features=feats,
                available=np.ones((3, 2), bool),
                sentiment=np.array([1.5, np.nan, -3.0], np.float32) if sentiment else None,
                texts=["hi", None, "bye"] if sentiment else None,
                extras=[{"speaker_age": 30}, {}, {}] if sentiment else None,
                frames=frames,
            )
        )
    mods = {
        "l": ModalitySpec(4, source="glove-mean", normalization="none"),
        "a": ModalitySpec(2, kind="sequence", source="covarep", frame_rate=100.0, aligned=False)
        if sequence
        else ModalitySpec(2),
    }
    return Corpus(name="v2", labels=["neg", "pos"], modalities=mods, dialogues=dialogues)


# ------------------------------------------------------------------ round trip, version, cards
def test_v2_fields_round_trip_and_a_plain_corpus_stays_v1(tmp_path):
    folder = _corpus(sequence=True).save(tmp_path / "c")
    meta = json.loads((folder / "corpus.json").read_text())
    assert meta["version"] == 2
    u = meta["dialogues"][0]["utterances"]
    assert u[0]["sentiment"] == 1.5 and u[0]["text"] == "hi" and u[0]["extra"] == {"speaker_age": 30}
    assert "sentiment" not in u[1] and "text" not in u[1] and "extra" not in u[1]
    back = load_corpus(folder)
    d = back.dialogues[0]
    assert d.sentiment[0] == 1.5 and np.isnan(d.sentiment[1]) and d.sentiment[2] == -3.0
    assert d.texts == ["hi", None, "bye"] and d.extras == [{"speaker_age": 30}, {}, {}]
    assert back.modalities["a"].card() == {
        "extractor": "covarep",
        "dim": 2,
        "kind": "sequence",
        "frame_rate": "100 frames/s",
        "aligned": "unaligned",
        "normalization": "not stated",
    }
    assert back.modalities["l"].card()["frame_rate"] == "utterance-level"
    plain = _corpus(sentiment=False)
    plain.modalities = {"l": ModalitySpec(4), "a": ModalitySpec(2)}
    assert json.loads((plain.save(tmp_path / "p") / "corpus.json").read_text())["version"] == 1


def test_sequences_are_stored_flat_with_offsets_and_read_as_frame_lengths_and_means(tmp_path):
    corpus = _corpus(sequence=True)
    folder = corpus.save(tmp_path / "c")
    from safetensors.numpy import load_file

    tensors = load_file(str(folder / "features.safetensors"))
    assert tensors["a"].shape == (6 * 6, 2) and tensors["a_offsets"].tolist()[:4] == [0, 2, 3, 6]
    back = load_corpus(folder)
    flat, lengths = back.dialogues[1].frames["a"]
    np.testing.assert_array_equal(flat, corpus.dialogues[1].frames["a"][0])
    np.testing.assert_allclose(back.dialogues[1].features["a"][0], flat[:2].mean(0), rtol=1e-6)
    split = SplitTensors.from_corpus(back, "train")
    batch = split.batch([0, 2])
    assert batch.frame_lengths["a"].tolist() == [[2, 1, 3], [2, 1, 3]] and "l" not in batch.frame_lengths


def test_missing_frames_are_dropped_and_zero_frames_must_be_declared_missing(tmp_path):
    folder = _corpus(sequence=True).save(tmp_path / "c")
    edit_meta(folder, lambda m: m["dialogues"][0]["utterances"][0].update(missing=["a"]))
    d = load_corpus(folder).dialogues[0]
    assert d.frames["a"][1].tolist() == [0, 1, 3] and len(d.frames["a"][0]) == 4 and not d.features["a"][0].any()

    def zero_frames(t):
        t["a_offsets"][1:] -= 2  # utterance 0 of d0 gets no frame; drop its two rows
        t["a"] = t["a"][2:]

    folder2 = _corpus(sequence=True).save(tmp_path / "c2")
    edit_features(folder2, zero_frames)
    with pytest.raises(CorekdError, match=r"utterances\[0\].missing: utterance 'd0_u0' has 0 frames"):
        load_corpus(folder2)


def test_v2_refusals_each_name_the_field(tmp_path):
    cases = [
        (
            lambda m: m["dialogues"][0]["utterances"][0].update(sentiment=3.5),
            r"utterances\[0\]\.sentiment: sentiment 3.5",
        ),
        (lambda m: m["dialogues"][0]["utterances"][0].update(sentiment=float("nan")), r"sentiment nan"),
        (lambda m: m["dialogues"][0]["utterances"][0].update(missing=["l", "a"]), r"lists every modality as missing"),
    ]
    for k, (edit, pattern) in enumerate(cases):
        folder = _corpus().save(tmp_path / f"c{k}")
        edit_meta(folder, edit)
        with pytest.raises(CorekdError, match=pattern):
            load_corpus(folder)


def test_v1_refuses_v2_fields_but_keeps_its_old_leniency(tmp_path):
    plain = _corpus(sentiment=False)
    plain.modalities = {"l": ModalitySpec(4), "a": ModalitySpec(2)}
    folder = plain.save(tmp_path / "p")
    edit_meta(folder, lambda m: m["dialogues"][0]["utterances"][0].update(missing=["l", "a"]))
    assert "have no modality at all" in " ".join(load_corpus(folder).problems())  # v1: a warning, as before
    edit_meta(folder, lambda m: m["dialogues"][0]["utterances"][1].update(text="hello"))
    with pytest.raises(CorekdError, match=r"utterances\[1\]\.text: this field needs format version 2"):
        load_corpus(folder)


def test_non_float32_features_are_refused_with_the_dtype_or_cast(tmp_path):
    folder = _corpus().save(tmp_path / "c")
    edit_features(folder, lambda t: t.update(a=t["a"].astype(np.float64)))
    with pytest.raises(CorekdError, match=r"features.safetensors: a: dtype float64; expected float32"):
        load_corpus(folder)
    assert load_corpus(folder, cast=True).dialogues[0].features["a"].dtype == np.float32
    result = runner.invoke(app, ["data", "inspect", str(folder), "--cast"])
    assert result.exit_code == 0 and "a: float64 -> float32" in result.output, result.output
    assert load_corpus(folder).dialogues[0].features["a"].dtype == np.float32  # the file was rewritten


def test_inspect_prints_the_dataset_card(tmp_path):
    folder = _corpus(sequence=True).save(tmp_path / "c")
    out = runner.invoke(app, ["data", "inspect", str(folder)]).output
    assert "covarep" in out and "100 frames/s" in out and "utterance-level" in out and "glove-mean" in out


# ------------------------------------------------------------------ splits
def test_carve_dev_is_seeded_by_dialogue_and_speaker_disjoint_when_speakers_allow(tmp_path):
    spk = [[f"s{k}", f"s{k}b", f"s{k}"] for k in range(20)]
    splits = ["train"] * 18 + ["test"] * 2
    a = _corpus(splits=splits, speakers=spk)
    record = carve_dev(a, 0.1, seed=3)
    dev_a = [d.id for d in a.split("dev")]
    assert len(dev_a) == 2 and record["speaker_disjoint"] and a.info["dev_split"] == record
    b = _corpus(splits=splits, speakers=spk)
    carve_dev(b, 0.1, seed=3)
    assert [d.id for d in b.split("dev")] == dev_a
    generic = _corpus(splits=splits)  # every dialogue has speakers A and B: no disjoint split exists
    rec = carve_dev(generic, 0.1, seed=0)
    assert rec["speaker_disjoint"] is False and len(generic.split("dev")) == 2
    assert {s for d in generic.split("dev") for s in d.speakers} & {
        s for d in generic.split("train") for s in d.speakers
    }


def test_carve_keeps_linked_dialogues_together():
    # d0..d9 share speaker "x" pairwise in chains of two: groups of two dialogues
    spk = [[f"g{k // 2}", f"own{k}"] * 1 + [f"g{k // 2}"] for k in range(10)]
    corpus = _corpus(splits=["train"] * 10, speakers=spk)
    record = carve_dev(corpus, 0.2, seed=1)
    dev = corpus.split("dev")
    assert record["speaker_disjoint"] and len(dev) == 2 and dev[0].speakers[0] == dev[1].speakers[0]
    train_speakers = {s for d in corpus.split("train") for s in d.speakers}
    assert not {s for d in dev for s in d.speakers} & train_speakers


def _two_split(tmp_path):
    corpus = _corpus(splits=["train"] * 8 + ["test"] * 2, sentiment=False, speakers=[[f"p{k}"] * 3 for k in range(10)])
    corpus.modalities = {"l": ModalitySpec(4), "a": ModalitySpec(2)}
    return corpus.save(tmp_path / "two")


def test_a_corpus_without_dev_is_refused_by_run_and_inspect_says_so_then_carve_runs(tmp_path):
    folder = _two_split(tmp_path)
    inspect = runner.invoke(app, ["data", "inspect", str(folder)]).output
    assert "problems: none found" not in inspect and "data.dev: carve" in inspect
    cfg = quick_config(data={"path": str(folder)})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    refused = runner.invoke(app, ["config", "check", str(tmp_path / "c.yaml")])
    assert (
        refused.exit_code == 2
        and "no dialogues in split 'dev'" in refused.output
        and "data.dev: carve" in refused.output
    )
    cfg["data"]["dev"] = "carve"
    cfg["data"]["dev_fraction"] = 0.25
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    check = runner.invoke(app, ["config", "check", str(tmp_path / "c.yaml")])
    assert check.exit_code == 0 and "6/2/2 train/dev/test" in check.output and "carved from train" in check.output
    run = runner.invoke(app, ["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")])
    assert run.exit_code == 0, run.output
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Dev split: carved from train by dialogue, 2 dialogues" in report and "## Dataset card" in report
    meta = json.loads((tmp_path / "run" / "results.json").read_text())["meta"]
    assert meta["splits"]["dev"]["dialogues"] == 2 and meta["dev_split"]["fraction"] == 0.25


def test_config_check_reports_a_bad_config_without_training(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(quick_config(training={"epochs": 0})))
    bad = runner.invoke(app, ["config", "check", str(tmp_path / "c.yaml")])
    assert bad.exit_code == 2 and "training.epochs" in bad.output
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(quick_config()))
    ok = runner.invoke(app, ["config", "check", str(tmp_path / "ok.yaml")])
    assert ok.exit_code == 0 and "ok" in ok.output and not (tmp_path / "runs").exists()


def test_data_path_is_relative_to_the_config_file(tmp_path, monkeypatch):
    folder = _two_split(tmp_path)
    (tmp_path / "configs").mkdir()
    cfg_path = tmp_path / "configs" / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(quick_config(data={"path": "../two", "dev": "carve"})))
    monkeypatch.chdir(tmp_path / "configs" if False else tmp_path)  # the shell's folder is not the config's
    cfg = load_config(cfg_path)
    assert cfg.data.path == str((tmp_path / "configs" / ".." / "two").absolute())
    assert load_corpus(cfg.data.path).name == load_corpus(folder).name


def test_legacy_selection_on_test_selects_on_test_and_bans_every_table(tmp_path):
    cfg = quick_config(
        training={
            "epochs": 3,
            "patience": 3,
            "batch_size": 4,
            "select_on": "test",
            "missing": {"low": 0.0, "high": 0.0},
        }
    )  # no_kd scored on complete views
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0 and "LEGACY SELECTION ON TEST" in result.output, result.output
    report = (tmp_path / "run" / "report.md").read_text()
    lines = report.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("|") and not lines[i - 1].startswith("|")]
    assert starts and all("selected on the TEST split" in lines[i - 2] for i in starts)
    assert "Model selection on the TEST split" in report
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["meta"]["select_on"] == "test"
    # selection on complete views: the selection score is the complete-view TEST score, not the dev one
    train = results["trainings"][0]
    test_complete = next(r for r in results["records"] if r["split"] == "test" and r["condition"] == "complete")
    dev_complete = next(r for r in results["records"] if r["split"] == "dev" and r["condition"] == "complete")
    assert train["dev_weighted_f1"] == pytest.approx(test_complete["weighted_f1"], abs=1e-6)
    assert train["dev_weighted_f1"] != pytest.approx(dev_complete["weighted_f1"], abs=1e-6)
