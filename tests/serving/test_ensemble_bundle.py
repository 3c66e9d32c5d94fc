"""Ensemble bundles: `corekd export-bundle RUN --method M --seeds all|S,S`, one stacked forward, mean and spread.

A one-epoch run of `no_kd` with two seeds is exported three ways: as an ensemble bundle (`--seeds all`) and as each
seed's own single-model bundle (`--seed 0`, `--seed 1`). The ensemble's probabilities must be the mean of the two
single bundles' predictions, its `spread` their population std, its prediction the argmax of the mean.
"""

from __future__ import annotations

import asyncio
import json
import shutil

import httpx
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import corekd
from corekd.cli import app
from corekd.errors import CorekdError
from corekd.models.model import ModelConfig
from corekd.serving.app import create_app
from corekd.serving.bundle import (
    BUNDLE_VERSION,
    ENSEMBLE_BUNDLE_VERSION,
    bundle_checkpoint,
    bundle_ensemble,
    export_ensemble_bundle,
    read_bundle,
)
from corekd.serving.schema import prediction_models
from corekd.training import init_model, save_checkpoint
from helpers import as_interchange, quick_config

runner = CliRunner()


def _line(result) -> str:
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    """A finished two-seed `no_kd` run; its ensemble bundle (`--seeds all`) and each seed's single-model bundle."""
    from corekd.config import validate_config
    from corekd.experiments import run

    root = tmp_path_factory.mktemp("serving-ensemble")
    cfg = quick_config(seeds=[0, 1], evaluation={"batch_size": 8, "random_rates": [0.0], "analyses": False})
    run(validate_config(cfg, "cfg.yaml"), root / "run")
    out = {"run": root / "run", "ensemble": root / "ensemble"}
    result = runner.invoke(
        app, ["export-bundle", str(root / "run"), "--method", "no_kd", "--seeds", "all", "--out", str(out["ensemble"])]
    )
    assert result.exit_code == 0, result.output
    assert "no_kd ensemble of 2 (seeds 0, 1)" in _line(result)
    for seed in (0, 1):
        out[seed] = root / f"seed{seed}"
        result = runner.invoke(
            app, ["export-bundle", str(root / "run"), "--method", "no_kd", "--seed", str(seed), "--out", str(out[seed])]
        )
        assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def masked_dialogues(tiny_corpus):
    """The tiny corpus's test dialogues with about 40 % of the modalities left out (at least one per utterance)."""
    gen = torch.Generator().manual_seed(3)
    out = []
    for d in tiny_corpus.split("test"):
        mask = (torch.rand((len(d.utterance_ids), 3), generator=gen) > 0.4).numpy() & d.available
        mask[~mask.any(-1)] = d.available[~mask.any(-1)]
        out.append(as_interchange(d, tiny_corpus, mask))
    return out


def test_the_bundle_records_an_ensemble_and_its_members_are_single_bundles(ensemble_run):
    root = ensemble_run["ensemble"]
    info = json.loads((root / "model.json").read_text())
    assert set(info) == {"bundle"}  # no model at the top: the members hold them
    b = info["bundle"]
    assert b["format"] == "corekd-bundle" and b["version"] == ENSEMBLE_BUNDLE_VERSION and b["kind"] == "ensemble"
    assert [(e["seed"], e["path"]) for e in b["members"]] == [(0, "members/seed0"), (1, "members/seed1")]
    assert b["source"]["variant"] == "no_kd" and b["source"]["seeds"] == [0, 1] and "seed" not in b["source"]
    for seed in (0, 1):
        member = root / f"members/seed{seed}"
        # the weights are the checkpoint's, byte for byte; model.json is that seed's single-model bundle's
        assert (member / "model.safetensors").read_bytes() == (
            ensemble_run["run"] / f"checkpoints/no_kd/seed{seed}/model.safetensors"
        ).read_bytes()
        mine, single = (json.loads((p / "model.json").read_text()) for p in (member, ensemble_run[seed]))
        for x in (mine, single):
            del x["bundle"]["created"]
        assert mine == single
        assert b["members"][seed]["weights_sha256"] == mine["weights_sha256"]
        assert not read_bundle(member).is_ensemble  # a member loads alone
    single = json.loads((ensemble_run[0] / "model.json").read_text())["bundle"]
    assert single["version"] == BUNDLE_VERSION == 1 and "kind" not in single  # single-model bundles unchanged
    assert b["modalities"] == single["modalities"] and b["labels"] == single["labels"] and b["task"] == single["task"]
    described = corekd.load(root).describe()
    assert described["ensemble"] == {"members": 2, "seeds": [0, 1]}
    assert described["standardization"] == "train-split z-scores"
    assert "ensemble" not in corekd.load(ensemble_run[0]).describe()


