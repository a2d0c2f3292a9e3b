"""``semisupseg import-checkpoint PEER.pth -o MODEL.pt --layout … --spacing …``: convert a public release's raw V-Net
``state_dict`` (UA-MT, SASSNet/DTC, MC-Net/SGRS-Net) into a SemiSupSeg model file with a model card."""
from __future__ import annotations

import argparse
from pathlib import Path

from semisupseg.errors import InputError


def register(subparsers: "argparse._SubParsersAction") -> None:
    from semisupseg.checkpoint import DEFAULT_PEER_PATCH_XYZ
    from semisupseg.nets.vnet import LAYOUTS

    p = subparsers.add_parser(
        "import-checkpoint", help="convert a peer release's V-Net state_dict (.pth) into a SemiSupSeg model file",
        description="Read a raw V-Net state_dict saved by a public release (loaded safely, weights_only), check it "
                    "against the stated layout, infer the architecture (n_filters, normalisation, classes, SDM "
                    "head) from the weights, and write a SemiSupSeg model file (.pt, plus a .json copy of its card). "
                    "Layouts: 'uamt' plain V-Net (out_conv = segmentation); 'sassnet' SASSNet/DTC V-Net with SDM "
                    "head (out_conv + tanh = SDM, out_conv2 = segmentation); 'mcnet' MC-Net/SGRS-Net "
                    "encoder./decoder1. split (the first transposed-convolution decoder is kept).")
    p.add_argument("source", metavar="PEER.pth", help="the release's state_dict file")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.pt", help="model file to write")
    p.add_argument("--layout", required=True, choices=LAYOUTS, help="which release's key layout the file uses")
    p.add_argument("--spacing", type=float, nargs="+", metavar="MM",
                   help="voxel spacing in mm the network was trained at: one value (isotropic) or three (x y z); "
                        "the LA releases use 0.625. Needed unless a card written by export-checkpoint (PEER.json) "
                        "is beside the file: its settings are used for whatever is not given here")
    p.add_argument("--classes", nargs="+", metavar="NAME",
                   help="class names, background first (default: background foreground for binary models)")
    p.add_argument("--label-values", nargs="+", type=int, metavar="N",
                   help="label value written for each class (default 0 1 …)")
    p.add_argument("--n-filters", type=int, default=None,
                   help="expected base width (default: read from the weights; given, it must agree)")
    p.add_argument("--patch-size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="training patch / inference window in voxels, x y z, each a multiple of 16 (default: the "
                        f"card beside the file, else {' '.join(map(str, DEFAULT_PEER_PATCH_XYZ))})")
    p.add_argument("--normalization", default=None, metavar="KIND",
                   help="intensity normalisation the network expects (default: the card beside the file, else "
                        "zscore: per-volume z-score as in the releases' mri_norm2.h5)")
    p.add_argument("--decoder", default=None, help="mcnet layout: which decoder to keep (default: decoder1, "
                                                   "else decoder)")
    p.add_argument("--method", default=None, help="method name recorded in the card (default: the layout)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def _card_beside(source: Path):
    """The card ``export-checkpoint`` wrote beside ``source`` (``PEER.json``), or ``None``."""
    from semisupseg.checkpoint import ModelCard, sidecar_path

    beside = sidecar_path(source)
    if not beside.is_file():
        return None
    try:
        return ModelCard.from_json(beside.read_text(encoding="utf-8"))
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"is beside the weights but is no model card ({str(exc).splitlines()[0][:160]}): move it "
                         "away, or fix it", beside) from None


def run(args: argparse.Namespace) -> int:
    import sys

    from semisupseg.checkpoint import DEFAULT_PEER_PATCH_XYZ, import_peer_checkpoint, save_model, sidecar_path

    source = Path(args.source)
    beside = _card_beside(source)  # an export-checkpoint round trip keeps what the raw format cannot hold
    spacing = list(args.spacing) if args.spacing else (list(beside.spacing_xyz) if beside is not None else None)
    if spacing is None:
        raise InputError("--spacing MM is needed: the raw weights do not say the voxel size the network was trained "
                         "at (the LA releases use 0.625)", source)
    if len(spacing) == 1:
        spacing = spacing * 3
    if len(spacing) != 3 or min(spacing) <= 0:
        raise InputError(f"--spacing takes one or three positive values in mm, got {args.spacing}")

    def given(value, from_card):
        return value if value is not None else (from_card if beside is not None else None)

    out = Path(args.output)
    normalization = given(args.normalization and {"kind": args.normalization},
                          beside.normalization if beside is not None else None) or {"kind": "zscore"}
    model, card = import_peer_checkpoint(
        source, args.layout, spacing, class_names=given(args.classes, beside and beside.class_names),
        label_values=given(args.label_values, beside and beside.label_values), n_filters=args.n_filters,
        patch_size_xyz=given(args.patch_size, beside and beside.patch_size_xyz) or list(DEFAULT_PEER_PATCH_XYZ),
        normalization=normalization, method=given(args.method, beside and beside.method), decoder=args.decoder)
    if beside is not None:
        card.inference = dict(beside.inference)  # keep_largest, the training scans' voxel order
        card.training["card_beside"] = sidecar_path(source).name
        print(f"note: settings not given here come from {sidecar_path(source).name} beside the weights (spacing, "
              "window, classes, normalisation, inference)", file=sys.stderr)
    save_model(out, model, card, overwrite=args.overwrite)
    cfg = card.network
    print(f"wrote {out} (+ {sidecar_path(out).name}): {card.arch} n_filters={cfg['n_filters']} "
          f"{cfg['normalization']} {card.num_classes} classes ({cfg['seg_form']} head"
          f"{', SDM head' if cfg.get('sdm_head') else ''}), spacing {' x '.join(f'{s:g}' for s in card.spacing_xyz)} mm")
    return 0
