"""``imgworker worker``: run worker processes that serve resize and pipeline jobs (imgworker/worker/)."""

from __future__ import annotations

import argparse
from typing import Any

from imgworker.core.config import add_arguments, load
from imgworker.worker.process import run


def add_parser(sub: Any, summary: str) -> None:
    p = sub.add_parser("worker", help=summary)
    add_arguments(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    return run(load(args))
