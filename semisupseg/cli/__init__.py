"""Command line: ``semisupseg <command> ...`` (also ``python -m semisupseg``).

Each command lives in its own module of this package with ``register(subparsers)`` adding its parser (and setting
``func`` to a ``run(args) -> int`` function). Errors the package raises on purpose (:class:`SemiSupSegError`) are
printed as one line ``error: ...`` with exit code 2; other exceptions keep their traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from semisupseg import __version__
from semisupseg.cli.parser import Parser
from semisupseg.errors import Cancelled, SemiSupSegError

#: command modules in the order ``--help`` lists them
COMMAND_MODULES = ("train", "segment", "evaluate", "info", "import_checkpoint", "export_checkpoint", "methods",
                   "demo", "models", "worker")
COMMAND_MODULES += ("preview",)  # a picture of a scan and its results
COMMAND_MODULES += ("check_data", "rank")  # training panel: data check, uncertainty ranking


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(  # every sub-command's parser is a Parser too: exact option names, short errors, plain help
        prog="semisupseg",
        description="Semi-supervised 3D medical image segmentation: train, segment, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"semisupseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"semisupseg.cli.{name}").register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except Cancelled as exc:
        print(f"cancelled: {exc}", file=sys.stderr)
        return 130
    except SemiSupSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
