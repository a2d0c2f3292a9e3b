"""``semisupseg worker``: a long-lived segmentation process answering JSON-line requests on stdin (for GUIs).

The protocol is described in :mod:`semisupseg.worker`. The process keeps models loaded between requests and exits
when stdin closes. Its stdout carries only protocol lines (anything else a library prints goes to stderr).
"""
from __future__ import annotations

import argparse


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "worker", help="serve segment requests as JSON lines on stdin/stdout, keeping models loaded (for GUIs)",
        description="A warm segmentation process for GUIs: reads JSON requests (ping, segment, shutdown) on stdin, "
                    "writes JSON events on stdout, keeps recently used models loaded, exits when stdin closes. "
                    "See the semisupseg.worker module for the protocol.")
    p.add_argument("--cache-size", type=int, default=2, help="models kept loaded (least recently used dropped)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import io
    import sys

    from semisupseg.worker import Worker, protect_stdout

    out = protect_stdout()
    import torch  # imported before the first request so that it is paid at start, not on the first click

    if args.threads:
        torch.set_num_threads(int(args.threads))
    import semisupseg.inference  # noqa: F401 - same reason
    import semisupseg.io  # noqa: F401

    inp = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8")
    return Worker(out, cache_size=args.cache_size).serve(inp)
