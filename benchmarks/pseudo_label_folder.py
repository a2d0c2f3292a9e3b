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
teacher's level, not above it.) ``--teacher A B C`` makes the teacher an ensemble (knowledge distillation into
one student): each model writes its class probabilities (``segment --prob``), their mean is turned into labels
(``ensemble.py``'s argmax) and the largest-component step follows when every teacher's card recommends it. Links
keep the folder small; a platform without them needs copies instead.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from heldout import DATASETS, split_path  # noqa: E402

from semisupseg.data.cases import load_split  # noqa: E402
from semisupseg.errors import InputError  # noqa: E402

SUFFIX = ".nii.gz"


def teacher_labels(teachers: List[str], images: List[Path], tmp: Path, labels: Path,
                   keep_largest: bool = False) -> int:
    """Write ``labels/<case>.nii.gz`` for every image (``<case>.nii.gz``): the label map of ``segment --model`` for
    one teacher (with the step its card recommends), the argmax of the mean class probabilities for several (then
    the largest-component step if every teacher's card recommends it, or ``keep_largest``). Returns the first
    failing exit code or 0."""
    cases = [p.name[: -len(SUFFIX)] for p in images]
    if len(teachers) == 1:
        step = ["--keep-largest"] if keep_largest else []
        code = subprocess.call([sys.executable, "-m", "semisupseg", "segment", "--model", teachers[0], *step,
                                "--output", str(tmp)] + [str(p) for p in images])
        if code:
            return code
        for case in cases:
            os.replace(tmp / f"{case}_label{SUFFIX}", labels / f"{case}{SUFFIX}")
        return 0
    import numpy as np

    from ensemble import labels_from_probabilities, shared_label_values
    from semisupseg.catalogue import resolve_model
    from semisupseg.checkpoint import read_card
    from semisupseg.inference import keep_largest_component
    from semisupseg.io import read_image, read_volume, write_volume

    cards = [read_card(resolve_model(t)) for t in teachers]
    values = shared_label_values(cards, teachers)
    keep_largest = keep_largest or all((c.inference or {}).get("keep_largest", False) for c in cards)
    for i, teacher in enumerate(teachers):
        code = subprocess.call([sys.executable, "-m", "semisupseg", "segment", "--model", teacher, "--prob",
                                "--no-keep-largest", "--output", str(tmp / f"teacher{i}")] + [str(p) for p in images])
        if code:
            return code
    for case, image_path in zip(cases, images):
        probs = [np.asarray(read_volume(tmp / f"teacher{i}" / f"{case}_prob{SUFFIX}", allow_channels=True).array,
                            dtype=np.float32) for i in range(len(teachers))]
        label = labels_from_probabilities(np.mean(probs, axis=0), values)
        if keep_largest:
            label = keep_largest_component(label)
        write_volume(read_image(image_path).with_array(label.astype(np.uint8)), labels / f"{case}{SUFFIX}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    ap.add_argument("--data", type=Path, default=None, help="dataset folder (default: the shared copy)")
    ap.add_argument("--teacher", nargs="+", required=True,
                    help="model file or catalogue name that labels the unlabeled cases; several: their "
                         "probability-averaging ensemble")
    ap.add_argument("--keep-largest", action="store_true",
                    help="the largest-component step on the teacher's labels even where no card recommends it "
                         "(training run files carry no recommendation)")
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
        code = teacher_labels(args.teacher, [images / f"{c}{SUFFIX}" for c in pseudo], Path(tmp), labels,
                              args.keep_largest)
        if code:
            return code
    (args.out / "pseudo_labels.json").write_text(json.dumps(
        {"teacher": args.teacher[0] if len(args.teacher) == 1 else args.teacher, "own_labels": sorted(real),
         "teacher_labels": pseudo}, indent=1) + "\n")
    print(f"{args.out}: {len(split[args.labeled_key])} training cases with their own labels, {len(pseudo)} with the "
          f"teacher's, {len(split['test'])} test cases (not for training)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
