"""Probability-averaging ensemble of trained models, scored on a held-out test list (issue 12's hippocampus lever).

Each model segments the test images (``semisupseg segment --prob``: foreground class probabilities in each image's
geometry); the ensemble's labels are the argmax of the mean probabilities (background = 1 - the foreground sum),
optionally followed by the largest-component step. Every single model is scored the same way from its own
probabilities, so the per-case CSVs (``semisupseg evaluate``'s format) compare pairwise with the ensemble's.

``--rotations DEG`` adds test-time rotations (the lever left after flips were ruled out for an anatomy whose mirror
image is another one): each model also segments the test images turned by +DEG and -DEG about each of the three
axes (about the array's centre, in voxel space: meant for isotropic voxels; trilinear, the border continued by
reflection), its probabilities are turned back and averaged with the unrotated ones (7 views). ``model<i>_tta`` is
then each model with its views, and the ensemble averages every model's views.

Usage::

    python benchmarks/ensemble.py --dataset hippocampus --data DIR --models A.pt B.pt --out DIR [--keep-largest]
        [--rotations 10] [--split-key confirm]

Writes ``OUT/model<i>/`` (segment outputs; ``OUT/model<i>_<view>/`` and the turned images ``OUT/views/<view>/``
with rotations), ``OUT/labels_<name>/`` and ``OUT/test_<name>.csv`` for ``model<i>``, ``model<i>_tta`` and
``ensemble``; prints the mean Dice per class of each.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def labels_from_probabilities(fg: np.ndarray, label_values: Sequence[int]) -> np.ndarray:
    """Label map ``(Z, Y, X)`` from foreground probabilities ``(C-1, Z, Y, X)`` (or ``(Z, Y, X)`` for one
    foreground class): argmax over ``[1 - sum(fg), fg...]``, mapped to ``label_values`` (background first)."""
    fg = fg[None] if fg.ndim == 3 else fg
    probs = np.concatenate([1.0 - fg.sum(axis=0, keepdims=True), fg], axis=0)
    return np.asarray(label_values)[np.argmax(probs, axis=0)]


def shared_label_values(cards: Sequence, names: Sequence[str]) -> List[int]:
    """The label values (background first) that every model card in ``cards`` declares; one line naming the
    models (``names``) and exit when they differ, as an ensemble of them would mix classes."""
    values = [int(v) for v in cards[0].label_values]
    if any([int(v) for v in c.label_values] != values for c in cards):
        raise SystemExit(f"error: {', '.join(map(str, names))}: the models do not share their label values")
    return values


def rotation_views(degrees: float) -> List[tuple]:
    """``(name, 3x3 rotation matrix in z, y, x voxel coordinates)``: the identity, then +/- ``degrees`` about the z,
    y and x axes (the identity alone for 0)."""
    views = [("identity", np.eye(3))]
    if degrees:
        for axis, (i, j) in zip("zyx", [(1, 2), (0, 2), (0, 1)]):  # about z: the (y, x) plane; ...
            for sign in (1, -1):
                a = np.deg2rad(sign * degrees)
                m = np.eye(3)
                m[i, i], m[i, j], m[j, i], m[j, j] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
                views.append((f"{axis}{'+' if sign > 0 else '-'}{degrees:g}", m))
    return views


def rotate_array(volume: np.ndarray, matrix: np.ndarray, order: int = 1) -> np.ndarray:
    """``volume`` (``(Z, Y, X)`` or ``(C, Z, Y, X)``) turned about its centre: output voxel ``o`` reads the input at
    ``c + matrix @ (o - c)`` (``c`` the array's centre, voxel units); trilinear for ``order`` 1, the border continued
    by reflection. Turning back is ``matrix.T``. float32 out."""
    from scipy import ndimage

    if volume.ndim == 4:
        return np.stack([rotate_array(c, matrix, order) for c in volume])
    centre = (np.asarray(volume.shape, dtype=np.float64) - 1) / 2.0
    return ndimage.affine_transform(np.asarray(volume, dtype=np.float32), matrix, offset=centre - matrix @ centre,
                                    order=order, mode="mirror", prefilter=False)


def mean_dice(csv_path: Path) -> dict:
    """Mean Dice per label (keys: the label values as text) and over all case-label pairs (``"all"``) of a
    per-case score file (read with the held-out benchmark's :func:`heldout.read_scores`)."""
    from heldout import read_scores

    scores = read_scores(csv_path)
    out = {str(label): float(np.mean([s["dice"] for (_, v), s in scores.items() if v == label]))
           for label in sorted({v for _, v in scores})}
    out["all"] = float(np.mean([s["dice"] for s in scores.values()]))
    return out


def main(argv: List[str] = None) -> int:
    from heldout import split_path

    from semisupseg.checkpoint import read_card
    from semisupseg.cli import main as cli
    from semisupseg.data import load_split
    from semisupseg.inference import keep_largest_component
    from semisupseg.io import read_image, read_volume, write_volume

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="split name under benchmarks/splits (its 'test' list)")
    p.add_argument("--split-key", default="test",
                   help="the split's list of cases to score (default test; hippocampus also has 'confirm')")
    p.add_argument("--data", required=True, help="dataset folder (imagesTr/labelsTr)")
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--keep-largest", action="store_true", help="largest-component step after the argmax")
    p.add_argument("--rotations", type=float, default=0.0, metavar="DEG",
                   help="test-time rotations: +/-DEG about each axis besides the unrotated image (default 0: none)")
    args = p.parse_args(argv)

    data, out = Path(args.data), Path(args.out)
    split = load_split(split_path(args.dataset))
    if args.split_key not in split:
        p.error(f"{split_path(args.dataset)} has no list {args.split_key!r} (it has {', '.join(sorted(split))})")
    test = split[args.split_key]
    cards = [read_card(m) for m in args.models]
    values = shared_label_values(cards, args.models)
    fg_values = [str(v) for v in values if v != 0]
    views = rotation_views(args.rotations)
    for view, matrix in views:
        folder = data / "imagesTr" if view == "identity" else out / "views" / view
        if view != "identity" and not folder.exists():
            part = folder.with_name(folder.name + ".part")  # renamed when whole: a re-run never takes half a view
            part.mkdir(parents=True, exist_ok=True)
            for case in test:
                image = read_image(data / "imagesTr" / f"{case}.nii.gz")
                write_volume(image.with_array(rotate_array(image.array, matrix)), part / f"{case}.nii.gz",
                             overwrite=True)
            part.rename(folder)
        images = [str(folder / f"{c}.nii.gz") for c in test]
        for i, model in enumerate(args.models):
            target = out / (f"model{i}" if view == "identity" else f"model{i}_{view}")
            if not target.exists():
                assert cli(["segment", *images, "--model", model, "-o", str(target), "--prob",
                            "--no-keep-largest"]) == 0
    names = [f"model{i}" for i in range(len(args.models))]
    if len(views) > 1:
        names += [f"model{i}_tta" for i in range(len(args.models))]
    names.append("ensemble")
    for name in names:
        (out / f"labels_{name}").mkdir(parents=True, exist_ok=True)
    for case in test:
        geometry = read_image(data / "imagesTr" / f"{case}.nii.gz")
        members = {}  # name -> foreground probabilities (C-1, Z, Y, X) or (Z, Y, X), in the image's own frame
        for i in range(len(args.models)):
            turned = []
            for view, matrix in views:
                folder = out / (f"model{i}" if view == "identity" else f"model{i}_{view}")
                prob = np.asarray(read_volume(folder / f"{case}_prob.nii.gz", allow_channels=True).array,
                                  dtype=np.float32)
                turned.append(prob if view == "identity" else rotate_array(prob, matrix.T))
            members[f"model{i}"] = turned[0]
            if len(views) > 1:
                members[f"model{i}_tta"] = np.mean(turned, axis=0)
        last = [members[f"model{i}_tta" if len(views) > 1 else f"model{i}"] for i in range(len(args.models))]
        members["ensemble"] = np.mean(last, axis=0)
        for name in names:
            labels = labels_from_probabilities(members[name], values)
            if args.keep_largest:
                labels = keep_largest_component(labels)
            write_volume(geometry.with_array(labels.astype(np.uint8)),
                         out / f"labels_{name}" / f"{case}_label.nii.gz", overwrite=True)
    print(f"{'model':<14} " + " ".join(f"Dice {v:>4}" for v in fg_values) + "   mean")
    for name in names:
        scores = out / f"test_{name}.csv"
        assert cli(["evaluate", str(out / f"labels_{name}"), str(data / "labelsTr"), "--cases", *test, "--labels",
                    *fg_values, "-o", str(scores), "--quiet", "--overwrite"]) == 0
        d = mean_dice(scores)
        print(f"{name:<14} " + " ".join(f"{d[v]:9.4f}" for v in fg_values) + f" {d['all']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
