"""A sweep's summary: per value, each student minus no_kd paired over seeds, and the rejection rates.

The sweep itself (one ordinary run per value) is run by :mod:`corekd.experiments.engine`; the values' configs come
from :func:`corekd.config.sub_config`.

``sweep: {option: data.synth.conflict_rate, values: [0.0, 0.1, 0.3, 0.5]}`` in a run config makes
``corekd run CONFIG --out OUT`` write::

    OUT/corekd-run.json, OUT/config.yaml     the sweep's own marker and resolved config (sweep section included)
    OUT/<last part>=<value>/                 one normal run folder per value (config.yaml without the sweep)
    OUT/sweep.json, OUT/sweep.md             per value: each student minus no_kd, paired over seeds; rejection rates

The top folder follows the rules of every run folder (:mod:`corekd.experiments.folder`): an existing
sweep is refused unless ``--resume`` (same config; finished models of every sub-run are kept) or
``--overwrite`` (the whole folder is moved aside).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from corekd.config import folder_name, load_config, option_type
from corekd.errors import CorekdError
from corekd.experiments.folder import RUN_MARKER, read_results
from corekd.files import ANALYSES_FILE, CONFIG_FILE, RESULTS_FILE, atomic_write
from corekd.reporting.stats import difference_table
from corekd.reporting.sweep import BASELINE, SWEEP_CONDITIONS, write_sweep_report
from corekd.reporting.tables import records_frame, split_records

FORMAT = "corekd-sweep"
VERSION = 1
SWEEP_JSON = "sweep.json"


def read_rejection(run_dir: Path) -> dict | None:
    """variant -> type -> {rate: mean over seeds, n: seeds, pairs: total} from ``analyses.json``; None if absent."""
    path = run_dir / ANALYSES_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorekdError(f"not a readable analyses file ({exc})", path=path) from None
    if (
        not isinstance(payload, dict)
        or payload.get("format") != "corekd-analyses"
        or not isinstance(payload.get("rejection"), list)
    ):
        raise CorekdError("not a corekd-analyses file with a 'rejection' list", path=path)
    grouped: dict[str, dict[str, list[dict]]] = {}
    for row in payload["rejection"]:
        grouped.setdefault(str(row["variant"]), {}).setdefault(str(row["type"]), []).append(row)
    return {
        variant: {
            t: {
                "rate": sum(float(r["rate"]) for r in rows) / len(rows),
                "n": len(rows),
                "pairs": sum(int(r.get("pairs", 0)) for r in rows),
            }
            for t, rows in types_.items()
        }
        for variant, types_ in grouped.items()
    }


def summarize_run(run_dir: Path) -> dict:
    """One sweep value: each student minus no_kd (paired over seeds) on the fixed average and random:0.5."""
    if not (run_dir / RESULTS_FILE).is_file():
        return {"folder": run_dir.name, "status": "missing", "differences": {}, "rejection": None, "seeds": []}
    meta, records, _ = read_results(run_dir)
    metric = "mae" if meta.get("task") == "regression" else "weighted_f1"
    frame = records_frame(split_records(records, "test"))
    variants = list(dict.fromkeys(frame.variant)) if not frame.empty else []
    candidates = [v for v in variants if v not in ("teacher", BASELINE)]
    conditions = [c for c in SWEEP_CONDITIONS if not frame.empty and c in set(frame.condition)]
    diffs = difference_table(frame, BASELINE, candidates, metric, conditions) if BASELINE in variants else {}
    return {
        "folder": run_dir.name,
        "status": meta.get("status", "?"),
        "metric": metric,
        "seeds": sorted({int(s) for s in frame.seed}) if not frame.empty else [],
        "differences": {
            v: {c: (d.__dict__ if d is not None else None) for c, d in by_c.items()} for v, by_c in diffs.items()
        },
        "rejection": read_rejection(run_dir),
    }


def write_summary(out: Path, config, command: str) -> Path:
    """Write ``OUT/sweep.json``, ``OUT/sweep.md`` and ``OUT/sweep.html`` from the sub-run folders (also ``corekd report
    OUT``)."""
    kind = option_type(config.sweep.option)
    runs = []
    for value in config.sweep.values:
        entry = summarize_run(out / folder_name(config.sweep.option, value, kind))
        runs.append({"value": int(value) if kind is int else float(value), **entry})
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "option": config.sweep.option,
        "values": [r["value"] for r in runs],
        "baseline": BASELINE,
        "seeds": config.seeds,
        "command": command,
        "runs": runs,
    }
    atomic_write(out / SWEEP_JSON, lambda p: Path(p).write_text(json.dumps(payload, indent=1)))
    return write_sweep_report(out, payload)[0]


def is_sweep_folder(run_dir: Path) -> bool:
    """A folder written by a sweep: its config.yaml has a ``sweep`` section."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return False
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and raw.get("sweep") is not None


def rebuild(run_dir: Path) -> Path:
    """``corekd report`` on a sweep folder: sweep.json and sweep.md again from the sub-runs."""
    run_dir = Path(run_dir)
    config = load_config(run_dir / CONFIG_FILE)
    command = ""
    marker = run_dir / RUN_MARKER
    if marker.is_file():
        try:
            command = json.loads(marker.read_text(encoding="utf-8")).get("command", "")
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            command = ""
    return write_summary(run_dir, config, command)
