"""Mechanism analyses of a run (METHOD.md, "Analyses"): state drift, conflict rejection, natural conflicts, the t-SNE
embeddings.

Everything is computed on the TEST split, after a model's test evaluation, with inputs that depend
only on ``evaluation.mask_seed`` (the test-table masks, the conflict pairs), so every method and
seed of a run is measured on the same views:

- **state drift** per condition: mean over real utterances of the distance between the model's
  fused state under the condition's view and the teacher's fused state on the complete view;
  normalised (:func:`~corekd.methods.losses.state_distance` ``normalized_sq``, what L_state anchors)
  and raw Euclidean, plus ``relative_to_no_kd = (d - d_no_kd) / d_no_kd`` (same seed, condition).
- **rejection rate** per conflict type (a, v, av): target-donor pairs (target: a test utterance with
  its language observed; donor: a test utterance of another label). The conflict view is the
  complete view with the target's swapped modalities (features and availability) taken from the
  donor. Up to 20% of a dialogue's utterances are targets, all swapped in the same forward pass
  (its context then holds several conflicts). Pair (i, j) is rejected when
  ``||q~_i - q^t_i|| < ||q~_i - q^t_j||`` (softmax probabilities; teacher on complete views).
  Regression runs are skipped: a sentiment score has no "label of the donor" to reject.
- **natural conflicts** (synthetic corpora): accuracy and weighted F1 on the test utterances whose
  nonverbal channels show another emotion, complete view and random:0.5. Classification only.
- **modality diagnostics** (every model, classification and regression): per modality m, the score lost on complete
  views when only m is removed (``complete`` minus ``fixed:<all but m>``) and the score kept when only m is present
  (``fixed:m``), from the model's test records (re-predicted only where a record is missing); an equity index over
  the losses and a learning-balance index over the mean gradient norms of each modality's encoder in the training
  history (``grad_norm_<m>``); both indices are ``1 - normalised Gini`` (:func:`evenness`; docs/configuration.md,
  "Modality diagnostics").
- embeddings for the figures: fused states at random:0.5 (first seed); the figures themselves (t-SNE, the test
  score against the random missing rate) are drawn by ``corekd.reporting.figures``.

A model is analysed only under the conditions it is scored under: a method's own not-applicable
conditions (``Method.not_applicable``, e.g. a student restricted to one modality subset) are
skipped like those the data rules out, and so is every analysis that needs them (rejection needs
the complete view, natural conflicts complete or random:0.5, the t-SNE random:0.5); a note per
variant says what was skipped and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from corekd.data.batching import SplitTensors
from corekd.data.corpus import Corpus
from corekd.data.protocols import Condition, fixed_mask
from corekd.errors import CorekdError
from corekd.evaluation.metrics import LOWER_IS_BETTER, classification_metrics, task_metrics
from corekd.evaluation.predict import predict, run_model
from corekd.files import ANALYSES_FILE
from corekd.methods.losses import state_distance
from corekd.models.model import Output
from corekd.seeding import numpy_generator, torch_generator
from corekd.training import GRAD_NORM_PREFIX

FORMAT = "corekd-analyses"
CONFLICT_TYPES: dict[str, tuple[str, ...]] = {"a": ("a",), "v": ("v",), "av": ("a", "v")}
TARGET_SHARE = 0.2  # at most this share of a dialogue's utterances are conflict targets (at least one)
TSNE_CONDITION = "random:0.5"
TSNE_POINTS = 600
FLAG = "nonverbal_conflict"
# The score the modality diagnostics read, per task (the first metric of the report's tables).
DIAGNOSTIC_METRIC = {"classification": "weighted_f1", "regression": "mae"}


# ------------------------------------------------------------------ pure pieces
def drift(fused: torch.Tensor, teacher_fused: torch.Tensor, valid: torch.Tensor) -> tuple[float, float]:
    """(normalised, raw) state drift: means over ``valid`` [N, U] of the distances between ``fused`` and
    ``teacher_fused`` [N, U, H]: ``||s/|s| - t/|t|||^2`` and ``||s - t||``."""
    s, t = fused[valid].double(), teacher_fused[valid].double()  # [n, H]
    if not len(s):
        return float("nan"), float("nan")
    return float(state_distance(s, t, "normalized_sq").mean()), float((s - t).norm(dim=-1).mean())


def relative(value: float | None, reference: float | None) -> float | None:
    """``(value - reference) / reference``; None without a value or a (non-zero) reference."""
    if value is None or reference is None or not np.isfinite(reference) or reference == 0:
        return None
    return (value - reference) / reference


def add_relative_to_no_kd(rows: list[dict]) -> list[dict]:
    """Set each student drift row's ``relative_to_no_kd`` from the ``no_kd`` row of the same seed and condition (and
    modality, for ``mstate_drift`` rows); None when the run has none, and for the teacher; the first no_kd variant
    when there are several."""
    ref: dict[tuple, float] = {}

    def key(r: dict) -> tuple:  # modality-state rows are matched per modality too
        return r["seed"], r["condition"], r.get("modality")

    for r in rows:
        if r["method"] == "no_kd":
            ref.setdefault(key(r), r["normalized"])
    for r in rows:
        r["relative_to_no_kd"] = None if r["method"] == "teacher" else relative(r["normalized"], ref.get(key(r)))
    return rows


def rejected(q_conflict: torch.Tensor, q_target: torch.Tensor, q_donor: torch.Tensor) -> torch.Tensor:
    """[P, C] x3 -> [P] bool: the output on the conflict view is nearer (Euclidean) the teacher's complete-view
    output for the target than the one for the donor."""
    return (q_conflict - q_target).norm(dim=-1) < (q_conflict - q_donor).norm(dim=-1)


@dataclass(frozen=True)
class ConflictPairs:
    """Target-donor pairs on one split: positions (dialogue row, utterance) of each."""

    target: torch.Tensor  # [P, 2] long
    donor: torch.Tensor  # [P, 2] long
    seed: int
    types: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.target.shape[0])


def conflict_pairs(split: SplitTensors, mask_seed: int, share: float = TARGET_SHARE) -> ConflictPairs:
    """Seeded pairs (a function of ``mask_seed`` and the split only: the same for every method and seed).

    Targets: per dialogue, a seeded choice of ``max(1, floor(share * length))`` utterances among those with
    ``l`` observed (all of them when the corpus has no ``l``). Donors: for each target, a seeded utterance of
    the split with another label that has every swappable modality (a, v) the corpus holds.
    """
    mods = split.modalities
    types = tuple(t for t, swap in CONFLICT_TYPES.items() if all(m in mods for m in swap))
    gen = torch_generator("conflict-pairs", mask_seed, split.name)
    valid = split.utt_mask
    has_l = split.avail[..., mods.index("l")] if "l" in mods else valid
    swappable = [mods.index(m) for m in ("a", "v") if m in mods]
    donor_ok = valid & split.avail[..., swappable].all(-1) if swappable else valid & False
    donors = donor_ok.nonzero()  # [D, 2]
    targets, chosen = [], []
    for row in range(len(split)):
        eligible = (valid[row] & has_l[row]).nonzero().flatten()
        k = min(len(eligible), max(1, int(share * int(split.lengths[row]))))
        if k == 0:
            continue
        picks = eligible[torch.randperm(len(eligible), generator=gen)[:k]].sort().values
        for u in picks.tolist():
            other = donors[split.labels[donors[:, 0], donors[:, 1]] != split.labels[row, u]]
            if len(other):
                targets.append((row, u))
                chosen.append(other[int(torch.randint(len(other), (1,), generator=gen))].tolist())
    shape = (len(targets), 2)
    return ConflictPairs(
        torch.tensor(targets, dtype=torch.long).reshape(shape),
        torch.tensor(chosen, dtype=torch.long).reshape(shape),
        mask_seed,
        types,
    )


def conflict_view(split: SplitTensors, pairs: ConflictPairs, swap: tuple[str, ...]) -> SplitTensors:
    """``split`` with each target's ``swap`` modalities (features, availability; frames for a sequence modality)
    replaced by its donor's; language, speakers, labels and context untouched. Read as a complete view (mask = the
    new availability). A target's frames become the donor's by pointing at them in the split's flat frame store."""
    features = {m: x.clone() for m, x in split.features.items()}
    frame_start = {m: x.clone() for m, x in split.frame_start.items()}
    frame_lengths = {m: x.clone() for m, x in split.frame_lengths.items()}
    avail = split.avail.clone()
    (tr, tu), (dr, du) = pairs.target.T, pairs.donor.T
    for m in swap:
        j = split.modalities.index(m)
        features[m][tr, tu] = split.features[m][dr, du]
        avail[tr, tu, j] = split.avail[dr, du, j]
        if m in frame_start:
            frame_start[m][tr, tu] = split.frame_start[m][dr, du]
            frame_lengths[m][tr, tu] = split.frame_lengths[m][dr, du]
    return replace(split, features=features, avail=avail, frame_start=frame_start, frame_lengths=frame_lengths)


