"""``semisupseg export-checkpoint MODEL.pt -o PEER.pth --layout …``: write a SemiSupSeg V-Net's weights in a public
release's key layout (SASSNet/DTC, UA-MT, MC-Net/SGRS-Net), the inverse of ``import-checkpoint``."""
from __future__ import annotations

import argparse


def register(subparsers: "argparse._SubParsersAction") -> None:
    from semisupseg.nets.vnet import LAYOUTS

    p = subparsers.add_parser(
        "export-checkpoint", help="write a model file's V-Net weights as a peer release's raw state_dict (.pth)",
        description="Read a SemiSupSeg model file safely (weights_only) and write its V-Net weights as a plain "
                    "state_dict with a public release's key names, for that release's own scripts "
                    "(net.load_state_dict(torch.load(FILE))). Layouts: 'sassnet' SASSNet/DTC (model must have an "
                    "SDM head), 'uamt' plain V-Net, 'mcnet' MC-Net/SGRS-Net encoder./decoder1. split (only one "
                    "decoder is written: load it there with strict=False). The model card (spacing, classes, "
                    "normalisation, which the releases hard-code) is written beside it as .json.")
    p.add_argument("model", metavar="MODEL.pt",
                   help="SemiSupSeg model file (a 'vnet' network, or an ensemble of them with --member), the name of "
                        "a catalogued model ('semisupseg models' lists them) or a training run's folder")
    p.add_argument("-o", "--output", required=True, metavar="PEER.pth", help="state_dict file to write")
    p.add_argument("--layout", required=True, choices=LAYOUTS, help="which release's key layout to write")
    p.add_argument("--decoder", default="decoder1", help="mcnet layout: the decoder's key prefix (default %(default)s)")
    p.add_argument("--member", type=int, default=None, metavar="K",
                   help="an ensemble file: export its K-th network (1-based; 'semisupseg info' lists them)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from semisupseg.catalogue import resolve_model
    from semisupseg.checkpoint import export_peer_checkpoint

    path = resolve_model(args.model)  # a catalogue name or a run folder, as segment, rank and info take them
    dst, side = export_peer_checkpoint(path, args.output, args.layout, decoder=args.decoder,
                                       overwrite=args.overwrite, member=args.member)
    which = f"member {args.member} of {args.model}, " if args.member is not None else ""
    print(f"wrote {dst} ({which}{args.layout} layout) and its card {side.name}")
    return 0
