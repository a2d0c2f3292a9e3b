"""Self-training check: a dataset folder whose unlabeled training cases carry a teacher model's labels.

Builds ``OUT/imagesTr`` + ``OUT/labelsTr`` (symbolic links to the dataset's files) for every case of the split's
``train`` and ``test`` lists: the ``--labeled-key`` cases and the ``test`` cases keep their own label maps, the
other ``train`` cases get the label map ``semisupseg segment --model TEACHER`` writes for them (with the
largest-component step the teacher's card recommends). The test cases are there only so that ``heldout.py`` can
score them; training reads ``train`` (``--labeled 160`` = the split's ``labeled_160``, all of ``train``). Then::

    python benchmarks/pseudo_label_folder.py --dataset hippocampus --teacher hippocampus --labeled-key labeled_20 \\
        --out runs/pseudo_hippocampus
    python benchmarks/heldout.py --dataset hippocampus --data runs/pseudo_hippocampus --methods supervised \\
        --labeled 160 --augment none --seeds 1 --iterations 2000 --set model.n_filters=8 \\
        --out-dir runs/selftrain --threads 1

(``benchmarks/RESULTS.md``, 2026-12-03: with the shipped ``hippocampus`` model as teacher the student lands at the
teacher's level, not above it.) Links keep the folder small; a platform without them needs copies instead.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from heldout import DATASETS, split_path  # noqa: E402

from semisupseg.data.cases import load_split  # noqa: E402
from semisupseg.errors import InputError  # noqa: E402

SUFFIX = ".nii.gz"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    ap.add_argument("--data", type=Path, default=None, help="dataset folder (default: the shared copy)")
    ap.add_argument("--teacher", required=True, help="model file or catalogue name that labels the unlabeled cases")
    ap.add_argument("--labeled-key", required=True, help="split list whose cases keep their own labels")
    ap.add_argument("--split", type=Path, default=None,
                    help="split JSON with train, test and --labeled-key lists "
                         "(default: benchmarks/splits/<dataset>.json)")
    ap.add_argument("--out", type=Path, required=True, help="new folder (refused if it exists)")
    args = ap.parse_args(argv)
    data = args.data or DATASETS[args.dataset][0]
    split_file = args.split or split_path(args.dataset)
    try:
        split = load_split(split_file)
    except InputError as exc:
        sys.exit(f"error: {exc}")
    if args.out.exists():
        sys.exit(f"error: {args.out}: exists; choose a new folder")
    missing = [key for key in ("train", "test", args.labeled_key) if key not in split]
    if missing:
        sys.exit(f"error: {split_file}: the split has no {', '.join(map(repr, missing))} list")
    real = set(split[args.labeled_key]) | set(split["test"])
    pseudo = [c for c in split["train"] if c not in real]
    images, labels = args.out / "imagesTr", args.out / "labelsTr"
    images.mkdir(parents=True)
    labels.mkdir()
    for case in split["train"] + split["test"]:
        os.symlink((data / "imagesTr" / f"{case}{SUFFIX}").resolve(), images / f"{case}{SUFFIX}")
        if case in real:
            os.symlink((data / "labelsTr" / f"{case}{SUFFIX}").resolve(), labels / f"{case}{SUFFIX}")
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        code = subprocess.call([sys.executable, "-m", "semisupseg", "segment", "--model", args.teacher,
                                "--output", tmp] + [str(images / f"{c}{SUFFIX}") for c in pseudo])
        if code:
            return code
        for case in pseudo:
            os.replace(Path(tmp) / f"{case}_label{SUFFIX}", labels / f"{case}{SUFFIX}")
    (args.out / "pseudo_labels.json").write_text(json.dumps(
        {"teacher": args.teacher, "own_labels": sorted(real), "teacher_labels": pseudo}, indent=1) + "\n")
    print(f"{args.out}: {len(split[args.labeled_key])} training cases with their own labels, {len(pseudo)} with the "
          f"teacher's, {len(split['test'])} test cases (not for training)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