def conflict_flags(corpus: Corpus, split: str) -> torch.Tensor | None:
    """[N, U] bool: the natural conflict flag of the split's utterances (padded like SplitTensors); None when the
    corpus does not record one (real corpora)."""
    dialogues = corpus.split(split)
    if not any(d.extras and any(FLAG in e for e in d.extras) for d in dialogues):
        return None
    flags = torch.zeros((len(dialogues), max((len(d) for d in dialogues), default=1)), dtype=torch.bool)
    for i, d in enumerate(dialogues):
        for u, extra in enumerate(d.extras or []):
            flags[i, u] = bool(extra.get(FLAG, False))
    return flags


# ------------------------------------------------------------------ modality diagnostics (pure pieces)
def evenness(values: list[float | None]) -> float | None:
    """``1 - G * n / (n - 1)`` in [0, 1], where G is the Gini coefficient of ``values`` after clipping them at 0:
    1 when every value is equal, 0 when one value holds everything. None for fewer than two values, a missing or
    non-finite value, or values that are all 0 (nothing to share out).

    ``G = sum_i sum_j |c_i - c_j| / (2 n^2 mean(c))``; its largest value on n values is ``(n - 1) / n``, hence the
    rescaling. A fill-in standing for MissBench's indices (we have no copy of their formulas): docs/configuration.md,
    "Modality diagnostics".
    """
    if len(values) < 2 or any(v is None or not np.isfinite(v) for v in values):
        return None
    c = np.clip(np.asarray(values, dtype=np.float64), 0.0, None)  # [n]
    n = len(c)
    if c.sum() <= 0:
        return None
    gini = np.abs(c[:, None] - c[None, :]).sum() / (2 * n * n * c.mean())
    return float(min(1.0, max(0.0, 1.0 - gini * n / (n - 1))))


