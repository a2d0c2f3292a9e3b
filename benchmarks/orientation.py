"""Does a scan's voxel order change its segmentation? The shipped models on bundled sample scans written in other orders.

The same scan (and its reference label) is rewritten in other voxel orders with SimpleITK's ``DICOMOrient`` — the
anatomy and the header's physical geometry are unchanged, only the array order and the direction matrix — and
segmented with the shipped model, once as ``segment`` does it (the scan brought into the model card's training order,
``inference.orientation``) and once with the voxels as stored (the card's order removed: what every version before
2026-12-05 did). Dice per class against the reference written the same way. A table per model is printed.

Usage::

    python benchmarks/orientation.py [--orders RAS LPS PIR SLA] [--threads 1]
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

SAMPLES = {  # model -> bundled sample scans: test-split cases for hippocampus; every bundled LA scan is one of the
    # left-atrium model's labeled training scans (the benchmark compares voxel orders, not accuracy)
    "hippocampus": ["hippocampus/imagesTr/hippocampus_011.nii.gz", "hippocampus/imagesTr/hippocampus_015.nii.gz"],
    "left-atrium": ["la/imagesTr/06SR5RBREL16DQ6M8LWS.nii.gz"],
}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def main(argv=None) -> int:
    import SimpleITK as sitk
    import torch

    from semisupseg.catalogue import resolve_model
    from semisupseg.checkpoint import load_model
    from semisupseg.inference import SegmentOptions, segment
    from semisupseg.io import from_sitk, read_image, read_label, to_sitk
    from semisupseg.orientation import orientation_code

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders", nargs="+", default=["RAS", "LPS", "PIR", "SLA"])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    options = SegmentOptions(device="cpu")
    for name, files in SAMPLES.items():
        model, card = load_model(resolve_model(name))
        as_stored = copy.deepcopy(card)
        as_stored.inference.pop("orientation", None)
        values = card.label_values[1:]
        print(f"\n{name} (trained on scans stored {card.inference.get('orientation')}); Dice per class, mean over "
              f"{len(files)} scan(s)\n")
        print("| stored as | brought into the training order | as stored (before 2026-12-05) |")
        print("|---|---|---|")
        for code in args.orders:
            rows = {"turned": [], "stored": []}
            for rel in files:
                image = read_image(REPO / "src" / "semisupseg" / "sample_data" / rel)
                label = read_label(REPO / "src" / "semisupseg" / "sample_data" / rel.replace("imagesTr", "labelsTr"))
                image = from_sitk(sitk.DICOMOrient(to_sitk(image), code))
                label = from_sitk(sitk.DICOMOrient(to_sitk(label), code))
                assert orientation_code(image.direction) == code
                for key, c in (("turned", card), ("stored", as_stored)):
                    out = segment(image, model, c, options).labels.array
                    rows[key].append([_dice(out == v, label.array == v) for v in values])
            cells = [" / ".join(f"{x:.3f}" for x in np.mean(rows[k], axis=0)) for k in ("turned", "stored")]
            print(f"| {code} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
