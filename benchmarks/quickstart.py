"""Wall time of the main job: one seed of the four methods on 1 thread, and the whole quickstart on 2 threads.

Run from the repository root::

    python benchmarks/quickstart.py [--run-dir runs/quickstart-bench] [--out benchmarks/results/quickstart.json]

Two jobs run as subprocesses of this interpreter (``python -m corekd.cli run ...``), their output
shown as they go:

1. ``one_seed_1_thread``: ``configs/quickstart.yaml`` with ``seeds: [0]`` and ``threads: 1``
   (written to ``RUN_DIR/one-seed-1-thread.yaml``); target under 50 s;
2. ``quickstart_2_threads``: ``corekd run configs/quickstart.yaml`` itself with ``threads: 2``
   (every seed; its report is the README's results table and docs/results/quickstart.md); target 10 minutes.

The JSON records each command, wall time, target and whether it was met, the machine and the
load average at the start and end of each job (timings taken while other work uses the CPU are
inflated), and each job's CPU seconds (user + system, all threads): on one thread they stay close
to the idle-machine wall time when other work shares the cores. Exits non-zero if a job failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

# benchmarks/ is on sys.path when this file is run as a script: share the machine description.
from speed import load_average, machine_info

from corekd.config import load_config
from corekd.device import resolve_device

CONFIG = Path("configs/quickstart.yaml")
TARGETS_S = {"one_seed_1_thread": 50.0, "quickstart_2_threads": 600.0}


def run_job(config_path: Path, run_dir: Path) -> dict:
    # --overwrite: an earlier benchmark run in run_dir is moved aside (never deleted), not refused.
    command = [sys.executable, "-m", "corekd.cli", "run", str(config_path), "--out", str(run_dir), "--overwrite"]
    print("running:", shlex.join(command), flush=True)
    load_start = load_average()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    returncode = subprocess.run(command, check=False).returncode
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    results_path = run_dir / "results.json"
    meta = json.loads(results_path.read_text()).get("meta", {}) if results_path.is_file() else {}
    return {
        "command": shlex.join(["corekd", "run", str(config_path), "--out", str(run_dir), "--overwrite"]),
        "returncode": returncode,
        "wall_s": round(wall, 2),
        # CPU seconds of the job (user + system, all its threads): on one thread, close to what the
        # wall time would be on an idle core, and much less sensitive to other load than the wall time
        "cpu_s": round(cpu, 2),
        "pipeline_s": meta.get("seconds"),
        "device": meta.get("device"),
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "report": str(run_dir / "report.md") if (run_dir / "report.md").is_file() else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default=Path("runs/quickstart-bench"), type=Path, help="the runs' output folder")
    parser.add_argument(
        "--out", default=Path("benchmarks/results/quickstart.json"), type=Path, help="where the JSON goes"
    )
    parser.add_argument("--only", choices=list(TARGETS_S), help="run one of the two jobs")
    args = parser.parse_args(argv)

    raw = yaml.safe_load(CONFIG.read_text())
    config = load_config(CONFIG)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    one_seed = args.run_dir / "one-seed-1-thread.yaml"
    one_seed.write_text(yaml.safe_dump({**raw, "seeds": [0], "threads": 1}, sort_keys=False))
    two_threads = args.run_dir / "quickstart-2-threads.yaml"
    two_threads.write_text(yaml.safe_dump({**raw, "threads": 2}, sort_keys=False))
    jobs = {
        "one_seed_1_thread": (one_seed, args.run_dir / "one-seed-1-thread"),
        "quickstart_2_threads": (two_threads, args.run_dir / "quickstart"),
    }
    results = {}
    if args.only and args.out.is_file():  # keep the other job's last figures
        results = {k: v for k, v in json.loads(args.out.read_text()).get("jobs", {}).items() if k != args.only}
    for name, (cfg_path, run_dir) in jobs.items():
        if args.only and name != args.only:
            continue
        job = run_job(cfg_path, run_dir)
        job["target_s"] = TARGETS_S[name]
        job["target_met"] = job["returncode"] == 0 and job["wall_s"] <= TARGETS_S[name]
        results[name] = job
        print(
            f"{name}: {job['wall_s']:.1f} s wall ({job['cpu_s']:.1f} s CPU), target <= {TARGETS_S[name]:g} s "
            f"{'met' if job['target_met'] else 'NOT met'} (load {job['load_average_start']} -> {job['load_average_end']})",
            flush=True,
        )
    device = torch.device(
        next((j["device"] for j in results.values() if j.get("device")), None) or resolve_device(config.device)
    )
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "jobs": results,
        "machine": machine_info(device),
        "note": "wall times include starting Python; timings taken while other processes use the CPU are inflated "
        "(see each job's load average)",
        "seeds": config.seeds,
        "methods": [spec.label for spec in config.methods],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(j["returncode"] == 0 for j in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