def removed_condition(modalities: tuple[str, ...], m: str) -> str:
    """The condition that removes only ``m``: ``fixed:<every other modality, corpus order>``."""
    return Condition("fixed", keep=tuple(k for k in modalities if k != m)).name


def alone_condition(m: str) -> str:
    """The condition that keeps only ``m``: ``fixed:m``."""
    return Condition("fixed", keep=(m,)).name


def modality_contributions(
    scores: dict[str, float | None], modalities: tuple[str, ...], metric: str
) -> dict[str, dict[str, float | None]]:
    """m -> ``{"without": s(fixed:<all but m>), "drop": ..., "alone": s(fixed:m)}`` from condition -> score.

    ``drop`` is the score lost when only m is removed from complete views, ``s(complete) - s(without)`` (for a
    lower-is-better metric, MAE: ``s(without) - s(complete)``), so a positive drop always means m helps. None where a
    score is missing (a condition not scored); with one modality there is nothing to remove (every value None).
    """
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    complete = scores.get("complete")
    out: dict[str, dict[str, float | None]] = {}
    for m in modalities:
        without = scores.get(removed_condition(modalities, m)) if len(modalities) > 1 else None
        alone = scores.get(alone_condition(m)) if len(modalities) > 1 else None
        drop = None if complete is None or without is None else sign * (complete - without)
        out[m] = {"without": without, "drop": drop, "alone": alone}
    return out


def mean_grad_norms(history: list[dict], modalities: tuple[str, ...]) -> dict[str, float | None]:
    """m -> the mean over epochs of the history's ``grad_norm_<m>`` (each an epoch's mean over steps); None when the
    history does not record it (a model trained before gradient norms were recorded)."""
    out: dict[str, float | None] = {}
    for m in modalities:
        values = [h[GRAD_NORM_PREFIX + m] for h in history if h.get(GRAD_NORM_PREFIX + m) is not None]
        out[m] = float(np.mean(values)) if values else None
    return out


