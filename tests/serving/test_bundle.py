"""Model bundles, the Python predictor and `corekd predict` / `corekd export-bundle`."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import corekd
from corekd.cli import app
from corekd.data.batching import SplitTensors
from corekd.errors import CorekdError
from corekd.evaluation.predict import predict as eval_predict
from corekd.serving.bundle import BUNDLE_VERSION, export_bundle, read_bundle
from corekd.serving.predictor import parse_dialogue
from helpers import as_interchange, edit_weights

runner = CliRunner()


def test_bundle_holds_what_a_user_needs(tiny_run_bundle, tiny_corpus):
    run_dir, bundle_dir = tiny_run_bundle
    info = json.loads((bundle_dir / "model.json").read_text())
    b = info["bundle"]
    assert (
        b["format"] == "corekd-bundle" and b["version"] == BUNDLE_VERSION and b["corekd_version"] == corekd.__version__
    )
    assert b["task"] == "classification" and b["labels"] == tiny_corpus.labels
    assert {m: s["dim"] for m, s in b["modalities"].items()} == {"l": 12, "a": 10, "v": 16}
    assert b["modalities"]["l"]["card"] == tiny_corpus.cards()["l"]
    assert b["source"]["variant"] == "no_kd" and b["source"]["seed"] == 0
    # the weights are the checkpoint's, byte for byte; the statistics in model.json are the weights' buffers
    assert (bundle_dir / "model.safetensors").read_bytes() == (
        run_dir / "checkpoints/no_kd/seed0/model.safetensors"
    ).read_bytes()
    weights = load_file(str(bundle_dir / "model.safetensors"))
    assert b["standardization"]["kind"] == "train-split z-scores"
    for m in ("l", "a", "v"):
        assert np.allclose(b["standardization"]["statistics"][m]["mean"], weights[f"standardizer.mean_{m}"].numpy())
        assert not np.allclose(weights[f"standardizer.std_{m}"].numpy(), 1.0)


def test_export_bundle_refuses_bad_requests(tiny_run_bundle, tmp_path):
    run_dir, _ = tiny_run_bundle
    with pytest.raises(CorekdError, match="no model 'corekd'.*no_kd") as err:
        export_bundle(run_dir, "corekd", tmp_path / "b1")
    assert err.value.field == "--method"
    with pytest.raises(CorekdError, match="seed 3") as err:
        export_bundle(run_dir, "no_kd", tmp_path / "b2", seed=3)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(CorekdError, match="new or empty"):
        export_bundle(run_dir, "no_kd", tmp_path / "full")
    partial = tmp_path / "run"
    shutil.copytree(run_dir, partial)
    (partial / "checkpoints/no_kd/seed0/complete.json").unlink()
    with pytest.raises(CorekdError, match="not finished"):
        export_bundle(partial, "no_kd", tmp_path / "b3")


def _edited_bundle(bundle_dir, tmp_path, fn):
    copy = tmp_path / "edited"
    shutil.copytree(bundle_dir, copy)
    info = json.loads((copy / "model.json").read_text())
    fn(info)
    (copy / "model.json").write_text(json.dumps(info))
    return copy


def test_loading_refuses_incompatible_bundles(tiny_run_bundle, tmp_path):
    run_dir, bundle_dir = tiny_run_bundle
    newer = _edited_bundle(bundle_dir, tmp_path / "v", lambda i: i["bundle"].update(version=BUNDLE_VERSION + 1))
    with pytest.raises(CorekdError, match=f"format version {BUNDLE_VERSION + 1}.*cannot be read") as err:
        corekd.load(newer)
    assert err.value.field == "bundle.version"
    with pytest.raises(CorekdError, match="run checkpoint, not a bundle.*export-bundle"):
        corekd.load(run_dir / "checkpoints/no_kd/seed0")
    wrong_dim = _edited_bundle(bundle_dir, tmp_path / "d", lambda i: i["bundle"]["modalities"]["a"].update(dim=11))
    with pytest.raises(CorekdError, match="differs from the model's input dim 10") as err:
        read_bundle(wrong_dim)
    assert err.value.field == "bundle.modalities.a.dim"
    # model.json's dims and the weights disagree: the weights do not fit the rebuilt model
    bad_weights = _edited_bundle(bundle_dir, tmp_path / "w", lambda i: i["dims"].update(v=17))
    with pytest.raises(CorekdError, match="do not fit"):
        read_bundle(bad_weights)

    def other_stats(i):
        i["bundle"]["standardization"]["statistics"]["l"]["mean"][0] += 1.0

    with pytest.raises(CorekdError, match="statistics.*differ") as err:
        read_bundle(_edited_bundle(bundle_dir, tmp_path / "s", other_stats))
    assert err.value.field == "bundle.standardization.statistics.l.mean"


def test_predictions_equal_the_evaluation_path_under_missing_modalities(tiny_run_bundle, tiny_corpus):
    """Dialogues given as mappings, modalities left out per utterance = the model evaluated under that mask."""
    _, bundle_dir = tiny_run_bundle
    predictor = corekd.load(bundle_dir)
    split = SplitTensors.from_corpus(tiny_corpus, "test")
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(split.avail.shape, generator=gen) > 0.45  # [N, U, M]
    masks[..., 0] |= ~masks.any(-1)  # at least one modality per utterance
    reference = eval_predict(predictor.bundle.model, split, masks, 4, "cpu").probs
    dialogues = [as_interchange(d, tiny_corpus, masks[i].numpy()) for i, d in enumerate(tiny_corpus.split("test"))]
    rows = [r for rs in predictor.predict_many(dialogues) for r in rs]
    assert len(rows) == split.num_utterances
    probs = np.array([[r["probabilities"][name] for name in tiny_corpus.labels] for r in rows])
    assert np.abs(probs - reference).max() < 1e-5
    assert all(r["prediction"] == tiny_corpus.labels[int(np.argmax(p))] for r, p in zip(rows, probs))
    flat_masks = masks[split.utt_mask]  # [n_utterances, M]
    assert [r["modalities"] for r in rows] == [[m for j, m in enumerate("lav") if mk[j]] for mk in flat_masks.tolist()]
    # one dialogue alone = the same dialogue in a padded batch
    alone = predictor.predict(dialogues[1])
    assert [r["utterance_id"] for r in alone] == tiny_corpus.split("test")[1].utterance_ids
    assert np.allclose(
        [list(r["probabilities"].values()) for r in alone],
        [list(r["probabilities"].values()) for r in predictor.predict_many(dialogues)[1]],
        atol=1e-6,
    )


def test_sequence_modalities_take_frames_averaged():
    mods = {"l": {"dim": 3, "kind": "vector"}, "a": {"dim": 2, "kind": "sequence"}}
    d = parse_dialogue(
        {"dialogue_id": "d", "utterances": [{"a": [[1, 2], [3, 6]]}, {"l": [0, 0, 1], "a": [5, 5]}]}, mods
    )
    assert d.features["a"][0].tolist() == [2.0, 4.0] and d.features["l"][0] is None
    assert d.utterance_ids == ["0", "1"] and d.speakers == ["d", "d"] and d.observed(1) == ["l", "a"]


@pytest.mark.parametrize(
    "utterances, field, message",
    [
        ([{"l": [0.0] * 12, "a": [0.0] * 9}], "utterances[0].a", "got 9 numbers; expected 10"),
        ([{"l": [0.0] * 11 + [float("nan")]}], "utterances[0].l", "non-finite value"),
        ([{"id": "u"}], "utterances[0]", "no modality given"),
        ([], "utterances", "non-empty list"),
        ([{"l": [[0.0] * 12]}], "utterances[0].l", "got frames"),
        ([{"l": ["x"] * 12}], "utterances[0].l", "expected a list of 12 numbers"),
        ([{"id": "u", "l": [0.0] * 12}, {"id": "u", "v": [0.0] * 16}], "utterances", "duplicate utterance id"),
    ],
)
def test_bad_dialogues_name_the_field(tiny_run_bundle, utterances, field, message):
    predictor = corekd.load(tiny_run_bundle[1])
    with pytest.raises(CorekdError, match=message) as err:
        predictor.predict({"dialogue_id": "d", "utterances": utterances})
    assert err.value.field == field


def _jsonl_rows(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_cli_export_bundle_and_predict_on_jsonl_and_corpus(tiny_run_bundle, tiny_corpus, tiny_test_dialogues, tmp_path):
    run_dir, bundle_dir = tiny_run_bundle
    result = runner.invoke(app, ["export-bundle", str(run_dir), "--method", "no_kd", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "no_kd seed 0" in result.output and "l 12, a 10, v 16" in result.output

    src = tmp_path / "in.jsonl"
    dialogues = [dict(d) for d in tiny_test_dialogues]
    dialogues[0]["utterances"] = [{k: v for k, v in u.items() if k != "a"} for u in dialogues[0]["utterances"]]
    src.write_text("\n".join(json.dumps(d) for d in dialogues) + "\n\n")
    out = tmp_path / "pred.jsonl"
    result = runner.invoke(app, ["predict", str(tmp_path / "b"), str(src), "--out", str(out), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    rows = _jsonl_rows(out.read_text())
    expected = [r for d in dialogues for r in corekd.load(bundle_dir).predict(d)]
    assert [(r["dialogue_id"], r["utterance_id"]) for r in rows] == [
        (r["dialogue_id"], r["utterance_id"]) for r in expected
    ]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)
    assert (
        max(
            abs(r["probabilities"][k] - e["probabilities"][k])
            for r, e in zip(rows, expected)
            for k in r["probabilities"]
        )
        < 1e-6
    )
    assert all(r["modalities"] == ["l", "v"] for r in rows if r["dialogue_id"] == dialogues[0]["dialogue_id"])

    corpus_dir = tiny_corpus.save(tmp_path / "corpus")
    result = runner.invoke(app, ["predict", str(bundle_dir), str(corpus_dir), "--out", str(tmp_path / "c.jsonl")])
    assert result.exit_code == 0, result.output
    rows = _jsonl_rows((tmp_path / "c.jsonl").read_text())
    assert len(rows) == tiny_corpus.num_utterances
    assert [r["utterance_id"] for r in rows] == [u for d in tiny_corpus.dialogues for u in d.utterance_ids]
    by_id = {r["utterance_id"]: r for r in rows}
    for r in corekd.load(bundle_dir).predict(dialogues[1]):
        assert np.allclose(
            list(by_id[r["utterance_id"]]["probabilities"].values()), list(r["probabilities"].values()), atol=1e-6
        )


def test_cli_predict_refuses_bad_inputs_in_one_line(tiny_run_bundle, tmp_path):
    bundle_dir = tiny_run_bundle[1]
    manifest = tmp_path / "media.csv"
    manifest.write_text("dialogue_id,utterance_id,audio,video\nd1,u1,a.wav,v.mp4\n")
    result = runner.invoke(app, ["predict", str(bundle_dir), str(manifest)])
    assert result.exit_code == 2 and "media manifest" in result.output and "feature extractors" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"dialogue_id": "d", "utterances": [{"l": [0.0] * 11}]}) + "\n")
    result = runner.invoke(app, ["predict", str(bundle_dir), str(bad)])
    assert result.exit_code == 2
    assert "bad.jsonl: line 1: utterances[0].l: got 11 numbers; expected 12" in " ".join(result.output.split())
    result = runner.invoke(app, ["predict", str(bundle_dir), str(tmp_path / "absent.jsonl")])
    assert result.exit_code == 2 and "no such file" in result.output
    result = runner.invoke(app, ["predict", str(tmp_path), str(bad)])
    assert result.exit_code == 2 and "model.json" in result.output


@pytest.mark.parametrize("command", ["export-bundle", "predict", "serve", "export"])
def test_serving_commands_have_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_cli_predict_on_a_corpus_names_each_rows_split_and_takes_split(
    tiny_run_bundle, tiny_corpus, tiny_test_dialogues, tmp_path
):
    bundle_dir = tiny_run_bundle[1]
    corpus_dir = tiny_corpus.save(tmp_path / "corpus")
    split_of = {d.id: d.split for d in tiny_corpus.dialogues}
    result = runner.invoke(app, ["predict", str(bundle_dir), str(corpus_dir), "--out", str(tmp_path / "all.jsonl")])
    assert result.exit_code == 0, result.output
    rows = _jsonl_rows((tmp_path / "all.jsonl").read_text())
    assert len(rows) == tiny_corpus.num_utterances  # every split by default, as before
    assert all(r["split"] == split_of[r["dialogue_id"]] for r in rows)
    assert {r["split"] for r in rows} == {"train", "dev", "test"}
    for args in (["--split", "dev", "--split", "test"], ["--split", "dev,test"]):
        result = runner.invoke(
            app, ["predict", str(bundle_dir), str(corpus_dir), "--out", str(tmp_path / "s.jsonl"), *args]
        )
        assert result.exit_code == 0, result.output
        some = _jsonl_rows((tmp_path / "s.jsonl").read_text())
        assert some == [r for r in rows if r["split"] in ("dev", "test")]
    bad = runner.invoke(app, ["predict", str(bundle_dir), str(corpus_dir), "--split", "validation"])
    assert bad.exit_code == 2 and "--split" in bad.output and "validation" in bad.output
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(tiny_test_dialogues[0]) + "\n")
    bad = runner.invoke(app, ["predict", str(bundle_dir), str(src), "--split", "test"])
    assert bad.exit_code == 2 and "corpus folder" in bad.output
    plain = runner.invoke(app, ["predict", str(bundle_dir), str(src), "--out", str(tmp_path / "j.jsonl")])
    assert plain.exit_code == 0 and "split" not in _jsonl_rows((tmp_path / "j.jsonl").read_text())[0]


# ------------------------------------------------------------------ no NaN leaves corekd
def _broken_bundle(bundle_dir, tmp_path):
    """A copy of the bundle whose finite head weights overflow float32: every output is NaN."""
    broken = tmp_path / "broken"
    shutil.copytree(bundle_dir, broken)
    edit_weights(broken, lambda w: w["head.weight"].fill_(3e38))
    return broken


def test_a_non_finite_output_is_an_error_naming_the_dialogue(tiny_run_bundle, tmp_path):
    broken = _broken_bundle(tiny_run_bundle[1], tmp_path)
    predictor = corekd.load(broken)  # finite weights: loads
    dialogue = {"dialogue_id": "d7", "utterances": [{"l": [0.1] * 12}, {"a": [0.2] * 10}]}
    with pytest.raises(CorekdError, match=r"output for utterance '0' is not finite") as err:
        predictor.predict(dialogue)
    assert err.value.field == "dialogue 'd7'"
    assert "not finite" in predictor.self_check()
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(dialogue) + "\n")
    result = runner.invoke(app, ["predict", str(broken), str(src)])
    assert result.exit_code == 2 and "NaN" not in result.stdout
    assert "in.jsonl: dialogue 'd7': the model's output for utterance '0' is not finite" in " ".join(
        result.output.split()
    )
    assert corekd.load(tiny_run_bundle[1]).self_check() is None


def test_a_regression_output_that_is_not_finite_is_an_error_not_null(tmp_path):
    from corekd.models.model import ModelConfig
    from corekd.serving.bundle import bundle_checkpoint
    from corekd.training import init_model, save_checkpoint

    model = init_model(ModelConfig(hidden=16, heads=2), {"l": 12}, 1, 0, "student")
    save_checkpoint(model, tmp_path / "ckpt", {"labels": ["negative", "non-negative"], "task": "regression"})
    bundle = bundle_checkpoint(tmp_path / "ckpt", tmp_path / "bundle")
    edit_weights(bundle, lambda w: w["head.weight"].fill_(3e38))
    with pytest.raises(CorekdError, match="not finite"):
        corekd.load(bundle).predict({"dialogue_id": "r", "utterances": [{"l": [0.5] * 12}]})


@pytest.mark.parametrize("value, size", [(1e20, r"is 1\.\d+e\+20"), (3e38, r"(is 3\.\d+e\+38|overflows float32)")])
def test_a_value_too_far_from_the_training_data_is_refused_naming_the_field(tiny_run_bundle, tmp_path, value, size):
    shown = re.escape(f"{value:.6g}")
    predictor = corekd.load(tiny_run_bundle[1])
    far = [0.0] * 12
    far[3] = value  # a float32 number, > 1e9 training standard deviations out: the model's float32 arithmetic overflows
    dialogue = {"dialogue_id": "d", "utterances": [{"l": [0.0] * 12}, {"l": far}]}
    with pytest.raises(
        CorekdError, match=rf"value {shown} at index 3 .*z-score {size}; expected \|z\| <= 1e\+09"
    ) as err:
        predictor.predict(dialogue)
    assert err.value.field == "utterances[1].l"
    with pytest.raises(CorekdError) as err:  # the library's parsed input is checked too, the dialogue named
        predictor.predict_many([parse_dialogue(dialogue, predictor.modalities)])
    assert err.value.field == "dialogue 'd': utterances[1].l"
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(dialogue) + "\n")
    result = runner.invoke(app, ["predict", str(tiny_run_bundle[1]), str(src)])
    assert result.exit_code == 2 and "in.jsonl: dialogue 'd': utterances[1].l: value" in " ".join(result.output.split())
