"""Wall time of the main job, ``corekd run configs/quickstart.yaml``, against its 10-minute target.

Run from the repository root::

    python benchmarks/quickstart.py [--run-dir runs/quickstart-bench] [--out benchmarks/results/quickstart.json]

The job runs as a subprocess of this interpreter (``python -m corekd.cli run ...``), its output
shown as it goes; the JSON records the command, the wall time, the target and whether it was
met, the machine, and where the report was written. Exits non-zero if the job failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from corekd.config import load_config
from corekd.pipeline import resolve_device

# benchmarks/ is on sys.path when this file is run as a script: share the machine description.
from speed import load_average, machine_info

CONFIG = Path("configs/quickstart.yaml")
TARGET_MINUTES = 10.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default=Path("runs/quickstart-bench"), type=Path, help="the run's output folder")
    parser.add_argument("--out", default=Path("benchmarks/results/quickstart.json"), type=Path, help="where the JSON goes")
    args = parser.parse_args(argv)

    config = load_config(CONFIG)
    # --overwrite: an earlier benchmark run in run_dir is moved aside (never deleted), not refused.
    command = [sys.executable, "-m", "corekd.cli", "run", str(CONFIG), "--out", str(args.run_dir), "--overwrite"]
    print("running:", shlex.join(command), flush=True)

    load_start = load_average()
    started = time.perf_counter()
    returncode = subprocess.run(command, check=False).returncode
    wall = time.perf_counter() - started

    # The device the job used, as it recorded it (falls back to how it resolves the config's device).
    results_path = args.run_dir / "results.json"
    meta = json.loads(results_path.read_text()).get("meta", {}) if results_path.is_file() else {}
    device = torch.device(meta.get("device") or resolve_device(config.device))
    if config.threads:  # machine_info reports this process's thread count: match the job's setting
        torch.set_num_threads(config.threads)
    report = args.run_dir / "report.md"

    result = {
        "command": shlex.join(["corekd", "run", str(CONFIG), "--out", str(args.run_dir)]),
        "subprocess": shlex.join(command),
        "returncode": returncode,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(wall, 2),
        "wall_min": round(wall / 60, 3),
        "pipeline_s": meta.get("seconds"),  # the job's own timing of its training and evaluation
        "target_min": TARGET_MINUTES,
        "target_met": returncode == 0 and wall / 60 <= TARGET_MINUTES,
        "machine": {**machine_info(device), "load_average_start": load_start, "load_average_end": load_average()},
        "run_dir": str(args.run_dir),
        "report": str(report) if report.is_file() else None,
        "seeds": config.seeds,
        "methods": [spec.label for spec in config.methods],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    status = "met" if result["target_met"] else "NOT met"
    print(f"quickstart: {wall:.1f} s ({wall / 60:.2f} min), target <= {TARGET_MINUTES:g} min {status}; "
          f"report {result['report']}; wrote {args.out}")
    return 0 if returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
