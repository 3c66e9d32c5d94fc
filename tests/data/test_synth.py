"""The synthetic corpus has the structure it promises, and nothing that gives the answer away."""

import numpy as np
import pytest

from corekd.data.summary import linear_probe
from corekd.data.synth import IEMOCAP6_PRIOR, SynthConfig, generate
from helpers import TINY_SYNTH


@pytest.fixture(scope="module")
def corpus():
    return generate()


def test_deterministic_and_seeded(tiny_corpus):
    again = generate(SynthConfig(**TINY_SYNTH))
    other = generate(SynthConfig(**{**TINY_SYNTH, "seed": 1}))
    for a, b in zip(tiny_corpus.dialogues, again.dialogues):
        assert np.array_equal(a.labels, b.labels) and np.array_equal(a.features["v"], b.features["v"])
        assert a.split == b.split
    assert not np.array_equal(tiny_corpus.dialogues[0].features["l"][:3], other.dialogues[0].features["l"][:3])


def test_iemocap_shape(corpus):
    assert len(corpus.dialogues) == 151
    assert {m: s.dim for m, s in corpus.modalities.items()} == {"l": 100, "a": 100, "v": 512}
    assert corpus.labels == ["happy", "sad", "neutral", "angry", "excited", "frustrated"]
    lengths = [len(d) for d in corpus.dialogues]
    assert 45 <= np.mean(lengths) <= 55
    assert all(len(set(d.speakers)) == 2 for d in corpus.dialogues)
    sizes = {s: len(corpus.split(s)) for s in ("train", "dev", "test")}
    assert sizes == {"train": 109, "dev": 12, "test": 30}
    counts = corpus.label_counts()
    shares = np.array([counts[name] for name in corpus.labels]) / corpus.num_utterances
    assert np.abs(shares - np.array(IEMOCAP6_PRIOR)).max() < 0.04  # IEMOCAP-like imbalance
    assert shares.argmin() == 0 and shares.argmax() in (2, 5)  # happy rarest; neutral or frustrated commonest


def test_emotions_persist_and_spread_to_the_partner(corpus):
    same_speaker, partner, pairs_own, pairs_partner = 0, 0, 0, 0
    for d in corpus.dialogues:
        last = {}
        for spk, y in zip(d.speakers, d.labels.tolist()):
            other = next((v for k, v in last.items() if k != spk), None)
            if spk in last:
                same_speaker += last[spk] == y
                pairs_own += 1
                if other is not None and last[spk] != y:
                    partner += other == y
                    pairs_partner += 1
            last[spk] = y
    chance = float(np.sum(np.square(IEMOCAP6_PRIOR)))
    assert same_speaker / pairs_own > 0.6 > 3 * chance  # persistence along a speaker's turns
    # When a speaker's emotion changes, it moves to the partner's emotion far more often than by chance.
    assert partner / pairs_partner > 1.5 * chance


def test_language_is_most_informative_then_acoustic_then_visual(corpus):
    probe = linear_probe(corpus, combined=False)["modalities"]
    assert probe["l"]["accuracy"] > probe["a"]["accuracy"] + 0.03 > probe["v"]["accuracy"] + 0.06


def test_some_pairs_are_separable_by_one_modality_only(corpus):
    pairs = linear_probe(corpus, combined=False, pairs=[("happy", "excited"), ("sad", "neutral")])["pairs"]
    hap_exc, sad_neu = pairs["happy/excited"], pairs["sad/neutral"]
    assert hap_exc["a"] > 0.72 and hap_exc["l"] < 0.66 and hap_exc["v"] < 0.66  # arousal: acoustic only
    assert sad_neu["l"] > 0.78 and sad_neu["a"] < 0.68 and sad_neu["v"] < 0.68  # language only


def test_conflicting_nonverbal_cues_at_the_configured_rate(corpus):
    assert corpus.info["conflict_utterances"] / corpus.num_utterances == pytest.approx(0.10, abs=0.015)
    none = generate(SynthConfig(n_dialogues=20, conflict_rate=0.0))
    assert none.info["conflict_utterances"] == 0


def test_no_label_leakage_through_ids_order_split_or_missingness(corpus):
    from sklearn.ensemble import RandomForestClassifier

    assert all(d.available.all() for d in corpus.dialogues)  # missingness comes only from protocols

    def meta_features(split):
        rows, ys = [], []
        for d in corpus.split(split):
            for k, (uid, spk) in enumerate(zip(d.utterance_ids, d.speakers)):
                rows.append([int(d.id[3:]), k, int(uid.rsplit("_u", 1)[1]), spk == "A"])
                ys.append(d.labels[k])
        return np.array(rows, dtype=float), np.array(ys)

    x_tr, y_tr = meta_features("train")
    x_te, y_te = meta_features("test")
    clf = RandomForestClassifier(n_estimators=50, random_state=0).fit(x_tr, y_tr)
    majority = np.bincount(y_te).max() / len(y_te)
    assert (clf.predict(x_te) == y_te).mean() < majority + 0.05


def test_bad_knobs_are_rejected():
    with pytest.raises(ValueError, match="class_prior"):
        SynthConfig(class_prior=[1.0, 2.0])
    with pytest.raises(ValueError, match="persistence"):
        SynthConfig(persistence=0.9, influence=0.2)
    with pytest.raises(ValueError, match="groups"):
        SynthConfig(groups={"l": [["happy"]], "a": [], "v": []})
