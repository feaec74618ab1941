"""The ``wrel`` command line: ``main(argv) -> int``, a thin shell over library calls.

Each subcommand lives in ``wrel.commands.<name>`` and exposes ``add_parser(subparsers)`` (which
registers its parser and sets ``func``) and keeps heavy imports inside its run function, so
``wrel --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

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
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wrel",
        description=(
            "Referring remote sensing image segmentation trained with scarce expressions "
            "(WREL / LRB-WREL). Run `wrel COMMAND --help` for each command."
        ),
    )
    from wrel import __version__

    parser.add_argument("--version", action="version", version=f"wrel {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"wrel.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"wrel.commands.{name}":
                continue  # command not built yet
            raise
        module.add_parser(sub)
    return parser


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
    except (ValueError, FileNotFoundError) as err:
        print(f"wrel {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
