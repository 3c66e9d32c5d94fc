"""Predict with a bundle: dialogues in (any modality may be missing on any utterance), per-utterance outputs out.

A dialogue is a mapping (the interchange format of ``docs/import-jsonl.md``, or what
``POST /v1/predict`` takes)::

    {"dialogue_id": "d1", "utterances": [
        {"id": "u0", "speaker": "A", "l": [...], "a": [...]},      # v missing here
        {"id": "u1", "speaker": "B", "v": [...]}]}

A modality key absent from an utterance (or ``null``) means that modality is missing there; the
mask the model sees follows from that. A ``sequence`` modality also takes frames (a list of
equal-length vectors). What becomes of them follows from how the model reads the modality (the
spec's ``input``, set by :func:`~corekd.serving.bundle.read_bundle` from the model):

- ``input: "frames"`` (a ``sequence`` modality of a model whose ``sequence_encoder`` is ``conv``,
  ``transformer`` or ``none``): the frames are kept, ``[F_i, D]`` per utterance, and padded per
  batch (``Batch.frames`` / ``Batch.frame_mask``); a single vector is read as an utterance of one
  frame;
- ``input: "vector"`` (a vector modality, or a ``sequence`` modality of a model with
  ``sequence_encoder: mean`` or one built without ``kinds``): frames are averaged into one vector,
  which is what such a model was trained on.

Utterance keys other than ``id``, ``speaker`` and
the modalities (e.g. ``label``, ``text``) are ignored by :func:`parse_dialogue` (the HTTP service
refuses them instead); a modality the model does not have is an error.

The same :class:`ServingModule` (model + input assembly + softmax) runs under PyTorch and is what
:mod:`corekd.serving.onnx_export` exports, so both runtimes compute the same function.

No NaN leaves the predictor. Inputs are standardised as in training (the bundle's train-split
mean and std) and a value whose z-score is not finite or beyond :data:`Z_LIMIT` is refused,
naming the field: no training value is that far out (with n training observations every
training z-score is within sqrt(n - 1)), and values of ~1e18 standard deviations overflow float32
inside the model, where torch and onnxruntime then give different answers (NaN, or another finite
one). An output that is not finite (from any input or weight) is a :class:`CorekdError` naming
the dialogue, under either runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from corekd.data.batching import Batch
from corekd.data.corpus import MODALITIES
from corekd.errors import CorekdError
from corekd.models.encoders import masked_frame_mean
from corekd.models.model import ERCModel
from corekd.serving.bundle import Bundle, frame_inputs, read_bundle

ID_KEYS = ("dialogue_id", "id")
Z_LIMIT = 1e9  # the largest |standardised value| accepted (see the module docstring)


@dataclass
class DialogueInput:
    """One dialogue, checked against the model: ids, speakers and per-utterance features (None = missing)."""

    id: str
    utterance_ids: list[str]
    speakers: list[str]
    # m -> per utterance [D_m] float32 (frame-reading modalities: [F_i, D_m] frames, F_i >= 1), or None where missing
    features: dict[str, list[np.ndarray | None]]
    # utterances that have no modality at all (a media manifest's rows whose extraction failed): (position among
    # all of the dialogue's utterances, id, reason); the model never sees them, the output reports them
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    split: str | None = None  # the corpus split it comes from (a corpus folder's input); rows then carry it

    def __len__(self) -> int:
        return len(self.utterance_ids)

    def observed(self, i: int) -> list[str]:
        return [m for m, rows in self.features.items() if rows[i] is not None]


def reads_frames(spec: Mapping) -> bool:
    """Whether a modality spec (``Bundle.modalities[m]``) is read frame by frame (``input: "frames"``)."""
    return spec.get("input") == "frames"


def _frames(value, m: str, spec: dict, where: str) -> np.ndarray:
    """A frame-reading modality's value -> [F, D] float32 frames (a single vector: one frame); errors name the frame."""
    dim = int(spec["dim"])
    if isinstance(value, np.ndarray) and value.dtype != object:
        x = value.astype(np.float32, copy=False)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2:
            raise CorekdError(f"got a {x.ndim}-d array; expected frames [F, {dim}] ('{m}' is read frame by frame)",
                              field=where)
        if x.shape[1] != dim:
            raise CorekdError(f"frames of dim {x.shape[1]}; expected dim {dim} (the model's '{m}' input)", field=where)
    elif isinstance(value, (list, tuple)):
        if value and not isinstance(value[0], (list, tuple, np.ndarray)):  # a single vector: an utterance of one frame
            return _vector(value, m, {"dim": dim, "kind": "vector"}, where)[None]
        try:  # the common case in one step; anything else is checked frame by frame to name the bad one
            x = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            x = None
        rows = []
        for k, frame in enumerate(value if x is None or x.ndim != 2 or x.shape[1] != dim else ()):
            fwhere = f"{where}[{k}]"
            if not isinstance(frame, (list, tuple, np.ndarray)):
                raise CorekdError(f"expected a frame (a list of {dim} numbers), got {type(frame).__name__}", field=fwhere)
            try:
                row = np.asarray(frame, dtype=np.float32)
            except (TypeError, ValueError):
                raise CorekdError(f"expected a frame of {dim} numbers", field=fwhere) from None
            if row.shape != (dim,):
                got = f"{row.shape[0]} numbers" if row.ndim == 1 else f"a {row.ndim}-d array"
                raise CorekdError(f"frame of {got}; expected {dim} (the model's '{m}' input dim)", field=fwhere)
            rows.append(row)
        if rows or x is None or x.ndim != 2 or x.shape[1] != dim:
            x = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
    else:
        raise CorekdError(f"expected a list of frames (each a list of {dim} numbers), got {type(value).__name__}",
                          field=where)
    if x.shape[0] == 0:
        raise CorekdError("expected at least one frame (leave the modality out where it is missing)", field=where)
    bad = ~np.isfinite(x)
    if bad.any():
        k, j = (int(i) for i in np.argwhere(bad)[0])
        raise CorekdError(f"non-finite value (NaN/inf) at index {j}; expected finite numbers", field=f"{where}[{k}]")
    return np.ascontiguousarray(x)


