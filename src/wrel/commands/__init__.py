"""wrel.commands: one module per subcommand (see wrel.cli)."""

from __future__ import annotations

import argparse

__all__ = ["add_set_argument"]


def add_set_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """The repeatable ``--set KEY=VALUE`` experiment override (into ``args.assignments``)."""
    parser.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=help,
    )
