"""``semisupseg ensemble MODEL MODEL ... -o OUT.pt``: join trained models into one model file that averages their
class probabilities (see :mod:`semisupseg.ensembles`)."""
from __future__ import annotations

import argparse


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "ensemble", help="join 2-8 trained models into one model file that averages their probabilities",
        description="Write one model file holding several trained networks; segmenting with it averages their "
                    "class probabilities (labels, entropy and, when every member has one, the SDM). Usually a few "
                    "seeds of one recipe: an ensemble is steadier than any one seed, at the members' summed size and "
                    "inference time. The members must share classes, spacing, intensity normalisation and patch "
                    "size. Use it like any model: segment --model OUT.pt, or add it to the catalogue with "
                    "'semisupseg models add OUT.pt'.")
    p.add_argument("models", nargs="+", metavar="MODEL", help="model files (.pt) or catalogue names, 2-8")
    p.add_argument("-o", "--output", required=True, metavar="OUT.pt", help="the ensemble model file to write")
    p.add_argument("--half", action="store_true",
                   help="store the weights as float16 (half the size; check the labels against the float32 file)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from semisupseg.catalogue import resolve_model
    from semisupseg.checkpoint import save_model
    from semisupseg.ensembles import combine_models

    paths = [resolve_model(m) for m in args.models]
    net, card = combine_models(paths)
    out = save_model(args.output, net, card, overwrite=args.overwrite, half=args.half)
    size_mb = out.stat().st_size / 1e6
    n_params = sum(p.numel() for p in net.parameters())
    methods = sorted({m.get("method", "?") for m in card.training.get("members", [])}) or [card.method]
    print(f"wrote {out} ({size_mb:.1f} MB, {n_params:,} parameters{', float16 weights' if args.half else ''}): "
          f"{len(paths)} {' + '.join(methods)} models, mean of their probabilities")
    return 0
