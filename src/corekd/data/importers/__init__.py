"""``corekd data import FORMAT SRC --out DIR``: corpora from the files the field passes around.

Each format has a docs page (``docs/import-<format>.md``) naming every field it reads. Pickles
are read with :mod:`corekd.data.unpickle` (numpy arrays and builtin containers only).
"""

from __future__ import annotations

from pathlib import Path

from corekd.data.corpus import load_corpus
from corekd.data.importers.base import ImportResult, finish
from corekd.data.importers.conversation_pickle import import_conversation_pickle
from corekd.data.importers.jsonl import import_jsonl
from corekd.data.importers.mmsa_pickle import import_mmsa_pickle
from corekd.errors import CorekdError
from corekd.files import check_new_or_empty, staged_folder

FORMATS = ("jsonl", "conversation-pickle", "mmsa-pickle", "meld")


def import_corpus(
    fmt: str,
    src: str | Path,
    out: str | Path,
    *,
    labels: list[str] | None = None,
    name: str | None = None,
    dev_fraction: float = 0.1,
    seed: int = 0,
    dataset: str | None = None,
    classes: int = 2,
    task: str = "classification",
) -> ImportResult:
    """Read ``src`` in format ``fmt``, carve a dev split if it has none, write the corpus to ``out``.

    The corpus is written into a temporary folder beside ``out`` and moved into place at the end (a failure
    leaves ``out`` as it was). The written corpus is read back with every check of ``load_corpus`` before this returns. ``task="regression"``
    (jsonl, mmsa-pickle) makes the per-utterance ``sentiment`` the target (required on every utterance).
    """
    if task == "regression" and fmt == "conversation-pickle":
        raise CorekdError(
            "conversation-pickle files hold class labels only; regression needs a sentiment score "
            "(use jsonl or mmsa-pickle)",
            field="--task",
        )
    check_new_or_empty(out)
    result = _read(fmt, src, labels=labels, name=name, dataset=dataset, classes=classes, task=task)
    finish(result, dev_fraction=dev_fraction, seed=seed)
    with staged_folder(out) as tmp:  # a failure leaves nothing behind; the corpus appears whole or not at all
        result.corpus.save(tmp)
        result.corpus = load_corpus(tmp)
    return result


def _read(fmt: str, src: str | Path, *, labels, name, dataset, classes, task) -> ImportResult:
    if fmt == "jsonl":
        result = import_jsonl(src, labels=labels, name=name, task=task)
    elif fmt == "conversation-pickle":
        result = import_conversation_pickle(src, labels=labels, name=name, dataset=dataset)
    elif fmt == "mmsa-pickle":
        if labels is not None:
            raise CorekdError("mmsa-pickle labels come from the sentiment score (use --classes)", field="--labels")
        result = import_mmsa_pickle(src, name=name, classes=classes, task=task)
    elif fmt == "meld":  # its transcripts go through the feature extractors, a layer above this package
        raise CorekdError(
            "MELD is imported through the feature extractors: `corekd data import meld`, or "
            "corekd.features.meld.import_meld in Python",
            field="FORMAT",
        )
    else:
        raise CorekdError(f"unknown format '{fmt}' (expected one of: {', '.join(FORMATS)})", field="FORMAT")
    return result


__all__ = [
    "FORMATS",
    "ImportResult",
    "import_corpus",
    "import_conversation_pickle",
    "import_jsonl",
    "import_mmsa_pickle",
]
