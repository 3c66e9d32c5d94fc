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
from corekd.evaluation.ablation import (
    PairedDifference,
    difference_table,
    format_difference,
)
from corekd.evaluation.metrics import PLAIN_METRICS
from corekd.evaluation.report import records_frame, split_records
from corekd.experiments.folder import (
    ANALYSES_FILE,
    CONFIG_FILE,
    RUN_MARKER,
    read_results,
)
from corekd.files import atomic_write

FORMAT = "corekd-sweep"
VERSION = 1
SWEEP_JSON = "sweep.json"
SWEEP_MD = "sweep.md"
BASELINE = "no_kd"
SWEEP_CONDITIONS = ("fixed:avg", "random:0.5")
CONFLICT_TYPES = ("a", "v", "av")
NOT_COMPUTED = "not computed"


def read_rejection(run_dir: Path) -> dict | None:
    """variant -> type -> {rate: mean over seeds, n: seeds, pairs: total} from ``analyses.json``; None if absent."""
    path = run_dir / ANALYSES_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorekdError(f"not a readable analyses file ({exc})", path=path) from None
    if not isinstance(payload, dict) or payload.get("format") != "corekd-analyses" or not isinstance(payload.get("rejection"), list):
        raise CorekdError("not a corekd-analyses file with a 'rejection' list", path=path)
    grouped: dict[str, dict[str, list[dict]]] = {}
    for row in payload["rejection"]:
        grouped.setdefault(str(row["variant"]), {}).setdefault(str(row["type"]), []).append(row)
    return {
        variant: {t: {"rate": sum(float(r["rate"]) for r in rows) / len(rows), "n": len(rows),
                      "pairs": sum(int(r.get("pairs", 0)) for r in rows)} for t, rows in types_.items()}
        for variant, types_ in grouped.items()
    }


def summarize_run(run_dir: Path) -> dict:
    """One sweep value: each student minus no_kd (paired over seeds) on the fixed average and random:0.5."""
    if not (run_dir / "results.json").is_file():
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
        "differences": {v: {c: (d.__dict__ if d is not None else None) for c, d in by_c.items()} for v, by_c in diffs.items()},
        "rejection": read_rejection(run_dir),
    }


def write_summary(out: Path, config, command: str) -> Path:
    """Write ``OUT/sweep.json`` and ``OUT/sweep.md`` from the sub-run folders (also ``corekd report OUT``)."""
    kind = option_type(config.sweep.option)
    runs = []
    for value in config.sweep.values:
        entry = summarize_run(out / folder_name(config.sweep.option, value, kind))
        runs.append({"value": int(value) if kind is int else float(value), **entry})
    payload = {"format": FORMAT, "version": VERSION, "option": config.sweep.option, "values": [r["value"] for r in runs],
               "baseline": BASELINE, "seeds": config.seeds, "command": command, "runs": runs}
    atomic_write(out / SWEEP_JSON, lambda p: Path(p).write_text(json.dumps(payload, indent=1)))
    atomic_write(out / SWEEP_MD, lambda p: Path(p).write_text(render_sweep(payload)))
    return out / SWEEP_MD


def render_sweep(payload: dict) -> str:
    """sweep.md from sweep.json's payload."""
    option, runs = payload["option"], payload["runs"]
    name = option.split(".")[-1]
    metric = next((r["metric"] for r in runs if r.get("metric")), "weighted_f1")
    candidates = list(dict.fromkeys(v for r in runs for v in r["differences"]))
    conditions = [c for c in SWEEP_CONDITIONS if any(c in by_c for r in runs for by_c in r["differences"].values())]
    heads = {"fixed:avg": "fixed Avg", "random:0.5": "random 0.5"}
    parts = [
        f"# Sweep over {option}",
        "",
        f"Re-run: `{payload['command']}`. Seeds {payload['seeds']}; one ordinary run per value in "
        f"`{name}=<value>/` (each with its own report.md).",
        "",
        "## Students minus no_kd, paired over seeds",
        "",
        f"Test split, {metric} ({'as it is' if metric in PLAIN_METRICS else 'in percentage points'}): per value, "
        f"each student minus `{BASELINE}` per seed, then mean ± sample std, the seeds paired (n) and the p-value of a "
        "paired t-test over seeds (scipy.stats.ttest_rel; n/a with fewer than two seeds).",
        "",
    ]
    cols = [(v, c) for v in candidates for c in conditions]
    lines = [f"| {name} | " + " | ".join(f"{v} − {BASELINE}, {heads[c]}" for v, c in cols) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for r in runs:
        if r["status"] == "missing":
            lines.append(f"| {r['value']} | " + " | ".join("no run" for _ in cols) + " |")
            continue
        cells = []
        for v, c in cols:
            d = (r["differences"].get(v) or {}).get(c)
            cells.append(format_difference(PairedDifference(**d) if d else None, metric))
        lines.append(f"| {r['value']} | " + " | ".join(cells) + " |")
    parts += [*lines, ""]
    parts += ["## Rejection rates per conflict type", "",
              "From each sub-run's analyses.json, in percent (mean over seeds), as in report.md; \"not computed\" where a "
              "sub-run has none.", ""]
    lines = [f"| {name} | method | " + " | ".join(CONFLICT_TYPES) + " |", "|" + "---|" * (len(CONFLICT_TYPES) + 2)]
    for r in runs:
        rejection = r.get("rejection")
        if not rejection:
            lines.append(f"| {r['value']} | – | " + " | ".join(NOT_COMPUTED for _ in CONFLICT_TYPES) + " |")
            continue
        for variant, by_type in rejection.items():
            cells = [f"{100 * by_type[t]['rate']:.1f} (n={by_type[t]['n']})" if t in by_type else "–" for t in CONFLICT_TYPES]
            lines.append(f"| {r['value']} | {variant} | " + " | ".join(cells) + " |")
    parts += [*lines, ""]
    incomplete = [str(r["value"]) for r in runs if r["status"] not in ("complete",)]
    if incomplete:
        parts += [f"Incomplete or missing sub-runs: {', '.join(incomplete)} (finish with `{payload['command']} --resume`).", ""]
    return "\n".join(parts)


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
