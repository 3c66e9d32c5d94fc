"""The error promise, held by a property test: malformed configs, corpora and run folders, every command.

Whatever hypothesis generates, each CLI command exits with 0 (it worked) or 2 (one line naming
what is wrong), never 1 and never with a traceback. Runs are in-process (typer's CliRunner), the
examples deterministic and few, and every config that could train is tiny (one epoch, a corpus of
14 short dialogues), so the file takes seconds.
"""

import copy
import json
import tempfile
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from corekd.cli import app
from corekd.config import dump_config, validate_config
from corekd.data.synth import SynthConfig, generate
from helpers import TINY_SYNTH, quick_config

runner = CliRunner()
SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

BASE = quick_config(name="fuzz")

# Junk of every JSON/YAML type; numbers small (nothing generated may make a run long), NaN and inf included.
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 12),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from(
        ["", "cuda", "cuda:3", "mps", "gpu", "corekd", "teacher", "corpus", "synthetic", "fixed:l", "../x", "a|b"]
    ),
    st.text(max_size=5),
    st.lists(st.one_of(st.integers(-2, 4), st.text(max_size=3), st.floats(allow_nan=True)), max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=4), st.integers(0, 3), min_size=1, max_size=2),
)

CONFIG_PATHS = [
    ("seeds",),
    ("device",),
    ("name",),
    ("threads_absent_marker",),
    ("data",),
    ("data", "source"),
    ("data", "path"),
    ("data", "synth"),
    ("data", "synth", "seed"),
    ("data", "synth", "n_dialogues"),
    ("data", "synth", "dims"),
    ("data", "synth", "dims", "l"),
    ("data", "synth", "noise"),
    ("data", "synth", "labels"),
    ("data", "synth", "class_prior"),
    ("data", "synth", "min_length"),
    ("data", "synth", "dev_fraction"),
    ("model",),
    ("model", "hidden"),
    ("model", "heads"),
    ("model", "dropout"),
    ("model", "fuse_over"),
    ("training", "lr"),
    ("training", "batch_size"),
    ("training", "missing", "low"),
    ("training", "missing", "high"),
    ("training", "select_metric"),
    ("evaluation", "random_rates"),
    ("evaluation", "scheme"),
    ("evaluation", "mask_seed"),
    ("methods",),
    ("methods", 0),
    ("methods", 0, "name"),
    ("methods", 0, "variant"),
    ("methods", 0, "options"),
    ("methods", 0, "options", "nce_types"),
    ("methods", 0, "options", "temperature"),
    ("bogus",),
]


def _set(tree, path, value):
    """Put ``value`` at ``path`` (creating mappings on the way); a list index past the end appends."""
    node = tree
    for key in path[:-1]:
        if isinstance(node, list):
            key = min(key, len(node) - 1) if isinstance(key, int) and node else 0
            if not node:
                node.append({})
        elif not isinstance(node.get(key), (dict, list)):
            node[key] = {}
        node = node[key]
    last = path[-1]
    if isinstance(node, list):
        if node:
            node[min(last, len(node) - 1) if isinstance(last, int) else 0] = value
        else:
            node.append(value)
    else:
        node[last] = value
    return tree


