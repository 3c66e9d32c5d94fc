"""Predict with a bundle: dialogues in (any modality may be missing on any utterance), per-utterance outputs out.

Dialogues are mappings (:mod:`corekd.serving.dialogue` says what they hold and how a modality's frames
are read); they are checked (:func:`~corekd.serving.dialogue.parse_dialogue`, then :meth:`Predictor.check`),
padded (:func:`~corekd.serving.dialogue.encode`) and run by a runtime: :class:`TorchRuntime` (the
:class:`~corekd.serving.module.ServingModule` under PyTorch) or :class:`~corekd.serving.onnx_export.OnnxRuntime`
(its ONNX export under onnxruntime), so both runtimes compute the same function. This module is the facade of
the serving package: it re-exports the dialogue and module names callers import from here.

No NaN leaves the predictor. Inputs are standardised as in training (the bundle's train-split
mean and std) and a value whose z-score is not finite or beyond :data:`Z_LIMIT` is refused,
naming the field: no training value is that far out (with n training observations every
training z-score is within sqrt(n - 1)), and values of ~1e18 standard deviations overflow float32
inside the model, where torch and onnxruntime then give different answers (NaN, or another finite
one). An output that is not finite (from any input or weight) is a :class:`CorekdError` naming
the dialogue, under either runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from corekd.device import resolve_device
from corekd.errors import CorekdError
from corekd.serving.bundle import Bundle, read_bundle
from corekd.serving.dialogue import (
    ID_KEYS,
    DialogueInput,
    encode,
    modality_value,
    parse_dialogue,
    reads_frames,
)
from corekd.serving.inputs import predict_stream
from corekd.serving.media import ManifestPredictions, ManifestReader
from corekd.serving.module import EnsembleModule, ServingModule, input_names
from corekd.serving.onnx_export import OnnxRuntime

Z_LIMIT = 1e9  # the largest |standardised value| accepted (see the module docstring)

__all__ = [
    "ID_KEYS",
    "Z_LIMIT",
    "DialogueInput",
    "EnsembleModule",
    "EnsembleRuntime",
    "Predictor",
    "ServingModule",
    "TorchRuntime",
    "encode",
    "input_names",
    "load",
    "modality_value",
    "parse_dialogue",
    "reads_frames",
]


class TorchRuntime:
    name = "torch"

    def __init__(self, bundle: Bundle, device: torch.device):
        self.device = device
        self.module = ServingModule(bundle.model.to(device), bundle.task).eval()

    def __call__(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out = self.module(*(torch.from_numpy(arrays[n]).to(self.device) for n in self.module.input_names))
            return out.float().cpu().numpy()


class EnsembleRuntime:
    """An ensemble bundle's members under PyTorch (:class:`~corekd.serving.module.EnsembleModule`): ``[K, B, U, C]``."""

    name = "torch"

    def __init__(self, bundle: Bundle, device: torch.device):
        self.device = device
        self.module = EnsembleModule([model.to(device) for model in bundle.models], bundle.task)

    def __call__(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out = self.module(*(torch.from_numpy(arrays[n]).to(self.device) for n in self.module.input_names))
            return out.float().cpu().numpy()


class Predictor:
    """A loaded bundle that predicts; thread-safe for concurrent calls (the model is only read).

    An ensemble bundle's members answer together (:class:`EnsembleRuntime`): each row gives the mean of their
    outputs, its ``spread`` (the std over the members, ddof 0) and the number of ``members``."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        device: str | torch.device = "cpu",
        runtime: str = "torch",
        onnx_path: str | Path | None = None,
    ):
        self.bundle = bundle
        self.device = torch.device(device)
        self.runtime: TorchRuntime | EnsembleRuntime | OnnxRuntime
        if runtime not in ("torch", "onnx"):
            raise CorekdError(f"expected torch or onnx, got '{runtime}'", field="--runtime")
        if runtime == "onnx" and bundle.is_ensemble:
            raise CorekdError(
                f"{bundle.path} is an ensemble bundle ({len(bundle.members)} members); the onnx runtime runs one "
                "model's graph: the torch runtime serves ensembles (--runtime torch), or give one member's folder "
                f"({bundle.meta['members'][0]['path']}) for onnx",
                field="--runtime",
            )
        if runtime == "onnx":
            self.runtime = OnnxRuntime(bundle, onnx_path)
        elif bundle.is_ensemble:
            self.runtime = EnsembleRuntime(bundle, self.device)
        else:
            self.runtime = TorchRuntime(bundle, self.device)
        # per model (an ensemble: per member), m -> (mean [D_m], std [D_m]) float32: the training standardisation,
        # to check inputs against
        self.member_statistics = [
            {
                m: (mean.detach().cpu().numpy(), std.detach().cpu().numpy())
                for m, (mean, std) in model.standardizer.statistics().items()
            }
            for model in bundle.models
        ]
        self.statistics = self.member_statistics[0]

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
    def members(self) -> int:
        """How many models answer: an ensemble bundle's members, else 1."""
        return len(self.bundle.members) or 1

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
        at = lambda f: f"{where}: {f}" if where else f  # noqa: E731
        for m, rows in dialogue.features.items():
            given = [(t, np.atleast_2d(x)) for t, x in enumerate(rows) if x is not None]  # [1, D] or frames [F, D]
            if not given:
                continue
            x = np.concatenate([v for _, v in given])  # [R, D]: every given vector or frame of m
            for statistics in self.member_statistics:  # an ensemble: every member's standardisation
                mean, std = statistics[m]
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    z = (x - mean) / std  # float32, as the model computes it
                bad = ~(np.abs(z) <= Z_LIMIT)  # NaN included
                if bad.any():
                    break
            if not bad.any():
                continue
            r, j = (int(i) for i in np.argwhere(bad)[0])
            ends = np.cumsum([len(v) for _, v in given])  # [n]
            k = int(np.searchsorted(ends, r, side="right"))
            t, frame = given[k][0], r - (int(ends[k - 1]) if k else 0)
            row = rows[t]
            assert row is not None  # t indexes a given value
            index = f"frame {frame}, index {j}" if row.ndim == 2 else f"index {j}"
            size = "overflows float32" if not np.isfinite(z[r, j]) else f"is {float(z[r, j]):.3g}"
            raise CorekdError(
                f"value {float(x[r, j]):.6g} at {index} is too far from the training data: standardised with the "
                f"training mean and std its z-score {size}; expected |z| <= {Z_LIMIT:.0e}",
                field=at(f"utterances[{t}].{m}"),
            )
        return dialogue

    def value_bounds(self) -> dict[str, float]:
        """Per modality, the largest |value| that :meth:`check` accepts in every column (what the request schema states):
        ``min_j (Z_LIMIT * std_j - |mean_j|)``, a hair inside it (float32 rounding), at most float32's largest."""
        out = {}
        for m in self.statistics:
            rooms = [
                Z_LIMIT * np.asarray(s[m][1], dtype=np.float64) - np.abs(np.asarray(s[m][0], dtype=np.float64))
                for s in self.member_statistics
            ]  # [D] per model (an ensemble: every member's, the tightest counts)
            bound: Any = min(np.finfo(np.float32).max, max(0.0, min(float(r.min()) for r in rooms) * (1 - 1e-6)))
            out[m] = float(bound)
        return out

    def self_check(self) -> str | None:
        """None if the model answers a dialogue of training means (one utterance, every modality), else why not."""
        probe = DialogueInput(
            id="self-check",
            utterance_ids=["0"],
            speakers=["A"],
            features={
                m: [mean[None] if reads_frames(self.modalities[m]) else mean]
                for m, (mean, _) in self.statistics.items()
            },
        )
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

        An ensemble bundle's rows give the members' mean (``prediction``: the argmax of the mean probabilities,
        regression the mean value) and, after ``probabilities`` (regression: ``prediction``), ``"spread"``: the std
        over the members (ddof 0; per label for classification, one number for regression) and ``"members"``: K.

        A :class:`DialogueInput`'s ``skipped`` utterances (no modality) get, in their place,
        ``{"dialogue_id", "utterance_id", "prediction": None, "probabilities": None (classification),
        "modalities": [], "error": reason}`` (an ensemble's: ``"spread": None`` and ``"members"`` too); the model
        runs on the dialogue without them.
        """
        parsed = [
            self.check(d, f"dialogue '{d.id}'")
            if isinstance(d, DialogueInput)
            else self.parse(d, f"[{i}]" if len(dialogues) > 1 else "")
            for i, d in enumerate(dialogues)
        ]
        if not parsed:
            return []
        present = [d for d in parsed if len(d)]  # a dialogue whose every utterance was skipped has nothing to run
        # [B, U, C]; with no dialogue to run, an empty batch (nothing reads it: only present dialogues have rows)
        ensemble = self.bundle.is_ensemble
        spread: np.ndarray | None = None
        if not present:
            out = np.zeros((0, 0, 0), np.float32)
        elif ensemble:
            each = self.runtime(encode(present, self.bundle.dims, self.frame_modalities)).astype(np.float64)
            out, spread = each.mean(0), each.std(0)  # [B, U, C] each: the members' mean and population std
        else:
            out = self.runtime(encode(present, self.bundle.dims, self.frame_modalities))
        for i, d in enumerate(present):
            bad = ~np.isfinite(out[i, : len(d)]).all(-1)  # [U_i]
            if spread is not None:
                bad |= ~np.isfinite(spread[i, : len(d)]).all(-1)
            if bad.any():
                t = int(np.argmax(bad))
                raise CorekdError(
                    f"the model's output for utterance '{d.utterance_ids[t]}' is not finite (NaN/inf) under "
                    f"{self.runtime.name}; the model cannot answer this dialogue",
                    field=f"dialogue '{d.id}'",
                )
        results = []
        for d in parsed:
            i = next((k for k, p in enumerate(present) if p is d), -1)
            rows: list[dict[str, Any]] = []
            for t in range(len(d)):
                row: dict[str, Any] = {"dialogue_id": d.id, "utterance_id": d.utterance_ids[t]}
                if self.task == "classification":
                    p = out[i, t]
                    row["prediction"] = self.labels[int(np.argmax(p))]
                    row["probabilities"] = {name: float(v) for name, v in zip(self.labels, p)}
                    if spread is not None:
                        row["spread"] = {name: float(v) for name, v in zip(self.labels, spread[i, t])}
                else:
                    row["prediction"] = float(out[i, t, 0])
                    if spread is not None:
                        row["spread"] = float(spread[i, t, 0])
                if ensemble:
                    row["members"] = self.members
                row["modalities"] = d.observed(t)
                rows.append(row)
            for pos, uid, reason in sorted(d.skipped):
                empty: dict[str, Any] = {"probabilities": None} if self.task == "classification" else {}
                if ensemble:
                    empty.update(spread=None, members=self.members)
                rows.insert(
                    pos,
                    {
                        "dialogue_id": d.id,
                        "utterance_id": uid,
                        "prediction": None,
                        **empty,
                        "modalities": [],
                        "error": reason,
                    },
                )
            results.append(rows)
        return results

    def predict_manifest(
        self,
        manifest: str | Path,
        *,
        workers: int = 1,
        strict: bool = False,
        cache: bool = True,
        cache_dir: str | Path | None = None,
        batch_size: int = 16,
        progress: bool = False,
    ):
        """Predict a media manifest (``docs/features.md``; ``label`` / ``split`` optional) through the extractors
        the bundle records: a :class:`~corekd.serving.media.ManifestPredictions` with one row per manifest row
        (a row with no modality extracted: ``"prediction": None`` and ``"error"``) and the extraction summary
        (failures, faceless utterances, cache use). Refuses a bundle whose features corekd's extractors did not make.
        """
        reader = ManifestReader(
            manifest,
            self.bundle,
            workers=workers,
            strict=strict,
            cache=cache,
            cache_dir=cache_dir,
            device=self.text_device,
            progress=progress,
        )
        rows: list[dict] = []
        predict_stream(self, reader, rows.append, batch_size=batch_size)
        return ManifestPredictions(rows=rows, summary=reader.summary)

    @property
    def text_device(self) -> str:
        """Where the text extractor runs for media input: the model's device under torch, else the CPU."""
        return str(self.device) if self.runtime.name == "torch" and self.device.type in ("cpu", "cuda") else "cpu"


def load(
    path: str | Path, *, device: str | torch.device = "cpu", runtime: str = "torch", onnx_path: str | Path | None = None
) -> Predictor:
    """A :class:`Predictor` for the bundle folder ``path`` (``corekd export-bundle`` writes one).

    ``runtime="onnx"`` runs the model under onnxruntime: ``onnx_path``, else the bundle's own
    ``model.onnx`` if it has one, else an export made now into a temporary folder.
    """
    if runtime == "torch":
        device = resolve_device(str(device)) if str(device) == "auto" or isinstance(device, str) else device
    return Predictor(
        read_bundle(path, "cpu" if runtime == "onnx" else device), device=device, runtime=runtime, onnx_path=onnx_path
    )
