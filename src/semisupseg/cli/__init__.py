"""Command line: ``semisupseg <command> ...`` (also ``python -m semisupseg``).

Each command lives in its own module of this package with ``register(subparsers)`` adding its parser (and setting
``func`` to a ``run(args) -> int`` function). Errors the package raises on purpose (:class:`SemiSupSegError`) are
printed as one line ``error: ...`` with exit code 2 (a list of data problems gets one line per problem), and so are
the file-system errors of the user's situation (a full disk, a read-only or missing place: :data:`USER_OS_ERRORS`);
other exceptions are bugs and keep their traceback. With ``SEMISUPSEG_DEBUG=1`` in the environment an ``error:``
line is preceded by its traceback (details for a bug report).
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import traceback
from typing import List, Optional

from semisupseg import __version__
from semisupseg.cli.parser import Parser
from semisupseg.cli.streams import PipeSafeStream
from semisupseg.errors import Cancelled, SemiSupSegError

#: command modules in the order ``--help`` lists them
COMMAND_MODULES = ("train", "segment", "evaluate", "info", "import_checkpoint", "export_checkpoint", "methods",
                   "demo", "models", "ensemble", "worker", "preview", "plot_run", "check_data", "rank")


#: errors of the file system that are the user's situation, not a bug: one line, no traceback
USER_OS_ERRORS = frozenset(getattr(errno, name) for name in (
    "ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EACCES", "EPERM", "ENOTDIR", "EISDIR", "ENAMETOOLONG", "ENOENT", "EEXIST",
    "ELOOP", "EMFILE", "ENFILE") if hasattr(errno, name))
_OS_HINTS = {getattr(errno, "ENOSPC", -1): "the disk is full: free some space and run again",
             getattr(errno, "EDQUOT", -1): "the disk quota is used up: free some space and run again",
             getattr(errno, "EFBIG", -1): "the file would exceed the size limit (a full disk or a file size limit)",
             getattr(errno, "EROFS", -1): "the place is read-only: choose another output",
             getattr(errno, "EACCES", -1): "no permission: choose another output or fix its permissions"}


def os_error_line(exc: OSError) -> str:
    """``<file>: <problem>[; hint]`` for an :class:`OSError` of the file system."""
    where = exc.filename if exc.filename is not None else "(file)"
    what = exc.strerror or str(exc)
    hint = _OS_HINTS.get(exc.errno)
    return f"{where}: {what}" + (f"; {hint}" if hint else "")


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


#: set (to anything but 0 or empty) to see the traceback behind an ``error:`` line
DEBUG_ENV = "SEMISUPSEG_DEBUG"


def _details() -> None:
    """With ``$SEMISUPSEG_DEBUG`` set, print the traceback of the error being handled before its one line (for a bug
    report); without it a user error stays one line."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exc(file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    saved = sys.stdout, sys.stderr
    for stream in saved:  # a Windows console or pipe in a legacy code page: unencodable text (a method's γ, λ, Ω, a
        # non-ASCII path) is escaped, not a UnicodeEncodeError
        if hasattr(stream, "reconfigure") and getattr(stream, "errors", "strict") == "strict":
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass
    # a run outlives the reader of its output (Slicer quitting, a closed terminal): see semisupseg.cli.streams
    sys.stdout, sys.stderr = PipeSafeStream(sys.stdout), PipeSafeStream(sys.stderr)
    try:
        return int(args.func(args) or 0)
    except Cancelled as exc:
        print(f"cancelled: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # Ctrl-C where a command has no cancel of its own: one line, not a traceback
        _details()
        print("cancelled (interrupted): every output file finished before is complete and kept", file=sys.stderr)
        return 130
    except SemiSupSegError as exc:
        _details()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the disk, not the program: a full disk, a read-only or unreadable place
        if exc.errno not in USER_OS_ERRORS:
            raise
        _details()
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    finally:
        sys.stdout, sys.stderr = saved


if __name__ == "__main__":
    sys.exit(main())
