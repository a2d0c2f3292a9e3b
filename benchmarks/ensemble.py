"""Probability-averaging ensemble of trained models, scored on a held-out test list (issue 12's hippocampus lever).

Each model segments the test images (``semisupseg segment --prob``: foreground class probabilities in each image's
geometry); the ensemble's labels are the argmax of the mean probabilities (background = 1 - the foreground sum),
optionally followed by the largest-component step. Every single model is scored the same way from its own
probabilities, so the per-case CSVs (``semisupseg evaluate``'s format) compare pairwise with the ensemble's.

Usage::

    python benchmarks/ensemble.py --dataset hippocampus --data DIR --models A.pt B.pt --out DIR [--keep-largest]

Writes ``OUT/model<i>/`` (segment outputs), ``OUT/labels_model<i>/``, ``OUT/labels_ensemble/`` and
``OUT/test_model<i>.csv``, ``OUT/test_ensemble.csv``; prints the mean Dice per class of each.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def labels_from_probabilities(fg: np.ndarray, label_values: Sequence[int]) -> np.ndarray:
    """Label map ``(Z, Y, X)`` from foreground probabilities ``(C-1, Z, Y, X)`` (or ``(Z, Y, X)`` for one
    foreground class): argmax over ``[1 - sum(fg), fg...]``, mapped to ``label_values`` (background first)."""
    fg = fg[None] if fg.ndim == 3 else fg
    probs = np.concatenate([1.0 - fg.sum(axis=0, keepdims=True), fg], axis=0)
    return np.asarray(label_values)[np.argmax(probs, axis=0)]


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
    p.add_argument("--data", required=True, help="dataset folder (imagesTr/labelsTr)")
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--keep-largest", action="store_true", help="largest-component step after the argmax")
    args = p.parse_args(argv)

    data, out = Path(args.data), Path(args.out)
    test = load_split(split_path(args.dataset))["test"]
    images = [str(data / "imagesTr" / f"{c}.nii.gz") for c in test]
    cards = [read_card(m) for m in args.models]
    values = [int(v) for v in cards[0].label_values]
    if any([int(v) for v in c.label_values] != values for c in cards):
        raise SystemExit("the models do not share their label values")
    fg_values = [str(v) for v in values if v != 0]
    for i, model in enumerate(args.models):
        if not (out / f"model{i}").exists():
            assert cli(["segment", *images, "--model", model, "-o", str(out / f"model{i}"), "--prob",
                        "--no-keep-largest"]) == 0
    names = [f"model{i}" for i in range(len(args.models))] + ["ensemble"]
    for name in names:
        (out / f"labels_{name}").mkdir(parents=True, exist_ok=True)
    for case in test:
        geometry = read_image(data / "imagesTr" / f"{case}.nii.gz")
        probs = [np.asarray(read_volume(out / f"model{i}" / f"{case}_prob.nii.gz", allow_channels=True).array,
                            dtype=np.float32) for i in range(len(args.models))]
        for name, fg in [(f"model{i}", p_) for i, p_ in enumerate(probs)] + [("ensemble", np.mean(probs, axis=0))]:
            labels = labels_from_probabilities(fg, values)
            if args.keep_largest:
                labels = keep_largest_component(labels)
            write_volume(geometry.with_array(labels.astype(np.uint8)),
                         out / f"labels_{name}" / f"{case}_label.nii.gz", overwrite=True)
    print(f"{'model':<10} " + " ".join(f"Dice {v:>4}" for v in fg_values) + "   mean")
    for name in names:
        scores = out / f"test_{name}.csv"
        assert cli(["evaluate", str(out / f"labels_{name}"), str(data / "labelsTr"), "--cases", *test, "--labels",
                    *fg_values, "-o", str(scores), "--quiet", "--overwrite"]) == 0
        d = mean_dice(scores)
        print(f"{name:<10} " + " ".join(f"{d[v]:9.4f}" for v in fg_values) + f" {d['all']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