def _vector(value, m: str, spec: dict, where: str) -> np.ndarray:
    """A modality value -> [D] float32: a vector, or (sequence modalities) frames averaged."""
    dim, kind = int(spec["dim"]), spec.get("kind", "vector")
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise CorekdError(f"expected a list of {dim} numbers, got {type(value).__name__}", field=where)
    try:
        x = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise CorekdError(f"expected a list of {dim} numbers"
                          + (" or a list of equal-length frames" if kind == "sequence" else ""), field=where) from None
    if x.ndim == 2 and kind == "sequence":
        if x.shape[0] == 0:
            raise CorekdError("expected at least one frame (leave the modality out where it is missing)", field=where)
        if x.shape[1] != dim:
            raise CorekdError(f"frames of dim {x.shape[1]}; expected dim {dim} (the model's '{m}' input)", field=where)
        if not np.isfinite(x).all():
            raise CorekdError("non-finite value (NaN/inf); expected finite numbers", field=where)
        return x.mean(0, dtype=np.float64).astype(np.float32)
    if x.ndim != 1:
        shape = "frames" if x.ndim == 2 else f"a {x.ndim}-d array"
        raise CorekdError(f"got {shape}; expected one vector of {dim} numbers ('{m}' is a {kind} modality)", field=where)
    if x.shape[0] != dim:
        raise CorekdError(f"got {x.shape[0]} numbers; expected {dim} (the model's '{m}' input dim)", field=where)
    if not np.isfinite(x).all():
        raise CorekdError(f"non-finite value (NaN/inf) at index {int(np.argmin(np.isfinite(x)))}; expected finite numbers",
                          field=where)
    return x


def modality_value(value, m: str, spec: dict, where: str) -> np.ndarray:
    """One utterance's value of modality ``m``, checked: [F, D] frames for a frame-reading modality, else [D]."""
    return _frames(value, m, spec, where) if reads_frames(spec) else _vector(value, m, spec, where)


