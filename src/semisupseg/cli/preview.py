"""``semisupseg preview IMAGE [--label L] [--sdm S] [--entropy E] [--prob P] -o fig.png``: a picture of a result.

Draws axial, coronal and sagittal slices through the object (the centroid of the label's foreground) with the
label's outline in one colour per class, one more row per map given (SDM, entropy, probability) in a colour map
with its colour bar, and the class names (from --model, the label file's segment names, or a dataset.json beside
it). The maps must be on the image's grid, as 'semisupseg segment' writes them (<case>_label, _sdm, _entropy,
_prob). Needs no plotting library: numpy and SimpleITK's PNG writer.
"""
from __future__ import annotations

import argparse
import sys


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "preview", help="draw slices of a scan with its label outline and maps (SDM, entropy, probability) as PNG",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", metavar="IMAGE", help="the scan (NIfTI/NRRD/MHA/DICOM folder/LA .h5)")
    p.add_argument("--label", "-l", metavar="L", help="label map on the image's grid (outlined per class)")
    p.add_argument("--sdm", metavar="S", help="signed distance map (<case>_sdm): blue inside, red outside")
    p.add_argument("--entropy", metavar="E", help="entropy map (<case>_entropy), nats")
    p.add_argument("--prob", metavar="P", help="probability map (<case>_prob); several classes: their sum")
    p.add_argument("--output", "-o", required=True, metavar="PNG", help="picture to write (.png)")
    p.add_argument("--model", "-m", metavar="MODEL",
                   help="take the class names from this model (file or catalogue name)")
    p.add_argument("--title", metavar="TEXT", help="title line (default: the image's name)")
    p.add_argument("--h5-spacing", type=float, default=0.625, help="voxel size (mm) of .h5 inputs (LA release)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing picture")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from semisupseg.preview import preview_files

    card = None
    if args.model:
        from semisupseg.catalogue import resolve_model
        from semisupseg.checkpoint import read_card

        card = read_card(resolve_model(args.model))
    overlays = {k: getattr(args, k) for k in ("sdm", "entropy", "prob") if getattr(args, k)}
    path = preview_files(args.image, args.output, label=args.label, overlays=overlays, card=card, title=args.title,
                         overwrite=args.overwrite, h5_spacing=(args.h5_spacing,) * 3)
    print(f"preview written to {path}", file=sys.stderr)
    return 0
