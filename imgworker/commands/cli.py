"""``imgworker`` command line. Each subcommand lives in its own module and is listed in COMMANDS."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from imgworker import __version__
from imgworker.core.config import ConfigError, add_arguments, load

# Explicit list (module, or None for the built-in worker command): a reader sees every command here.
COMMANDS: list[str] = [
    "imgworker.commands.submit",
    "imgworker.commands.demo",
    "imgworker.commands.pipelines",
    "imgworker.commands.exporter",
    "imgworker.commands.health",
    "imgworker.commands.failed",
]


def _add_worker(sub: Any) -> None:
    p = sub.add_parser("worker", help="run worker processes that serve resize and pipeline jobs")
    add_arguments(p)
    p.set_defaults(func=_worker)


def _worker(args: argparse.Namespace) -> int:
    from imgworker.worker.process import run

    return run(load(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgworker", description="Image-processing workers for Gearman")
    parser.add_argument("--version", action="version", version=f"imgworker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_worker(sub)
    for name in COMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"imgworker: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
