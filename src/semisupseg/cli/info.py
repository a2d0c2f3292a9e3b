"""``semisupseg info MODEL``: show a model file's card (what it segments, at which spacing, how it was trained)."""
from __future__ import annotations

import argparse


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "info", help="show a model file's metadata (classes, spacing, patch size, training summary)",
        description="Print the model card stored in a SemiSupSeg model file (.pt). The file is read safely "
                    "(weights_only): nothing in it is executed.")
    p.add_argument("model", metavar="MODEL", help="model file (.pt) written by 'semisupseg train' or "
                                                  "'semisupseg import-checkpoint', or a catalogue name "
                                                  "('semisupseg models')")
    p.add_argument("--json", action="store_true", help="print the card as JSON (for scripts)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from semisupseg.catalogue import resolve_model
    from semisupseg.checkpoint import read_model_file

    path = resolve_model(args.model)
    card, state = read_model_file(path, mmap=True)
    if args.json:
        print(card.to_json(indent=2))
        return 0
    n_params = sum(int(t.numel()) for k, t in state.items() if t.is_floating_point() and "running_" not in k)
    size_mb = path.stat().st_size / 1e6
    for line in card.summary_lines([("model file", f"{path} ({size_mb:.1f} MB, {n_params:,} parameters)")]):
        print(line)
    return 0
