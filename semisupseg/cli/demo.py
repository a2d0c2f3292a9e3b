"""``semisupseg demo``: the whole workflow on the bundled sample scans, on this machine, with no download.

It runs, and prints, the same commands a user would type:

1. ``semisupseg train`` — a semi-supervised method (default ``mean-teacher``) on the bundled sample dataset's labeled
   and unlabeled cases (``semisupseg/sample_data``; real MSD hippocampus or LA scans, provenance in its README);
2. ``semisupseg segment`` — the held-out validation scans with the best checkpoint (labels, entropy, SDM);
3. ``semisupseg evaluate`` — Dice/HD95/ASD of those segmentations against their reference labels.

The defaults are sized for a laptop CPU (a couple of minutes); ``--iterations`` trades time for accuracy.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import List

#: per sample dataset: split list of labeled cases, patch size (x, y, z), network width, default iterations
PRESETS = {
    "hippocampus": {"split_labeled": "labeled_2", "patch_size": [32, 48, 32], "n_filters": 16, "iterations": 300,
                    "val_every": 100},
    "la": {"split_labeled": "labeled_2", "patch_size": [64, 64, 32], "n_filters": 16, "iterations": 300,
           "val_every": 100},
}


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser("demo", help="train, segment and evaluate on the bundled sample scans (no download)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(PRESETS), default="hippocampus", help="bundled sample dataset")
    p.add_argument("--method", default="mean-teacher", help="training method (see 'semisupseg methods')")
    p.add_argument("--iterations", type=int, help="training iterations (default: the dataset preset)")
    p.add_argument("--out", default="semisupseg-demo", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier demo in --out")
    p.set_defaults(func=run)


def _run_step(title: str, argv: List[str]) -> None:
    from semisupseg.cli import main
    from semisupseg.errors import SemiSupSegError

    print(f"\n== {title}\n$ semisupseg {' '.join(shlex.quote(a) for a in argv)}", file=sys.stderr, flush=True)
    code = main(argv)
    if code != 0:
        raise SemiSupSegError(f"demo step '{title}' failed (exit code {code})")


def run(args: argparse.Namespace) -> int:
    from semisupseg.data import load_split, sample_dataset
    from semisupseg.errors import InputError

    preset = PRESETS[args.dataset]
    root = sample_dataset(args.dataset)
    split = load_split(root / "splits.json")
    out = Path(args.out)
    run_dir, seg_dir = out / "run", out / "segmentations"
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InputError("demo output folder is not empty; pass --overwrite to replace it or choose --out", out)
    iterations = args.iterations or preset["iterations"]
    val_ids = split.get("val") or split["train"][-1:]
    images = [str(_image_of(root, case_id)) for case_id in val_ids]
    train = ["train", "--method", args.method, "--labeled", str(root), "--split-labeled", preset["split_labeled"],
             "--out", str(run_dir), "--iterations", str(iterations),
             "--patch-size", *map(str, preset["patch_size"]), "--device", args.device, "--seed", str(args.seed),
             "--set", f"model.n_filters={preset['n_filters']}",
             "--set", f"val_every={min(preset['val_every'], iterations)}",
             "--set", f"save_every={min(preset['val_every'], iterations)}"]
    if args.overwrite:
        train.append("--overwrite")
    _run_step("1/3 train", train)
    model = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt"
    segment = ["segment", *images, "--model", str(model), "-o", str(seg_dir), "--entropy", "--device", args.device]
    from semisupseg.checkpoint import read_card

    if read_card(model).network.get("sdm_head"):
        segment.append("--sdm")
    if args.overwrite:
        segment.append("--overwrite")
    _run_step("2/3 segment the held-out scans", segment)
    evaluate = ["evaluate", str(seg_dir), str(root / "labelsTr"), "--cases", *val_ids,
                "-o", str(out / "metrics.csv"), "--quiet"]
    if args.overwrite:
        evaluate.append("--overwrite")
    _run_step("3/3 evaluate against the reference labels", evaluate)
    print(f"\ndemo finished: model {model}, segmentations in {seg_dir}, metrics in {out / 'metrics.csv'}",
          file=sys.stderr)
    return 0


def _image_of(root: Path, case_id: str) -> Path:
    matches = sorted((root / "imagesTr").glob(f"{case_id}*"))
    if not matches:
        from semisupseg.errors import InputError

        raise InputError(f"sample image of case {case_id} not found", root / "imagesTr")
    return matches[0]