def test_ensemble_rows_are_the_members_mean_and_spread(ensemble_run, masked_dialogues, tiny_corpus):
    ensemble = corekd.load(ensemble_run["ensemble"])
    assert ensemble.runtime.module.stacked is not None  # one vmapped forward for both members
    labels = tiny_corpus.labels
    rows = [r for rs in ensemble.predict_many(masked_dialogues) for r in rs]
    each = []
    for seed in (0, 1):
        single = [r for rs in corekd.load(ensemble_run[seed]).predict_many(masked_dialogues) for r in rs]
        assert all("spread" not in r and "members" not in r for r in single)
        each.append(np.array([[r["probabilities"][k] for k in labels] for r in single]))
    members = np.stack(each)  # [2, n, C]
    probs = np.array([[r["probabilities"][k] for k in labels] for r in rows])
    spread = np.array([[r["spread"][k] for k in labels] for r in rows])
    assert len(rows) == members.shape[1]
    assert np.abs(probs - members.mean(0)).max() < 1e-5
    assert np.abs(spread - members.std(0)).max() < 1e-5  # population std (ddof 0)
    assert spread.max() > 1e-4  # two seeds do differ
    assert [r["prediction"] for r in rows] == [labels[int(i)] for i in probs.argmax(-1)]
    assert all(r["members"] == 2 for r in rows)
    assert list(rows[0]) == [
        "dialogue_id",
        "utterance_id",
        "prediction",
        "probabilities",
        "spread",
        "members",
        "modalities",
    ]
    # one dialogue alone = the same dialogue in the padded batch
    alone = ensemble.predict(masked_dialogues[1])
    batched = ensemble.predict_many(masked_dialogues)[1]
    assert max(abs(a["spread"][k] - b["spread"][k]) for a, b in zip(alone, batched) for k in labels) < 1e-6


def test_cli_refuses_bad_seed_choices_in_one_line(ensemble_run, tmp_path):
    run_dir = str(ensemble_run["run"])
    both = runner.invoke(
        app,
        ["export-bundle", run_dir, "--method", "no_kd", "--seed", "0", "--seeds", "all", "--out", str(tmp_path / "a")],
    )
    assert both.exit_code == 2 and "--seed" in both.output and "--seeds" in both.output
    assert len(both.output.strip().splitlines()) == 1 and both.output.startswith("error: ")
    unknown = runner.invoke(
        app, ["export-bundle", run_dir, "--method", "no_kd", "--seeds", "0,5", "--out", str(tmp_path / "b")]
    )
    assert unknown.exit_code == 2 and "seed 5" in _line(unknown) and "--seeds" in unknown.output
    for bad, says in (("0,x", "expected all or integers"), ("0,0", "seed 0 is given twice")):
        result = runner.invoke(
            app, ["export-bundle", run_dir, "--method", "no_kd", "--seeds", bad, "--out", str(tmp_path / "c")]
        )
        assert result.exit_code == 2 and says in _line(result), result.output
    assert not any(tmp_path.iterdir())  # nothing written
    # an unfinished seed: refused when named, left out of `all`
    partial = tmp_path / "run"
    shutil.copytree(ensemble_run["run"], partial)
    (partial / "checkpoints/no_kd/seed1/complete.json").unlink()
    named = runner.invoke(
        app, ["export-bundle", str(partial), "--method", "no_kd", "--seeds", "0,1", "--out", str(tmp_path / "d")]
    )
    assert named.exit_code == 2 and "seed 1 is not finished" in _line(named)
    every = runner.invoke(
        app, ["export-bundle", str(partial), "--method", "no_kd", "--seeds", "all", "--out", str(tmp_path / "e")]
    )
    assert every.exit_code == 0, every.output
    assert read_bundle(tmp_path / "e").seeds == [0]
    with pytest.raises(CorekdError, match="no model 'corekd'"):
        export_ensemble_bundle(partial, "corekd", tmp_path / "f")


