"""Do two experiment folders hold the same results? Records, training entries, analyses and weights, bit for bit.

    python benchmarks/same_records.py NEW OLD

NEW and OLD are folders written by ``corekd run`` (a run or a sweep) or ``corekd compare``, e.g. the same config
run by two versions of corekd. Compared: results.json's records and training entries (without their ``seconds``),
its meta (without ``seconds`` and ``command``: a difference is listed, not counted), analyses.json whole, sweep.json
(without ``command``), every finished unit's records (``complete.json`` / ``cell.json``) and every
``model.safetensors`` byte for byte; a sweep's value folders are compared the same way. Reports are not compared
(they print the command and the seconds). Exit 0 when everything compared is equal, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

UNTIMED = ("seconds",)
UNCOMMANDED = ("seconds", "command")


def load(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def without(payload: dict, keys: tuple[str, ...]) -> dict:
    return {k: v for k, v in payload.items() if k not in keys}


def compare_folder(new: Path, old: Path, problems: list[str], notes: list[str]) -> None:
    """Append to ``problems`` every difference in what ``new`` and ``old`` hold (``notes``: meta differences)."""
    for name in ("results.json", "analyses.json", "sweep.json"):
        a, b = load(new / name), load(old / name)
        if (a is None) != (b is None):
            problems.append(f"{new / name}: present in one folder only")
            continue
        if a is None:
            continue
        assert isinstance(a, dict) and isinstance(b, dict)
        if name == "results.json":
            if a["records"] != b["records"]:
                problems.append(f"{new / name}: records differ")
            if [without(t, UNTIMED) for t in a.get("trainings", [])] != [
                without(t, UNTIMED) for t in b.get("trainings", [])
            ]:
                problems.append(f"{new / name}: training entries differ")
            ma, mb = without(a["meta"], UNCOMMANDED), without(b["meta"], UNCOMMANDED)
            notes += [f"{new / name}: meta.{k} differs" for k in sorted(set(ma) | set(mb)) if ma.get(k) != mb.get(k)]
        elif name == "sweep.json":
            if without(a, ("command",)) != without(b, ("command",)):
                problems.append(f"{new / name}: differs")
        elif a != b:
            problems.append(f"{new / name}: differs in {sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))}")
    for done in sorted([*new.glob("checkpoints/*/seed*/complete.json"), *new.glob("cells/*/seed-*/*/cell.json")]):
        other = load(old / done.relative_to(new))
        if other is None:
            problems.append(f"{done}: no such unit in {old}")
        elif load(done)["records"] != other["records"]:  # type: ignore[index]
            problems.append(f"{done}: records differ")
    for weights in sorted(new.rglob("model.safetensors")):
        twin = old / weights.relative_to(new)
        if not twin.is_file() or twin.read_bytes() != weights.read_bytes():
            problems.append(f"{weights}: weights differ")
    for sub in sorted(p for p in new.iterdir() if p.is_dir() and (p / "corekd-run.json").is_file()):
        compare_folder(sub, old / sub.name, problems, notes)  # a sweep's value folders


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("new", type=Path)
    ap.add_argument("old", type=Path)
    args = ap.parse_args(argv)
    problems: list[str] = []
    notes: list[str] = []
    compare_folder(args.new, args.old, problems, notes)
    for line in notes:
        print(f"note: {line}")
    for line in problems:
        print(f"DIFFERENT: {line}")
    print("same records, analyses and weights" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
