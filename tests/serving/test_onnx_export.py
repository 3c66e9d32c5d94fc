"""`corekd export`: the ONNX graph under onnxruntime computes what PyTorch computes, at any length and missing pattern."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

import corekd
from corekd.cli import app
from corekd.models.model import ModelConfig
from corekd.serving.bundle import bundle_checkpoint, read_bundle
from corekd.serving.onnx_export import OPSET, export_onnx
from corekd.serving.predictor import ServingModule
from corekd.training import init_model, save_checkpoint

runner = CliRunner()
DIMS = {"l": 12, "a": 10, "v": 16}


def random_inputs(gen, b, u, missing):
    """Padded random dialogues: lengths in 1..u (the first is u), modalities dropped with probability ``missing``."""
    lengths = torch.randint(1, u + 1, (b,), generator=gen)
    lengths[0] = u
    mask = torch.rand(b, u, 3, generator=gen) >= missing
    mask[..., 0] |= ~mask.any(-1)
    speakers = torch.randint(0, 3, (b, u), generator=gen)
    feats = [torch.randn(b, u, d, generator=gen) * 3 + 1 for d in DIMS.values()]
    return (mask, speakers, lengths, *feats)


def parity(bundle, path, cases):
    """Max |onnxruntime - torch| over the real utterances of every case."""
    module = ServingModule(bundle.model, bundle.task).eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    all_names = ["mask", "speakers", "lengths", "l", "a", "v"]
    assert names == [n for n in all_names if n != "speakers" or bundle.model.cfg.speaker_aware]  # unread: left out
    worst = 0.0
    for inputs in cases:
        with torch.inference_mode():
            ref = module(*inputs).numpy()
        got = session.run(None, {n: x.numpy() for n, x in zip(all_names, inputs) if n in names})[0]
        assert got.shape == ref.shape
        real = np.arange(ref.shape[1])[None, :] < inputs[2].numpy()[:, None]
        worst = max(worst, float(np.abs(got - ref)[real].max()))
    return worst


def test_cli_export_parity_and_metadata(tiny_run_bundle, tmp_path):
    bundle_dir = tiny_run_bundle[1]
    out = tmp_path / "student.onnx"
    result = runner.invoke(app, ["export", str(bundle_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    graph = onnx.load(str(out))
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["corekd.opset"] == str(OPSET) and json.loads(meta["corekd.labels"]) == read_bundle(bundle_dir).labels
    assert any(o.domain in ("", "ai.onnx") and o.version == OPSET for o in graph.opset_import)
    sidecar = json.loads((tmp_path / "student.onnx.json").read_text())
    assert (
        sidecar["opset"] == OPSET and sidecar["output"] == "probabilities" and set(sidecar["modalities"]) == set(DIMS)
    )
    # several lengths (1 .. 60 utterances), single dialogues and padded batches, light to heavy missingness
    gen = torch.Generator().manual_seed(0)
    cases = [random_inputs(gen, 1, u, p) for u, p in ((1, 0.0), (2, 0.3), (7, 0.5), (33, 0.7), (60, 0.2))]
    cases += [random_inputs(gen, b, u, p) for b, u, p in ((3, 9, 0.4), (5, 24, 0.6))]
    assert parity(read_bundle(bundle_dir), out, cases) <= 1e-4


@pytest.mark.parametrize(
    "model",
    [
        {"context": "attention", "context_over": "modality", "fusion": "observed_attention"},
        {"context": "gru", "context_over": "modality", "fusion": "token", "context_layers": 2},
        {"modality_state": "context", "vector_encoder": "mlp", "input_clip": 3.0},
        {"modality_state": "crossmodal", "context_residual": False, "speaker_aware": False},
    ],
)
def test_other_architectures_export_with_parity(tmp_path, model):
    m = init_model(ModelConfig(hidden=16, heads=2, **model), DIMS, 4, 0, "student")
    gen = torch.Generator().manual_seed(1)
    m.set_input_statistics(
        {k: (torch.randn(d, generator=gen), torch.rand(d, generator=gen) + 0.5) for k, d in DIMS.items()}
    )
    save_checkpoint(m, tmp_path / "ckpt", {"labels": ["w", "x", "y", "z"], "task": "classification"})
    bundle_dir = bundle_checkpoint(tmp_path / "ckpt", tmp_path / "bundle")
    bundle = read_bundle(bundle_dir)
    path = export_onnx(bundle, tmp_path / "m.onnx")
    cases = [random_inputs(gen, b, u, p) for b, u, p in ((1, 1, 0.0), (1, 13, 0.5), (4, 20, 0.3))]
    assert parity(bundle, path, cases) <= 1e-4
    dialogue = {
        "dialogue_id": "d",
        "utterances": [{"speaker": "A", "l": [0.5] * 12}, {"speaker": "B", "a": [1.0] * 10}],
    }
    rows = corekd.load(bundle_dir, runtime="onnx", onnx_path=path).predict(dialogue)  # also without a speakers input
    assert len(rows) == 2


def test_onnx_runtime_predictor_matches_torch(tiny_run_bundle, tiny_test_dialogues, tmp_path):
    bundle_dir = tiny_run_bundle[1]
    torch_p, onnx_p = corekd.load(bundle_dir), corekd.load(bundle_dir, runtime="onnx")
    assert onnx_p.describe()["runtime"] == "onnx"
    dialogues = [dict(d) for d in tiny_test_dialogues]
    dialogues[0]["utterances"] = [
        {k: v for k, v in u.items() if k not in ("l", "v")} for u in dialogues[0]["utterances"]
    ]
    a, b = torch_p.predict_many(dialogues), onnx_p.predict_many(dialogues)
    diff = max(
        abs(x["probabilities"][k] - y["probabilities"][k])
        for da, db in zip(a, b)
        for x, y in zip(da, db)
        for k in x["probabilities"]
    )
    assert diff <= 1e-4 and [x["prediction"] for d in a for x in d] == [y["prediction"] for d in b for y in d]
    # a graph exported for another model is refused
    m = init_model(ModelConfig(hidden=16, heads=2), {"l": 12, "a": 10}, 3, 0, "student")
    save_checkpoint(m, tmp_path / "c", {"labels": ["x", "y", "z"], "task": "classification"})
    other = export_onnx(read_bundle(bundle_checkpoint(tmp_path / "c", tmp_path / "b")), tmp_path / "other.onnx")
    with pytest.raises(corekd.errors.CorekdError, match="exported for modalities"):
        corekd.load(bundle_dir, runtime="onnx", onnx_path=other)


def test_regression_bundle_predicts_values_under_both_runtimes(tmp_path):
    m = init_model(ModelConfig(hidden=16, heads=2), DIMS, 1, 0, "student")
    save_checkpoint(m, tmp_path / "ckpt", {"labels": ["negative", "non-negative"], "task": "regression"})
    bundle_dir = bundle_checkpoint(tmp_path / "ckpt", tmp_path / "bundle")
    dialogue = {"dialogue_id": "d", "utterances": [{"l": [0.5] * 12}, {"a": [1.0] * 10, "v": [-1.0] * 16}]}
    rows = corekd.load(bundle_dir).predict(dialogue)
    assert all(isinstance(r["prediction"], float) and "probabilities" not in r for r in rows)
    with torch.inference_mode():
        module = ServingModule(read_bundle(bundle_dir).model, "regression")
        x = (
            torch.tensor([[[True, False, False], [False, True, True]]]),
            torch.zeros(1, 2, dtype=torch.long),
            torch.tensor([2]),
            torch.full((1, 2, 12), 0.5) * torch.tensor([1.0, 0.0])[None, :, None],
            torch.ones(1, 2, 10) * torch.tensor([0.0, 1.0])[None, :, None],
            -torch.ones(1, 2, 16) * torch.tensor([0.0, 1.0])[None, :, None],
        )
        assert np.allclose([r["prediction"] for r in rows], module(*x)[0, :, 0].numpy(), atol=1e-6)
    onnx_rows = corekd.load(bundle_dir, runtime="onnx").predict(dialogue)
    assert max(abs(a["prediction"] - b["prediction"]) for a, b in zip(rows, onnx_rows)) <= 1e-4


def test_torch_and_onnx_agree_on_values_far_from_the_training_data(tiny_run_bundle):
    """Inputs are standardised as in training under both runtimes: up to Z_LIMIT standard deviations out both answer
    alike; beyond it (1e20 gave NaN under torch and another finite answer under onnxruntime) both refuse the field."""
    from corekd.serving.predictor import Z_LIMIT

    torch_p, onnx_p = corekd.load(tiny_run_bundle[1]), corekd.load(tiny_run_bundle[1], runtime="onnx")
    mean, std = (float(x[3]) for x in torch_p.statistics["l"])

    def dialogue(value):
        far = [mean] * 12
        far[3] = value
        return {"dialogue_id": "d", "utterances": [{"l": [0.0] * 12, "a": [0.5] * 10}, {"l": far}]}

    for z in (1e3, 1e6, 0.99 * Z_LIMIT, -0.99 * Z_LIMIT):
        a, b = torch_p.predict(dialogue(mean + z * std)), onnx_p.predict(dialogue(mean + z * std))
        assert (
            max(abs(x["probabilities"][k] - y["probabilities"][k]) for x, y in zip(a, b) for k in x["probabilities"])
            <= 1e-4
        )
    for value in (1e20, -1e20, 3e38):
        for predictor in (torch_p, onnx_p):
            with pytest.raises(corekd.errors.CorekdError, match="too far from the training data") as err:
                predictor.predict(dialogue(value))
            assert err.value.field == "utterances[1].l"
