"""`corekd data import`: each format round-trips a file written in its published layout; untrusted
pickles execute nothing; bad input is one line naming the file, the place and the expectation."""

from __future__ import annotations

import csv
import json
import pickle
import time
import tracemalloc
import warnings

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from corekd.cli import app
from corekd.data.corpus import load_corpus
from corekd.data.importers import import_corpus
from corekd.data.importers.conversation_pickle import IEMOCAP_LABELS, MELD_LABELS
from corekd.data.unpickle import safe_load, safe_loads
from corekd.errors import CorekdError
from helpers import ROOT, mmsa_pickle, quick_config

runner = CliRunner()
MELD_CSV = ROOT / ".." / "shared" / "data" / "meld" / "dev_sent_emo.csv"


def _vec(rng, d, dtype=np.float64):
    return rng.normal(size=d).astype(dtype)


# ------------------------------------------------------------------ jsonl
def _jsonl_dialogues(rng, n_train=10, n_test=3):
    out = []
    for k in range(n_train + n_test):
        utts = []
        for i in range(4):
            u = {
                "id": f"d{k}_u{i}",
                "speaker": f"s{k}_{i % 2}",
                "label": ["joy", "anger", "neutral"][(k + i) % 3],
                "l": _vec(rng, 5).tolist(),
                "a": _vec(rng, 3).tolist(),
            }
            if i != 1:
                u["v"] = _vec(rng, 2).tolist()  # absent on utterance 1: genuinely missing
            if i == 2:
                u.update(sentiment=-1.25, text="no way", transcript_source="asr")
            utts.append(u)
        out.append({"dialogue_id": f"d{k}", "split": "train" if k < n_train else "test", "utterances": utts})
    return out


def _write_jsonl(path, dialogues):
    path.write_text("\n".join(json.dumps(d) for d in dialogues) + "\n")
    return path


def test_jsonl_round_trip_keeps_every_field_and_carves_dev(tmp_path):
    rng = np.random.default_rng(0)
    dialogues = _jsonl_dialogues(rng)
    src = _write_jsonl(tmp_path / "mine.jsonl", dialogues)
    result = runner.invoke(
        app, ["data", "import", "jsonl", str(src), "--out", str(tmp_path / "c"), "--labels", "neutral,joy,anger"]
    )
    assert result.exit_code == 0, result.output
    assert "note: the source has no dev split: dev split carved from train: 1 dialogues" in result.output
    corpus = load_corpus(tmp_path / "c")
    assert corpus.labels == ["neutral", "joy", "anger"] and corpus.name == "mine"
    assert [len(corpus.split(s)) for s in ("train", "dev", "test")] == [9, 1, 3]
    assert corpus.info["dev_split"]["speaker_disjoint"] is True
    by_id = {d.id: d for d in corpus.dialogues}
    for raw in dialogues:
        d = by_id[raw["dialogue_id"]]
        assert d.utterance_ids == [u["id"] for u in raw["utterances"]]
        assert d.speakers == [u["speaker"] for u in raw["utterances"]]
        assert [corpus.labels[i] for i in d.labels] == [u["label"] for u in raw["utterances"]]
        for i, u in enumerate(raw["utterances"]):
            for j, m in enumerate(corpus.modality_names):
                assert d.available[i, j] == (m in u)
                if m in u:
                    np.testing.assert_allclose(d.features[m][i], np.float32(u[m]))
        assert d.sentiment[2] == -1.25 and np.isnan(d.sentiment[0])
        assert d.texts[2] == "no way" and d.extras[2] == {"transcript_source": "asr"} and d.extras[0] == {}


def test_jsonl_integer_labels_without_names_become_decimal_strings_and_no_speaker_is_one_per_dialogue(tmp_path):
    lines = [
        {
            "dialogue_id": f"d{k}",
            "split": ["train", "dev", "test"][k % 3],
            "utterances": [{"id": f"d{k}_{i}", "label": (k + i) % 3 * 5, "l": [float(i), 1.0]} for i in range(3)],
        }
        for k in range(6)
    ]
    result = import_corpus("jsonl", _write_jsonl(tmp_path / "x.jsonl", lines), tmp_path / "c")
    corpus = result.corpus
    assert corpus.labels == ["0", "5", "10"] and not result.notes  # it has a dev split: nothing carved
    assert corpus.dialogues[0].speakers == ["d0", "d0", "d0"]
    assert corpus.modality_names == ("l",)


