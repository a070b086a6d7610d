"""``imgworker`` command line. Each subcommand lives in its own module and is listed in COMMANDS."""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

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


def build_parser() -> argparse.ArgumentParser:
    parser = HintingParser(prog="imgworker", description="Image-processing workers for Gearman")
    parser.add_argument("--version", action="version", version=f"imgworker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=HintingParser)
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
