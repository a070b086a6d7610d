"""``./dev mutate``: mutation testing of the core modules with their fast unit tests (docs/testing.md).

mutmut (the [dev] extra; configured in pyproject.toml ``[tool.mutmut]``) copies the package to ``mutants/``,
changes one thing at a time in the files it names (a comparison, a constant, a string, an argument) and runs
the unit tests that reach the changed function. A mutant that no test notices "survived": a bug of that shape
would pass the suite. This script runs it and reports the kill rate over the core functions below, per
module and in all; surviving mutants are listed, except those judged equivalent (``EQUIVALENT``: the change
cannot alter behaviour, with the reason).

    ./dev mutate              # run (resumes: only changed functions are retested), then report
    ./dev mutate --report     # report the last run only
    .venv/bin/mutmut show <name>   # the diff of one mutant
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MUTMUT = str(Path(sys.executable).parent / "mutmut")
TARGET = 0.90

# The core: mutmut's names for the functions that carry each rule (module.x_function, module.xǁClassǁmethod).
CORE = {
    "contract and options parsing": [
        "imgworker.core.contract.x_*", "imgworker.core.options.x*",
    ],
    "path confinement": [
        "imgworker.stores.file.x_url_to_path", "imgworker.stores.file.xǁFileStoreǁ*",
        "imgworker.stores.file.x__read_fd", "imgworker.stores.file.x__replace", "imgworker.stores.file_walk.x*",
    ],
    "redaction": [
        "imgworker.core.errors.x_redact", "imgworker.core.errors.x_redact_url",
        "imgworker.features.failed_jobs.x_redact_value", "imgworker.features.failed_jobs.x_redact_payload",
    ],
    "callback address rules": [
        "imgworker.features.callbacks.x_parse_target", "imgworker.features.callbacks.x_parse_allow",
        "imgworker.features.callbacks.x__norm_host", "imgworker.features.callbacks.xǁCallbackPolicyǁ*",
        "imgworker.features.callbacks.x_callback_of", "imgworker.features.callbacks.x_resolve",
        "imgworker.features.callbacks.x_sign", "imgworker.features.callbacks.xǁTargetǁ*",
    ],
    "memory budget": [
        "imgworker.worker.budget.x_estimate", "imgworker.worker.budget.x_derive", "imgworker.worker.budget.xǁCostǁ*",
        "imgworker.worker.budget.xǁBudgetǁ*", "imgworker.worker.budget.x_charge*",
        "imgworker.worker.budget.x_job_scope", "imgworker.worker.budget.x_current",
    ],
    "failed-job records": [
        "imgworker.features.failed_jobs.x_build_record", "imgworker.features.failed_jobs.x__join",
        "imgworker.features.failed_jobs.xǁFailedJobsǁ*",
    ],
}

# Survivors that cannot change behaviour, by mutant name (mutmut show NAME), with the reason.
EQUIVALENT: dict[str, str] = {}

CAUGHT = {"killed", "timeout", "caught by type check", "segfault"}


def results() -> dict[str, str]:
    out = subprocess.run([MUTMUT, "results", "--all", "true"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    found = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep:
            found[name] = status
    return found


def area_of(function: str) -> str | None:
    for area, patterns in CORE.items():
        if any(fnmatch.fnmatchcase(function, p) for p in patterns):
            return area
    return None


def report(found: dict[str, str]) -> float:
    tally: dict[str, Counter[str]] = defaultdict(Counter)
    left: list[str] = []
    for name, status in sorted(found.items()):
        area = area_of(re.sub(r"__mutmut_\d+$", "", name))
        if area is None:
            continue
        if status in CAUGHT:
            tally[area]["caught"] += 1
        elif name in EQUIVALENT:
            tally[area]["equivalent"] += 1
        else:
            tally[area]["left"] += 1
            left.append(f"  {name}: {status}")
    print(f"{'area':32} {'mutants':>8} {'killed':>7} {'equiv.':>7} {'left':>5} {'rate':>7}")
    total = Counter[str]()
    for area in CORE:
        t = tally[area]
        total.update(t)
        n = sum(t.values())
        rate = (t["caught"] + t["equivalent"]) / n if n else 0.0
        print(f"{area:32} {n:8} {t['caught']:7} {t['equivalent']:7} {t['left']:5} {rate:7.1%}")
    n = sum(total.values())
    rate = (total["caught"] + total["equivalent"]) / n if n else 0.0
    print(f"{'all core modules':32} {n:8} {total['caught']:7} {total['equivalent']:7} {total['left']:5} {rate:7.1%}")
    if left:
        print("\nnot killed (add a test, or a line in EQUIVALENT saying why it cannot matter):")
        print("\n".join(left))
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--report", action="store_true", help="report the last run, do not run")
    ap.add_argument("--max-children", default="2", help="parallel test processes (default 2: a shared machine)")
    args = ap.parse_args()
    if not args.report:
        env = {**os.environ, "CI": "true"}  # the Hypothesis CI profile: the same inputs for every mutant
        subprocess.run([MUTMUT, "run", "--max-children", args.max_children], cwd=REPO, env=env, check=True)
    rate = report(results())
    print(f"\nkill rate {rate:.1%} (target {TARGET:.0%})")
    return 0 if rate >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