def diagnostics_row(
    variant: str,
    method: str,
    seed: int,
    scores: dict[str, float | None],
    modalities: tuple[str, ...],
    metric: str,
    history: list[dict] | None,
) -> dict:
    """One model's ``modality_diagnostics`` row (see :func:`modality_contributions`, :func:`evenness`)."""
    contrib = modality_contributions(scores, modalities, metric)
    norms = mean_grad_norms(history, modalities) if history is not None else {m: None for m in modalities}
    return {
        "variant": variant,
        "method": method,
        "seed": seed,
        "metric": metric,
        "complete": scores.get("complete"),
        "modalities": list(modalities),
        "drop": {m: contrib[m]["drop"] for m in modalities},
        "without": {m: contrib[m]["without"] for m in modalities},
        "alone": {m: contrib[m]["alone"] for m in modalities},
        "grad_norm": norms,
        "equity": evenness([contrib[m]["drop"] for m in modalities]),
        "balance": evenness(list(norms.values())),
    }


# ------------------------------------------------------------------ a run's analyses
@dataclass
class RunAnalyses:
    """Collects every (variant, seed)'s analyses on the test split (:meth:`payload`: analyses.json's body)."""

    test: SplitTensors
    masks: dict  # condition name -> [N, U, M] bool, the test-table masks (``not_applicable`` attribute honoured)
    flags: torch.Tensor | None  # [N, U] natural conflicts, None when the corpus has none
    labels: list[str]
    task: str
    mask_seed: int
    batch_size: int
    device: torch.device
    figures: bool = True
    pairs: ConflictPairs = field(init=False)
    drift: list[dict] = field(default_factory=list)
    mstate_drift: list[dict] = field(default_factory=list)
    rejection: list[dict] = field(default_factory=list)
    natural: list[dict] = field(default_factory=list)
    modality_diagnostics: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    embeddings: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # variant -> (fused, labels)
    _teacher: tuple[int, Output] | None = None

    def __post_init__(self) -> None:
        self.pairs = conflict_pairs(self.test, self.mask_seed)
        self.first_seed: int | None = None

    def _teacher_outputs(self, seed: int, teacher) -> Output:
        if self._teacher is None or self._teacher[0] != seed:
            self._teacher = (seed, run_model(teacher, self.test, None, self.batch_size, self.device))
        return self._teacher[1]

    def add(
        self,
        variant: str,
        method: str,
        seed: int,
        model,
        teacher,
        not_applicable: dict[str, str] | None = None,
        records: list[dict] | None = None,
        history: list[dict] | None = None,
    ) -> None:
        """Analyses of one trained model (``teacher``: its seed's teacher, None when the run trains none;
        ``not_applicable``: condition -> reason for the conditions this model is not scored under, beyond the data's;
        ``records``: its results.json records, whose test scores the modality diagnostics read (what they lack is
        predicted again; None: no modality diagnostics); ``history``: its training history, for the learning-balance
        index)."""
        with torch.random.fork_rng(devices=[]):  # nothing here may move a global stream
            self._add(variant, method, seed, model, teacher, not_applicable or {})
            if records is not None:  # the modality diagnostics read the model's records
                skip = {**(not_applicable or {}), **getattr(self.masks, "not_applicable", {})}
                self._diagnose(variant, method, seed, model, skip, records, history)

    def _diagnose(
        self, variant: str, method: str, seed: int, model, skip: dict, records: list[dict], history: list[dict] | None
    ) -> None:
        """The model's ``modality_diagnostics`` row: scores from its test records, predicted here only when missing."""
        mods = self.test.modalities
        metric = DIAGNOSTIC_METRIC["regression" if self.task == "regression" else "classification"]
        tested = {r["condition"]: r for r in records if r.get("split", "test") == "test"}
        needed: dict[str, tuple[str, ...]] = {"complete": mods}  # condition -> the modalities it keeps
        if len(mods) > 1:
            for m in mods:
                needed[removed_condition(mods, m)] = tuple(k for k in mods if k != m)
                needed[alone_condition(m)] = (m,)
        scores: dict[str, float | None] = {}
        computed = []
        for name, keep in needed.items():
            record = tested.get(name)
            if record is not None:
                scores[name] = record.get(metric) if record.get("applicable", True) else None
                continue
            if name in skip:
                scores[name] = None
                continue
            mask = self.masks[name] if name in self.masks else fixed_mask(self.test.avail, keep, mods)  # [N, U, M]
            if not bool(mask[self.test.utt_mask].any()):
                scores[name] = None
                continue
            preds = predict(model, self.test, mask, self.batch_size, self.device)
            scores[name] = task_metrics(preds.y_true, preds.y_pred, self.labels, preds.task)[metric]
            computed.append(name)
        row = diagnostics_row(variant, method, seed, scores, mods, metric, history)
        row["predicted"] = computed  # the conditions without a record, scored here
        self.modality_diagnostics.append(row)

    def _skipped(self, variant: str, method: str, what: str, reason: str) -> None:
        note = f"{variant} ({method}): {what} skipped: {reason}"
        if note not in self.notes:
            self.notes.append(note)

    def _add(self, variant: str, method: str, seed: int, model, teacher, method_na: dict[str, str]) -> None:
        if self.first_seed is None:
            self.first_seed = seed
        valid = self.test.utt_mask
        t_out = self._teacher_outputs(seed, teacher) if teacher is not None else None
        data_na = getattr(self.masks, "not_applicable", {})
        skip = {**method_na, **data_na}
        own = {
            c: r for c, r in method_na.items() if c not in data_na and c in self.masks
        }  # the method's own exclusions
        if own:
            first = next(iter(own.values()))
            self._skipped(
                variant, method, f"state drift under the {len(own)} condition(s) it is not scored under", first
            )
        frames = getattr(self.masks, "frames", {})
        features = getattr(self.masks, "features", {})
        outputs = {}
        for name, mask in self.masks.items():
            if name in skip:
                continue
            out = run_model(model, self.test, mask, self.batch_size, self.device, frames.get(name), features.get(name))
            outputs[name] = out
            if t_out is not None:
                normalized, raw = drift(out.fused.cpu(), t_out.fused.cpu(), valid)
                self.drift.append(
                    {
                        "variant": variant,
                        "method": method,
                        "seed": seed,
                        "condition": name,
                        "normalized": normalized,
                        "raw": raw,
                        "relative_to_no_kd": None,
                    }
                )
                observed = (
                    (mask if mask is not None else self.test.avail) & self.test.avail & valid[..., None]
                )  # [N, U, M]
                for j, m in enumerate(self.test.modalities):
                    n = int(observed[..., j].sum())
                    value = (
                        drift(out.states[:, :, j].cpu(), t_out.states[:, :, j].cpu(), observed[..., j])[0]
                        if n
                        else None
                    )
                    self.mstate_drift.append(
                        {
                            "variant": variant,
                            "method": method,
                            "seed": seed,
                            "condition": name,
                            "modality": m,
                            "normalized": value,
                            "utterances": n,
                            "relative_to_no_kd": None,
                        }
                    )
        regression = self.task == "regression"
        rejection_na = own.get("complete")
        if rejection_na and t_out is not None and not regression and len(self.pairs):
            self._skipped(variant, method, "conflict rejection (its conflict views are complete views)", rejection_na)
        elif t_out is not None and not regression and len(self.pairs):
            q_t = t_out.logits.float().softmax(-1).cpu()  # [N, U, C]
            (tr, tu), (dr, du) = self.pairs.target.T, self.pairs.donor.T
            for kind in self.pairs.types:
                view = conflict_view(self.test, self.pairs, CONFLICT_TYPES[kind])
                q = run_model(model, view, None, self.batch_size, self.device).logits.float().softmax(-1).cpu()
                hits = rejected(q[tr, tu], q_t[tr, tu], q_t[dr, du])
                self.rejection.append(
                    {
                        "variant": variant,
                        "method": method,
                        "seed": seed,
                        "type": kind,
                        "rate": float(hits.float().mean()),
                        "pairs": len(self.pairs),
                    }
                )
        if self.flags is not None and not regression:
            if all(name in own for name in ("complete", TSNE_CONDITION)):
                self._skipped(
                    variant, method, f"natural conflicts (views complete and {TSNE_CONDITION})", own["complete"]
                )
            sel = self.flags & valid
            for name in ("complete", TSNE_CONDITION):
                if name in outputs and bool(sel.any()):
                    pred = outputs[name].logits.float().argmax(-1).cpu()[sel].numpy()
                    scores = classification_metrics(self.test.labels[sel].numpy(), pred, self.labels)
                    self.natural.append(
                        {
                            "variant": variant,
                            "method": method,
                            "seed": seed,
                            "condition": name,
                            "accuracy": scores["accuracy"],
                            "weighted_f1": scores["weighted_f1"],
                        }
                    )
        if self.figures and TSNE_CONDITION in own:
            self._skipped(variant, method, f"t-SNE panel (drawn at {TSNE_CONDITION})", own[TSNE_CONDITION])
        if self.figures and seed == self.first_seed and TSNE_CONDITION in outputs:
            real = valid.nonzero()
            pick = numpy_generator("tsne", self.mask_seed).permutation(len(real))[:TSNE_POINTS]
            rows = real[torch.from_numpy(np.sort(pick))]
            fused = outputs[TSNE_CONDITION].fused.float().cpu()[rows[:, 0], rows[:, 1]].numpy()
            truth = self.test.targets if regression else self.test.labels  # [N, U]
            assert truth is not None  # a regression split carries its targets
            target = truth[rows[:, 0], rows[:, 1]].numpy()
            self.embeddings[variant] = (fused, target)

    def payload(self, figures: list[str] | None = None) -> dict:
        flagged = self.flags is not None
        flagged_utterances = int((self.flags & self.test.utt_mask).sum()) if self.flags is not None else 0
        return {
            "format": FORMAT,
            "version": 1,
            "pairs": {
                "seed": self.pairs.seed,
                "targets": len(self.pairs),
                "types": list(self.pairs.types),
                "share_per_dialogue": TARGET_SHARE,
            },
            "task": self.task,
            "drift": add_relative_to_no_kd([dict(r) for r in self.drift]),
            "mstate_drift": add_relative_to_no_kd([dict(r) for r in self.mstate_drift]),
            "rejection": self.rejection,
            "natural_conflicts": {"flagged": flagged, "utterances": flagged_utterances, "records": self.natural},
            "modality_diagnostics": self.modality_diagnostics,
            "notes": self.notes + self._notes(),
            "figures": figures or [],
        }

    def _notes(self) -> list[str]:
        return run_notes(bool(self.drift), self.task, self.flags is not None)


