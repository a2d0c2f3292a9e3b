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
    p.add_argument("--spacing", required=True, type=float, nargs="+", metavar="MM",
                   help="voxel spacing in mm the network was trained at: one value (isotropic) or three (x y z); "
                        "the LA releases use 0.625")
    p.add_argument("--classes", nargs="+", metavar="NAME",
                   help="class names, background first (default: background foreground for binary models)")
    p.add_argument("--label-values", nargs="+", type=int, metavar="N",
                   help="label value written for each class (default 0 1 …)")
    p.add_argument("--n-filters", type=int, default=None,
                   help="expected base width (default: read from the weights; given, it must agree)")
    p.add_argument("--patch-size", type=int, nargs=3, default=list(DEFAULT_PEER_PATCH_XYZ), metavar=("X", "Y", "Z"),
                   help="training patch / inference window in voxels, x y z, each a multiple of 16 "
                        "(default %(default)s)")
    p.add_argument("--normalization", default="zscore", metavar="KIND",
                   help="intensity normalisation the network expects (default zscore: per-volume z-score as in "
                        "the releases' mri_norm2.h5)")
    p.add_argument("--decoder", default=None, help="mcnet layout: which decoder to keep (default: decoder1, "
                                                   "else decoder)")
    p.add_argument("--method", default=None, help="method name recorded in the card (default: the layout)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from semisupseg.checkpoint import import_peer_checkpoint, save_model, sidecar_path

    spacing = list(args.spacing)
    if len(spacing) == 1:
        spacing = spacing * 3
    if len(spacing) != 3 or min(spacing) <= 0:
        raise InputError(f"--spacing takes one or three positive values in mm, got {args.spacing}")
    out = Path(args.output)
    model, card = import_peer_checkpoint(
        args.source, args.layout, spacing, class_names=args.classes, label_values=args.label_values,
        n_filters=args.n_filters, patch_size_xyz=args.patch_size, normalization={"kind": args.normalization},
        method=args.method, decoder=args.decoder)
    try:
        save_model(out, model, card, overwrite=args.overwrite)
    except RuntimeError as exc:  # torch's zip writer on a full disk or a file size limit (the temp file is removed)
        if out.exists() or "inline_container" not in str(exc) and "PytorchStreamWriter" not in str(exc):
            raise
        raise InputError(f"cannot write the model file (a full disk or a file size limit?): "
                         f"{str(exc).strip().splitlines()[-1][:200]}", out) from exc
    cfg = card.network
    print(f"wrote {out} (+ {sidecar_path(out).name}): {card.arch} n_filters={cfg['n_filters']} "
          f"{cfg['normalization']} {card.num_classes} classes ({cfg['seg_form']} head"
          f"{', SDM head' if cfg.get('sdm_head') else ''}), spacing {' x '.join(f'{s:g}' for s in card.spacing_xyz)} mm")
    return 0
