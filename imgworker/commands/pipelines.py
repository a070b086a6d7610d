"""``imgworker pipelines check DIR``: validate pipeline files exactly as a worker does at start (for CI).

Exit 0 when every file loads for every backend asked; 1 with every problem of every file, at once, as
``file:line: message`` in file and line order (a pipeline with ``outputs: []`` is one: no job on it could succeed).
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
    problems: dict[str, tuple[str, int]] = {}  # the same file error once, not once per backend
    for backend in backends:
        try:
            served, skipped = load_dir(args.directory, backend)
        except PipelineError as exc:
            for problem in exc.problems:
                problems.setdefault(str(problem), (problem.path, problem.line))
            continue
        names = ", ".join(sorted(served)) or "none"
        extra = f" (skipped, cpu-only: {', '.join(skipped)})" if skipped else ""
        print(f"{backend}: {len(served)} pipelines OK: {names}{extra}")
    for line in sorted(problems, key=lambda text: problems[text]):
        print(line, file=sys.stderr)
    return 1 if problems else 0
