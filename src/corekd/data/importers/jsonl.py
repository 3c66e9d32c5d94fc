"""``corekd data import jsonl``: the interchange format anyone can write, one dialogue per line.

See ``docs/import-jsonl.md`` for every field. Classification (default): ``label`` is the target and
``sentiment``, when given, is kept per utterance. Regression (``task="regression"``): ``sentiment`` is
the target and required on every utterance; ``label`` is then optional (an utterance without one gets
its sentiment's sign class, ``negative`` below 0 or ``non-negative``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import cast

import numpy as np

from corekd.data.corpus import MODALITIES, SPLITS
from corekd.data.importers.base import CorpusBuilder, ImportResult, Utterance
from corekd.errors import CorekdError, shown

DIALOGUE_KEYS = ("dialogue_id", "split", "utterances")
UTTERANCE_KEYS = ("id", "speaker", "label", "sentiment", "text", *MODALITIES)
SIGN_LABELS = ("negative", "non-negative")  # regression: the label of an utterance that has none


MAX_DEPTH = 32  # arrays and objects within each other: a line holds at most dialogue > utterances > frames > frame
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')  # JSON strings (their brackets are text, not nesting)
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # only an escape can make one in UTF-8 text


def _depth(line: str) -> int:
    """How deep arrays and objects nest in one JSON text, counted without parsing it (json.loads recurses)."""
    skeleton = np.frombuffer(_STRINGS.sub("", line).encode("utf-8", "surrogatepass"), dtype=np.uint8)
    step = np.isin(skeleton, (ord("["), ord("{"))).astype(np.int64) - np.isin(skeleton, (ord("]"), ord("}")))
    return int(step.cumsum().max(initial=0))


def jsonl_objects(src: Path):
    """(line number, parsed object) for every non-blank line; a line that is not UTF-8, nests deeper than
    ``MAX_DEPTH``, is not one JSON object or holds a lone surrogate is one error naming the file and line."""
    with src.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CorekdError(
                    f"not UTF-8 text (undecodable byte at column {exc.start + 1}); expected a UTF-8 jsonl file",
                    path=src,
                    field=f"line {n}",
                ) from None
            if not line.strip():
                continue
            if line.count("[") + line.count("{") > MAX_DEPTH and _depth(line) > MAX_DEPTH:
                raise CorekdError(
                    f"arrays/objects nested {_depth(line)} deep; expected at most {MAX_DEPTH} (a dialogue "
                    "holds utterances, which hold vectors or frames)",
                    path=src,
                    field=f"line {n}",
                )
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorekdError(
                    f"not valid JSON (column {exc.colno}: {exc.msg}); expected one JSON object per line",
                    path=src,
                    field=f"line {n}",
                ) from None
            if not isinstance(obj, dict):
                raise CorekdError(
                    f"expected a JSON object (one dialogue), got {type(obj).__name__}", path=src, field=f"line {n}"
                )
            bad_text = _lone_surrogate(obj) if _SURROGATE_ESCAPE.search(line) else None
            if bad_text is not None:
                raise CorekdError(
                    "a lone UTF-16 surrogate escape (\\ud800-\\udfff without its pair) is no character "
                    "and cannot be stored as UTF-8; expected text",
                    path=src,
                    field=f"line {n}: {bad_text}",
                )
            yield n, obj


def _lone_surrogate(value, where: str = "") -> str | None:
    """Where in ``value`` a string holds a lone surrogate (a ``\\udc80`` escape that is no character: not storable
    as UTF-8), or None."""
    if isinstance(value, str):
        return where if _SURROGATE.search(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and _SURROGATE.search(key):
            return f"{where}.{key!r}" if where else repr(key)
        found = _lone_surrogate(item, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else key)
        if found is not None:
            return found
    return None


def _label_names(src: Path, labels: list[str] | None) -> list[str]:
    """The label names: ``labels`` as given, or every label in the file (integers as decimal strings)."""
    if labels is not None:
        if len(set(labels)) != len(labels):
            raise CorekdError("label names must be unique", field="--labels")
        return list(labels)
    found: set = set()
    for n, obj in jsonl_objects(src):
        for k, u in enumerate(obj.get("utterances") or []):
            if isinstance(u, dict) and "label" in u:
                value = u["label"]
                if isinstance(value, bool) or not isinstance(value, (int, str)):
                    raise CorekdError(
                        f"expected a label name or integer index, got {shown(value)}",
                        path=src,
                        field=f"line {n}: utterances[{k}].label",
                    )
                found.add(value)
    ints = sorted(v for v in found if isinstance(v, int))
    if ints and any(v < 0 for v in ints):
        raise CorekdError(
            f"negative label index {ints[0]}; expected indices 0, 1, ... (or pass --labels)", path=src, field="label"
        )
    strings = sorted(v for v in found if isinstance(v, str))
    return [str(v) for v in ints] + [s for s in strings if s not in {str(v) for v in ints}]


def import_jsonl(
    src: str | Path, *, labels: list[str] | None = None, name: str | None = None, task: str = "classification"
) -> ImportResult:
    src = Path(src)
    if not src.is_file():
        raise CorekdError("file not found", path=src)
    regression = task == "regression"
    names = _label_names(src, labels)
    if regression and any(
        "label" not in u for _, obj in jsonl_objects(src) for u in obj.get("utterances") or [] if isinstance(u, dict)
    ):
        names += [s for s in SIGN_LABELS if s not in names]
    builder = CorpusBuilder(src, names)
    as_index = labels is None  # integer labels name the decimal-string label
    for n, obj in jsonl_objects(src):
        line = f"line {n}"
        unknown = sorted(set(obj) - set(DIALOGUE_KEYS))
        if unknown:
            raise builder.error(
                f"{line}: {unknown[0]}",
                f"unknown key (expected: {', '.join(DIALOGUE_KEYS)}; per-utterance extras go inside an utterance)",
            )
        for key in DIALOGUE_KEYS:
            if key not in obj:
                raise builder.error(f"{line}: {key}", "required field is missing")
        did, split, utts = obj["dialogue_id"], obj["split"], obj["utterances"]
        if not isinstance(did, str) or not did:
            raise builder.error(f"{line}: dialogue_id", f"expected a non-empty string, got {shown(did)}")
        if split not in SPLITS:
            raise builder.error(f"{line}: split", f"expected one of {', '.join(SPLITS)}, got {shown(split)}")
        if not isinstance(utts, list) or not utts:
            raise builder.error(f"{line}: utterances", "expected a non-empty list of utterances")
        utterances = []
        for k, u in enumerate(utts):
            where = f"{line}: utterances[{k}]"
            if not isinstance(u, dict):
                raise builder.error(where, f"expected an object, got {type(u).__name__}")
            for key in ("id", "sentiment") if regression else ("id", "label"):
                if key not in u or u[key] is None:
                    raise builder.error(f"{where}.{key}", "required field is missing")
            if not isinstance(u["id"], str) or not u["id"]:
                raise builder.error(f"{where}.id", f"expected a non-empty string, got {shown(u['id'])}")
            speaker = u.get("speaker", did)  # no speaker: one speaker per dialogue
            if not isinstance(speaker, str):
                raise builder.error(f"{where}.speaker", f"expected a string, got {shown(speaker)}")
            sentiment = (
                builder.sentiment(u["sentiment"], f"{where}.sentiment") if u.get("sentiment") is not None else None
            )
            # no label: a regression corpus, whose sentiment is required (checked above)
            label = u["label"] if "label" in u else SIGN_LABELS[cast(float, sentiment) >= 0]
            if as_index and isinstance(label, int) and not isinstance(label, bool):
                label = str(label)
            text = u.get("text")
            if text is not None and not isinstance(text, str):
                raise builder.error(f"{where}.text", f"expected a string, got {type(text).__name__}")
            utterances.append(
                Utterance(
                    id=u["id"],
                    speaker=speaker,
                    label=builder.label(label, f"{where}.label"),
                    features={m: builder.feature(m, u[m], f"{where}.{m}") for m in MODALITIES if m in u},
                    sentiment=sentiment,
                    text=text,
                    extra={key: value for key, value in u.items() if key not in UTTERANCE_KEYS},
                )
            )
        builder.add(did, split, utterances, line)
    if not builder.dialogues:
        raise builder.error("", "no dialogues; expected one JSON object per line")
    corpus = builder.build(name or src.stem, info={"imported_from": {"format": "jsonl", "file": src.name}}, task=task)
    return ImportResult(corpus)
