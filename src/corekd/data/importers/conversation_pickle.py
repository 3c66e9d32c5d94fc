"""``corekd data import conversation-pickle``: the DialogueRNN / MMGCN / COGMEN feature pickles.

See ``docs/import-conversation-pickle.md``. Three published layouts, all a tuple of dicts keyed
by dialogue (video) id, with the train and test ids last (no dev split):

- IEMOCAP, 9 elements: ids, speakers ('M'/'F'), labels, text, audio, visual, sentences, train, test
- MELD (DialogueRNN), 9 elements: ids, speakers (one-hot), emotion labels, text, audio,
  sentences, train, test, sentiment labels
- MELD (MMGCN), 10 elements: ids, speakers (one-hot), emotion labels, text, audio, visual,
  sentences, train, test, sentiment labels
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from corekd.data.importers.base import CorpusBuilder, ImportResult, Utterance
from corekd.data.unpickle import safe_load
from corekd.errors import CorekdError, shown

# The label orders of the published files (index -> name).
IEMOCAP_LABELS = ["happy", "sad", "neutral", "angry", "excited", "frustrated"]  # hap sad neu ang exc fru
MELD_LABELS = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
MELD_SENTIMENTS = ["neutral", "positive", "negative"]

LAYOUTS = {
    "iemocap-9": (
        "videoIDs",
        "videoSpeakers",
        "videoLabels",
        "videoText",
        "videoAudio",
        "videoVisual",
        "videoSentence",
        "trainVid",
        "testVid",
    ),
    "meld-9": (
        "videoIDs",
        "videoSpeakers",
        "videoLabels",
        "videoText",
        "videoAudio",
        "videoSentence",
        "trainVid",
        "testVid",
        "videoSentiment",
    ),
    "meld-10": (
        "videoIDs",
        "videoSpeakers",
        "videoLabels",
        "videoText",
        "videoAudio",
        "videoVisual",
        "videoSentence",
        "trainVid",
        "testVid",
        "videoSentiment",
    ),
}
MODALITY_OF = {"videoText": "l", "videoAudio": "a", "videoVisual": "v"}


def _layout(data: object, src: Path) -> str:
    if not isinstance(data, (tuple, list)) or len(data) not in (9, 10):
        got = (
            f"a {type(data).__name__} of {len(data)} elements"
            if isinstance(data, (tuple, list))
            else type(data).__name__
        )
        raise CorekdError(
            f"expected a tuple of 9 (IEMOCAP, DialogueRNN MELD) or 10 (MMGCN MELD) elements, got {got}",
            path=src,
            field="pickle",
        )
    if len(data) == 10:
        return "meld-10"
    # 9 elements: element 5 is the visual features (IEMOCAP) or the sentences (DialogueRNN MELD)
    fifth = data[5]
    if isinstance(fifth, dict) and fifth:
        first = next(iter(fifth.values()))
        if len(first) and isinstance(first[0], str):
            return "meld-9"
    return "iemocap-9"


def _where(layout: str, index: int, key: object = None, k: int | None = None) -> str:
    name = LAYOUTS[layout][index]
    text = f"element {index} ({name})"
    if key is not None:
        text += f"[{key!r}]"
    if k is not None:
        text += f"[{k}]"
    return text


def import_conversation_pickle(
    src: str | Path,
    *,
    labels: list[str] | None = None,
    name: str | None = None,
    dataset: str | None = None,
) -> ImportResult:
    src = Path(src)
    data = safe_load(src)
    layout = _layout(data, src)
    names = LAYOUTS[layout]
    elements = dict(zip(names, data))
    for i, key in enumerate(names):
        if key in ("trainVid", "testVid"):
            if not isinstance(elements[key], (list, tuple, set, frozenset, np.ndarray)):
                raise CorekdError(
                    f"expected a list or set of dialogue ids, got {type(elements[key]).__name__}",
                    path=src,
                    field=_where(layout, i),
                )
        elif not isinstance(elements[key], dict):
            raise CorekdError(
                f"expected a dict of dialogue id -> per-utterance list, got {type(elements[key]).__name__}",
                path=src,
                field=_where(layout, i),
            )
    one_hot = layout.startswith("meld")
    dataset = dataset or ("meld" if one_hot else "iemocap")
    names_of_labels = labels or (MELD_LABELS if dataset == "meld" else IEMOCAP_LABELS)
    builder = CorpusBuilder(src, names_of_labels)
    index = {key: i for i, key in enumerate(names)}
    train_ids, test_ids = _ids(elements["trainVid"]), _ids(elements["testVid"])
    both = {str(v) for v in train_ids} & {str(v) for v in test_ids}
    if both:
        raise CorekdError(
            f"dialogue '{sorted(both)[0]}' is in both trainVid and testVid; expected disjoint splits",
            path=src,
            field=_where(layout, index["testVid"]),
        )
    notes = []
    for split, ids in (("train", train_ids), ("test", test_ids)):
        for vid in ids:
            utt_ids = _per_dialogue(elements, "videoIDs", vid, layout, index, src)
            n = len(utt_ids)
            per = {
                key: _per_dialogue(elements, key, vid, layout, index, src, n)
                for key in names
                if key not in ("videoIDs", "trainVid", "testVid")
            }
            utterances = []
            for k in range(n):
                speaker = _speaker(per["videoSpeakers"][k], builder, _where(layout, index["videoSpeakers"], vid, k))
                extra = {}
                if "videoSentiment" in per:
                    s = per["videoSentiment"][k]
                    extra["sentiment_class"] = MELD_SENTIMENTS[int(s)] if 0 <= int(s) < 3 else int(s)
                utterances.append(
                    Utterance(
                        id=_utterance_id(vid, utt_ids[k]),
                        speaker=speaker,
                        label=builder.label(
                            _as_int(per["videoLabels"][k], builder, _where(layout, index["videoLabels"], vid, k)),
                            _where(layout, index["videoLabels"], vid, k),
                        ),
                        features={
                            MODALITY_OF[key]: builder.feature(
                                MODALITY_OF[key], per[key][k], _where(layout, index[key], vid, k), frames=False
                            )
                            for key in MODALITY_OF
                            if key in per
                        },
                        text=str(per["videoSentence"][k]),
                        extra=extra,
                    )
                )
            builder.add(str(vid), split, utterances, _where(layout, index["videoIDs"], vid))
    info = {"imported_from": {"format": "conversation-pickle", "layout": layout, "dataset": dataset, "file": src.name}}
    cards = {m: {"source": f"{src.name} {key} ({layout})"} for key, m in MODALITY_OF.items() if key in names}
    corpus = builder.build(name or src.stem, cards=cards, info=info)
    notes.append(f"layout {layout} ({dataset}: labels {', '.join(builder.labels)})")
    return ImportResult(corpus, notes)


def _ids(value) -> list:
    """The dialogue ids of a split, in file order (a set has none: sorted, so the import is deterministic)."""
    return sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)


def _per_dialogue(elements, key, vid, layout, index, src, n=None):
    table = elements[key]
    if vid not in table:
        raise CorekdError(
            f"no entry for dialogue '{vid}' (listed in trainVid/testVid)", path=src, field=_where(layout, index[key])
        )
    value = table[vid]
    if isinstance(value, np.ndarray) and value.ndim >= 1:
        value = list(value)
    if not isinstance(value, (list, tuple)):
        raise CorekdError(
            f"expected a per-utterance list, got {type(value).__name__}",
            path=src,
            field=_where(layout, index[key], vid),
        )
    if n is not None and len(value) != n:
        raise CorekdError(
            f"{len(value)} entries; expected {n}, one per utterance in videoIDs",
            path=src,
            field=_where(layout, index[key], vid),
        )
    return value


def _utterance_id(vid, uid) -> str:
    """IEMOCAP's ids already carry the dialogue ('Ses01F_impro01_F000'); MELD's are indices: '<dialogue>_<index>'."""
    text = str(uid)
    return text if isinstance(uid, str) and text.startswith(f"{vid}_") else f"{vid}_{text}"


def _as_int(value, builder: CorpusBuilder, where: str) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    raise builder.error(where, f"expected an integer label index, got {shown(value)}")


def _speaker(value, builder: CorpusBuilder, where: str) -> str:
    """'M'/'F' (IEMOCAP) as is; a one-hot vector (MELD) -> 'speaker<index>'."""
    if isinstance(value, str):
        return value
    arr = np.asarray(value)
    if arr.ndim == 1 and arr.size and np.isin(arr, (0, 1)).all() and arr.sum() == 1:
        return f"speaker{int(arr.argmax())}"
    raise builder.error(where, f"expected 'M'/'F' or a one-hot speaker vector, got {shown(value)}")