def test_jsonl_frames_become_a_sequence_modality_and_kinds_must_not_mix(tmp_path):
    lines = [
        {
            "dialogue_id": f"d{k}",
            "split": ["train", "dev", "test"][k % 3],
            "utterances": [
                {"id": f"d{k}_0", "label": "x", "l": [1.0, 2.0], "a": [[1.0, 0.0, 2.0], [3.0, 0.0, 4.0]]},
                {"id": f"d{k}_1", "label": "y", "l": [0.0, 1.0], "a": [[5.0, 5.0, 5.0]]},
                {"id": f"d{k}_2", "label": "y", "l": [0.0, 1.0]},
            ],
        }
        for k in range(3)
    ]
    corpus = import_corpus("jsonl", _write_jsonl(tmp_path / "f.jsonl", lines), tmp_path / "c").corpus
    assert corpus.modalities["a"].kind == "sequence" and corpus.modalities["l"].kind == "vector"
    d = corpus.dialogues[0]
    assert d.frames["a"][1].tolist() == [2, 1, 0] and d.available[:, 1].tolist() == [True, True, False]
    np.testing.assert_allclose(d.features["a"][:2], [[2.0, 0.0, 3.0], [5.0, 5.0, 5.0]])
    lines[1]["utterances"][0]["a"] = [1.0, 2.0, 3.0]
    with pytest.raises(CorekdError, match=r"line 2: utterances\[0\]\.a: modality 'a' was sequence data before"):
        import_corpus("jsonl", _write_jsonl(tmp_path / "g.jsonl", lines), tmp_path / "c2")


