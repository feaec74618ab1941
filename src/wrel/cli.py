"""The ``wrel`` command line: ``main(argv) -> int``, a thin shell over library calls.

Each subcommand lives in ``wrel.commands.<name>`` and exposes ``add_parser(subparsers)`` (which
registers its parser and sets ``func``). Commands import the library at module level: building
the parser already loads torch, and the whole library adds about 0.1 s to that.

Errors: every exception prints one line ``wrel: error: <message>`` on stderr, without a
traceback (``--debug``, before or after the command, prints it too); the mapping is
:func:`wrel.core.errors.describe_error`. Exit codes: 0 success; 2 bad input (argument or config
errors, invalid, damaged or missing files: ``ValueError``, ``KeyError``, ``TypeError``,
``OverflowError``, ``RecursionError``, ``FileNotFoundError``, ``PermissionError`` and the other
path errors, a damaged safetensors file); 1 a fault while working (a full or read-only disk and
other ``OSError``, also inside a library's own error type; ``MemoryError`` and torch's
allocation failures, with the size asked; a non-finite loss) and internal errors (bugs, named as
such); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from wrel import __version__
from wrel.core.errors import describe_error

# Order shown in `wrel --help`. Plain list -> modules; a missing module is a bug, not hidden.
COMMAND_MODULES = [
    "demo",
    "data",
    "train",
    "evaluate",
    "predict",
    "serve",
    "bench",
    "table",
    "bound",
    "bank",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wrel",
        description=(
            "Referring remote sensing image segmentation trained with scarce expressions "
            "(WREL / LRB-WREL). Run `wrel COMMAND --help` for each command."
        ),
    )

    parser.add_argument("--version", action="version", version=f"wrel {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"wrel.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"wrel.commands.{name}":
                continue  # command not built yet
            raise
        module.add_parser(sub)
    _add_debug(sub)  # `wrel train ... --debug` and `wrel data stats ... --debug` work too
    return parser


def _add_debug(sub: argparse._SubParsersAction) -> None:
    """Add ``--debug`` to every (nested) subcommand parser."""
    for command in sub.choices.values():
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
        )
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_debug(action)


_DEBUG_HELP = "print the full traceback of an error (default: one line)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print("wrel: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # every error: one line (--debug: the traceback first)
        if args.debug:
            traceback.print_exc()
        code, line = describe_error(err)
        print(f"wrel: error: {line}", file=sys.stderr)
        return code
