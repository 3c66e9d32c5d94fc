"""Checkpoints and bundles read as untrusted artefacts: a truncated, damaged or mistyped file is one line naming it
(exit 2, nothing written), the weights' checksum is verified, sizes are checked against the weights before anything
is allocated, and a NaN/inf weight is refused at load."""

import hashlib
import json
import shutil

import pytest
import yaml
from typer.testing import CliRunner

import corekd
from corekd.cli import app
from corekd.errors import CorekdError
from corekd.serving.bundle import read_bundle
from corekd.training import load_checkpoint
from helpers import edit_weights, quick_config

runner = CliRunner()


def _one_line(result) -> str:
    """The one error line of a refused command (a run may print its corpus warnings first)."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and all(line.startswith(("error: ", "warning: ")) for line in lines), result.output
    return errors[0]


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # inside the last tensor's data: the header still parses
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated weights": ("model.safetensors", _truncate),
    "one flipped byte in the weights": ("model.safetensors", _flip_last_byte),
    "truncated model.json": ("model.json", _truncate),
}


def _edit_json(path, fn):
    info = json.loads(path.read_text())
    fn(info)
    path.write_text(json.dumps(info))


@pytest.fixture(scope="module")
def kd_run(tmp_path_factory):
    """A finished run with a teacher (a resume reloads the teacher's checkpoint): (config file, run folder)."""
    root = tmp_path_factory.mktemp("kd")
    config = root / "cfg.yaml"
    config.write_text(
        yaml.safe_dump(
            quick_config(
                methods=[{"name": "vanilla_kd"}], evaluation={"batch_size": 8, "random_rates": [0.0], "analyses": False}
            )
        )
    )
    result = runner.invoke(app, ["run", str(config), "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    return config, root / "run"


def test_checkpoints_and_bundles_record_the_weights_checksum_and_older_ones_still_load(tiny_run_bundle, tmp_path):
    run_dir, bundle_dir = tiny_run_bundle
    for folder in (run_dir / "checkpoints/no_kd/seed0", bundle_dir):
        info = json.loads((folder / "model.json").read_text())
        assert info["weights_sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    older = tmp_path / "older"
    shutil.copytree(bundle_dir, older)
    _edit_json(older / "model.json", lambda i: i.pop("weights_sha256"))
    assert read_bundle(older).model.num_classes == 6


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_is_refused_by_resume_and_export_bundle_in_one_line(kd_run, tmp_path, damage):
    config, run_dir = kd_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    name, spoil = DAMAGE[damage]
    spoil(run / "checkpoints/teacher/seed0" / name)
    text = _one_line(
        runner.invoke(app, ["export-bundle", str(run), "--method", "teacher", "--out", str(tmp_path / "b")])
    )
    assert f"checkpoints/teacher/seed0/{name}:" in text
    assert not (tmp_path / "b").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "run"
    ]  # nothing half-written
    text = _one_line(runner.invoke(app, ["run", str(config), "--out", str(run), "--resume"]))
    assert f"checkpoints/teacher/seed0/{name}:" in text


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_bundle_stops_predict_and_serve_in_one_line(tiny_run_bundle, tmp_path, damage):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_run_bundle[1], bundle)
    name, spoil = DAMAGE[damage]
    spoil(bundle / name)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"dialogue_id": "d", "utterances": [{"l": [0.0] * 12}]}) + "\n")
    for command in (["predict", str(bundle), str(src)], ["serve", str(bundle), "--port", "1"]):
        assert f"bundle/{name}:" in _one_line(runner.invoke(app, command))


@pytest.mark.parametrize(
    "edit, field, message",
    [
        (lambda i: i.update(dims="l,a,v"), "dims", "valid dictionary"),
        (lambda i: i.update(dims=[12, 10, 16]), "dims", "valid dictionary"),
        (lambda i: i["dims"].update(l="12"), "dims.l", "valid integer"),
        (lambda i: i.pop("model"), "model", "required field is missing"),
        (lambda i: i.update(num_classes=-1), "num_classes", "greater than 0"),
        (lambda i: i["model"].update(hidden="wide"), "model.hidden", "valid integer"),
        (lambda i: i["bundle"].update(labels="happy"), "bundle.labels", "list of label names"),
    ],
)
def test_a_bundle_model_json_of_wrong_types_names_the_field(tiny_run_bundle, tmp_path, edit, field, message):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_run_bundle[1], bundle)
    _edit_json(bundle / "model.json", edit)
    with pytest.raises(CorekdError, match=message) as err:
        corekd.load(bundle)
    assert err.value.path.endswith("model.json") and err.value.field == field


def test_sizes_in_model_json_are_checked_against_the_weights_before_allocating(tiny_run_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_run_bundle[1], bundle)
    # 10^12 inputs and a 10^6-wide model: building either would allocate terabytes; the header says otherwise
    for edit, tensor in (
        (lambda i: i["dims"].update(l=10**12), "standardizer.mean_l"),
        (lambda i: i["model"].update(hidden=10**6), "stream_embed"),
    ):
        _edit_json(bundle / "model.json", lambda i: (edit(i), i.pop("weights_sha256", None)))
        with pytest.raises(CorekdError, match=r"do not fit .* there") as err:
            load_checkpoint(bundle)
        assert err.value.path.endswith("model.safetensors") and err.value.field == tensor
        shutil.copy(tiny_run_bundle[1] / "model.json", bundle / "model.json")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_weight_is_refused_at_load_naming_the_tensor(tiny_run_bundle, tmp_path, value):
    run_dir, bundle_dir = tiny_run_bundle
    bundle, checkpoint = tmp_path / "bundle", tmp_path / "ckpt"
    shutil.copytree(bundle_dir, bundle)
    shutil.copytree(run_dir / "checkpoints/no_kd/seed0", checkpoint)
    for folder in (bundle, checkpoint):
        edit_weights(folder, lambda w: w["head.weight"].view(-1).__setitem__(0, value))
    with pytest.raises(CorekdError, match=r"1 non-finite value") as err:
        load_checkpoint(checkpoint)
    assert err.value.path.endswith("model.safetensors") and err.value.field == "head.weight"
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"dialogue_id": "d", "utterances": [{"l": [0.0] * 12}]}) + "\n")
    text = _one_line(runner.invoke(app, ["predict", str(bundle), str(src)]))
    assert "bundle/model.safetensors: head.weight: 1 non-finite value" in text


def test_export_bundle_writes_nothing_when_the_read_back_fails(tiny_run_bundle, tmp_path, monkeypatch):
    import corekd.serving.bundle as bundle_module

    def fail(path, device="cpu"):
        raise CorekdError("read-back failed", path=path)

    monkeypatch.setattr(bundle_module, "read_bundle", fail)
    with pytest.raises(CorekdError, match="read-back failed"):
        bundle_module.export_bundle(tiny_run_bundle[0], "no_kd", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # no bundle folder, no temporary folder
