"""`corekd export` of the imputation students whose modules are part of the model (``mmin``'s imagination cascades,
``gcnet``'s dialogue graphs): onnxruntime computes what PyTorch computes, at several lengths and missing patterns."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

import corekd
from corekd.data.protocols import TrainingMissing
from corekd.methods import method_class
from corekd.methods.gcnet import GCNetModel
from corekd.methods.mmin import MMINModel
from corekd.models.model import ModelConfig
from corekd.serving.bundle import bundle_checkpoint, read_bundle
from corekd.serving.onnx_export import export_onnx
from corekd.serving.predictor import ServingModule
from corekd.training import init_model, save_checkpoint

DIMS = {"l": 12, "a": 10, "v": 16}


def _inputs(gen, b, u, missing):
    """Padded random dialogues (lengths 1..u, the first u), modalities dropped with probability ``missing``."""
    lengths = torch.randint(1, u + 1, (b,), generator=gen)
    lengths[0] = u
    mask = torch.rand(b, u, 3, generator=gen) >= missing
    mask[..., 0] |= ~mask.any(-1)
    speakers = torch.randint(0, 3, (b, u), generator=gen)
    return (mask, speakers, lengths, *[torch.randn(b, u, d, generator=gen) * 3 + 1 for d in DIMS.values()])


@pytest.mark.parametrize(
    "name,options,cls",
    [("mmin", {"blocks": 2, "block_hidden": [24, 8]}, MMINModel), ("gcnet", {"window_past": 2}, GCNetModel)],
)
def test_imputation_student_exports_with_parity(tmp_path, name, options, cls):
    method_cls = method_class(name)
    method = method_cls(method_cls.Options(**options), TrainingMissing())
    model = init_model(ModelConfig(hidden=16, heads=2), DIMS, 4, 0, "student", build=method.build_model)
    assert isinstance(model, cls)
    save_checkpoint(model, tmp_path / "ckpt", {"labels": ["w", "x", "y", "z"], "task": "classification"})
    bundle = read_bundle(bundle_checkpoint(tmp_path / "ckpt", tmp_path / "bundle"))
    assert isinstance(bundle.model, cls)
    path = export_onnx(bundle, tmp_path / "m.onnx")
    module = ServingModule(bundle.model, bundle.task).eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    all_names = ["mask", "speakers", "lengths", "l", "a", "v"]
    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for b, u, p in ((1, 1, 0.0), (1, 13, 0.5), (4, 20, 0.3), (3, 7, 0.7)):
        inputs = _inputs(gen, b, u, p)
        with torch.inference_mode():
            ref = module(*inputs).numpy()
        got = session.run(None, {n: x.numpy() for n, x in zip(all_names, inputs) if n in names})[0]
        real = np.arange(u)[None, :] < inputs[2].numpy()[:, None]
        worst = max(worst, float(np.abs(got - ref)[real].max()))
    assert worst <= 1e-4
    dialogue = {
        "dialogue_id": "d",
        "utterances": [{"speaker": "A", "l": [0.5] * 12}, {"speaker": "B", "a": [1.0] * 10}],
    }
    rows = corekd.load(tmp_path / "bundle", runtime="onnx", onnx_path=path).predict(dialogue)
    torch_rows = corekd.load(tmp_path / "bundle").predict(dialogue)
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in torch_rows]