def test_a_train_test_only_jsonl_built_from_the_meld_annotations_imports_and_runs(tmp_path):
    rng = np.random.default_rng(1)
    if MELD_CSV.is_file():
        rows = list(csv.DictReader(MELD_CSV.open(encoding="utf-8")))
    else:  # a fresh clone without ../shared: rows of the same shape
        rows = [
            {
                "Dialogue_ID": str(k // 5),
                "Utterance_ID": str(k % 5),
                "Speaker": ["Ross", "Rachel", "Joey"][k % 3],
                "Emotion": ["neutral", "joy", "anger"][int(rng.integers(3))],
                "Sentiment": "neutral",
                "Utterance": f"line {k}",
            }
            for k in range(200)
        ]
    dialogues: dict[str, list] = {}
    for row in rows:
        dialogues.setdefault(row["Dialogue_ID"], []).append(row)
    ids = sorted(dialogues, key=int)[:40]
    emotions = sorted({r["Emotion"] for r in rows})
    lines = []
    for n, did in enumerate(ids):
        utts = [
            {
                "id": f"dia{did}_utt{r['Utterance_ID']}",
                "speaker": r["Speaker"],
                "label": r["Emotion"],
                "text": r["Utterance"],
                "l": _vec(rng, 6).tolist(),
                "a": _vec(rng, 4).tolist(),
                "sentiment_class": r["Sentiment"],
            }
            for r in dialogues[did]
        ]
        lines.append({"dialogue_id": f"dia{did}", "split": "test" if n % 4 == 0 else "train", "utterances": utts})
    src = _write_jsonl(tmp_path / "meld.jsonl", lines)
    out = runner.invoke(
        app,
        [
            "data",
            "import",
            "jsonl",
            str(src),
            "--out",
            str(tmp_path / "c"),
            "--dev-fraction",
            "0.2",
            "--labels",
            ",".join(emotions),
        ],
    )
    assert out.exit_code == 0, out.output
    corpus = load_corpus(tmp_path / "c")
    assert corpus.split("dev") and corpus.dialogues[0].texts[0] == dialogues[ids[0]][0]["Utterance"]
    cfg = quick_config(data={"path": str(tmp_path / "c")})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    run = runner.invoke(app, ["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")])
    assert run.exit_code == 0, run.output
    assert "carved from train" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.parametrize(
    "text, where, expected",
    [
        (
            '{"dialogue_id": "d0", "split": "train", "utterances": [{"id": "u", "label": "a", "l": [1]}]}\n{oops\n',
            "line 2",
            "not valid JSON",
        ),
        (
            '{"dialogue_id": "d0", "split": "train", "utterances": [{"id": "u", "label": "zzz", "l": [1]}]}\n',
            r"line 1: utterances\[0\]\.label",
            "unknown label 'zzz' \\(expected one of: a, b\\)",
        ),
        (
            '{"dialogue_id": "d0", "split": "train", "utterances": [{"id": "u", "label": 7, "l": [1]}]}\n',
            r"line 1: utterances\[0\]\.label",
            "label index 7 outside the 2 labels",
        ),
        (
            '{"dialogue_id": "d0", "split": "train", "utterances": [{"id": "u", "label": "a", "l": [1, 2]}, '
            '{"id": "w", "label": "b", "l": [1, 2, 3]}]}\n',
            r"line 1: utterances\[1\]\.l",
            r"feature dim 3 differs from the dim 2 of 'l' at line 1: utterances\[0\]\.l",
        ),
        (
            '{"dialogue_id": "d0", "split": "train", "utterances": [{"id": "u", "label": "a", "l": [1], "sentiment": 4}]}\n',
            r"line 1: utterances\[0\]\.sentiment",
            r"sentiment 4.0; expected a finite number in \[-3, 3\]",
        ),
        (
            '{"dialogue_id": "d0", "split": "train", "utterances": [{"id": "u", "label": "a", "l": [1], "sentiment": NaN}]}\n',
            r"line 1: utterances\[0\]\.sentiment",
            "sentiment nan",
        ),
        (
            '{"dialogue_id": "d0", "split": "train", "utterances": [{"id": "u", "label": "a", "l": [1]}]}\n'
            '{"dialogue_id": "d1", "split": "test", "utterances": [{"id": "u", "label": "b", "l": [1]}]}\n',
            "line 2 utterance 0",
            "duplicate utterance id 'u' \\(also in dialogue 'd0'\\)",
        ),
        (
            '{"dialogue_id": "d0", "split": "train", "utterances": [{"id": "u", "label": "a"}]}\n',
            "line 1 utterance 0",
            "has no modality at all",
        ),
        (
            '{"dialogue_id": "d0", "split": "valid", "utterances": [{"id": "u", "label": "a", "l": [1]}]}\n',
            "line 1: split",
            "expected one of train, dev, test",
        ),
    ],
)
def test_bad_jsonl_is_one_line_naming_file_line_and_expectation(tmp_path, text, where, expected):
    src = tmp_path / "bad.jsonl"
    src.write_text(text)
    with pytest.raises(CorekdError, match=rf"bad\.jsonl: {where}: .*{expected}"):
        import_corpus("jsonl", src, tmp_path / "c", labels=["a", "b"])
    result = runner.invoke(app, ["data", "import", "jsonl", str(src), "--out", str(tmp_path / "c2"), "--labels", "a,b"])
    assert (
        result.exit_code == 2 and result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    )


def _good_line(k=0, **utterance):
    u = {"id": f"u{k}", "label": "a", "l": [1.0, 2.0], **utterance}
    return json.dumps({"dialogue_id": f"d{k}", "split": "train", "utterances": [u]})


