"""``imgworker`` command line. Each subcommand lives in its own module, named after it, listed in COMMANDS."""

from __future__ import annotations

import argparse
import importlib
import sys

from imgworker import __version__
from imgworker.core.config import ConfigError

# name -> (module, one-line help). Every command is listed in ``imgworker --help``, but only the module of the
# command that runs is imported (by name, here alone: tests/unit/test_layers.py), so ``imgworker submit``
# loads neither libvips nor NumPy, and ``imgworker worker`` pays for what a worker needs.
COMMANDS: dict[str, tuple[str, str]] = {
    "worker": ("imgworker.commands.worker", "run worker processes that serve resize and pipeline jobs"),
    "submit": ("imgworker.commands.submit", "submit a job, or one job per image in a directory"),
    "demo": ("imgworker.commands.demo", "run gearmand + a worker locally and resize sample images"),
    "pipelines": ("imgworker.commands.pipelines", "check pipeline YAML files"),
    "exporter": ("imgworker.commands.exporter", "export job server queue depths as Prometheus metrics"),
    "health": ("imgworker.commands.health", "probe a worker's /healthz or /readyz; exit 0 if healthy"),
    "failed": ("imgworker.commands.failed", "list or retry failed-job records"),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the command it names gets its arguments (its module imported), the
    others their one-line help. Without, every command is complete (tests check flags against it)."""
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    parser = argparse.ArgumentParser(prog="imgworker", description="Image-processing workers for Gearman")
    parser.add_argument("--version", action="version", version=f"imgworker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, summary) in COMMANDS.items():
        if chosen is None or chosen == name:
            importlib.import_module(module).add_parser(sub, summary)
        else:
            sub.add_parser(name, help=summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"imgworker: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
