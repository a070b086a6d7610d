"""``imgworker`` command line. Each subcommand lives in its own module, named after it, listed in COMMANDS."""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

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


class HintingParser(argparse.ArgumentParser):
    """argparse that adds "did you mean --width?" to the error for a mistyped flag or command."""

    argv: Sequence[str] = ()

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        self.argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        super().error(message + flag_hint(self, message))


def flag_hint(parser: HintingParser, message: str) -> str:
    """The closest flag of the command given (or command name) to each unknown one named in ``message``."""
    commands: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            commands = dict(action.choices)
    unknown = re.search(r"unrecognized arguments: (.*)", message)
    if unknown:
        command = next((commands[a] for a in parser.argv if a in commands), parser)
        options = sorted(command._option_string_actions)
        words = [w.split("=", 1)[0] for w in unknown.group(1).split() if w.startswith("-")]
    else:
        choice = re.search(r"invalid choice: '([^']*)'", message)
        if not choice:
            return ""
        options, words = sorted(commands), [choice.group(1)]
    hints = [f"{w} -> {close[0]}" for w in words for close in [difflib.get_close_matches(w, options, n=1)] if close]
    return f" (did you mean: {', '.join(hints)}?)" if hints else ""


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the command it names gets its arguments (its module imported), the
    others their one-line help. Without, every command is complete (tests check flags against it)."""
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    parser = HintingParser(prog="imgworker", description="Image-processing workers for Gearman")
    parser.add_argument("--version", action="version", version=f"imgworker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=HintingParser)
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