def test_cli_predict_and_the_runtimes_on_an_ensemble(ensemble_run, masked_dialogues, tmp_path):
    bundle = str(ensemble_run["ensemble"])
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in masked_dialogues[:2]))
    out = tmp_path / "pred.jsonl"
    result = runner.invoke(app, ["predict", bundle, str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = [r for d in masked_dialogues[:2] for r in corekd.load(bundle).predict(d)]
    assert [r["utterance_id"] for r in rows] == [r["utterance_id"] for r in expected]
    assert all(r["members"] == 2 and set(r["spread"]) == set(r["probabilities"]) for r in rows)
    onnx = runner.invoke(app, ["predict", bundle, str(src), "--runtime", "onnx"])
    assert onnx.exit_code == 2 and "--runtime" in onnx.output and "torch runtime serves ensembles" in _line(onnx)
    assert len(onnx.output.strip().splitlines()) == 1
    export = runner.invoke(app, ["export", bundle, "--out", str(tmp_path / "m.onnx")])
    assert export.exit_code == 2 and "ensemble bundle" in _line(export) and not (tmp_path / "m.onnx").exists()


def _call(app_, method, url, **kwargs):
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_), base_url="http://test") as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(go())


def test_http_answers_carry_the_spread(ensemble_run, masked_dialogues):
    predictor = corekd.load(ensemble_run["ensemble"])
    service = create_app(predictor, parse_workers=0)
    assert _call(service, "GET", "/healthz").json() == {"status": "ok"}
    assert _call(service, "GET", "/v1/model").json()["ensemble"] == {"members": 2, "seeds": [0, 1]}
    body = {k: v for k, v in masked_dialogues[0].items() if k != "split"}
    body["utterances"] = [{k: v for k, v in u.items() if k != "label"} for u in body["utterances"]]
    answer = _call(service, "POST", "/v1/predict", json=body)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    _, model = prediction_models(predictor.task, predictor.labels)
    model.model_validate(got)  # the documented answer, spread included
    assert got["utterances"] == json.loads(json.dumps(predictor.predict(body)))
    assert all(set(r["spread"]) == set(predictor.labels) and r["members"] == 2 for r in got["utterances"])
    schema = _call(service, "GET", "/openapi.json").json()["components"]["schemas"]["PredictionRow"]
    assert "spread" in schema["properties"] and "spread" not in schema.get("required", [])


def _edited(root, tmp_path, name, fn, member="members/seed1"):
    copy = tmp_path / name
    shutil.copytree(root, copy)
    path = copy / member / "model.json" if member else copy / "model.json"
    info = json.loads(path.read_text())
    fn(info)
    path.write_text(json.dumps(info))
    return copy


def test_members_that_disagree_are_refused_naming_the_file(ensemble_run, tmp_path):
    root = ensemble_run["ensemble"]
    cases = [
        (
            "arch",
            lambda i: i["model"].update(dropout=0.5),
            "members/seed1/model.json: model.dropout",
            "one architecture",
        ),
        ("labels", lambda i: i["bundle"]["labels"].reverse(), "members/seed1/model.json: bundle.labels", "labels"),
        (
            "kind",
            lambda i: i["bundle"]["modalities"]["a"].update(kind="sequence"),
            "members/seed1/model.json: bundle.modalities",
            "modalities",
        ),
    ]
    for name, fn, where, says in cases:
        with pytest.raises(CorekdError, match=says) as err:
            read_bundle(_edited(root, tmp_path, name, fn))
        assert where in str(err.value), str(err.value)
        assert "\n" not in str(err.value)
    # a member folder swapped for another model's
    swapped = tmp_path / "swapped"
    shutil.copytree(root, swapped)
    shutil.rmtree(swapped / "members/seed1")
    shutil.copytree(ensemble_run[0], swapped / "members/seed1")  # a whole, valid bundle: seed 0's
    with pytest.raises(CorekdError, match="SHA-256 .* that the ensemble's model.json records") as err:
        read_bundle(swapped)
    assert "members/seed1/model.json: weights_sha256" in str(err.value)

    def escape(info):
        info["bundle"]["members"][1]["path"] = "../seed1"

    with pytest.raises(CorekdError, match="a folder inside the bundle") as err:
        read_bundle(_edited(root, tmp_path, "escape", escape, member=None))
    assert err.value.field == "bundle.members[1].path"

    def itself(info):
        info["bundle"]["members"][1]["path"] = "."

    with pytest.raises(CorekdError, match="a folder inside the bundle"):
        read_bundle(_edited(root, tmp_path, "itself", itself, member=None))

    def nested(info):
        info["bundle"]["kind"] = "ensemble"

    with pytest.raises(CorekdError, match="is one model") as err:
        read_bundle(_edited(root, tmp_path, "nested", nested))
    assert err.value.field == "bundle.kind"
    shutil.rmtree(missing := _edited(root, tmp_path, "missing", lambda i: None) / "members/seed0")
    with pytest.raises(CorekdError, match="member 0 .* is missing"):
        read_bundle(missing.parent.parent)
    # read as one model (as a reader that predates ensembles reads it), an ensemble bundle is refused by its version
    with pytest.raises(CorekdError, match="format version 2 .*cannot be read .*an ensemble bundle's") as err:
        read_bundle(_edited(root, tmp_path, "older", lambda i: i["bundle"].pop("kind"), member=None))
    assert err.value.field == "bundle.version"


