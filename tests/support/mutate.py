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
        "imgworker.core.callback_url.x_parse_target", "imgworker.core.callback_url.x_parse_allow",
        "imgworker.core.callback_url.x__norm_host", "imgworker.features.callbacks.xǁCallbackPolicyǁ*",
        "imgworker.features.callback_address.x*", "imgworker.features.callbacks.x_resolve",
        "imgworker.features.callbacks.x_sign", "imgworker.core.callback_url.xǁTargetǁ*",
    ],
    "memory budget": [
        "imgworker.core.budget.x_estimate", "imgworker.core.budget.x_derive", "imgworker.core.budget.xǁCostǁ*",
        "imgworker.core.budget.xǁBudgetǁ*", "imgworker.core.budget.x_charge*",
        "imgworker.core.budget.x_job_scope", "imgworker.core.budget.x_current",
    ],
    "failed-job records": [
        "imgworker.features.failed_jobs.x_build_record", "imgworker.features.failed_jobs.x__join",
        "imgworker.features.failed_jobs.xǁFailedJobsǁ*",
    ],
}

# Survivors that cannot change behaviour, by mutant name (mutmut show NAME), with the reason.
_CB = "imgworker.features.callbacks."
_URL = "imgworker.core.callback_url."
_CON = "imgworker.core.contract."
_COLOUR_KEY = "parse_color's message is replaced by the option's own (_bad): the key is not shown"
_FJ = "imgworker.features.failed_jobs."
_OPT = "imgworker.core.options."
_WRITE = "write= only refuses a name ending in '/' (file://; s3:// ignores it): probe.json does not"
EQUIVALENT: dict[str, str] = {
    _URL + "x_parse_target__mutmut_13": "'ASCII' and 'ascii' name the same codec",
    _URL + "x__norm_host__mutmut_4": "urlsplit's hostname has no brackets and no spaces (spaces are refused)",
    _URL + "x__norm_host__mutmut_5": "the extra 'X's stripped never end a host: urlsplit's hostname is lower-case",
    _URL + "x__norm_host__mutmut_6": "the extra 'X's stripped never end a host: urlsplit's hostname is lower-case",
    _URL + "x_parse_allow__mutmut_6": "'' instead of None: refused by the same 'not host'",
    _URL + "x_parse_allow__mutmut_7": "an '@' in the entry always gives urlsplit a username: the two tests agree",
    _URL + "x_parse_allow__mutmut_14": "an '@' in the entry always gives urlsplit a username: that test refuses it",
    _URL + "xǁTargetǁ__str____mutmut_9": "only the part before the first '?' is used, whatever the maxsplit",
    _URL + "xǁTargetǁ__str____mutmut_12": "only the part before the first '?' is used, whatever the maxsplit",
    _OPT + "x_parse_color__mutmut_12": "a non-hex first digit passes the test but fails int(), which refuses the same",
    _OPT + "x_parse_color__mutmut_41": "the hex part has exactly 6 digits: [4:7] is [4:6]",
    _OPT + "x_suggest__mutmut_7": "only the closest match (close[0]) is shown, however many are asked for",
    _OPT + "x_suggest__mutmut_9": "only the closest match (close[0]) is shown, however many are asked for",
    "imgworker.core.contract.x_parse_info__mutmut_29": "required=None is falsy, as False",
    _CON + "x_parse_request__mutmut_38": "required=None is falsy, as False",
    _CON + "x_parse_request__mutmut_48": "required=None is falsy, as False",
    _CON + "x_parse_request__mutmut_31": "src and dst are both set here (_str with required=True), so 'or' is 'and'",
    _CON + "x__depth__mutmut_2": "only objects are measured (_check_payload), whose depth is at least 1",
    _CON + "x__loads__mutmut_4": "'UTF-8' and 'utf-8' name the same codec",
    _CON + "x__str__mutmut_15": "'UTF-8' and 'utf-8' name the same codec",
    _CON + "x__loads__mutmut_13": "Python's JSON and int-size messages are shorter than 200 characters",
    _OPT + "xǁOptǁcheck__mutmut_82": _COLOUR_KEY,
    _OPT + "xǁOptǁcheck__mutmut_84": _COLOUR_KEY,
    _OPT + "xǁOptǁcheck__mutmut_85": _COLOUR_KEY,
    _OPT + "xǁOptǁcheck__mutmut_86": _COLOUR_KEY,
    _OPT + "xǁOptǁcheck__mutmut_111": "the message of an internal assertion (an Opt kind no code declares)",
    _FJ + "xǁFailedJobsǁremove__mutmut_2": "MeteredStore passes the attributes it lacks to the store it wraps",
    _FJ + "xǁFailedJobsǁremove__mutmut_8": "MeteredStore passes the attributes it lacks to the store it wraps",
    _FJ + "xǁFailedJobsǁremove__mutmut_9": "MeteredStore passes the attributes it lacks to the store it wraps",
    "imgworker.core.budget.x_charge__mutmut_9": "a wait of exactly 0.05 s: >= and > differ on one float value",
    _FJ + "x__join__mutmut_3": "the prefix has no trailing '/' (FailedJobs.__init__) and no trailing spaces",
    _FJ + "x__join__mutmut_4": "the prefix is a URL: it starts with its scheme, never with '/'",
    _FJ + "x__join__mutmut_5": "the prefix has no trailing '/' already (FailedJobs.__init__)",
    _FJ + "x_build_record__mutmut_49": "bool(None) is False",
    _FJ + "x_build_record__mutmut_51": "bool(None) is False",
    _FJ + "x_redact_payload__mutmut_6": "UTF-8 is bytes.decode's default",
    _FJ + "x_redact_payload__mutmut_10": "'UTF-8' and 'utf-8' name the same codec",
    _FJ + "xǁFailedJobsǁcheck__mutmut_2": _WRITE,
    _FJ + "xǁFailedJobsǁcheck__mutmut_4": _WRITE,
    _FJ + "xǁFailedJobsǁcheck__mutmut_11": _WRITE,
    _FJ + "xǁFailedJobsǁcheck__mutmut_9": "the probe's name is never opened: only its folder is checked",
    _FJ + "xǁFailedJobsǁcheck__mutmut_10": "the probe's name is never opened: only its folder is checked",
}

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
