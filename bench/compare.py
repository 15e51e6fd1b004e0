"""Two versions of the library side by side in one run: the same cases, interleaved.

    git worktree add ../base <commit>
    python bench/compare.py ../base handler-marked capture structlog-ours
    python bench/compare.py ../base --repeats 9 handler-marked

Each repeat runs every case from the other checkout and then from this one, each in a
fresh process with the checkout's own ``bench/case.py`` and package (``PYTHONPATH``), so
that a noisy moment slows both alike. The table gives the medians and the ratio of this
checkout to the other: what a change costs the application, on the figures
``bench/run.py`` reports (caller CPU and wall time per call, total process CPU per
delivered event).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine, table
from case import CASES_BY_NAME
from run import figures, median, run_case

HERE = Path(__file__).resolve().parent.parent
FIGURES = ("caller_cpu_us", "caller_wall_us", "total_cpu_us")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("other", type=Path, help="the checkout to compare with")
    parser.add_argument("cases", nargs="+", choices=list(CASES_BY_NAME), metavar="case")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    trees = {"other": args.other.resolve(), "this": HERE}
    found: dict[tuple[str, str], list[dict[str, float]]] = {
        (tree, case): [] for tree in trees for case in args.cases
    }
    for repeat in range(args.repeats):
        for case_name in args.cases:
            case = CASES_BY_NAME[case_name]
            for tree, path in trees.items():
                print(f"repeat {repeat + 1}/{args.repeats}: {case_name} ({tree})", file=sys.stderr)
                run = run_case(case, case.calls or args.calls, path)
                found[(tree, case_name)].append(figures(case, run))
    rows = []
    for case_name in args.cases:
        for key in FIGURES:
            other = median([f[key] for f in found[("other", case_name)]])
            this = median([f[key] for f in found[("this", case_name)]])
            if other is None or this is None:
                continue
            rows.append(
                {
                    "case": case_name,
                    "figure (µs)": key.removesuffix("_us"),
                    f"{trees['other'].name}": f"{other:.2f}",
                    "this": f"{this:.2f}",
                    "this / other": f"{this / other:.3f}",
                }
            )
    print(f"{machine()}; {args.repeats} interleaved repeats, medians\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
