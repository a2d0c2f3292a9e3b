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
from semisupseg.cli.streams import PipeSafeStream
from semisupseg.errors import Cancelled, SemiSupSegError

#: command modules in the order ``--help`` lists them
COMMAND_MODULES = ("train", "segment", "evaluate", "info", "import_checkpoint", "export_checkpoint", "methods",
                   "demo", "models", "worker", "preview", "plot_run", "check_data", "rank")


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
    saved = sys.stdout, sys.stderr
    # a run outlives the reader of its output (Slicer quitting, a closed terminal): see semisupseg.cli.streams
    sys.stdout, sys.stderr = PipeSafeStream(sys.stdout), PipeSafeStream(sys.stderr)
    try:
        return int(args.func(args) or 0)
    except Cancelled as exc:
        print(f"cancelled: {exc}", file=sys.stderr)
        return 130
    except SemiSupSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        sys.stdout, sys.stderr = saved


if __name__ == "__main__":
    sys.exit(main())