def run_notes(has_drift: bool, task: str, flagged: bool) -> list[str]:
    """What a run's analyses could not measure, and why (analyses.json's ``notes`` after the skipped analyses)."""
    notes = []
    if not has_drift:
        notes.append("no teacher in this run: state drift and rejection need the teacher's complete-view outputs")
    if task == "regression":
        notes.append(
            "regression run: rejection rate and natural-conflict accuracy are skipped (a sentiment score "
            "has no donor label to reject, and accuracy/F1 are classification scores)"
        )
    if not flagged:
        notes.append(
            "this corpus records no natural conflict flag (real corpora have none): no natural-conflict numbers"
        )
    return notes


def merge_parts(parts: list[dict]) -> dict:
    """One corpus's analyses (analyses.json's body, without ``figures``) from its models' parts in plan order: each
    part is one model's :meth:`RunAnalyses.payload` (with ``skipped``: the notes of what it skipped)."""
    first = parts[0]
    skipped: list[str] = []
    for part in parts:
        for note in part.get("skipped", part["notes"]):  # parts written before ``skipped`` existed: their notes
            if note not in skipped:
                skipped.append(note)
    drift = [r for part in parts for r in part["drift"]]
    flagged = bool(first["natural_conflicts"]["flagged"])
    notes = list(dict.fromkeys(skipped + run_notes(bool(drift), first["task"], flagged)))
    return {
        "format": FORMAT,
        "version": 1,
        "pairs": first["pairs"],
        "task": first["task"],
        "drift": add_relative_to_no_kd([dict(r) for r in drift]),
        "mstate_drift": add_relative_to_no_kd([dict(r) for part in parts for r in part.get("mstate_drift", [])]),
        "rejection": [r for part in parts for r in part["rejection"]],
        "natural_conflicts": {
            **first["natural_conflicts"],
            "records": [r for part in parts for r in part["natural_conflicts"]["records"]],
        },
        "modality_diagnostics": [r for part in parts for r in part.get("modality_diagnostics", [])],
        "notes": notes,
    }


def read_analyses(run_dir: str | Path) -> dict | None:
    """analyses.json's payload, or None when the run has none."""
    path = Path(run_dir) / ANALYSES_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorekdError(f"unreadable analyses file ({exc})", path=path) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CorekdError(f'not a corekd analyses file (expected "format": "{FORMAT}")', path=path, field="format")
    return payload
