"""``semisupseg methods``: list the registered training methods with a one-line description."""
from __future__ import annotations

import argparse
import dataclasses
import json


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser("methods", help="list the training methods",
                              description="List the registered training methods (for 'semisupseg train --method').")
    p.add_argument("--json", action="store_true", help="machine-readable: name, description, parameters, needs")
    p.add_argument("-v", "--verbose", action="store_true", help="also show each method's parameters and defaults")
    p.set_defaults(func=run)


def _params(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls.Params):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
        else:
            out[f.name] = None
    return out


def run(args: argparse.Namespace) -> int:
    from semisupseg.methods import list_methods

    methods = list_methods()
    if args.json:
        rows = [{"name": m.name, "description": m.description, "params": _params(m),
                 "network_arch": m.network_arch, "needs_sdm": m.needs_sdm, "uses_teacher": m.uses_teacher,
                 "needs_dropout": m.needs_dropout, "uses_unlabeled": getattr(m, "uses_unlabeled", True)}
                for m in methods]
        print(json.dumps(rows, indent=2, default=str))
        return 0
    width = max((len(m.name) for m in methods), default=0)
    for m in methods:
        print(f"{m.name:<{width}}  {m.description.strip().splitlines()[0] if m.description else ''}")
        if args.verbose:
            for k, v in _params(m).items():
                print(f"{'':<{width}}    {k} = {v!r}")
    return 0