def parse_dialogue(obj: Mapping, modalities: dict[str, dict], where: str = "") -> DialogueInput:
    """Check one dialogue mapping against the model's ``modalities`` ({m: {"dim", "kind"}}); errors name the field."""
    at = (lambda f: f"{where}: {f}" if where else f)  # noqa: E731
    if not isinstance(obj, Mapping):
        raise CorekdError(f"expected a JSON object (one dialogue), got {type(obj).__name__}", field=where or None)
    did = next((obj[k] for k in ID_KEYS if k in obj), None)
    if not isinstance(did, str) or not did:
        raise CorekdError(f"expected a non-empty string, got {did!r}", field=at("dialogue_id"))
    utts = obj.get("utterances")
    if not isinstance(utts, list) or not utts:
        raise CorekdError("expected a non-empty list of utterances (an empty dialogue has nothing to predict)",
                          field=at("utterances"))
    ids, speakers = [], []
    features: dict[str, list] = {m: [] for m in modalities}
    for k, u in enumerate(utts):
        uwhere = at(f"utterances[{k}]")
        if not isinstance(u, Mapping):
            raise CorekdError(f"expected an object, got {type(u).__name__}", field=uwhere)
        uid = u.get("id") if u.get("id") is not None else str(k)
        if not isinstance(uid, str) or not uid:
            raise CorekdError(f"expected a non-empty string, got {uid!r}", field=f"{uwhere}.id")
        speaker = u.get("speaker") if u.get("speaker") is not None else did
        if not isinstance(speaker, str):
            raise CorekdError(f"expected a string, got {speaker!r}", field=f"{uwhere}.speaker")
        unknown = [m for m in MODALITIES if m in u and m not in modalities and u[m] is not None]
        if unknown:
            raise CorekdError(f"modality '{unknown[0]}' is not an input of this model (its modalities: "
                              f"{', '.join(modalities)})", field=f"{uwhere}.{unknown[0]}")
        seen = False
        for m, spec in modalities.items():
            value = u.get(m)
            if value is None:
                features[m].append(None)
                continue
            features[m].append(modality_value(value, m, spec, f"{uwhere}.{m}"))
            seen = True
        if not seen:
            raise CorekdError(f"no modality given; expected at least one of {', '.join(modalities)}", field=uwhere)
        ids.append(uid)
        speakers.append(speaker)
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise CorekdError(f"duplicate utterance id '{dup}' in dialogue '{did}'", field=at("utterances"))
    return DialogueInput(id=did, utterance_ids=ids, speakers=speakers, features=features)


def input_names(modalities: Mapping[str, Mapping]) -> list[str]:
    """The model's inputs, in order: ``mask``, ``speakers``, ``lengths``, then per modality ``m`` ([B, U, D_m]) or,
    for a frame-reading modality, ``m_frames`` ([B, U, F_m, D_m]) and ``m_frame_mask`` ([B, U, F_m])."""
    names = ["mask", "speakers", "lengths"]
    for m, spec in modalities.items():
        names += [f"{m}_frames", f"{m}_frame_mask"] if reads_frames(spec) else [m]
    return names


