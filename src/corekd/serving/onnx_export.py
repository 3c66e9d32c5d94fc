"""ONNX export of a bundle's model, and an onnxruntime runtime for :class:`~corekd.serving.predictor.Predictor`.

The exported graph is :class:`~corekd.serving.module.ServingModule`: inputs ``mask`` [B, U, M]
bool, ``speakers`` [B, U] int64, ``lengths`` [B] int64 and one ``[B, U, D_m]`` float32 input per
modality (named ``l``, ``a``, ``v``), except that a modality the model reads frame by frame (a
``sequence`` modality, ``sequence_encoder`` conv / transformer / none) has two inputs instead:
``<m>_frames`` [B, U, F_m, D_m] float32 and ``<m>_frame_mask`` [B, U, F_m] bool; output
``probabilities`` [B, U, C] (regression: ``value`` [B, U, 1]). B (dialogues), U (utterances) and
each F_m (frames) are dynamic; padded positions (beyond ``lengths``, or beyond an utterance's
frames) are zeros that never reach a real utterance (the GRU context reverses each real prefix by
an index gather, which the graph computes from ``lengths``; the sequence encoder gathers the
utterances that have frames with NonZero and scatters their states back).

Exporter: PyTorch's TorchScript-based ``torch.onnx.export(..., dynamo=False)`` (tracing). Tracing
records the shape arithmetic as graph operations, so the dynamic axes hold; the parity test runs
several dialogue lengths, batch sizes and missing patterns against PyTorch. The opset is
:data:`OPSET`, written into the model's metadata (``corekd.opset``) and the sidecar
``<file>.json`` together with the labels, modalities and dims.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

from corekd.errors import CorekdError
from corekd.files import atomic_write
from corekd.serving.bundle import Bundle
from corekd.serving.module import ServingModule, input_names
from corekd.version import __version__

OPSET = 17
BUNDLE_ONNX = "model.onnx"  # a bundle's own ONNX file, used by `--runtime onnx` when present


def output_name(task: str) -> str:
    return "probabilities" if task == "classification" else "value"


def check_exportable(module: ServingModule, bundle: Bundle) -> None:
    """Refuse a model whose graph would not hold at other shapes than the export's (a :class:`CorekdError` naming the op).

    The transformer sequence encoder (``sequence_encoder: transformer`` with ``sequence_layers`` > 0)
    runs ``torch.nn.MultiheadAttention`` (inside ``nn.TransformerEncoderLayer``) over the frames of
    the utterances that have some; its head split reshapes to ``[frames, rows * heads, head_dim]``
    with the product computed in Python, which the TorchScript-based exporter records as a constant:
    the graph would fail (a ``Reshape`` node) at any other frame or utterance count.
    """
    for m in module.frame_modalities:
        encoder = module.model.encoders[m]
        if getattr(encoder, "kind", None) == "transformer" and len(cast(nn.ModuleList, encoder.blocks)):
            raise CorekdError(
                f"this model reads modality '{m}' with the transformer sequence encoder, whose "
                "torch.nn.MultiheadAttention (in nn.TransformerEncoderLayer) does not export with dynamic shapes: "
                "the TorchScript-based exporter records its head reshape (frames, rows x heads, head dim) as a "
                "constant, so the graph would fail at any other frame or utterance count. Serve it with the torch "
                "runtime (corekd predict/serve --runtime torch), or train with sequence_encoder conv or none to export",
                path=bundle.path / "model.json",
                field="model.sequence_encoder",
            )


def export_onnx(bundle: Bundle, out: str | Path, *, opset: int = OPSET) -> Path:
    """Write ``out`` (the ONNX graph) and ``out.json`` (the sidecar); returns ``out``."""
    import onnx

    out = Path(out)
    if bundle.is_ensemble:
        raise CorekdError(
            f"an ensemble bundle ({len(bundle.members)} members) has no one graph to export; the torch runtime "
            "serves ensembles (corekd predict/serve --runtime torch), and each member's folder "
            f"({bundle.meta['members'][0]['path']}, ...) is a single-model bundle that exports",
            path=bundle.path / "model.json",
            field="bundle.kind",
        )
    if out.is_dir():
        raise CorekdError("expected a file name (e.g. student.onnx), got a folder", path=out, field="--out")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = bundle.model.to("cpu").eval()
    module = ServingModule(model, bundle.task).eval()
    check_exportable(module, bundle)
    mods = list(model.modalities)
    names = module.input_names
    b, u, f = 2, 5, 4  # example shapes; every one of these axes is exported as dynamic
    frames_shown = torch.arange(f)[None, None, :] < torch.tensor([[1, 4, 2, 3, 1], [2, 1, 4, 1, 3]])[..., None]
    example = [
        torch.ones(b, u, len(mods), dtype=torch.bool),
        torch.zeros(b, u, dtype=torch.long),
        torch.tensor([u, u - 2]),
    ]
    for m in mods:
        if m in module.frame_modalities:
            example += [torch.randn(b, u, f, model.dims[m]), frames_shown]
        else:
            example.append(torch.zeros(b, u, model.dims[m]))
    output = output_name(bundle.task)
    dynamic = {n: {0: "dialogues", 1: "utterances"} for n in names}
    dynamic["lengths"] = {0: "dialogues"}
    for m in module.frame_modalities:
        dynamic[f"{m}_frames"] = dynamic[f"{m}_frame_mask"] = {0: "dialogues", 1: "utterances", 2: f"{m}_frames"}
    dynamic[output] = {0: "dialogues", 1: "utterances"}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes; parity is tested instead
        raw = Path(tmp) / "model.onnx"
        torch.onnx.export(
            module,
            tuple(example),
            str(raw),
            input_names=names,
            output_names=[output],
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
        )
        graph = onnx.load(str(raw))
    sidecar = {
        "format": "corekd-onnx",
        "corekd_version": __version__,
        "opset": opset,
        "torch": torch.__version__,
        "exporter": "torch.onnx.export (TorchScript-based, dynamo=False)",
        "task": bundle.task,
        "labels": bundle.labels,
        "output": output,
        "inputs": {
            "mask": "[dialogues, utterances, M] bool, modality order " + ",".join(mods),
            "speakers": "[dialogues, utterances] int64, speaker index within the dialogue (order of first turn)",
            "lengths": "[dialogues] int64, real utterances (the rest is padding)",
            **{
                m: f"[dialogues, utterances, {model.dims[m]}] float32, raw features (standardised inside)"
                for m in mods
                if m not in module.frame_modalities
            },
            **{
                k: v
                for m in module.frame_modalities
                for k, v in (
                    (
                        f"{m}_frames",
                        f"[dialogues, utterances, {m}_frames, {model.dims[m]}] float32, raw frames "
                        "(standardised inside), zeros beyond each utterance's frames",
                    ),
                    (
                        f"{m}_frame_mask",
                        f"[dialogues, utterances, {m}_frames] bool, True on an utterance's real frames",
                    ),
                )
            },
        },
        "frame_modalities": list(module.frame_modalities),
        "modalities": {m: bundle.modalities[m] for m in mods},
        "source": bundle.meta.get("source", {}),
    }
    for key, value in (
        ("corekd.opset", str(opset)),
        ("corekd.version", __version__),
        ("corekd.task", bundle.task),
        ("corekd.labels", json.dumps(bundle.labels)),
        ("corekd.modalities", json.dumps(mods)),
    ):
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    graph.producer_name = "corekd"
    atomic_write(out, lambda p: onnx.save(graph, str(p)))
    atomic_write(sidecar_path(out), lambda p: Path(p).write_text(json.dumps(sidecar, indent=2), encoding="utf-8"))
    return out


def sidecar_path(onnx_path: str | Path) -> Path:
    return Path(f"{onnx_path}.json")


class OnnxRuntime:
    """Runs an exported graph with onnxruntime (CPU); takes the same arrays as the torch runtime."""

    name = "onnx"

    def __init__(self, bundle: Bundle, onnx_path: str | Path | None = None):
        import onnx
        import onnxruntime as ort

        self._tmp = None
        if onnx_path is None and (bundle.path / BUNDLE_ONNX).is_file():
            onnx_path = bundle.path / BUNDLE_ONNX
        if onnx_path is None:  # no ONNX file yet: export one for this session
            self._tmp = tempfile.TemporaryDirectory()
            onnx_path = export_onnx(bundle, Path(self._tmp.name) / BUNDLE_ONNX)
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise CorekdError("ONNX file not found", path=onnx_path)
        meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
        mods = json.loads(meta.get("corekd.modalities", "null") or "null")
        if mods != list(bundle.dims) or meta.get("corekd.task") != bundle.task:
            raise CorekdError(
                f"this ONNX file was exported for modalities {mods} ({meta.get('corekd.task')}), the bundle "
                f"has {list(bundle.dims)} ({bundle.task}); export it again with `corekd export`",
                path=onnx_path,
            )
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        expected = input_names(bundle.modalities)
        # a model that does not read speakers (model.speaker_aware: false) exports without that input
        if self.inputs != expected and self.inputs != [n for n in expected if n != "speakers"]:
            raise CorekdError(
                f"this ONNX file takes inputs {self.inputs}, the bundle's model takes {expected} (a model "
                "that reads frames takes <m>_frames and <m>_frame_mask); export it again with "
                "`corekd export`",
                path=onnx_path,
            )
        self.path = onnx_path

    def __call__(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {n: arrays[n] for n in self.inputs})[0]
