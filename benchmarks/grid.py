"""Time `corekd compare` on configs/paper_grid.yaml; writes benchmarks/results/grid.json.

    python benchmarks/grid.py [--config configs/paper_grid.yaml] [--out runs/paper_grid] [--part all|speedup|full]

Two parts:

- ``speedup``: one seed of the grid (every variant; ``--slice-seeds``) run three ways in fresh
  folders: 1 worker x 1 torch thread, 1 worker x 2 threads, 2 workers x 1 thread. It records each
  wall time, the speed-up of 2 single-thread workers over 1 worker (both thread counts), and
  whether the 1 x 1 and 2 x 1 records are identical (same thread count: they must be).
- ``full``: the whole grid with ``--workers`` (default 2) single-thread workers into ``--out``
  (a fresh folder unless ``--keep`` continues an earlier attempt), report included: wall time,
  cells, cells per minute, against the 30-minute target.

The JSON records the machine, the load average before and after each timing (figures from a busy
machine are slower than a quiet one's), the commit and the command. Each part keeps the other
part's last figures in the file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "grid.json"
TARGET_MINUTES = 30.0


def _timed(grid, out: Path, **kw) -> dict:
    from corekd.experiments import compare as run_grid
    from corekd.progress import LineGridProgress

    load = os.getloadavg()[0]
    started = time.perf_counter()
    result = run_grid(grid, out, progress=LineGridProgress(), **kw)
    wall = time.perf_counter() - started
    if result.failed:
        sys.exit(f"{len(result.failed)} cell(s) failed: {result.failed[:3]}")
    return {
        "wall_seconds": round(wall, 1),
        "cells": result.ran,
        "cells_per_minute": round(60 * result.ran / wall, 2),
        "load_average_start_end": [round(load, 2), round(os.getloadavg()[0], 2)],
    }


def speedup(config: Path, seeds: int) -> dict:
    import yaml

    from corekd.experiments.spec import load_grid, validate_grid

    raw = yaml.safe_load(config.read_text())
    raw["seeds"] = load_grid(config).seeds[:seeds]
    grid = validate_grid(raw, config)
    runs, records = {}, {}
    with tempfile.TemporaryDirectory(prefix="corekd-grid-bench-") as tmp:
        for workers, threads in ((1, 1), (1, 2), (2, 1)):
            key = f"{workers}x{threads}"
            print(f"speed-up slice ({len(grid.seeds)} seed(s)): {workers} worker(s) x {threads} thread(s)", flush=True)
            out = Path(tmp) / key
            runs[key] = {
                "workers": workers,
                "threads": threads,
                **_timed(grid, out, workers=workers, threads=threads, device="cpu", report=False),
            }
            records[key] = json.loads((out / "results.json").read_text())["records"]
    return {
        "slice": f"{config.name} with seeds {grid.seeds} ({runs['1x1']['cells']} cells), device cpu, report not drawn",
        "runs": runs,
        "speedup_2_workers_over_1_worker_1_thread": round(runs["1x1"]["wall_seconds"] / runs["2x1"]["wall_seconds"], 2),
        "speedup_2_workers_over_1_worker_2_threads": round(
            runs["1x2"]["wall_seconds"] / runs["2x1"]["wall_seconds"], 2
        ),
        "records_identical_1x1_vs_2x1": records["1x1"] == records["2x1"],
        "records_identical_1x1_vs_1x2": records["1x1"] == records["1x2"],
    }


def full(config: Path, out: Path, workers: int, keep: bool) -> dict:
    if out.exists() and not keep:
        shutil.rmtree(out)
    timing = _timed(config, out, workers=workers, threads=1)
    results = json.loads((out / "results.json").read_text())
    return {
        "command": f"corekd compare {config.relative_to(ROOT)} --out {out} --workers {workers}",
        "out": str(out),
        "workers": workers,
        "threads_per_worker": 1,
        "device": results["meta"]["device"],
        "continued_an_earlier_attempt": keep,
        **timing,
        "minutes": round(timing["wall_seconds"] / 60, 1),
        "target_minutes": TARGET_MINUTES,
        "meets_target": timing["wall_seconds"] / 60 < TARGET_MINUTES,
        "report": [str(out / "report.md"), str(out / "report.html")],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "paper_grid.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "paper_grid")
    ap.add_argument("--part", choices=("all", "speedup", "full"), default="all")
    ap.add_argument("--workers", type=int, default=2, help="workers of the full run (default 2)")
    ap.add_argument("--slice-seeds", type=int, default=1, help="seeds in the speed-up slice (default 1)")
    ap.add_argument(
        "--keep",
        action="store_true",
        help="full: continue an earlier attempt in --out (timing only the missing cells) instead of starting fresh",
    )
    args = ap.parse_args()
    config = args.config.resolve()
    payload = json.loads(OUT.read_text()) if OUT.is_file() else {}
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa: E731
    payload.update(
        {
            "benchmark": "python benchmarks/grid.py " + " ".join(sys.argv[1:]),
            "commit": git("rev-parse", "HEAD"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        }
    )
    import torch

    payload["torch"] = torch.__version__
    if args.part in ("all", "speedup"):
        payload["speedup"] = speedup(config, args.slice_seeds)
        OUT.write_text(json.dumps(payload, indent=1) + "\n")
    if args.part in ("all", "full"):
        payload["full"] = full(config, args.out.resolve(), args.workers, args.keep)
    OUT.write_text(json.dumps(payload, indent=1) + "\n")
    print(json.dumps({k: v for k, v in payload.items() if k in ("speedup", "full")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
