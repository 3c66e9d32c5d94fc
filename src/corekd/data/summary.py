"""What is in a corpus (``corekd data inspect``) and how informative each modality is (``corekd data probe``)."""

from __future__ import annotations

from itertools import combinations

import numpy as np

from corekd.data.corpus import SPLITS, Corpus
from corekd.errors import CorekdError


def summarize(corpus: Corpus) -> dict:
    splits = {}
    for split in SPLITS:
        dialogues = corpus.split(split)
        lengths = [len(d) for d in dialogues]
        splits[split] = {
            "dialogues": len(dialogues),
            "utterances": int(sum(lengths)),
            "utterances_per_dialogue": {
                "min": int(min(lengths)) if lengths else 0,
                "mean": round(float(np.mean(lengths)), 1) if lengths else 0.0,
                "max": int(max(lengths)) if lengths else 0,
            },
            "labels": {name: corpus.label_counts(split)[name] for name in corpus.labels},
        }
    missing = {
        m: int(sum(int((~d.available[:, j]).sum()) for d in corpus.dialogues))
        for j, m in enumerate(corpus.modality_names)
    }
    speakers = [len(set(d.speakers)) for d in corpus.dialogues]
    return {
        "name": corpus.name,
        "task": corpus.task,
        "labels": corpus.labels,
        "modalities": {
            m: {"dim": s.dim, "kind": s.kind, "source": s.source, "missing_utterances": missing[m], "card": s.card()}
            for m, s in corpus.modalities.items()
        },
        **({"dev_split": corpus.info["dev_split"]} if "dev_split" in corpus.info else {}),
        "speakers_per_dialogue": {"min": min(speakers, default=0), "max": max(speakers, default=0)},
        "splits": splits,
        "problems": corpus.problems(),
    }


def _stack(corpus: Corpus, split: str, modalities: list[str]) -> tuple[np.ndarray, np.ndarray]:
    dialogues = corpus.split(split)
    x = np.concatenate([np.concatenate([d.features[m] for m in modalities], axis=1) for d in dialogues])
    y = np.concatenate([d.labels for d in dialogues])
    return x, y


def linear_probe(
    corpus: Corpus,
    *,
    combined: bool = True,
    pairs: list[tuple[str, str]] | None = None,
    C: float = 0.1,
    max_iter: int = 500,
) -> dict:
    """Utterance-level logistic regression per modality (and all together), fit on train, scored on test.

    No context, no missingness: how much each view alone says about the label. ``pairs`` (label
    names) adds the binary accuracy of each class pair per modality: which modality separates what.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    for split in ("train", "test"):
        if not corpus.split(split):
            raise CorekdError(
                f"the probe fits on train and scores on test, but the {split} split has no dialogues",
                field=f"{split} split",
            )
    train_classes = set(np.concatenate([d.labels for d in corpus.split("train")]).tolist())
    if len(train_classes) < 2:
        raise CorekdError(
            f"the train split has {len(train_classes)} class ({', '.join(corpus.labels[i] for i in train_classes)}); "
            "a probe needs at least 2",
            field="train split",
        )

    def fit_score(mods: list[str], keep: tuple[int, int] | None = None) -> dict | None:
        x_tr, y_tr = _stack(corpus, "train", mods)
        x_te, y_te = _stack(corpus, "test", mods)
        if keep is not None:
            tr, te = np.isin(y_tr, keep), np.isin(y_te, keep)
            x_tr, y_tr, x_te, y_te = x_tr[tr], y_tr[tr], x_te[te], y_te[te]
            if len(set(y_tr.tolist())) < 2 or not len(y_te):
                return None  # a pair not present in both splits cannot be probed
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
        pred = clf.fit(x_tr, y_tr).predict(x_te)
        return {
            "accuracy": float((pred == y_te).mean()),
            "weighted_f1": float(f1_score(y_te, pred, average="weighted")),
        }

    mods = list(corpus.modality_names)
    result: dict = {"modalities": {m: fit_score([m]) for m in mods}}
    if combined and len(mods) > 1:
        result["modalities"]["+".join(mods)] = fit_score(mods)
    if pairs:
        index = {name: i for i, name in enumerate(corpus.labels)}
        result["pairs"] = {}
        for a, b in pairs:
            scores = {m: fit_score([m], (index[a], index[b])) for m in mods}
            result["pairs"][f"{a}/{b}"] = {m: (r["accuracy"] if r else None) for m, r in scores.items()}
    return result


def all_pairs(corpus: Corpus) -> list[tuple[str, str]]:
    return list(combinations(corpus.labels, 2))
