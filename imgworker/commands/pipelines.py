"""``imgworker pipelines check DIR``: validate pipeline files exactly as a worker does at start (for CI).

Exit 0 when every file loads for every backend asked; 1 with each problem as ``file:line: message``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from imgworker.pipeline import PipelineError, load_dir

BACKENDS = ("cpu", "gpu")


def add_parser(sub: Any, summary: str) -> None:
    p = sub.add_parser("pipelines", help=summary, description=__doc__)
    actions = p.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="validate a pipelines directory; exit 0 when all is well")
    check.add_argument("directory")
    check.add_argument("--backend", choices=(*BACKENDS, "all"), default="all",
                       help="check for workers of this backend (default: all)")
    check.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    failed = False
    seen: set[str] = set()
    for backend in backends:
        try:
            served, skipped = load_dir(args.directory, backend)
        except PipelineError as exc:
            failed = True
            for problem in exc.problems:
                line = str(problem)
                if line not in seen:  # the same file error shows up once, not once per backend
                    seen.add(line)
                    print(line, file=sys.stderr)
            continue
        names = ", ".join(sorted(served)) or "none"
        extra = f" (skipped, cpu-only: {', '.join(skipped)})" if skipped else ""
        print(f"{backend}: {len(served)} pipelines OK: {names}{extra}")
    return 1 if failed else 0