@pytest.mark.parametrize(
    "line, where, expected",
    [
        ("[" * 10**6 + "]" * 10**6, "line 2", "arrays/objects nested 1000000 deep; expected at most 32"),
        (
            _good_line(1, l=[1e39, 2.0]),
            r"line 2: utterances\[0\]\.l",
            r"value 1e\+39 at index 0 is beyond float32's range",
        ),
        (_good_line(1, a=[[1.0], [3e38], [3e38]]), r"line 2: utterances\[0\]\.a", "the frames' sum .* beyond float32"),
        (_good_line(1, id="\udc80"), r"line 2: utterances\[0\]\.id", "lone UTF-16 surrogate"),
        (_good_line(1, speaker="caf\udce9"), r"line 2: utterances\[0\]\.speaker", "lone UTF-16 surrogate"),
        (_good_line(1, text="caf\xe9").replace("\\u00e9", "\udce9"), "line 2", r"not UTF-8 text \(undecodable byte"),
    ],
)
def test_hostile_jsonl_is_one_line_naming_the_source_and_leaves_nothing(tmp_path, line, where, expected):
    src = tmp_path / "src.jsonl"
    src.write_bytes((_good_line(0) + "\n" + line + "\n").encode("utf-8", "surrogateescape"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning lines either
        with pytest.raises(CorekdError, match=rf"src\.jsonl: {where}: .*{expected}"):
            import_corpus("jsonl", src, tmp_path / "c", labels=["a", "b"])
        result = runner.invoke(
            app, ["data", "import", "jsonl", str(src), "--out", str(tmp_path / "c"), "--labels", "a,b"]
        )
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "src.jsonl: line 2" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.jsonl"]  # no corpus, no temporary folder
    src.write_text(_good_line(0) + "\n" + _good_line(1) + "\n")  # the fixed file imports into the same folder
    result = runner.invoke(app, ["data", "import", "jsonl", str(src), "--out", str(tmp_path / "c"), "--labels", "a,b"])
    assert result.exit_code == 0, result.output


def test_an_import_that_fails_while_writing_leaves_nothing_behind(tmp_path, monkeypatch):
    from corekd.data.corpus import Corpus

    src = _write_jsonl(tmp_path / "d.jsonl", _jsonl_dialogues(np.random.default_rng(0)))
    (tmp_path / "out").mkdir()  # an empty folder is accepted, and kept as it was on failure
    save = Corpus.save

    def save_then_fail(self, folder):
        save(self, folder)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Corpus, "save", save_then_fail)
    result = runner.invoke(app, ["data", "import", "jsonl", str(src), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "No space left" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "out"] and not any((tmp_path / "out").iterdir())
    monkeypatch.setattr(Corpus, "save", save)
    assert runner.invoke(app, ["data", "import", "jsonl", str(src), "--out", str(tmp_path / "out")]).exit_code == 0
    assert load_corpus(tmp_path / "out").num_utterances == 13 * 4


# ------------------------------------------------------------------ untrusted pickles
class _Hostile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))  # unpickling would create this file


