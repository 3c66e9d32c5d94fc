"""Carving a dev split out of train, by dialogue (``data.dev: carve`` and the importers).

Most published feature sets ship train and test only. :func:`carve_dev` moves a seeded share of
the train dialogues to dev. When speaker names link dialogues (the same name in two dialogues is
taken to be the same person), whole groups of linked dialogues are moved so that no dev speaker
is also a train speaker; when the speakers do not allow it (one group holds nearly every
dialogue, as with the generic names 'A'/'B' or 'M'/'F'), dialogues are drawn at random and the
record says the split is not speaker-disjoint.
"""

from __future__ import annotations

import numpy as np

from corekd.data.corpus import Corpus
from corekd.errors import CorekdError
from corekd.seeding import derive_seed


def _groups(dialogues) -> list[list[int]]:
    """Connected components of dialogues that share a speaker name, in first-seen order."""
    parent = list(range(len(dialogues)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, d in enumerate(dialogues):
        for s in set(d.speakers):
            if s in owner:
                parent[find(i)] = find(owner[s])
            else:
                owner[s] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(dialogues)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def carve_dev(corpus: Corpus, fraction: float = 0.1, seed: int = 0) -> dict:
    """Move about ``fraction`` of the train dialogues to dev (in place); return the record of how.

    The record (also stored as ``corpus.info["dev_split"]``) names the method, fraction, seed,
    whether dev is speaker-disjoint from train, and the dialogue and utterance counts.
    """
    if not 0 < fraction < 1:
        raise CorekdError(f"expected a fraction in (0, 1), got {fraction}", field="dev fraction")
    if corpus.split("dev"):
        raise CorekdError(f"corpus '{corpus.name}' already has a dev split; nothing to carve", field="dev")
    train = corpus.split("train")
    if len(train) < 2:
        raise CorekdError(
            f"corpus '{corpus.name}' has {len(train)} train dialogue(s); carving a dev split needs at least 2",
            field="train split",
        )
    target = max(1, round(fraction * len(train)))
    rng = np.random.default_rng(derive_seed("carve-dev", seed))
    groups = _groups(train)
    chosen: list[int] = []
    disjoint = False
    if len(groups) > 1:
        for g in rng.permutation(len(groups)).tolist():
            if len(chosen) >= target:
                break
            if len(chosen) + len(groups[g]) <= max(2 * target, target + 1):
                chosen += groups[g]
        # close enough to the target and train keeps at least one dialogue: speaker-disjoint
        disjoint = target / 2 <= len(chosen) <= 2 * target and len(chosen) < len(train)
    if not disjoint:
        chosen = rng.permutation(len(train))[:target].tolist()
    for i in chosen:
        train[i].split = "dev"
    record = {
        "method": "carved from train by dialogue",
        "fraction": fraction,
        "seed": seed,
        "speaker_disjoint": disjoint,
        "dialogues": len(chosen),
        "utterances": int(sum(len(train[i]) for i in chosen)),
    }
    corpus.info = {**corpus.info, "dev_split": record}
    return record


def describe(record: dict) -> str:
    """One line for logs and reports."""
    how = (
        "speaker-disjoint from train"
        if record.get("speaker_disjoint")
        else "not speaker-disjoint (speakers do not allow it)"
    )
    return (
        f"dev split carved from train: {record['dialogues']} dialogues, {record['utterances']} utterances "
        f"(fraction {record['fraction']}, seed {record['seed']}, {how})"
    )
