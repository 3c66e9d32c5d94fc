"""The on-disk corpus format: round trip, and a clear error for every kind of bad input."""

import json

import numpy as np
import pytest
from helpers import edit_features, edit_meta

from corekd.data.batching import SplitTensors
from corekd.data.corpus import load_corpus
from corekd.data.summary import summarize
from corekd.errors import CorekdError


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
