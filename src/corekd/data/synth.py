"""A deterministic, IEMOCAP-shaped synthetic conversation corpus (``docs/synthetic-corpus.md``).

The generator is written so the project's questions are answerable on it, and nothing else:
- emotions persist along a speaker's turns and spread to the partner (context carries signal);
- each modality sees the emotion through its own partition of the classes (a "code" shared by
  the classes it cannot tell apart), with its own noise: language is the least noisy,
  visual the noisiest, and some class pairs are separable by one modality only;
- a fraction of utterances display a different emotion in the acoustic and/or visual channel
  than their label (masking, irony): conflicting nonverbal evidence, recorded per utterance as
  ``extras[i]["nonverbal_conflict"]`` (format version 2) for the mechanism analyses.
No label information enters through ids, order of dialogues, split assignment or missingness
(the corpus has no missing modalities; protocols add them).

Frame mode (``frames.enabled``): the same dialogues, labels and splits, but each utterance's
modalities become frame sequences of varying length (tokens-as-frames for ``l``) in which only
some frames carry the utterance's emotion (docs/synthetic-corpus.md, "Frame mode"). It draws from
its own stream; with it off the corpus is exactly what it was before the option existed.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from corekd.data.corpus import Corpus, Dialogue, ModalitySpec, pool_mean

IEMOCAP6_LABELS = ["happy", "sad", "neutral", "angry", "excited", "frustrated"]
# Share of each class among IEMOCAP-6's 7,433 utterances (648, 1084, 1708, 1103, 1041, 1849).
IEMOCAP6_PRIOR = [0.087, 0.146, 0.230, 0.148, 0.140, 0.249]

# Sentiment (valence, in [-3, 3]) of each IEMOCAP-6 emotion, for ``task: regression``; other label names
# get evenly spaced values from -2 to 2 in label order.
IEMOCAP6_VALENCE = {"happy": 2.0, "excited": 2.5, "neutral": 0.0, "sad": -2.0, "angry": -2.5, "frustrated": -1.5}

# Which classes each modality cannot tell apart (same group = same code). Every class pair is
# separated by at least one modality; happy/excited only by `a`, angry/frustrated only by `v`,
# sad/neutral only by `l`.
DEFAULT_GROUPS: dict[str, list[list[str]]] = {
    "l": [["happy", "excited"], ["sad"], ["neutral"], ["angry", "frustrated"]],
    "a": [["happy"], ["excited"], ["sad", "neutral"], ["angry", "frustrated"]],
    "v": [["happy", "excited"], ["sad", "neutral"], ["angry"], ["frustrated"]],
}


def _all_modalities() -> list[Literal["l", "a", "v"]]:
    return ["l", "a", "v"]


class SynthFrames(BaseModel):
    """Frame mode of the synthetic corpus (``data.synth.frames``): off by default."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(False, description="give the modalities of `modalities` frame sequences instead of vectors")
    modalities: list[Literal["l", "a", "v"]] = Field(
        default_factory=_all_modalities,
        min_length=1,
        description="which modalities become sequences (l: tokens as frames; a, v: frames); the rest stay vectors",
    )
    mean_frames: dict[str, float] = Field(
        default_factory=lambda: {"l": 10.0, "a": 16.0, "v": 8.0},
        description="mean frames per utterance: 1 + Poisson(mean - 1), clipped to max_frames",
    )
    max_frames: int = Field(32, ge=1, description="most frames of one utterance")
    signal_share: dict[str, float] = Field(
        default_factory=lambda: {"l": 0.3, "a": 0.4, "v": 0.4},
        description="share of an utterance's frames that carry its emotion (at least one frame does)",
    )
    frame_noise: float = Field(0.5, ge=0, description="latent noise std added to every frame")
    salience: float = Field(
        1.0,
        ge=0,
        description="length of a fixed latent direction added to the emotion-carrying frames (emphasis: "
        "what lets a pooling find them); 0 = they differ from the others by the emotion code only",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SynthFrames:
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError("frames.modalities must not repeat")
        for key in ("mean_frames", "signal_share"):
            unknown = set(getattr(self, key)) - {"l", "a", "v"}
            if unknown:
                raise ValueError(f"frames.{key} names unknown modalities {sorted(unknown)} (expected among l, a, v)")
        for m, n in self.mean_frames.items():
            if not 1 <= n <= self.max_frames:
                raise ValueError(f"frames.mean_frames.{m} must lie in [1, max_frames = {self.max_frames}], got {n}")
        for m, p in self.signal_share.items():
            if not 0 < p <= 1:
                raise ValueError(f"frames.signal_share.{m} must lie in (0, 1], got {p}")
        return self


class SynthConfig(BaseModel):
    """Knobs of the synthetic corpus. Defaults give the IEMOCAP-shaped quickstart corpus."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    seed: int = Field(0, ge=0, description="generator seed (a non-negative integer)")
    task: Literal["classification", "regression"] = Field(
        "classification",
        description="regression adds a continuous sentiment per utterance (docs/synthetic-corpus.md); "
        "everything else is the classification corpus of the same seed, unchanged",
    )
    sentiment_noise: float = Field(0.6, ge=0, description="task regression: std of the per-utterance sentiment noise")
    n_dialogues: int = Field(151, ge=3)
    mean_length: float = Field(50.0, gt=1)
    length_std: float = Field(12.0, ge=0)
    min_length: int = Field(20, ge=1)
    max_length: int = Field(100, ge=1)
    dev_fraction: float = Field(0.08, gt=0, lt=1)
    test_fraction: float = Field(0.20, gt=0, lt=1)
    labels: list[str] = Field(default_factory=lambda: list(IEMOCAP6_LABELS), min_length=2)
    class_prior: list[float] = Field(default_factory=lambda: list(IEMOCAP6_PRIOR))
    mood_concentration: float = Field(
        4.0, gt=0, description="Dirichlet concentration of each dialogue's emotion mix around the prior"
    )
    switch_prob: float = Field(0.8, ge=0, le=1, description="probability the next turn is the other speaker's")
    persistence: float = Field(0.65, ge=0, le=1, description="probability a speaker keeps their last emotion")
    influence: float = Field(0.15, ge=0, le=1, description="probability a speaker adopts the partner's last emotion")
    dims: dict[str, int] = Field(default_factory=lambda: {"l": 100, "a": 100, "v": 512})
    latent_dim: int = Field(16, ge=2)
    groups: dict[str, list[list[str]]] = Field(
        default_factory=lambda: {k: [list(g) for g in v] for k, v in DEFAULT_GROUPS.items()}
    )
    signal: float = Field(1.0, gt=0, description="length of a class code in the latent space")
    noise: dict[str, float] = Field(
        default_factory=lambda: {"l": 0.55, "a": 0.75, "v": 0.95},
        description="latent noise std per modality (higher = weaker view)",
    )
    observation_noise: float = Field(0.5, ge=0, description="noise std added in the feature space")
    intensity_shape: float = Field(
        4.0, gt=0, description="Gamma shape of per-utterance expressiveness (mean 1; lower = more varied)"
    )
    speaker_offset: float = Field(0.4, ge=0, description="std of a constant per-speaker offset in a and v")
    topic_offset: float = Field(0.4, ge=0, description="std of a constant per-dialogue topic offset in l")
    conflict_rate: float = Field(0.10, ge=0, le=1, description="share of utterances with conflicting nonverbal cues")
    scale: dict[str, float] = Field(
        default_factory=dict, description="unscaled features: multiply a modality's features by this (default 1)"
    )
    heavy_columns: int = Field(
        0, ge=0, description="per modality, this many columns become large-valued and heavy-tailed"
    )
    heavy_scale: float = Field(100.0, gt=0, description="scale (and offset) of the heavy-tailed columns")
    heavy_df: float = Field(
        2.0, gt=0, description="degrees of freedom of the Student-t noise in the heavy-tailed columns"
    )
    frames: SynthFrames = Field(default_factory=SynthFrames, description="frame mode (docs/synthetic-corpus.md)")

    @model_validator(mode="after")
    def _consistent(self) -> SynthConfig:
        if len(self.class_prior) != len(self.labels):
            raise ValueError(f"class_prior has {len(self.class_prior)} entries for {len(self.labels)} labels")
        if any(p <= 0 for p in self.class_prior):
            raise ValueError("class_prior entries must be positive")
        if self.min_length > self.max_length:
            raise ValueError("min_length must not exceed max_length")
        if self.persistence + self.influence > 1:
            raise ValueError("persistence + influence must not exceed 1")
        if self.dev_fraction + self.test_fraction >= 1:
            raise ValueError("dev_fraction + test_fraction must leave dialogues for train")
        mods = set(self.dims)
        if not mods or not mods <= {"l", "a", "v"}:
            raise ValueError("dims must name modalities among l, a, v")
        for m, d in self.dims.items():
            if d < 1:
                raise ValueError(f"dims.{m} must be a positive feature size, got {d}")
        for m, n in self.noise.items():
            if n < 0:
                raise ValueError(f"noise.{m} must be a non-negative std, got {n}")
        if not set(self.scale) <= mods or any(v <= 0 for v in self.scale.values()):
            raise ValueError(f"scale must give positive factors for modalities of dims ({sorted(mods)})")
        if any(self.heavy_columns > d for d in self.dims.values()):
            raise ValueError("heavy_columns must not exceed any modality's dim")
        for key in ("groups", "noise"):
            if set(getattr(self, key)) != mods:
                raise ValueError(f"{key} must give exactly the modalities of dims ({sorted(mods)})")
        for m, groups in self.groups.items():
            flat = [c for g in groups for c in g]
            if sorted(flat) != sorted(self.labels):
                raise ValueError(f"groups.{m} must list every label exactly once")
        if self.frames.enabled:
            if self.scale or self.heavy_columns:
                raise ValueError(
                    "frames.enabled does not combine with scale or heavy_columns (real-shaped scales are "
                    "a vector-corpus knob)"
                )
            for m in self.frames.modalities:
                if m not in mods:
                    raise ValueError(f"frames.modalities names '{m}', which dims does not have ({sorted(mods)})")
                for key in ("mean_frames", "signal_share"):
                    if m not in getattr(self.frames, key):
                        raise ValueError(f"frames.{key} must give sequence modality '{m}'")
        return self


def generate(cfg: SynthConfig | None = None) -> Corpus:
    """Generate the corpus described by ``cfg`` (same config -> identical corpus)."""
    cfg = cfg or SynthConfig()
    rng = np.random.default_rng(cfg.seed)
    n_cls = len(cfg.labels)
    prior = np.asarray(cfg.class_prior, dtype=np.float64)
    prior = prior / prior.sum()
    modalities: list[str] = [m for m in ("l", "a", "v") if m in cfg.dims]

    # Per-modality class codes [C, K] (classes in one group share a code) and projections [K, D].
    codes, proj = {}, {}
    for m in modalities:
        group_vec = rng.standard_normal((len(cfg.groups[m]), cfg.latent_dim))
        group_vec *= cfg.signal / np.linalg.norm(group_vec, axis=1, keepdims=True)
        code = np.zeros((n_cls, cfg.latent_dim))
        for g, members in enumerate(cfg.groups[m]):
            for name in members:
                code[cfg.labels.index(name)] = group_vec[g]
        codes[m] = code
        proj[m] = rng.standard_normal((cfg.latent_dim, cfg.dims[m])) / np.sqrt(cfg.latent_dim)

    dialogues: list[Dialogue] = []
    latents: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []  # per dialogue, m -> (latent [U, K], base [U, K])
    n_conflicts = 0
    for d in range(cfg.n_dialogues):
        length = int(np.clip(round(rng.normal(cfg.mean_length, cfg.length_std)), cfg.min_length, cfg.max_length))
        mood = rng.dirichlet(cfg.mood_concentration * prior * n_cls)
        speakers, labels = _turns(rng, length, mood, cfg)
        display = np.repeat(labels[:, None], len(modalities), axis=1)  # [U, M] emotion each channel shows
        conflict = rng.random(length) < cfg.conflict_rate
        nonverbal = [j for j, m in enumerate(modalities) if m != "l"]
        for i in np.flatnonzero(conflict):
            shown = _draw_other(rng, prior, labels[i])
            options = [[j] for j in nonverbal] + ([nonverbal] if len(nonverbal) > 1 else [])
            if options:
                for j in options[rng.integers(len(options))]:
                    display[i, j] = shown
                n_conflicts += 1
        # Recorded, not drawn: the flag reads ``conflict`` only, so every draw above and below is unchanged.
        flags = conflict & bool(nonverbal)  # [U] a channel really shows another emotion
        speaker_off = {m: rng.standard_normal((2, cfg.latent_dim)) * cfg.speaker_offset for m in modalities}
        topic = rng.standard_normal(cfg.latent_dim) * cfg.topic_offset
        feats: dict[str, np.ndarray] = {}  # modality -> [U, D]
        kept: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for j, m in enumerate(modalities):
            intensity = rng.gamma(cfg.intensity_shape, 1.0 / cfg.intensity_shape, size=(length, 1))
            latent = intensity * codes[m][display[:, j]]
            base = topic if m == "l" else speaker_off[m][speakers]
            latent = latent + base
            latent = latent + rng.standard_normal(latent.shape) * cfg.noise[m]
            x = latent @ proj[m] + rng.standard_normal((length, cfg.dims[m])) * cfg.observation_noise
            feats[m] = x.astype(np.float32)
            if cfg.frames.enabled:  # kept for the frames, drawing nothing
                kept[m] = (latent, np.broadcast_to(base, latent.shape))
        latents.append(kept)
        did = f"dlg{d:03d}"
        dialogues.append(
            Dialogue(
                id=did,
                split="train",
                utterance_ids=[f"{did}_u{k:03d}" for k in range(length)],
                speakers=["AB"[s] for s in speakers],
                labels=labels.astype(np.int64),
                features=feats,
                available=np.ones((length, len(modalities)), dtype=bool),
                extras=[{"nonverbal_conflict": bool(f)} for f in flags],
            )
        )

    if cfg.scale or cfg.heavy_columns:
        _unscale(dialogues, modalities, cfg)
    if cfg.frames.enabled:
        _add_frames(dialogues, latents, proj, cfg)

    # Splits by dialogue, from a shuffle independent of content.
    order = rng.permutation(cfg.n_dialogues)
    n_test = max(1, round(cfg.test_fraction * cfg.n_dialogues))
    n_dev = max(1, round(cfg.dev_fraction * cfg.n_dialogues))
    for k, idx in enumerate(order):
        dialogues[idx].split = "test" if k < n_test else ("dev" if k < n_test + n_dev else "train")

    regression = cfg.task == "regression"
    if regression:
        _add_sentiment(dialogues, cfg)
    sequences = set(cfg.frames.modalities) if cfg.frames.enabled else set()
    # the classification corpus's info is exactly what it was before the regression and frame options existed
    exclude = ({"task", "sentiment_noise"} if not regression else set()) | ({"frames"} if not sequences else set())
    return Corpus(
        name=f"synthetic-iemocap6-seed{cfg.seed}"
        + ("-regression" if regression else "")
        + ("-frames" if sequences else ""),
        labels=list(cfg.labels),
        modalities={
            m: ModalitySpec(
                dim=cfg.dims[m],
                source="corekd.data.synth",
                kind="sequence" if m in sequences else "vector",  # the default: vector
                aligned=False if m in sequences else None,
            )  # the default: None
            for m in modalities
        },
        dialogues=dialogues,
        task=cfg.task,
        info={
            "generator": "corekd.data.synth",
            "config": cfg.model_dump(exclude=exclude or None),
            "conflict_utterances": n_conflicts,
        },
    )


def label_valence(labels: list[str]) -> np.ndarray:
    """[C] sentiment of each label: :data:`IEMOCAP6_VALENCE` for its names, else evenly spaced in [-2, 2]."""
    spread = np.linspace(-2.0, 2.0, len(labels))
    return np.array([IEMOCAP6_VALENCE.get(name, spread[k]) for k, name in enumerate(labels)])


def _add_sentiment(dialogues: list[Dialogue], cfg: SynthConfig) -> None:
    """Per utterance: the valence of its label (what it means, not a conflicting display) plus Gaussian noise,
    clipped to [-3, 3] and rounded to a multiple of 1/3 (MOSI-style averages of three ratings), so some scores are
    exactly 0. Draws from its own stream: the features, labels and splits stay those of the classification corpus.
    """
    rng = np.random.default_rng([cfg.seed, 7])
    valence = label_valence(cfg.labels)
    for d in dialogues:
        raw = valence[d.labels] + rng.standard_normal(len(d)) * cfg.sentiment_noise
        d.sentiment = (np.round(np.clip(raw, -3, 3) * 3) / 3).astype(np.float32)


def _add_frames(dialogues: list[Dialogue], latents: list[dict], proj: dict[str, np.ndarray], cfg: SynthConfig) -> None:
    """Frame mode, in place: each utterance's sequence modalities become frames whose mean is its features.

    Per utterance and modality: n = 1 + Poisson(mean_frames - 1) frames (at most max_frames); each frame
    carries the emotion with probability signal_share (at least one does). A carrying frame's latent is the
    utterance's latent (emotion code times expressiveness, speaker/topic offset, utterance noise) plus
    ``salience`` times a fixed unit direction of the modality; any other frame's latent is the offset
    alone. Every frame then gets ``frame_noise`` latent noise, the modality's projection and
    ``observation_noise`` feature noise. Its own stream: dialogues, labels and splits are unchanged.
    """
    fc = cfg.frames
    rng = np.random.default_rng([cfg.seed, 0xF4A3E5])
    direction = {}
    for m in fc.modalities:
        vec = rng.standard_normal(cfg.latent_dim)
        direction[m] = vec / np.linalg.norm(vec)
    for d, kept in zip(dialogues, latents):
        for m in fc.modalities:
            latent, base = kept[m]  # [U, K] each
            u = len(d)
            lengths = np.minimum(1 + rng.poisson(fc.mean_frames[m] - 1, size=u), fc.max_frames).astype(np.int64)
            owner = np.repeat(np.arange(u), lengths)  # [F]
            carries = rng.random(len(owner)) < fc.signal_share[m]
            first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            none = np.add.reduceat(carries.astype(np.int64), first) == 0  # [U] utterances without a carrying frame
            carries[first[none] + rng.integers(lengths[none])] = True
            z = np.where(carries[:, None], latent[owner] + fc.salience * direction[m], base[owner])
            z = z + rng.standard_normal(z.shape) * fc.frame_noise
            x = (z @ proj[m] + rng.standard_normal((len(owner), cfg.dims[m])) * cfg.observation_noise).astype(
                np.float32
            )
            d.frames[m] = (x, lengths)
            d.features[m] = pool_mean(x, lengths, cfg.dims[m])


def _unscale(dialogues: list[Dialogue], modalities: list[str], cfg: SynthConfig) -> None:
    """Real-shaped feature scales, in place: a per-modality factor, and ``heavy_columns`` columns per
    modality that carry their usual signal on a large offset with added heavy-tailed (Student-t) noise.

    Draws from its own stream, so the dialogues, labels and splits are those of the same seed
    without the knobs; only the feature values change.
    """
    rng = np.random.default_rng([cfg.seed, 0x5CA1E])
    heavy = {m: rng.choice(cfg.dims[m], size=cfg.heavy_columns, replace=False) for m in modalities}
    for d in dialogues:
        for m in modalities:
            x = d.features[m].astype(np.float64) * cfg.scale.get(m, 1.0)
            cols = heavy[m]
            if len(cols):
                noise = rng.standard_t(cfg.heavy_df, size=(len(d), len(cols)))
                x[:, cols] = cfg.heavy_scale * (1.0 + x[:, cols] + noise)
            d.features[m] = x.astype(np.float32)


def _turns(rng: np.random.Generator, length: int, mood: np.ndarray, cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """Speaker turns and emotions: persistence along a speaker, influence from the partner."""
    speakers = np.zeros(length, dtype=np.int64)
    labels = np.zeros(length, dtype=np.int64)
    last = [-1, -1]  # last emotion of speaker 0 / 1
    speaker = int(rng.integers(2))
    for i in range(length):
        if i > 0 and rng.random() < cfg.switch_prob:
            speaker = 1 - speaker
        own, partner = last[speaker], last[1 - speaker]
        r = rng.random()
        if own >= 0 and r < cfg.persistence:
            emotion = own
        elif partner >= 0 and r < cfg.persistence + cfg.influence:
            emotion = partner
        else:
            emotion = int(rng.choice(len(mood), p=mood))
        speakers[i], labels[i] = speaker, emotion
        last[speaker] = emotion
    return speakers, labels


def _draw_other(rng: np.random.Generator, prior: np.ndarray, label: int) -> int:
    p = prior.copy()
    p[label] = 0.0
    return int(rng.choice(len(p), p=p / p.sum()))
