"""The fast stage of mutation testing: mutmut's own mutants, tested against the fast unit tests only.

    python benchmarks/mutation_fast.py [--jobs N] [--timeout S] [--only GLOB ...] [--order module|random]

Why: mutmut runs, for each mutant, every test that covers the mutated function, fastest first by
the test's own recorded time. A test's fixtures are not part of that time, so a test reading a
module-scoped tiny pipeline run looks free and runs first; a mutant of a report or training
function then pays a pipeline run (5-10 s) before its fast unit test, and a surviving mutant pays
every covering pipeline test (up to two minutes). On 2 cores the whole run takes many hours.

What it does: it needs the ``mutants/`` folder of a ``python benchmarks/mutation.py`` run on the
same commit (mutmut's trampolined copy of ``src/`` and its map of which tests cover which
function). For each mutant in scope that mutmut has not yet reached, or that survived (new tests
may kill it), it runs the mutant's covering tests that live in the fast test files
(``FAST_FILES``: unit tests on hand-made inputs, no pipeline runs), in a forked worker with
``MUTANT_UNDER_TEST`` set, which is how mutmut itself switches a mutant on. A failing test kills
the mutant: the same test fails in mutmut's own run, which runs a superset of these tests. A
mutant that no fast test kills is left as it was, for ``python benchmarks/mutation.py
--rerun-not-killed`` to decide with every covering test. Results go to
``mutants/fast-stage.json`` with mutmut's hash of each mutated function: ``benchmarks/mutation.py``
counts a fast-stage kill only while that function is unchanged, and lists it as such
(``killed by a fast test``) beside mutmut's own statuses.

Checks before any mutant runs: the selected tests pass without a mutant, and fail with mutmut's
``fail`` switch (the trampolines are active).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import json
import os
import signal
import sys
import time

# benchmarks/ is this script's folder, so on sys.path: mutation.py gives the scope (the mutated modules minus the
# left-out layout functions), mutmut's function hashes and where this stage's results go
from mutation import FAST_STAGE, ROOT, function_hashes, mutant_patterns

MUTANTS = ROOT / "mutants"
# The test modules of the mutated modules (tests/<package>/test_<module>.py): unit tests on hand-made inputs, no
# module-scoped pipeline fixture (a few tests in them train a tiny model or run a one-epoch corekd run).
FAST_FILES = (
    "tests/data/test_protocols.py",
    "tests/test_training.py",
    "tests/methods/test_*.py",
    "tests/evaluation/test_*.py",
    "tests/reporting/test_*.py",
    "tests/models/test_model.py",
)


def mangled_function(mutant: str) -> str:
    return mutant.rsplit("__mutmut_", 1)[0]


def run_one(mutant: str, tests: list[str]) -> int:
    """pytest exit code of ``tests`` with ``mutant`` switched on (called in a forked worker)."""
    import pytest
    from mutmut.mutation.trampoline import set_mutant_under_test

    set_mutant_under_test(mutant)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:warnings", *tests]))


def save(results: dict, args: argparse.Namespace, started: float, earlier_seconds: float, finished: bool) -> None:
    FAST_STAGE.write_text(
        json.dumps(
            {
                "what": "mutmut's mutants (mutants/), each run against its covering tests in the fast files",
                "command": "python benchmarks/mutation_fast.py"
                + (f" --only {' '.join(args.only)}" if args.only else ""),
                "fast_files": list(FAST_FILES),
                "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "finished": finished,
                "wall_seconds": round(
                    earlier_seconds + time.time() - started, 1
                ),  # every fast-stage run on this mutants/
                "results": results,
            },
            indent=1,
        )
        + "\n"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2, help="mutants tested at once (forked workers); default 2")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per mutant before it is left undecided")
    ap.add_argument("--only", nargs="+", metavar="GLOB", default=None, help="only mutants whose names match")
    ap.add_argument(
        "--order",
        choices=("module", "random"),
        default="module",
        help="the order mutants are tried in: by module, or shuffled (seed 0), so that a run stopped early has decided "
        "a uniform sample of them",
    )
    args = ap.parse_args()

    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    patterns, _ = mutant_patterns(config["only_mutate"])
    stats_file = MUTANTS / "mutmut-stats.json"
    if not stats_file.is_file():
        sys.exit("needs mutants/ from a `python benchmarks/mutation.py` run on this commit (mutants/mutmut-stats.json)")
    stats = json.loads(stats_file.read_text())
    covering = stats["tests_by_mangled_function_name"]
    from mutmut.stats import status_by_exit_code

    # the mutants to try, with the function hash mutmut recorded for each
    todo: list[tuple[str, str, list[str]]] = []
    fast = {t for t in stats["duration_by_test"] if any(fnmatch.fnmatch(t.split("::")[0], f) for f in FAST_FILES)}
    hashes = function_hashes()
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        for name, code in data["exit_code_by_key"].items():
            if not any(fnmatch.fnmatch(name, p) for p in patterns):
                continue
            if args.only and not any(fnmatch.fnmatch(name, g) for g in args.only):
                continue
            if code is not None and status_by_exit_code[code] in ("killed", "timeout"):
                continue
            func = mangled_function(name)
            tests = sorted((t for t in covering.get(func, []) if t in fast), key=lambda t: stats["duration_by_test"][t])
            if tests:
                todo.append((name, hashes.get(func, ""), tests))
    print(f"{len(todo)} mutants not killed by mutmut have covering tests in the fast files", flush=True)

    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    os.chdir(MUTANTS)
    sys.path.insert(0, str(MUTANTS / "src"))
    sys.path.insert(0, str(MUTANTS / "tests"))
    import torch

    torch.set_num_threads(1)
    all_tests = sorted({t for _, _, tests in todo for t in tests})
    from mutmut.mutation.trampoline import set_mutant_under_test

    for check, expect in (("", 0), ("fail", 1)):  # no mutant: green; mutmut's fail switch: red
        set_mutant_under_test(check)
        with contextlib.redirect_stdout(io.StringIO()) as out:
            import pytest

            rc = int(pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:warnings", *all_tests]))
        if rc != expect:
            print(out.getvalue()[-4000:])
            sys.exit(f"fast tests with MUTANT_UNDER_TEST={check!r}: exit {rc}, expected {expect}")
    os.environ.pop("MUTANT_UNDER_TEST", None)
    set_mutant_under_test(None)
    print(
        f"checked: the {len(all_tests)} fast tests pass without a mutant and fail with mutmut's fail switch", flush=True
    )

    previous = json.loads(FAST_STAGE.read_text()) if FAST_STAGE.is_file() else {"results": {}}
    results: dict[str, dict] = previous["results"]
    # an earlier fast-stage kill of the same function source stands; everything else is (re)tried with today's tests
    todo = [
        t
        for t in todo
        if not (results.get(t[0], {}).get("status") == "killed" and results[t[0]]["function_hash"] == t[1])
    ]
    print(f"{len(todo)} of them not already killed by an earlier fast stage", flush=True)
    if args.order == "random":
        import random

        random.Random(0).shuffle(todo)
    started, running, queue, done = time.time(), {}, list(todo), 0
    while queue or running:
        while queue and len(running) < args.jobs:
            name, digest, tests = queue.pop(0)
            pid = os.fork()
            if pid == 0:  # worker
                code = 3
                try:
                    code = run_one(name, tests)
                finally:
                    os._exit(code)
            running[pid] = (name, digest, len(tests), time.time())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            time.sleep(0.02)
            for wpid, (_name, _digest, _n, t0) in list(running.items()):
                if time.time() - t0 > args.timeout:
                    os.kill(wpid, signal.SIGKILL)
            continue
        name, digest, n, t0 = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        verdict = {0: "not killed", 1: "killed"}.get(code, "timeout" if code == -signal.SIGKILL else f"error {code}")
        results[name] = {"status": verdict, "function_hash": digest, "tests": n, "seconds": round(time.time() - t0, 2)}
        done += 1
        if done % 50 == 0 or not (queue or running):  # saved as it goes: a stopped run keeps what it found
            killed = sum(results[m]["status"] == "killed" for m, _, _ in todo if m in results)
            print(f"{done}/{len(todo)} run, {killed} killed, {time.time() - started:.0f} s", flush=True)
            save(results, args, started, previous.get("wall_seconds", 0.0), finished=not (queue or running))
    counts: dict[str, int] = {}
    for m, _, _ in todo:
        counts[results[m]["status"]] = counts.get(results[m]["status"], 0) + 1
    print(f"{len(todo)} mutants: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f"; wrote {FAST_STAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
