"""The survivors table of docs/testing.md from benchmarks/results/mutation.json, verdicts carried over.

    python benchmarks/survivors.py [--json benchmarks/results/mutation.json] [--doc docs/testing.md] > rows.md

Each mutant that was not killed becomes one markdown row ``| where (file, function) | change (excerpt) | verdict |``.
The verdict is the one docs/testing.md already gives a row of the same file whose excerpt is part of the
mutant's original and mutated code (the code moved, the judgement did not); otherwise the verdict of a
rule below when one describes the change exactly (each rule is a kind of mutant judged the same way in
docs/testing.md); otherwise ``TO JUDGE``, which a person replaces before the table is committed. The
rules only name a kind of change; whether it is harmless there was decided by reading each kind once.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| `([^`:]+)(?::\d+)?`(?: `[^`]+`)? \| `(.*)` → `(.*)` \| (.+) \|$")

# (regex on the mutated line, the same verdict text docs/testing.md uses for that kind of change)
RULES = [
    (
        r"device=None|\.to\(None\)|\.to\(None, ",
        "equivalent: device placement / CUDA-only branch: a no-op on the CPU (the CUDA path runs where a GPU exists)",
    ),
    (r"indent=None|indent=\d\)|json\.dumps\([^)]*, \)", "equivalent: JSON indentation: layout only"),
    (r'raise \w+\(None\)|"XX.*XX"\)?$', "harmless: message wording beyond the part the tests match"),
    (r"perf_counter\(\) \+ ", "harmless: the recorded seconds only"),
]


def excerpt(original: str, mutated: str, context: int = 14) -> tuple[str, str]:
    """The differing part of two lines with ``context`` characters around it (as the table shows it)."""
    a, b = original, mutated
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    lo = max(0, start - context)
    return a[lo : len(a) - max(0, end - context)], b[lo : len(b) - max(0, end - context)]


def known_verdicts(doc: Path) -> list[tuple[str, str, str, str]]:
    rows = []
    for line in doc.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line.strip())
        if m:
            rows.append((m.group(1), m.group(2).replace("\\|", "|"), m.group(3).replace("\\|", "|"), m.group(4)))
    return rows


def verdict(s: dict, known: list[tuple[str, str, str, str]]) -> str:
    short = s["file"].removeprefix("src/corekd/")
    for file, old, new, text in known:
        if file == short and old in s["original"] and new in s["mutated"] and "killed by" not in text:
            return text
    for pattern, text in RULES:
        if re.search(pattern, s["mutated"]):
            return text
    return "TO JUDGE"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "mutation.json")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "testing.md")
    args = ap.parse_args()
    survivors = json.loads(args.json.read_text())["not_killed"]
    known = known_verdicts(args.doc)
    todo = 0
    for s in survivors:
        old, new = excerpt(s["original"], s["mutated"])
        text = verdict(s, known)
        todo += text == "TO JUDGE"
        esc = lambda t: t.replace("|", "\\|")  # noqa: E731
        status = "" if s["status"] == "survived" else f" ({s['status']})"
        where = f"`{s['file'].removeprefix('src/corekd/')}` `{s['function']}`"
        print(f"| {where} | `{esc(old)}` → `{esc(new)}` | {text}{status} |")
    print(f"{len(survivors)} rows, {todo} to judge", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
