"""``semisupseg demo``: the whole workflow on the bundled sample scans, on this machine, with no download.

It runs, and prints, the same commands a user would type:

1. ``semisupseg train`` — a semi-supervised method (default ``mean-teacher``) on the bundled sample dataset's labeled
   and unlabeled cases (``semisupseg/sample_data``; real MSD hippocampus or LA scans, provenance in its README);
   when the unlabeled pool has two cases or more, one of them is held out (with its label) to pick the best
   checkpoint, otherwise the last model is used;
2. ``semisupseg segment`` — the test scans (the split's ``val`` list, never seen in training nor in model selection)
   with that model (labels, entropy, SDM);
3. ``semisupseg evaluate`` — Dice/HD95/ASD of those segmentations against their reference labels;
4. ``semisupseg preview`` — one picture per test scan (``DIR/previews/<case>.png``): slices with the predicted
   outline and the entropy (and SDM) maps.

At the end the run folder keeps the model used and the run's record (config, events), not what only a continued
training needs (the resume state, the other model file). The defaults are sized for a laptop CPU (a couple of
minutes); ``--iterations`` trades time for accuracy.
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


def _validation_args(split: dict, preset: dict) -> List[str]:
    """Validation from the unlabeled pool when it has two cases or more (its label is read only for validation),
    else none; the split's ``val`` list is the test set and never validates."""
    pool = [c for c in split.get("train", []) if c not in split.get(preset["split_labeled"], [])]
    n = 1 if len(pool) >= 2 else 0
    return ["--validation", str(n), "--set", "data.split_val=null"]


def _tidy_run(run_dir: Path, model: Path) -> List[Path]:
    """Remove what a finished demo no longer needs: the resume state and the model file(s) not used. Returns the
    removed paths."""
    removed = []
    names = ["resume.pt"] + [f"{stem}{suffix}" for stem in ("best", "last") if stem != model.stem
                             for suffix in (".pt", ".json")]
    for name in names:
        path = run_dir / name
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


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
    test_ids = split.get("val") or split["train"][-1:]
    images = [str(_image_of(root, case_id)) for case_id in test_ids]
    train = ["train", "--method", args.method, "--labeled", str(root), "--split-labeled", preset["split_labeled"],
             "--out", str(run_dir), "--iterations", str(iterations),
             "--patch-size", *map(str, preset["patch_size"]), "--device", args.device, "--seed", str(args.seed),
             "--set", f"model.n_filters={preset['n_filters']}",
             "--set", f"val_every={min(preset['val_every'], iterations)}",
             "--set", f"save_every={min(preset['val_every'], iterations)}", *_validation_args(split, preset)]
    if args.overwrite:
        train.append("--overwrite")
    _run_step("1/4 train", train)
    model = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt"
    segment = ["segment", *images, "--model", str(model), "-o", str(seg_dir), "--entropy", "--device", args.device]
    from semisupseg.checkpoint import read_card

    if read_card(model).network.get("sdm_head"):
        segment.append("--sdm")
    if args.overwrite:
        segment.append("--overwrite")
    _run_step("2/4 segment the test scans (held out from training and validation)", segment)
    evaluate = ["evaluate", str(seg_dir), str(root / "labelsTr"), "--cases", *test_ids,
                "-o", str(out / "metrics.csv"), "--model", str(model), "--quiet"]
    if args.overwrite:
        evaluate.append("--overwrite")
    _run_step("3/4 evaluate against the reference labels", evaluate)
    previews = []
    for case_id, image in zip(test_ids, images):
        png = out / "previews" / f"{case_id}.png"
        preview = ["preview", image, "--label", str(seg_dir / f"{case_id}_label.nii.gz"),
                   "--entropy", str(seg_dir / f"{case_id}_entropy.nii.gz"), "--model", str(model),
                   "--title", f"{case_id}: predicted outline, entropy", "-o", str(png)]
        if "--sdm" in segment:
            preview += ["--sdm", str(seg_dir / f"{case_id}_sdm.nii.gz")]
        if args.overwrite:
            preview.append("--overwrite")
        _run_step(f"4/4 picture of {case_id}", preview)
        previews.append(png)
    _tidy_run(run_dir, model)
    print(f"\ndemo finished: model {model}, segmentations in {seg_dir}, metrics in {out / 'metrics.csv'}, "
          f"pictures in {out / 'previews'}", file=sys.stderr)
    return 0


def _image_of(root: Path, case_id: str) -> Path:
    matches = sorted((root / "imagesTr").glob(f"{case_id}*"))
    if not matches:
        from semisupseg.errors import InputError

        raise InputError(f"sample image of case {case_id} not found", root / "imagesTr")
    return matches[0]