def _check(args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code in (0, 2), (args, result.exit_code, result.output, repr(result.exception))
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 2:
        assert "error" in result.output.lower(), result.output
    return result


def _config_text(kind, mutations):
    if kind == "yaml":
        cfg = copy.deepcopy(BASE)
        for path, value in mutations:
            if path == ("threads_absent_marker",):
                continue  # threads would change this process's torch settings: never generated
            _set(cfg, path, value)
        return yaml.safe_dump(cfg).encode()
    # (An empty file is a valid config, the full quickstart: not generated, it trains for minutes.)
    return {
        "not-a-mapping": b"- 1\n- 2\n",
        "scalar": b"42\n",
        "bad-yaml": b"a: [1, 2\n",
        "binary": bytes(range(256)),
        "latin1": "name: caf\xe9\n".encode("latin-1"),
    }[kind]


@settings(max_examples=25, **SETTINGS)
@given(
    kind=st.sampled_from(["yaml"] * 6 + ["not-a-mapping", "scalar", "bad-yaml", "binary", "latin1"]),
    mutations=st.lists(st.tuples(st.sampled_from(CONFIG_PATHS), JUNK), min_size=1, max_size=2),
    seeds=st.sampled_from([None, "0", "0,0", "x", "-1", "1 2"]),
    device=st.sampled_from([None, "cpu", "gpu", "cuda", "mps", "auto"]),
)
def test_malformed_configs(kind, mutations, seeds, device):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = tmp / "c.yaml"
        config.write_bytes(_config_text(kind, mutations))
        extra = [*(["--seeds", seeds] if seeds else []), *(["--device", device] if device else [])]
        _check(["run", config, "--out", tmp / "out", *extra])
        _check(["run", config, "--out", config])  # --out pointing at a file
        _check(["data", "synth", "--out", tmp / "corpus", "--config", config])


def _corpus_folder(tmp: Path) -> Path:
    return generate(SynthConfig(**TINY_SYNTH)).save(tmp / "corpus")


def _break_meta(folder, path, value):
    meta = json.loads((folder / "corpus.json").read_text())
    try:
        _set(meta, path, value)
    except (TypeError, KeyError, IndexError):
        meta = value  # the path does not exist in this shape: replace the whole file's content
    (folder / "corpus.json").write_text(json.dumps(meta))


CORPUS_PATHS = [
    ("format",),
    ("version",),
    ("name",),
    ("task",),
    ("labels",),
    ("labels", 0),
    ("modalities",),
    ("modalities", "a"),
    ("modalities", "v", "dim"),
    ("modalities", "l", "kind"),
    ("info",),
    ("dialogues",),
    ("dialogues", 0),
    ("dialogues", 0, "id"),
    ("dialogues", 0, "split"),
    ("dialogues", 0, "utterances"),
    ("dialogues", 1, "utterances", 0),
    ("dialogues", 0, "utterances", 0, "label"),
    ("dialogues", 0, "utterances", 0, "speaker"),
    ("dialogues", 0, "utterances", 0, "missing"),
    ("dialogues", 2, "utterances", 1, "id"),
    ("extra",),
]


def _break_features(folder, how):
    path = folder / "features.safetensors"
    if how == "truncate":
        path.write_bytes(path.read_bytes()[:50])
        return
    if how == "delete":
        path.unlink()
        return
    tensors = load_file(str(path))
    if how == "nan":
        tensors["a"][3, 1] = np.nan
    elif how == "inf":
        tensors["v"][0, 0] = np.inf
    elif how == "short":
        tensors["l"] = tensors["l"][:-2].copy()
    elif how == "wide":
        tensors["v"] = np.concatenate([tensors["v"], tensors["v"]], axis=1)
    elif how == "int":
        tensors["l"] = tensors["l"].astype(np.int32)
    elif how == "extra":
        tensors["x"] = np.zeros((2, 2), dtype=np.float32)
    elif how == "drop":
        del tensors["a"]
    save_file(tensors, str(path))


@settings(max_examples=20, **SETTINGS)
@given(
    meta_edits=st.lists(st.tuples(st.sampled_from(CORPUS_PATHS), JUNK), max_size=2),
    features=st.sampled_from([None, None, "truncate", "delete", "nan", "inf", "short", "wide", "int", "extra", "drop"]),
    missing=st.sampled_from([None, "v everywhere", "test: everything", "l only in train"]),
    pairs=st.sampled_from([False, False, True]),
)
def test_malformed_corpora(meta_edits, features, missing, pairs):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = _corpus_folder(tmp)
        if missing:
            meta = json.loads((folder / "corpus.json").read_text())
            for d in meta["dialogues"]:
                for u in d["utterances"]:
                    if missing == "v everywhere":
                        u["missing"] = ["v"]
                    elif missing == "test: everything" and d["split"] == "test":
                        u["missing"] = ["l", "a", "v"]
                    elif missing == "l only in train" and d["split"] == "train":
                        u["missing"] = ["a", "v"]
            (folder / "corpus.json").write_text(json.dumps(meta))
        for path, value in meta_edits:
            _break_meta(folder, path, value)
        if features:
            _break_features(folder, features)
        _check(["data", "inspect", folder])
        _check(["data", "inspect", folder, "--json"])
        _check(["data", "probe", folder, *(["--pairs"] if pairs else [])])
        config = tmp / "c.yaml"
        config.write_text(yaml.safe_dump({**BASE, "data": {"path": str(folder)}}))
        _check(["run", config, "--out", tmp / "out"])


RESULTS_PATHS = [
    ("meta",),
    ("meta", "seeds"),
    ("meta", "splits"),
    ("meta", "splits", "test"),
    ("meta", "methods"),
    ("meta", "warnings"),
    ("meta", "corpus"),
    ("records",),
    ("records", 0),
    ("records", 0, "condition"),
    ("records", 0, "seed"),
    ("records", 0, "weighted_f1"),
    ("records", 0, "per_class_f1"),
    ("records", 1, "applicable"),
    ("records", 0, "variant"),
    ("trainings",),
    ("trainings", 0),
    ("trainings", 0, "best_epoch"),
    ("trainings", 0, "dev_weighted_f1"),
    ("trainings", 0, "seconds"),
]


def _valid_results():
    labels = ["happy", "sad"]
    records = [
        {
            "method": "no_kd",
            "variant": "no_kd",
            "seed": s,
            "condition": c,
            "accuracy": 0.5,
            "weighted_f1": 0.4,
            "macro_f1": 0.3,
            "uar": 0.3,
            "per_class_f1": {n: 0.2 for n in labels},
            "missing_rate": 0.1,
            "n_utterances": 9,
        }
        for s in (0, 1)
        for c in ("complete", "fixed:l", "random:0.5")
    ]
    trainings = [
        {
            "method": "no_kd",
            "variant": "no_kd",
            "seed": 0,
            "best_epoch": 1,
            "epochs_run": 1,
            "dev_weighted_f1": 0.3,
            "seconds": 1.0,
            "history": [],
        }
    ]
    meta = {
        "corpus": "c",
        "labels": labels,
        "seeds": [0, 1],
        "methods": ["no_kd"],
        "mask_seed": 0,
        "splits": {s: {"dialogues": 2, "utterances": 9} for s in ("train", "dev", "test")},
        "command": "corekd run",
    }
    return {"meta": meta, "records": records, "trainings": trainings}


@settings(max_examples=20, **SETTINGS)
@given(
    edits=st.lists(st.tuples(st.sampled_from(RESULTS_PATHS), JUNK), max_size=2),
    results=st.sampled_from(["valid", "junk-json", "binary", "absent", "folder"]),
    marker=st.sampled_from(["valid", "absent", "junk", "wrong-version"]),
    config=st.sampled_from(["same", "absent", "other", "binary"]),
    unit=st.sampled_from([None, "junk", "partial"]),
)
def test_malformed_run_folders(edits, results, marker, config, unit):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_dir = tmp / "run"
        run_dir.mkdir()
        cfg_path = tmp / "c.yaml"
        cfg_path.write_text(yaml.safe_dump(BASE))
        resolved = dump_config(validate_config(BASE))
        payload = _valid_results()
        for path, value in edits:
            try:
                _set(payload, path, value)
            except (TypeError, KeyError, IndexError):
                payload = value
        target = run_dir / "results.json"
        if results == "valid":
            target.write_text(json.dumps(payload))
        elif results == "junk-json":
            target.write_text(json.dumps(edits[0][1] if edits else [1, 2]))
        elif results == "binary":
            target.write_bytes(b'\x00\xff{"meta"')
        elif results == "folder":
            target.mkdir()
        if marker != "absent":
            text = {
                "valid": {"format": "corekd-run", "version": 1},
                "junk": [1],
                "wrong-version": {"format": "corekd-run", "version": 9},
            }[marker]
            (run_dir / "corekd-run.json").write_text(json.dumps(text))
        if config == "same":
            (run_dir / "config.yaml").write_text(resolved)
        elif config == "other":
            (run_dir / "config.yaml").write_text(resolved.replace("epochs: 1", "epochs: 2"))
        elif config == "binary":
            (run_dir / "config.yaml").write_bytes(bytes(range(256)))
        if unit:
            folder = run_dir / "checkpoints" / "no_kd" / "seed0"
            folder.mkdir(parents=True)
            (folder / "complete.json").write_text("{not json" if unit == "junk" else json.dumps({"records": []}))
        _check(["report", run_dir])
        _check(["report", tmp / "absent"])
        _check(["report", cfg_path])  # a file, not a run folder
        _check(["run", cfg_path, "--out", run_dir])
        _check(["run", cfg_path, "--out", run_dir, "--resume"])