def test_a_regression_ensemble_gives_the_mean_value_and_its_std(tmp_path):
    checkpoints = {}
    for seed in (0, 1):
        model = init_model(ModelConfig(hidden=16, heads=2), {"l": 12, "a": 10}, 1, seed, "student")
        checkpoints[seed] = save_checkpoint(
            model, tmp_path / f"ckpt{seed}", {"labels": ["negative", "non-negative"], "task": "regression"}
        )
    ensemble = corekd.load(bundle_ensemble(checkpoints, tmp_path / "ensemble"))
    gen = np.random.default_rng(0)
    dialogue = {
        "dialogue_id": "r",
        "utterances": [{"l": gen.normal(size=12).tolist()}, {"a": gen.normal(size=10).tolist(), "speaker": "B"}],
    }
    rows = ensemble.predict(dialogue)
    each = np.array(
        [
            [r["prediction"] for r in corekd.load(bundle_checkpoint(c, tmp_path / f"single{s}")).predict(dialogue)]
            for s, c in checkpoints.items()
        ]
    )  # [2, U]
    assert np.abs(np.array([r["prediction"] for r in rows]) - each.mean(0)).max() < 1e-5
    assert np.abs(np.array([r["spread"] for r in rows]) - each.std(0)).max() < 1e-5
    assert all(r["members"] == 2 and "probabilities" not in r for r in rows)
    _, answer = prediction_models("regression", [])
    answer.model_validate({"dialogue_id": "r", "utterances": rows})


def test_a_frame_reading_ensemble_runs_member_by_member(tmp_path):
    """A model whose sequence encoder reads frames cannot be vmapped: the members then run one after the other."""
    checkpoints = {}
    for seed in (0, 1):
        model = init_model(
            ModelConfig(hidden=16, heads=2, sequence_encoder="conv"),
            {"l": 12, "a": 10},
            3,
            seed,
            "student",
            kinds={"l": "sequence", "a": "vector"},
        )
        checkpoints[seed] = save_checkpoint(model, tmp_path / f"ckpt{seed}", {"labels": ["x", "y", "z"]})
    ensemble = corekd.load(bundle_ensemble(checkpoints, tmp_path / "ensemble"))
    assert ensemble.runtime.module.stacked is None
    gen = np.random.default_rng(1)
    dialogue = {
        "dialogue_id": "f",
        "utterances": [
            {"l": gen.normal(size=(3, 12)).tolist(), "a": gen.normal(size=10).tolist()},
            {"l": gen.normal(size=(5, 12)).tolist()},
        ],
    }
    rows = ensemble.predict(dialogue)
    each = np.array(
        [
            [
                [r["probabilities"][k] for k in "xyz"]
                for r in corekd.load(bundle_checkpoint(c, tmp_path / f"single{s}")).predict(dialogue)
            ]
            for s, c in checkpoints.items()
        ]
    )
    assert np.abs(np.array([[r["probabilities"][k] for k in "xyz"] for r in rows]) - each.mean(0)).max() < 1e-5
    assert np.abs(np.array([[r["spread"][k] for k in "xyz"] for r in rows]) - each.std(0)).max() < 1e-5