def encode(dialogues: list[DialogueInput], dims: Mapping[str, int], frames: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Padded arrays: ``mask`` [B, U, M] bool, ``speakers`` [B, U] int64, ``lengths`` [B] int64, one [B, U, D_m] per modality.

    A modality in ``frames`` (read frame by frame) gives ``<m>_frames`` [B, U, F, D_m] float32 and ``<m>_frame_mask``
    [B, U, F] bool instead, F the batch's most frames of one utterance (at least 1). Padding and missing entries are
    zeros (the model never reads them: the masks say so).
    """
    frames = set(frames)
    b, u = len(dialogues), max(len(d) for d in dialogues)
    arrays = {
        "mask": np.zeros((b, u, len(dims)), dtype=bool),
        "speakers": np.zeros((b, u), dtype=np.int64),
        "lengths": np.array([len(d) for d in dialogues], dtype=np.int64),
    }
    for j, (m, dim) in enumerate(dims.items()):
        if m in frames:
            f = max([len(x) for d in dialogues for x in d.features[m] if x is not None], default=1)
            feats = np.zeros((b, u, f, dim), dtype=np.float32)
            shown = np.zeros((b, u, f), dtype=bool)
            for i, d in enumerate(dialogues):
                for t, x in enumerate(d.features[m]):
                    if x is not None:
                        feats[i, t, : len(x)] = x
                        shown[i, t, : len(x)] = True
                        arrays["mask"][i, t, j] = True
            arrays[f"{m}_frames"], arrays[f"{m}_frame_mask"] = feats, shown
            continue
        feats = np.zeros((b, u, dim), dtype=np.float32)
        for i, d in enumerate(dialogues):
            for t, x in enumerate(d.features[m]):
                if x is not None:
                    feats[i, t] = x
                    arrays["mask"][i, t, j] = True
        arrays[m] = feats
    for i, d in enumerate(dialogues):
        order: dict[str, int] = {}
        arrays["speakers"][i, : len(d)] = [order.setdefault(s, len(order)) for s in d.speakers]  # index of first appearance
    return arrays


class ServingModule(nn.Module):
    """The model behind plain tensors: (mask, speakers, lengths, *inputs) -> probabilities [B, U, C] (values [B, U, 1]).

    ``mask`` [B, U, M] bool (observed), ``speakers`` [B, U] int64 (index within the dialogue),
    ``lengths`` [B] int64 (real utterances; the rest is padding), then per modality in the model's
    order (:func:`input_names`): features [B, U, D_m] float32, or for a modality the model reads
    frame by frame (:func:`frame_inputs`) its frames [B, U, F_m, D_m] float32 and frame mask
    [B, U, F_m] bool (True: a real frame). A ``sequence`` modality of a ``sequence_encoder: mean``
    model takes the mean of its frames as features and is read as one frame (the mean of the
    standardised frames is the standardised mean: the same input). Classification returns softmax
    probabilities, regression the value.
    """

    def __init__(self, model: ERCModel, task: str):
        super().__init__()
        self.model = model
        self.modalities = tuple(model.modalities)
        self.frame_modalities = frame_inputs(model)
        self.one_frame = tuple(m for m in self.modalities
                               if model.kinds.get(m) == "sequence" and m not in self.frame_modalities)
        self.input_names = input_names({m: {"input": "frames" if m in self.frame_modalities else "vector"}
                                        for m in self.modalities})
        self.classify = task == "classification"

    def forward(self, mask: torch.Tensor, speakers: torch.Tensor, lengths: torch.Tensor, *inputs: torch.Tensor):
        u = mask.shape[1]
        utt_mask = torch.arange(u, device=mask.device)[None, :] < lengths[:, None]  # [B, U]
        observed = mask & utt_mask[..., None]  # [B, U, M]
        features: dict[str, torch.Tensor] = {}
        frames: dict[str, torch.Tensor] = {}
        frame_mask: dict[str, torch.Tensor] = {}
        k = 0
        for j, m in enumerate(self.modalities):
            if m in self.frame_modalities:
                shown = inputs[k + 1] & observed[..., j, None]  # [B, U, F]
                frames[m] = inputs[k] * shown[..., None].to(inputs[k].dtype)  # [B, U, F, D]
                frame_mask[m] = shown
                features[m] = masked_frame_mean(frames[m], shown)  # [B, U, D]
                k += 2
                continue
            features[m] = inputs[k]  # [B, U, D]
            if m in self.one_frame:
                frames[m] = inputs[k][:, :, None]  # [B, U, 1, D]
                frame_mask[m] = observed[..., j, None]  # [B, U, 1]
            k += 1
        batch = Batch(
            features=features, mask=observed, avail=observed, speakers=speakers,
            labels=torch.zeros_like(speakers), utt_mask=utt_mask, modalities=self.modalities,
            index=torch.zeros_like(lengths), frame_lengths={m: x.sum(-1) for m, x in frame_mask.items()},
            frames=frames, frame_mask=frame_mask,
        )
        logits = self.model(batch).logits  # [B, U, C]
        return logits.softmax(-1) if self.classify else logits


class TorchRuntime:
    name = "torch"

    def __init__(self, bundle: Bundle, device: torch.device):
        self.device = device
        self.module = ServingModule(bundle.model.to(device), bundle.task).eval()

    def __call__(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out = self.module(*(torch.from_numpy(arrays[n]).to(self.device) for n in self.module.input_names))
            return out.float().cpu().numpy()


class Predictor:
    """A loaded bundle that predicts; thread-safe for concurrent calls (the model is only read)."""

    def __init__(self, bundle: Bundle, *, device: str | torch.device = "cpu", runtime: str = "torch",
                 onnx_path: str | Path | None = None):
        self.bundle = bundle
        self.device = torch.device(device)
        if runtime == "torch":
            self.runtime = TorchRuntime(bundle, self.device)
        elif runtime == "onnx":
            from corekd.serving.onnx_export import OnnxRuntime

            self.runtime = OnnxRuntime(bundle, onnx_path)
        else:
            raise CorekdError(f"expected torch or onnx, got '{runtime}'", field="--runtime")
        # m -> (mean [D_m], std [D_m]) float32: the training standardisation, to check inputs against
        self.statistics = {m: (mean.detach().cpu().numpy(), std.detach().cpu().numpy())
                           for m, (mean, std) in bundle.model.standardizer.statistics().items()}

    @property
    def task(self) -> str:
        return self.bundle.task

    @property
    def labels(self) -> list[str]:
        return self.bundle.labels

    @property
    def modalities(self) -> dict[str, dict]:
        return self.bundle.modalities

    @property
    def frame_modalities(self) -> tuple[str, ...]:
        """The modalities the model reads frame by frame (``input: "frames"``): their frames are kept, not averaged."""
        return tuple(m for m, spec in self.modalities.items() if reads_frames(spec))

    def describe(self) -> dict:
        return {**self.bundle.describe(), "runtime": self.runtime.name}

    def parse(self, obj: Mapping, where: str = "") -> DialogueInput:
        """:func:`parse_dialogue`, then :meth:`check`: a dialogue the model can answer, or a CorekdError naming the field."""
        return self.check(parse_dialogue(obj, self.modalities, where), where)

    def check(self, dialogue: DialogueInput, where: str = "") -> DialogueInput:
        """Refuse a value whose standardised form (as training standardised it) is not finite or beyond ``Z_LIMIT``.

        Errors name the field as :func:`parse_dialogue` does (``where`` first, e.g. ``[2]`` or ``line 5``)."""
        at = (lambda f: f"{where}: {f}" if where else f)  # noqa: E731
        for m, rows in dialogue.features.items():
            given = [(t, np.atleast_2d(x)) for t, x in enumerate(rows) if x is not None]  # [1, D] or frames [F, D]
            if not given:
                continue
            mean, std = self.statistics[m]
            x = np.concatenate([v for _, v in given])  # [R, D]: every given vector or frame of m
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                z = (x - mean) / std  # float32, as the model computes it
            bad = ~(np.abs(z) <= Z_LIMIT)  # NaN included
            if not bad.any():
                continue
            r, j = (int(i) for i in np.argwhere(bad)[0])
            ends = np.cumsum([len(v) for _, v in given])  # [n]
            k = int(np.searchsorted(ends, r, side="right"))
            t, frame = given[k][0], r - (int(ends[k - 1]) if k else 0)
            index = f"frame {frame}, index {j}" if rows[t].ndim == 2 else f"index {j}"
            size = "overflows float32" if not np.isfinite(z[r, j]) else f"is {float(z[r, j]):.3g}"
            raise CorekdError(
                f"value {float(x[r, j]):.6g} at {index} is too far from the training data: standardised with the "
                f"training mean and std its z-score {size}; expected |z| <= {Z_LIMIT:.0e}", field=at(f"utterances[{t}].{m}"))
        return dialogue

    def value_bounds(self) -> dict[str, float]:
        """Per modality, the largest |value| that :meth:`check` accepts in every column (what the request schema states):
        ``min_j (Z_LIMIT * std_j - |mean_j|)``, a hair inside it (float32 rounding), at most float32's largest."""
        out = {}
        for m, (mean, std) in self.statistics.items():
            room = Z_LIMIT * np.asarray(std, dtype=np.float64) - np.abs(np.asarray(mean, dtype=np.float64))  # [D]
            out[m] = float(min(np.finfo(np.float32).max, max(0.0, float(room.min()) * (1 - 1e-6))))
        return out

    def self_check(self) -> str | None:
        """None if the model answers a dialogue of training means (one utterance, every modality), else why not."""
        probe = DialogueInput(id="self-check", utterance_ids=["0"], speakers=["A"],
                              features={m: [mean[None] if reads_frames(self.modalities[m]) else mean]
                                        for m, (mean, _) in self.statistics.items()})
        try:
            self.predict_many([probe])
        except CorekdError as exc:
            return str(exc)
        return None

    def predict(self, dialogue: Mapping | DialogueInput) -> list[dict]:
        """One dialogue -> one dict per utterance (see :meth:`predict_many`)."""
        return self.predict_many([dialogue])[0]

    def predict_many(self, dialogues: list[Mapping | DialogueInput]) -> list[list[dict]]:
        """Several dialogues in one padded forward; per dialogue, per utterance::

            {"dialogue_id", "utterance_id", "prediction": label name (regression: the value),
             "probabilities": {label: p} (classification only), "modalities": observed modalities}

        A :class:`DialogueInput`'s ``skipped`` utterances (no modality) get, in their place,
        ``{"dialogue_id", "utterance_id", "prediction": None, "probabilities": None (classification),
        "modalities": [], "error": reason}``; the model runs on the dialogue without them.
        """
        parsed = [self.check(d, f"dialogue '{d.id}'") if isinstance(d, DialogueInput) else self.parse(d, f"[{i}]" if len(dialogues) > 1 else "")
                  for i, d in enumerate(dialogues)]
        if not parsed:
            return []
        present = [d for d in parsed if len(d)]  # a dialogue whose every utterance was skipped has nothing to run
        out = self.runtime(encode(present, self.bundle.dims, self.frame_modalities)) if present else None  # [B, U, C]
        for i, d in enumerate(present):
            bad = ~np.isfinite(out[i, : len(d)]).all(-1)  # [U_i]
            if bad.any():
                t = int(np.argmax(bad))
                raise CorekdError(f"the model's output for utterance '{d.utterance_ids[t]}' is not finite (NaN/inf) under "
                                  f"{self.runtime.name}; the model cannot answer this dialogue",
                                  field=f"dialogue '{d.id}'")
        results = []
        for d in parsed:
            i = next((k for k, p in enumerate(present) if p is d), -1)
            rows = []
            for t in range(len(d)):
                row = {"dialogue_id": d.id, "utterance_id": d.utterance_ids[t]}
                if self.task == "classification":
                    p = out[i, t]
                    row["prediction"] = self.labels[int(np.argmax(p))]
                    row["probabilities"] = {name: float(v) for name, v in zip(self.labels, p)}
                else:
                    row["prediction"] = float(out[i, t, 0])
                row["modalities"] = d.observed(t)
                rows.append(row)
            for pos, uid, reason in sorted(d.skipped):
                empty = {"probabilities": None} if self.task == "classification" else {}
                rows.insert(pos, {"dialogue_id": d.id, "utterance_id": uid, "prediction": None, **empty,
                                  "modalities": [], "error": reason})
            results.append(rows)
        return results

    def predict_manifest(self, manifest: str | Path, *, workers: int = 1, strict: bool = False, cache: bool = True,
                         cache_dir: str | Path | None = None, batch_size: int = 16, progress: bool = False):
        """Predict a media manifest (``docs/features.md``; ``label`` / ``split`` optional) through the extractors
        the bundle records: a :class:`~corekd.serving.media.ManifestPredictions` with one row per manifest row
        (a row with no modality extracted: ``"prediction": None`` and ``"error"``) and the extraction summary
        (failures, faceless utterances, cache use). Refuses a bundle whose features corekd's extractors did not make.
        """
        from corekd.serving.inputs import predict_stream
        from corekd.serving.media import ManifestPredictions, ManifestReader

        reader = ManifestReader(manifest, self.bundle, workers=workers, strict=strict, cache=cache, cache_dir=cache_dir,
                                device=self.text_device, progress=progress)
        rows: list[dict] = []
        predict_stream(self, reader, rows.append, batch_size=batch_size)
        return ManifestPredictions(rows=rows, summary=reader.summary)

    @property
    def text_device(self) -> str:
        """Where the text extractor runs for media input: the model's device under torch, else the CPU."""
        return str(self.device) if self.runtime.name == "torch" and self.device.type in ("cpu", "cuda") else "cpu"


def load(path: str | Path, *, device: str | torch.device = "cpu", runtime: str = "torch",
         onnx_path: str | Path | None = None) -> Predictor:
    """A :class:`Predictor` for the bundle folder ``path`` (``corekd export-bundle`` writes one).

    ``runtime="onnx"`` runs the model under onnxruntime: ``onnx_path``, else the bundle's own
    ``model.onnx`` if it has one, else an export made now into a temporary folder.
    """
    if runtime == "torch":
        from corekd.device import resolve_device

        device = resolve_device(str(device)) if str(device) == "auto" or isinstance(device, str) else device
    return Predictor(read_bundle(path, "cpu" if runtime == "onnx" else device), device=device, runtime=runtime,
                     onnx_path=onnx_path)
