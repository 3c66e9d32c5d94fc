"""Mutation testing of the modules the fairness guarantees live in; writes benchmarks/results/mutation.json.

    python benchmarks/mutation.py [--jobs N] [--rerun-not-killed [--survivors-only] [--only GLOB ...]] [--no-install]

Runs mutmut (pinned in pyproject.toml's ``mutation`` extra; configured under ``[tool.mutmut]``)
on ``src/corekd/methods/``, ``data/protocols.py``, ``evaluation/`` and ``training.py``: every
mutant (a small change to one function) runs the tests that cover that function, fastest first,
and counts as killed when one fails. Slow (about 20 minutes on 2 shared cores), so not in CI.

If mutmut is missing (or another version is installed) this script says so and installs the
pinned version with pip into the running interpreter, unless ``--no-install`` is given. A fresh
``mutants/`` folder is used for every run; ``--rerun-not-killed`` keeps it and re-tests only the
mutants the last run did not kill (after tests were added), recording both runs. Torch
runs with one thread per worker. The JSON records the tool and version, the git commit, the
modules, the counts per status, the score (killed + timeout over all mutants), the wall time and
every mutant that was not killed, with its file, line and change. docs/testing.md explains the
survivors judged equivalent.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "mutation.json"
FAST_STAGE = ROOT / "mutants" / "fast-stage.json"  # written by benchmarks/mutation_fast.py
FAST_KILLED = "killed by a fast test"  # benchmarks/mutation_fast.py: mutmut's mutant, failed by a fast covering test
NOT_KILLED = (
    "survived",
    "no tests",
    "suspicious",
    "skipped",
    "not checked",
    "segfault",
    "check was interrupted by user",
)


def pinned_requirement() -> str:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return next(r for r in extras["mutation"] if r.startswith("mutmut"))


def installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mutmut")
    except PackageNotFoundError:
        return None


def ensure_tool(install: bool) -> str:
    requirement = pinned_requirement()
    wanted = requirement.split("==", 1)[1]
    have = installed_version()
    if have == wanted:
        return have
    problem = "is not installed" if have is None else f"is installed at version {have}, not the pinned {wanted}"
    print(f"mutmut {problem} (it is the optional extra 'mutation': pip install -e '.[mutation]').", flush=True)
    if not install:
        print("Not installing it (--no-install); nothing was run.")
        sys.exit(2)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", requirement]
    print("Installing it now: " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    have = installed_version()
    if have != wanted:
        sys.exit(f"mutmut {wanted} could not be installed (found {have})")
    return have


# Functions left out of the timed run, with the reason (docs/testing.md). Everything else in the
# configured modules is mutated.
FIGURE = (
    "draws a PNG with matplotlib (colours, sizes, labels): nothing a test can pin short of comparing pixels; the "
    "numbers it plots are computed by functions that are mutated"
)
PROSE = (
    "the prose and markdown layout of a report section; the numbers it prints come from functions that are "
    "mutated (reporting.tables, reporting.stats, evaluation.analyses)"
)
EXCLUDED_FUNCTIONS = {
    "src/corekd/reporting/run.py": {
        "_report_blocks": "the prose and layout of report.md (hundreds of text mutants); its tables come from "
        "records_frame / mean_std_table / format_cell / table_block, which are mutated",
        "_intro": PROSE,
        "_headline_blocks": PROSE,
        "training_section": PROSE,
        "dev_section": "the prose of report.md's dev section; its rule, which student beats the teacher, is "
        "students_above_teacher, which is mutated",
        "analyses_section": PROSE,
        "mstate_drift_section": PROSE,
        "provenance_section": "the layout of report.md's defaults section; which defaults are listed is "
        "defaults_in_effect, which is mutated",
    },
    "src/corekd/reporting/figures.py": {
        "tsne_figure": FIGURE,
        "curve_figure": FIGURE,
        "drift_figure": FIGURE,
        "rejection_figure": FIGURE,
        "write_run_figures": "chooses which PNG files to draw (figures are not results)",
        "pyplot": "selects matplotlib's Agg backend",
        "legend_outside": FIGURE,
    },
}


def mutant_patterns(only_mutate: list[str]) -> tuple[list[str], dict]:
    """``mutmut run`` name patterns: every module in the config, minus the excluded functions."""
    patterns, excluded = [], {}
    for glob in only_mutate:
        for path in sorted(ROOT.glob(glob)):
            if path.suffix != ".py":
                continue
            rel = str(path.relative_to(ROOT))
            module = ".".join(path.relative_to(ROOT / "src").with_suffix("").parts)
            skip = EXCLUDED_FUNCTIONS.get(rel)
            if not skip:
                patterns.append(f"{module}.*")
                continue
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in skip:
                    patterns.append(f"{module}.x_{node.name}__mutmut_*")
                elif isinstance(node, ast.ClassDef):
                    patterns.append(f"{module}.xǁ{node.name}ǁ*")
            excluded.update({f"{rel}::{name}": why for name, why in skip.items()})
    return patterns, excluded


def function_hashes() -> dict[str, str]:
    """mutmut's hash of each mutated function's source, by qualified mangled name (``corekd.training.x_init_model``)."""
    hashes = {}
    for meta in (ROOT / "mutants").rglob("*.py.meta"):
        module = ".".join(meta.relative_to(ROOT / "mutants" / "src").with_suffix("").with_suffix("").parts)
        hashes.update({f"{module}.{k}": v for k, v in json.loads(meta.read_text())["hash_by_function_name"].items()})
    return hashes


def fast_kills() -> set[str]:
    """Mutants ``benchmarks/mutation_fast.py`` found killed, whose function mutmut has not seen change since."""
    if not FAST_STAGE.is_file():
        return set()
    hashes = function_hashes()
    return {
        name
        for name, r in json.loads(FAST_STAGE.read_text())["results"].items()
        if r["status"] == "killed"
        and r["function_hash"]
        and r["function_hash"] == hashes.get(name.rsplit("__mutmut_", 1)[0])
    }


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def mutant_location(name: str, path: str) -> dict:
    """File, line and the changed line(s) of one mutant, from mutmut's own diff."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(name, path=path)
    removed = [line[1:] for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    function = re.sub(r"__mutmut_\d+$", "", name.rsplit(".", 1)[-1])  # x_name or xǁClassǁname
    parts = [p for p in function.split("ǁ") if p]
    qualname = parts[1:] if parts[0] == "x" else [parts[0].removeprefix("x_")]
    line = None
    source = (ROOT / path).read_text().splitlines()
    span = _function_span(ROOT / path, qualname)
    if removed and span:
        first = removed[0].strip()
        line = next((i + 1 for i in range(span[0] - 1, span[1]) if source[i].strip() == first), None)
    return {
        "mutant": name,
        "file": path,
        "line": line,
        "function": ".".join(qualname),
        "original": "\n".join(s.strip() for s in removed),
        "mutated": "\n".join(s.strip() for s in added),
    }


def _function_span(path: Path, qualname: list[str]) -> tuple[int, int] | None:
    body = ast.parse(path.read_text()).body
    node = None
    for part in qualname:
        node = next(
            (
                n
                for n in body
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == part
            ),
            None,
        )
        if node is None:
            return None
        body = node.body
    start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    return start, node.end_lineno


def run_mutmut(names: list[str], jobs: int, log: Path) -> tuple[float, list[float]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs), *names]
    log.parent.mkdir(exist_ok=True)
    print(f"progress: tail -f {log.relative_to(ROOT)}", flush=True)
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    with open(log, "w") as fh:
        run = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - started
    if run.returncode != 0:
        print(log.read_text()[-3000:])
        sys.exit(f"mutmut run failed (exit {run.returncode}); full output in {log}")
    return wall, [round(load_start, 2), round(os.getloadavg()[0], 2)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2, help="mutants tested at once (mutmut --max-children); default 2")
    ap.add_argument(
        "--rerun-not-killed",
        action="store_true",
        help="keep the last run's results; re-test only the mutants it did not kill or did not reach",
    )
    ap.add_argument(
        "--survivors-only",
        action="store_true",
        help="with --rerun-not-killed: re-test only the mutants that were run and survived",
    )
    ap.add_argument(
        "--unreached-only",
        action="store_true",
        help="with --rerun-not-killed: test only the mutants the last run did not reach (continue a stopped "
        "run without re-testing its survivors, which run every covering test)",
    )
    ap.add_argument(
        "--only",
        nargs="+",
        metavar="GLOB",
        default=None,
        help="with --rerun-not-killed: re-test only the mutants whose names match one of these patterns "
        "(e.g. 'corekd.methods.reconstruction.*'); the others keep their last status",
    )
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rebuild the JSON from mutants/ (e.g. after a run was stopped)",
    )
    ap.add_argument("--no-install", action="store_true", help="do not install mutmut if it is missing")
    args = ap.parse_args()

    version = ensure_tool(install=not args.no_install)
    os.chdir(ROOT)
    config = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["mutmut"]
    patterns, excluded = mutant_patterns(config["only_mutate"])
    commit = git("rev-parse", "HEAD")
    runs_file = ROOT / "mutants" / "runs.json"
    from mutmut.stats import status_by_exit_code

    if args.report_only:
        runs = json.loads(runs_file.read_text())
        for r, log in zip(runs, (ROOT / "mutants" / f"benchmark-run-{i + 1}.log" for i in range(len(runs)))):
            if not r["finished"] and log.is_file():  # stopped: it ran until its log was last written
                r["wall_seconds"] = round(log.stat().st_mtime - r["started_unix"], 1)
                r["kind"] += " (stopped before the end)"
    elif args.rerun_not_killed:
        if not runs_file.is_file():
            sys.exit("--rerun-not-killed needs a previous run's mutants/ folder (with mutants/runs.json)")
        runs = json.loads(runs_file.read_text())
        killed_fast = fast_kills()
        names = [
            name
            for meta in sorted(Path("mutants").rglob("*.py.meta"))
            for name, code in json.loads(meta.read_text())["exit_code_by_key"].items()
            if any(fnmatch.fnmatch(name, p) for p in patterns)
            and (code is None or status_by_exit_code[code] not in ("killed", "timeout"))
            and name not in killed_fast  # already known killed (benchmarks/mutation_fast.py)
            and not (args.survivors_only and code is None)
            and not (args.unreached_only and code is not None)
            and (args.only is None or any(fnmatch.fnmatch(name, g) for g in args.only))
        ]
        print(f"mutmut {version}: re-testing the {len(names)} mutants the last run did not kill or reach", flush=True)
        kind = (
            f"the {len(names)} mutants not reached before (a stopped run continued)"
            if args.unreached_only
            else f"re-test of the {len(names)} mutants not killed"
            + ("" if args.survivors_only else " or not reached")
            + " before"
            + (f" in {', '.join(args.only)}" if args.only else "")
            + ", with the tests added since"
        )
    else:
        if Path("mutants").exists():
            shutil.rmtree("mutants")
        names, runs = patterns, []
        print(
            f"mutmut {version}: mutmut run --max-children {args.jobs} <{len(patterns)} name patterns> "
            f"(torch threads 1); left out: {', '.join(excluded) or 'nothing'}",
            flush=True,
        )
        kind = "full"
    if not args.report_only:
        Path("mutants").mkdir(exist_ok=True)
        runs.append(
            {
                "kind": kind,
                "commit": commit,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "started_unix": round(time.time(), 1),
                "wall_seconds": None,
                "finished": False,
            }
        )
        runs_file.write_text(json.dumps(runs, indent=1))
        if names:
            wall, load = run_mutmut(names, args.jobs, ROOT / "mutants" / f"benchmark-run-{len(runs)}.log")
        else:
            wall, load = 0.0, [round(os.getloadavg()[0], 2)] * 2
        runs[-1].update(wall_seconds=round(wall, 1), finished=True, load_average_start_end=load)
        runs_file.write_text(json.dumps(runs, indent=1))

    statuses: dict[str, tuple[str, str]] = {}  # mutant -> (status, source path)
    left_out = 0
    killed_fast = fast_kills()
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        path = str(meta.relative_to("mutants"))[: -len(".meta")]
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if not any(fnmatch.fnmatch(name, p) for p in patterns):
                left_out += 1
                continue
            status = status_by_exit_code[code]
            if status not in ("killed", "timeout") and name in killed_fast:
                status = FAST_KILLED  # a fast test fails under it; mutmut's full run would see that test fail too
            statuses[name] = (status, path)
    counts = Counter(status for status, _ in statuses.values())
    total = len(statuses)
    detected = counts["killed"] + counts["timeout"] + counts[FAST_KILLED]
    survivors = sorted(
        (
            {"status": status, **mutant_location(name, path)}
            for name, (status, path) in statuses.items()
            if status in NOT_KILLED
        ),
        key=lambda s: (s["file"], s["line"] or 0, s["mutant"]),
    )
    per_file = {}
    for status, path in statuses.values():
        per_file.setdefault(path, Counter())[status] += 1
    result = {
        "tool": "mutmut",
        "version": version,
        "command": "python benchmarks/mutation.py" + (f" --jobs {args.jobs}" if args.jobs != 2 else ""),
        "commit": commit,
        "worktree_clean": git("status", "--porcelain", "--untracked-files=no", "src", "tests") == "",
        "modules": config["only_mutate"],
        "test_selection": config.get("pytest_add_cli_args_test_selection", []),
        "left_out": {"mutants": left_out, "functions": excluded},
        "counts": dict(sorted(counts.items())),
        "total": total,
        "score": round(detected / total, 4) if total else None,
        "score_definition": "(killed + timeout + killed by a fast test) / all mutants; survivors, 'no tests' and "
        "'not checked' (not reached) count against it",
        "fast_stage": (
            {k: v for k, v in json.loads(FAST_STAGE.read_text()).items() if k != "results"}
            if FAST_STAGE.is_file()
            else None
        ),
        "per_file": {p: dict(sorted(c.items())) for p, c in sorted(per_file.items())},
        "wall_seconds": round(sum(r["wall_seconds"] or 0 for r in runs), 1),
        "runs": runs,
        "workers": args.jobs,
        "torch_threads": 1,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "not_killed": survivors,
    }
    OUT.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"{total} mutants: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(
        f"score {result['score']:.1%} (killed + timeout over all run), {result['wall_seconds'] / 60:.1f} min; "
        f"wrote {OUT.relative_to(ROOT)}"
    )
    for s in survivors:
        print(f"  {s['status']}: {s['file']}:{s['line']} {s['function']}: {s['original']!r} -> {s['mutated']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
