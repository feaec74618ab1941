"""The ``wrel`` command line: ``main(argv) -> int``, a thin shell over library calls.

Each subcommand lives in ``wrel.commands.<name>`` and exposes ``add_parser(subparsers)`` (which
registers its parser and sets ``func``). Commands import the library at module level: building
the parser already loads torch, and the whole library adds about 0.1 s to that.

Errors: an expected failure prints one line ``wrel: error: <message>`` on stderr, without a
traceback (``--debug``, before or after the command, prints it too). Exit codes: 0 success;
2 bad input (argument or config errors, invalid or missing files: ``ValueError``,
``FileNotFoundError``, ``PermissionError`` and the other path errors); 1 a fault while working
(a full or read-only disk during a save and other ``OSError``, ``MemoryError``, torch's
``OutOfMemoryError``, a non-finite loss); 130 interrupted (Ctrl-C). Any other exception is a
bug and keeps its traceback.
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

# Order shown in `wrel --help`. Plain list -> modules; a missing module is a bug, not hidden.
COMMAND_MODULES = [
    "demo",
    "data",
    "train",
    "evaluate",
    "predict",
    "serve",
    "bench",
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
    for command in sub.choices.values():  # `wrel train ... --debug` works too
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
        )
    return parser


_DEBUG_HELP = "print the full traceback of an error (default: one line)"

#: Path problems of the user's input (exit 2); any other OSError is a fault while working.
_INPUT_OS_ERRORS = (
    FileNotFoundError,
    PermissionError,
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
)


def _exit_code(err: BaseException) -> int:
    code = getattr(err, "exit_code", None)  # e.g. CheckpointWriteError: 1
    if isinstance(code, int):
        return code
    if isinstance(err, (ValueError, *_INPUT_OS_ERRORS)):
        return 2
    return 1


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if isinstance(err, OSError) and not text:
        text = err.strerror or ""
    return text or type(err).__name__


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
    except (ValueError, OSError, MemoryError, FloatingPointError) as err:
        if args.debug:
            traceback.print_exc()
        print(f"wrel: error: {_one_line(err)}", file=sys.stderr)
        return _exit_code(err)
    except RuntimeError as err:
        if type(err).__name__ != "OutOfMemoryError":  # torch's; anything else is a bug
            raise
        if args.debug:
            traceback.print_exc()
        print(f"wrel: error: out of memory: {_one_line(err)}", file=sys.stderr)
        return 1
