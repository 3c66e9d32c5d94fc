"""Apply each hand-written fairness mutant (issue 18's table) to ``src/corekd``, run the suite, revert.

    python benchmarks/table_mutants.py [--only N ...] [--fast]

Every mutant is a one-line text replacement; the suite must go red for each. Writes
``benchmarks/results/table_mutants.json``: per mutant, whether it still applies to the code, the
tests that failed under it (with their messages), and the pytest exit code. The source file is restored after each
mutant (also on Ctrl-C). ``--fast`` runs only ``tests/integration/test_fairness.py`` instead of the whole
suite. Torch runs with one thread (a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "corekd"

# (what it breaks, file, original text, mutated text)
MUTANTS = [
    (
        "evaluation predicts with no mask (every condition scored on complete views)",
        "pipeline.py",
        "preds = predict(model, test, mask, batch_size, device, keep)",
        "preds = predict(model, test, None, batch_size, device, keep)",
    ),
    (
        "l_state weight dropped from the CoRe-KD total",
        "methods/corekd.py",
        'total = total + o.l_state * terms["state"]',
        'total = total + terms["state"]',
    ),
    (
        "inline NCE: clean = valid (conflict targets also scored by CE and CSA)",
        "methods/corekd.py",
        'clean = valid & ~conflict.selected if conflict is not None and o.nce_mode == "inline" else valid',
        "clean = valid",
    ),
    (
        "L_mstate uses the complete mask instead of the student's view",
        "methods/corekd.py",
        "modality_anchor(out.states, teacher.states, ctx.view.batch.mask,",
        "modality_anchor(out.states, teacher.states, ctx.batch.mask,",
    ),
    (
        "students of a seed initialised per method/label",
        "pipeline.py",
        'seed, "teacher" if method.name == "teacher" else "student",',
        "seed, label,",
    ),
    (
        "training masks seeded per method",
        "training.py",
        'self.mask_gen = torch_generator("train-mask", seed)',
        'self.mask_gen = torch_generator("train-mask", seed, method.name)',
    ),
    (
        "NCE draws from the mask stream",
        "methods/corekd.py",
        "conflict = nce_view(view.batch, source, o.nce_prob, tuple(o.nce_types), generator,",
        "conflict = nce_view(view.batch, source, o.nce_prob, tuple(o.nce_types), mask_generator,",
    ),
    (
        "students selected on complete dev views",
        "training.py",
        'dev_masks = method.dev_masks(dev.avail, torch_generator("dev-mask", seed), dev.modalities)',
        "dev_masks = dev.avail.clone()",
    ),
    (
        "margin term's donor labels = target labels",
        "methods/corekd.py",
        "donor_labels = labels.reshape(-1)[conflict.donor.clamp(min=0)]",
        "donor_labels = labels",
    ),
]


def run_one(k: int, fast: bool) -> dict:
    what, rel, old, new = MUTANTS[k]
    path = SRC / rel
    original = path.read_text()
    entry = {"mutant": k + 1, "breaks": what, "file": f"src/corekd/{rel}", "original": old, "mutated": new}
    if original.count(old) != 1:
        entry.update(applies=False, note="the original line is not in the code (any more): update this table")
        return entry
    tests = ["tests/integration/test_fairness.py"] if fast else ["tests/integration/test_fairness.py", "tests"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "400"}
    start = time.perf_counter()
    try:
        path.write_text(original.replace(old, new))
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *tests],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        path.write_text(original)
    found = re.findall(r"^FAILED (\S+)(?: - (.*))?$", proc.stdout, flags=re.M)
    failed = sorted({name for name, _ in found})
    entry.update(
        applies=True,
        killed=proc.returncode != 0 and bool(failed),
        pytest_exit=proc.returncode,
        failed_tests=failed,
        messages={name: why[:200] for name, why in found},
        seconds=round(time.perf_counter() - start, 1),
    )
    return entry


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", type=int, nargs="*", help="mutant numbers (1-based) to run")
    ap.add_argument("--fast", action="store_true", help="run tests/integration/test_fairness.py only")
    args = ap.parse_args()
    chosen = [n - 1 for n in args.only] if args.only else range(len(MUTANTS))
    results = []
    for k in chosen:
        entry = run_one(k, args.fast)
        results.append(entry)
        status = "n/a (does not apply)" if not entry["applies"] else ("killed" if entry["killed"] else "SURVIVED")
        print(f"{k + 1}. {entry['breaks']}: {status}", flush=True)
        for t in entry.get("failed_tests", []):
            print(f"     {t}: {entry['messages'].get(t, '')[:100]}", flush=True)
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    out = ROOT / "benchmarks" / "results" / "table_mutants.json"
    if not args.only:
        suite = "tests/integration/test_fairness.py" if args.fast else "tests/"
        out.write_text(json.dumps({"commit": git, "suite": suite, "mutants": results}, indent=1) + "\n")
        print(f"wrote {out}")
    return 0 if all(e.get("killed") for e in results if e["applies"]) else 1


if __name__ == "__main__":
    sys.exit(main())