def test_a_hostile_pickle_executes_nothing(tmp_path):
    target = tmp_path / "pwned"
    src = tmp_path / "features.pkl"
    src.write_bytes(pickle.dumps(({"d": [_Hostile(target)]},) + (None,) * 8))
    with pytest.raises(CorekdError, match=r"features\.pkl: untrusted pickle not loaded: refused to load 'io\.open'"):
        safe_load(src)
    result = runner.invoke(app, ["data", "import", "conversation-pickle", str(src), "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "nothing in it was run" in result.output
    assert not target.exists()
    with open(src, "rb") as fh:  # the control: an ordinary unpickler does run it
        pickle.load(fh)
    assert target.exists()


def test_the_restricted_unpickler_reads_numpy_and_python2_style_containers(tmp_path):
    obj = ({"a": [np.arange(3, dtype=np.float64)]}, {"x", "y"}, np.array(["v$_$1"], dtype=object), np.float32(2.5))
    for protocol in (2, 5):
        src = tmp_path / f"p{protocol}.pkl"
        src.write_bytes(pickle.dumps(obj, protocol=protocol))
        back = safe_load(src)
        np.testing.assert_array_equal(back[0]["a"][0], obj[0]["a"][0])
        assert back[1] == {"x", "y"} and back[2].tolist() == ["v$_$1"] and back[3] == np.float32(2.5)


def _shared_rows_pickle() -> bytes:
    """~1.1 MB: one 10^5-number list and 10^5 rows referencing it (numpy would expand it into 10^10 numbers)."""
    row = [0.5] * 10**5
    return pickle.dumps(
        {"train": {"id": np.array(["v$_$1"], dtype=object), "regression_labels": [0.0], "text": [row] * 10**5}},
        protocol=2,
    )


def _nested(depth):
    obj = []
    for _ in range(depth):
        obj = [obj]
    return obj


def _cyclic():
    obj = []
    obj.append(obj)
    return obj


POISONED = {  # name -> (pickle bytes, what the error says)
    "bytearray(5e10)": (b"cbuiltins\nbytearray\n(I50000000000\ntR.", r"bytearray\(50000000000\) would allocate"),
    "ndarray((1e6, 1e6))": (
        b"cnumpy\nndarray\n((I1000000\nI1000000\nttR.",
        r"numpy\.ndarray.* would allocate 8,000,000,000,000",
    ),
    "an array state larger than its data": (
        pickle.dumps(np.array([1, 2, 3], dtype=object), protocol=2).replace(b"K\x03\x85", b"J\x00\xca\x9a;\x85"),
        r"array state of shape \(1000000000,\) holds 3 objects",
    ),
    "BYTEARRAY8 beyond the file": (
        b"\x80\x05\x96" + (2**40).to_bytes(8, "little") + b".",
        "bytearray of 1,099,511,627,776",
    ),
    "rows sharing one list": (_shared_rows_pickle(), r"shared references would expand .* by 9,999,900,000 more"),
    "nesting 200 deep": (pickle.dumps(_nested(200), protocol=2), "nested more than 64 deep"),
    "a list inside itself": (pickle.dumps(_cyclic(), protocol=2), "contains itself"),
}


@pytest.mark.parametrize("name", POISONED)
def test_pickle_bombs_are_refused_before_allocation(tmp_path, name):
    data, expected = POISONED[name]
    src = tmp_path / "bomb.pkl"
    src.write_bytes(data)
    started = time.perf_counter()
    with pytest.raises(CorekdError, match=rf"bomb\.pkl: pickle refused before allocating: .*{expected}"):
        safe_load(src)
    for fmt in ("conversation-pickle", "mmsa-pickle"):
        result = runner.invoke(app, ["data", "import", fmt, str(src), "--out", str(tmp_path / "c")])
        assert result.exit_code == 2 and result.output.startswith("error: ") and len(result.output.splitlines()) == 1
        assert "bomb.pkl" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.pkl"]  # nothing written
    assert time.perf_counter() - started < 5


def test_a_large_memo_index_allocates_nothing():
    """LONG_BINPUT 2^25: the C unpickler grows its memo list to 2^26 entries (512 MB; 2^31: 32 GB) for 9 bytes."""
    tracemalloc.start()
    try:
        assert safe_loads(b"\x80\x02]r\x00\x00\x00\x02.") == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


# ------------------------------------------------------------------ conversation pickles
def _iemocap_pickle(
    rng,
    vids_train=(
        "Ses01F_impro01",
        "Ses01M_script02",
        "Ses02F_impro03",
        "Ses02M_impro04",
        "Ses03F_impro05",
        "Ses03M_script01",
        "Ses04F_impro06",
        "Ses04M_impro07",
        "Ses04F_script03",
        "Ses01F_impro02",
    ),
    vids_test=("Ses05F_impro01", "Ses05M_script01"),
):
    ids, spk, lab, text, audio, visual, sent = {}, {}, {}, {}, {}, {}, {}
    for vid in vids_train + vids_test:
        n = int(rng.integers(3, 6))
        ids[vid] = [f"{vid}_{'FM'[i % 2]}{i:03d}" for i in range(n)]
        spk[vid] = ["FM"[i % 2] for i in range(n)]
        lab[vid] = [int(x) for x in rng.integers(0, 6, n)]
        text[vid] = [_vec(rng, 100) for _ in range(n)]
        audio[vid] = [_vec(rng, 100) for _ in range(n)]
        visual[vid] = [_vec(rng, 512) for _ in range(n)]
        sent[vid] = [f"sentence {i}" for i in range(n)]
    return (ids, spk, lab, text, audio, visual, sent, list(vids_train), list(vids_test))


def test_iemocap_9_tuple_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    data = _iemocap_pickle(rng)
    src = tmp_path / "IEMOCAP_features_raw.pkl"
    src.write_bytes(pickle.dumps(data, protocol=2))
    result = import_corpus("conversation-pickle", src, tmp_path / "c", seed=1)
    corpus = result.corpus
    ids, spk, lab, text, audio, visual, sent, train, test = data
    assert corpus.labels == IEMOCAP_LABELS and corpus.modality_names == ("l", "a", "v")
    assert {m: s.dim for m, s in corpus.modalities.items()} == {"l": 100, "a": 100, "v": 512}
    assert [d.id for d in corpus.split("test")] == test and len(corpus.split("dev")) == 1
    assert {d.id for d in corpus.split("train")} | {d.id for d in corpus.split("dev")} == set(train)
    for d in corpus.dialogues:
        assert d.utterance_ids == ids[d.id] and d.speakers == spk[d.id] and d.labels.tolist() == lab[d.id]
        assert d.texts == sent[d.id] and d.available.all()
        for m, source in (("l", text), ("a", audio), ("v", visual)):
            np.testing.assert_allclose(d.features[m], np.stack(source[d.id]).astype(np.float32))
    assert any("layout iemocap-9" in n for n in result.notes) and any("no dev split" in n for n in result.notes)
    assert corpus.modalities["v"].source == "IEMOCAP_features_raw.pkl videoVisual (iemocap-9)"


def _meld_pickle(rng, with_visual: bool):
    ids, spk, lab, text, audio, visual, sent, senti = {}, {}, {}, {}, {}, {}, {}, {}
    train, test = list(range(8)), list(range(1000, 1003))
    for vid in train + test:
        n = int(rng.integers(2, 5))
        ids[vid] = list(range(n))
        spk[vid] = [np.eye(9)[int(rng.integers(0, 9))].tolist() for _ in range(n)]
        lab[vid] = [int(x) for x in rng.integers(0, 7, n)]
        text[vid] = [_vec(rng, 600) for _ in range(n)]
        audio[vid] = [_vec(rng, 300) for _ in range(n)]
        visual[vid] = [_vec(rng, 342) for _ in range(n)]
        sent[vid] = [f"line {i}" for i in range(n)]
        senti[vid] = [int(x) for x in rng.integers(0, 3, n)]
    if with_visual:  # MMGCN: 10 elements
        return (ids, spk, lab, text, audio, visual, sent, train, test, senti)
    return (ids, spk, lab, text, audio, sent, train, test, senti)  # DialogueRNN: 9 elements


@pytest.mark.parametrize("with_visual", [False, True])
def test_meld_9_and_10_tuple_round_trip(tmp_path, with_visual):
    rng = np.random.default_rng(3)
    data = _meld_pickle(rng, with_visual)
    src = tmp_path / "MELD_features_raw.pkl"
    src.write_bytes(pickle.dumps(data))
    corpus = import_corpus("conversation-pickle", src, tmp_path / "c").corpus
    assert corpus.labels == MELD_LABELS
    assert corpus.modality_names == (("l", "a", "v") if with_visual else ("l", "a"))
    ids, spk, lab, text, audio = data[:5]
    senti = data[-1]
    for d in corpus.dialogues:
        vid = int(d.id)
        assert d.utterance_ids == [f"{vid}_{u}" for u in ids[vid]] and d.labels.tolist() == lab[vid]
        assert d.speakers == [f"speaker{int(np.argmax(s))}" for s in spk[vid]]
        assert [e["sentiment_class"] for e in d.extras] == [["neutral", "positive", "negative"][s] for s in senti[vid]]
        np.testing.assert_allclose(d.features["a"], np.stack(audio[vid]).astype(np.float32))
        if with_visual:
            np.testing.assert_allclose(d.features["v"], np.stack(data[5][vid]).astype(np.float32))


def test_a_conversation_pickle_of_the_wrong_layout_names_the_element(tmp_path):
    rng = np.random.default_rng(4)
    data = list(_iemocap_pickle(rng))
    cases = [
        (tuple(data[:7]), r"pickle: expected a tuple of 9 .* got a tuple of 7 elements"),
        (tuple(data[:2] + [[1, 2]] + data[3:]), r"element 2 \(videoLabels\): expected a dict"),
    ]
    bad_dim = [dict(x) if isinstance(x, dict) else x for x in data]
    vid = data[7][3]
    bad_dim[4] = {**data[4], vid: [_vec(rng, 100)] * (len(data[0][vid]) - 1) + [_vec(rng, 99)]}
    cases.append(
        (tuple(bad_dim), rf"element 4 \(videoAudio\)\['{vid}'\]\[{len(data[0][vid]) - 1}\]: feature dim 99 differs")
    )
    bad_label = [dict(x) if isinstance(x, dict) else x for x in data]
    bad_label[2] = {**data[2], vid: [9] * len(data[0][vid])}
    cases.append((tuple(bad_label), rf"element 2 \(videoLabels\)\['{vid}'\]\[0\]: label index 9 outside the 6 labels"))
    short = [dict(x) if isinstance(x, dict) else x for x in data]
    short[1] = {**data[1], vid: data[1][vid][:-1]}
    cases.append((tuple(short), rf"element 1 \(videoSpeakers\)\['{vid}'\]: .* expected {len(data[0][vid])}, one per"))
    for k, (obj, pattern) in enumerate(cases):
        src = tmp_path / f"bad{k}.pkl"
        src.write_bytes(pickle.dumps(obj))
        with pytest.raises(CorekdError, match=rf"bad{k}\.pkl: {pattern}"):
            import_corpus("conversation-pickle", src, tmp_path / f"c{k}")


# ------------------------------------------------------------------ MMSA pickles
@pytest.mark.parametrize("aligned", [True, False])
def test_mmsa_round_trip_groups_clips_by_video_in_clip_order_and_keeps_frames(tmp_path, aligned):
    rng = np.random.default_rng(5)
    data = mmsa_pickle(rng, aligned)
    src = tmp_path / ("aligned_50.pkl" if aligned else "unaligned_50.pkl")
    src.write_bytes(pickle.dumps(data, protocol=4))
    result = runner.invoke(app, ["data", "import", "mmsa-pickle", str(src), "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "note: 3 audio values of -inf read as 0" in result.output
    corpus = load_corpus(tmp_path / "c")
    assert corpus.labels == ["negative", "non-negative"] and not corpus.info.get("dev_split")
    assert [d.id for d in corpus.split("dev")] == ["vidD"]
    assert all(s.kind == "sequence" and s.aligned is aligned for s in corpus.modalities.values())
    for split, key in (("train", "train"), ("dev", "valid"), ("test", "test")):
        part = data[key]
        row_of = {uid: r for r, uid in enumerate(part["id"])}
        for d in corpus.split(split):
            assert d.utterance_ids == [f"{d.id}$_${c}" for c in (1, 2, 10)] and set(d.speakers) == {d.id}
            for i, uid in enumerate(d.utterance_ids):
                r = row_of[uid]
                assert d.sentiment[i] == part["regression_labels"][r] and d.texts[i] == part["raw_text"][r]
                assert d.labels[i] == int(part["regression_labels"][r] >= 0)
                audio = part["audio"][r].copy()
                audio[np.isneginf(audio)] = 0
                if aligned:
                    text = part["text"][r][np.abs(part["text"][r]).sum(1) > 0]
                    want = {"l": text, "a": audio, "v": part["vision"][r]}
                else:
                    want = {
                        "l": part["text"][r],
                        "a": audio[: part["audio_lengths"][r]],
                        "v": part["vision"][r][: part["vision_lengths"][r]],
                    }
                for j, m in enumerate(corpus.modality_names):
                    flat, lengths = d.frames[m]
                    start = int(lengths[:i].sum())
                    assert d.available[i, j] == (len(want[m]) > 0)
                    np.testing.assert_array_equal(flat[start : start + lengths[i]], want[m])
                    if len(want[m]):
                        np.testing.assert_allclose(d.features[m][i], want[m].mean(0), rtol=1e-5, atol=1e-6)
    if aligned:
        assert "vidA$_$2" in corpus.dialogues[0].utterance_ids


def test_mmsa_seven_classes_and_a_bad_label_or_id_names_the_row(tmp_path):
    rng = np.random.default_rng(6)
    data = mmsa_pickle(rng, aligned=False)
    src = tmp_path / "m.pkl"
    src.write_bytes(pickle.dumps(data))
    corpus = import_corpus("mmsa-pickle", src, tmp_path / "c7", classes=7).corpus
    d = corpus.dialogues[0]
    assert corpus.labels[d.labels[0]] == str(int(np.clip(np.round(d.sentiment[0]), -3, 3)))
    data["test"]["regression_labels"][4] = np.nan
    src.write_bytes(pickle.dumps(data))
    with pytest.raises(CorekdError, match=r"m\.pkl: \['test'\]\['regression_labels'\]\[4\]: sentiment nan"):
        import_corpus("mmsa-pickle", src, tmp_path / "c")
    data = mmsa_pickle(rng, aligned=False)
    data["train"]["id"][3] = "no-separator"
    src.write_bytes(pickle.dumps(data))
    with pytest.raises(CorekdError, match=r"\['train'\]\['id'\]\[3\]: id 'no-separator'; expected 'video\$_\$clip'"):
        import_corpus("mmsa-pickle", src, tmp_path / "c")
    data = mmsa_pickle(rng, aligned=False)
    data["valid"]["audio"] = data["valid"]["audio"][:, :, :2]
    src.write_bytes(pickle.dumps(data))
    with pytest.raises(
        CorekdError, match=r"\['valid'\] row 2 \('vidD\$_\$1'\) audio: feature dim 2 differs from the dim 3"
    ):
        import_corpus("mmsa-pickle", src, tmp_path / "c")


@pytest.mark.parametrize("value", [1e39, -1e39])
def test_an_mmsa_value_beyond_float32_is_refused_not_read_as_minus_inf(tmp_path, value):
    """-1e39 became -inf when cast to float32, which MMSA's rule (-inf of silent COVAREP frames -> 0) then zeroed."""
    data = mmsa_pickle(np.random.default_rng(7), aligned=True)
    data["train"]["audio"] = data["train"]["audio"].astype(np.float64)
    data["train"]["audio"][4, 2, 1] = value
    src = tmp_path / "m.pkl"
    src.write_bytes(pickle.dumps(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(
            CorekdError,
            match=r"m\.pkl: \['train'\]\['audio'\]\[4\]: value .*1e\+39 at frame 2, index 1 is "
            "beyond float32's range",
        ):
            import_corpus("mmsa-pickle", src, tmp_path / "c")


def test_a_sequence_corpus_runs_on_its_frames_and_says_so(tmp_path):
    rng = np.random.default_rng(7)
    data = mmsa_pickle(rng, aligned=False)
    for part in data.values():  # a few more videos so every split has dialogues worth training on
        part["regression_labels"] = np.where(np.arange(len(part["id"])) % 2, 1.5, -1.5).astype(np.float32)
    src = tmp_path / "m.pkl"
    src.write_bytes(pickle.dumps(data))
    import_corpus("mmsa-pickle", src, tmp_path / "c")
    cfg = quick_config(data={"path": str(tmp_path / "c")})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert (
        "modality 'a' holds frame sequences: this run reads its frames, by the conv sequence encoder pooled by "
        "attention"
    ) in result.output
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| a | m.pkl 'audio' (MMSA) | 3 | sequence | frames (rate not stated) | unaligned |" in report
