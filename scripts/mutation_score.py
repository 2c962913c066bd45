"""Score of a mutmut run over some modules, from the results mutmut keeps in mutants/.

    python scripts/mutation_score.py 'gateway.rules.*' ...

Prints killed/total and every mutant that was not killed, marking those that
docs/mutation-testing.md lists as equivalent (a line "- `NAME`: why"). Exits 1 if a
mutant survived that the document does not list (mutmut numbers mutants within a
function, so an edited function can need its list entries redone).
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "mutation-testing.md"


def statuses(patterns: list[str]) -> dict[str, str]:
    out = {}
    for meta in (ROOT / "mutants").rglob("*.py.meta"):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if any(fnmatch.fnmatch(name, p) for p in patterns):
                out[name] = "not checked" if code is None else status_by_exit_code[code]
    return out


def equivalent() -> set[str]:
    if not DOC.exists():
        return set()
    return set(re.findall(r"^- `([^`]+)`", DOC.read_text(encoding="utf-8"), re.MULTILINE))


def main(patterns: list[str]) -> int:
    found = statuses(patterns)
    if not found:
        print(f"no mutants match {patterns} (run mutmut first)")
        return 1
    counts = Counter(found.values())
    listed = equivalent()
    open_ = sorted(n for n, s in found.items() if s != "killed" and n not in listed)
    known = sorted(n for n, s in found.items() if s != "killed" and n in listed)
    total = len(found)
    print(f"    {counts['killed']}/{total} killed ({100 * counts['killed'] / total:.1f}%); "
          + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s != "killed"))
    for name in known:
        print(f"    equivalent: {name} ({found[name]})")
    for name in open_:
        print(f"    NOT KILLED: {name} ({found[name]})")
    if open_:
        print("    (`.venv/bin/mutmut show NAME` prints a mutant's diff)")
    return 1 if open_ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["*"]))
