"""MELD from its official files (corekd.data.importers.meld), read from ../shared/data/meld (never copied here)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from corekd.cli import app
from corekd.config import load_config
from corekd.data.importers.meld import EMOTIONS, SENTIMENTS, repair_text
from corekd.errors import CorekdError
from corekd.features.meld import meld_rows
from helpers import ROOT

MELD = ROOT / ".." / "shared" / "data" / "meld"
needs_meld = pytest.mark.skipif(
    not (MELD / "train_sent_emo.csv").is_file(),
    reason=f"MELD's annotation CSVs are not at {MELD} (shared/ beside the repository)",
)
runner = CliRunner()


def mangle(text: str) -> str:
    """What a cp1252 reader makes of UTF-8 text (the damage found in copies of MELD's CSVs)."""
    out = []
    for b in text.encode("utf-8"):
        try:
            out.append(bytes([b]).decode("cp1252"))
        except UnicodeDecodeError:  # cp1252's five undefined bytes pass through as C1 controls
            out.append(chr(b))
    return "".join(out)


@pytest.fixture(scope="module")
def rows():
    if not (MELD / "train_sent_emo.csv").is_file():
        pytest.skip(f"MELD's annotation CSVs are not at {MELD}")
    return meld_rows(MELD)


def test_repair_undoes_cp1252_mojibake_by_hand():
    assert repair_text("itâ€™s") == "it’s"
    assert repair_text("NestlÃ© â€” fineâ€¦") == "Nestlé — fine…"
    assert repair_text("I\x92m here") == "I’m here"  # a cp1252 byte read as Latin-1
    assert repair_text("Nestlé — it’s fine…") == "Nestlé — it’s fine…"  # right text is left alone
    assert repair_text("Ã") == "Ã"  # a lone lead byte is not a sequence


@needs_meld
def test_repair_on_real_meld_lines(rows):
    rows, _ = rows
    real = [r.text for r in rows if any(ch in r.text for ch in "’…—é“")]
    assert len(real) > 3000
    for text in real:
        assert repair_text(mangle(text)) == text  # the mangled form of every such line comes back exactly
        assert repair_text(text) == text
    example = next(r.text for r in rows if r.utterance_id == "train_dia0_utt0")
    assert mangle(example) == "also I was the point person on my companyâ€™s transition from the KL-5 to GR-6 system."


@needs_meld
def test_official_files_splits_order_and_labels(rows):
    rows, info = rows
    assert info["imported_from"]["files"] == {
        "train_sent_emo.csv": 9989,
        "dev_sent_emo.csv": 1109,
        "test_sent_emo.csv": 2610,
    }
    assert info["text_repaired"]["count"] == 0  # this copy of the files is clean UTF-8
    by_split = {s: [r for r in rows if r.split == s] for s in ("train", "dev", "test")}
    assert len({r.dialogue_id for r in by_split["train"]}) == 1038
    assert len({r.dialogue_id for r in by_split["dev"]}) == 114
    assert len({r.dialogue_id for r in by_split["test"]}) == 280
    first = rows[0]
    assert (first.dialogue_id, first.utterance_id, first.speaker, first.label) == (
        "train_dia0",
        "train_dia0_utt0",
        "Chandler",
        "neutral",
    )
    assert first.extra["sentiment"] == "neutral" and first.extra["Season"] == "8"
    # dialogue ids restart per file: dev's dia0 is a different dialogue from train's
    assert {r.dialogue_id for r in by_split["dev"]} & {r.dialogue_id for r in by_split["train"]} == set()
    counts = {e: sum(r.label == e for r in by_split["train"]) for e in EMOTIONS}
    assert counts == {
        "neutral": 4710,
        "surprise": 1205,
        "fear": 268,
        "sadness": 683,
        "joy": 1743,
        "disgust": 271,
        "anger": 1109,
    }
    sentiment, _ = meld_rows(MELD, target="sentiment")
    assert {r.label for r in sentiment} == set(SENTIMENTS) and sentiment[0].extra["emotion"] == "neutral"


@needs_meld
def test_utterance_order_follows_utterance_id(rows):
    rows, _ = rows
    last: dict[str, int] = {}
    for r in rows:
        u = int(r.utterance_id.rsplit("utt", 1)[1])
        assert u > last.get(r.dialogue_id, -1)
        last[r.dialogue_id] = u


def _small_meld(tmp_path, n=12):
    """The first ``n`` rows of each real file (a tmp copy for a fast import; the repository holds none)."""
    root = tmp_path / "meld"
    root.mkdir()
    for name in ("train_sent_emo.csv", "dev_sent_emo.csv", "test_sent_emo.csv"):
        with open(MELD / name, encoding="utf-8", newline="") as fh:
            lines = list(csv.reader(fh))[: n + 1]
        with open(root / name, "w", encoding="utf-8", newline="") as fh:
            csv.writer(fh).writerows(lines)
    return root


@needs_meld
def test_cli_import_meld_embeds_the_transcripts(tmp_path, monkeypatch):
    monkeypatch.setenv("COREKD_CACHE", str(tmp_path / "cache"))
    root = _small_meld(tmp_path)
    result = runner.invoke(app, ["data", "import", "meld", "--root", str(root), "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "modality l: vector, dim 384, utterance-level, missing in 0 utterances" in result.output
    from corekd.data.corpus import load_corpus

    corpus = load_corpus(tmp_path / "c")
    assert corpus.labels == EMOTIONS and corpus.num_utterances == 36
    assert corpus.dialogues[0].texts[0].startswith("also I was the point person")


@needs_meld
def test_media_folder_clips_go_through_the_extractors(tmp_path, monkeypatch):
    pytest.importorskip("dlib")
    monkeypatch.setenv("COREKD_CACHE", str(tmp_path / "cache"))
    root = _small_meld(tmp_path, n=3)
    media = tmp_path / "media"
    (media / "train_splits").mkdir(parents=True)
    from corekd.features.synthmedia import face_video, speech_like

    speech_like(tmp_path / "s.wav")
    face_video(media / "train_splits" / "dia0_utt0.mp4", with_audio=tmp_path / "s.wav")
    from corekd.features.meld import import_meld

    result = import_meld(root, media=media)
    assert result.corpus.modality_names == ("l", "a", "v")
    failed = {(f["utterance"], f["modality"]) for f in result.summary["failures"]}
    assert ("train_dia0_utt0", "a") not in failed and ("train_dia0_utt1", "v") in failed  # clips that do not exist
    assert len(failed) == 2 * (9 - 1)  # every other clip is reported missing, audio and visual


def test_config_source_meld_needs_root_and_path(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"data": {"source": "meld", "path": "corpus"}}))
    with pytest.raises(CorekdError, match="meld_root"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"data": {"source": "meld", "meld_root": "m", "path": "c"}}))
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.data.meld_root == str((tmp_path / "m").absolute())  # relative to the config file


@needs_meld
def test_repo_config_points_at_the_shared_files():
    cfg = load_config(ROOT / "configs" / "meld_text.yaml")
    assert Path(cfg.data.meld_root).resolve() == MELD.resolve()
    assert cfg.data.source == "meld" and cfg.seeds == [0, 1, 2]
