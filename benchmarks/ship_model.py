"""Package a finished training run as a shipped model: ``src/semisupseg/models/<name>.pt`` + its card, with the held-out
test figures the benchmark measured (``test.csv`` of ``benchmarks/heldout.py``) and the data's provenance written
into the card, so ``semisupseg info <name>`` and the Slicer panel show what the model was trained on and how well it
did on scans it never saw.

``RUN_DIR`` may also be a model file (``src/semisupseg/models/NAME.pt``): it is re-packaged with new test figures
(``--test-csv``, required) and options, its weights unchanged.

Usage::

    python benchmarks/ship_model.py RUN_DIR --name hippocampus --dataset "Task04_Hippocampus (Medical Segmentation
        Decathlon)" --licence "CC-BY-SA 4.0" --split benchmarks/splits/hippocampus.json \
        --class-names anterior posterior [--overwrite]

The weights are the run's ``last.pt``, fp32 or, with ``--half``, stored as float16 (half the size) when that does
not change the labels: every ``test`` image of the split is segmented with the fp32 and the float16-rounded weights
(plain fp32 arithmetic, so only the rounding differs) and the worst label agreement (foreground Dice between the two
label maps) must reach ``--half-min-agreement`` (0.999); otherwise nothing is written. ``--keep-largest`` makes the
card recommend the largest-component post-processing (``segment``'s default for the model); pass the test scores
of the post-processed labels with ``--test-csv`` then. The card gains ``training["test"]`` (cases, per-class mean
and median Dice, HD95/ASD in mm, whether post-processed) and ``training["data"]`` (dataset, licence, split file and
list names).

A model trained on every case (the papers' protocol: no case of the dataset left unseen) has no held-out scans of
its own: its figures are a twin's, trained with the same recipe on the benchmark split with the test scans held out.
``--split`` then names the model's own training split (its ``test`` list empty), ``--test-split`` the split whose
``test`` list the figures (``--test-csv``, the twin's scores) and the float16 check are on, and ``--test-note``
says whose figures they are; ``--own-test-csv`` adds this model's own scores on those scans (not a held-out figure
when it saw their images unlabeled: the note must say so).
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def test_figures(test_csv: Path, class_names):
    rows = list(csv.DictReader(open(test_csv)))
    out = {"cases": len({r["case"] for r in rows}), "per_class": {}}
    for label in sorted({int(r["label"]) for r in rows}):
        sel = [r for r in rows if int(r["label"]) == label]

        def col(k):
            v = [float(r[k]) for r in sel if r[k] not in ("", "nan")]
            return [x for x in v if math.isfinite(x)]
        name = class_names[label] if label < len(class_names) else str(label)
        out["per_class"][name] = {"dice_mean": round(float(np.mean(col("dice"))), 4),
                                  "dice_median": round(float(np.median(col("dice"))), 4),
                                  "dice_min": round(float(np.min(col("dice"))), 4),
                                  "hd95_mm_mean": round(float(np.mean(col("hd95_mm"))), 3),
                                  "asd_mm_mean": round(float(np.mean(col("asd_mm"))), 3)}
    return out


def half_precision_agreement(model, card, data_dir: Path, split: Path) -> float:
    """The worst, over the split's ``test`` images and the foreground classes either map has, Dice between the labels
    of ``model`` and of a copy with float16-rounded weights (plain fp32 arithmetic for both)."""
    import copy

    from semisupseg.checkpoint import half_precision_state
    from semisupseg.data.cases import discover_cases, load_split
    from semisupseg.inference.segment import SegmentOptions, segment
    from semisupseg.io import read_image_or_h5

    rounded = copy.deepcopy(model)
    rounded.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in half_precision_state(model.state_dict()).items()})
    test = set(load_split(split)["test"])
    options = SegmentOptions(fast=False, compute_sdm=False, compute_entropy=False, device="cpu")
    worst, compared = 1.0, 0
    for case in (c for c in discover_cases(data_dir) if c.case_id in test):
        image = read_image_or_h5(case.channel_paths[0])
        a = segment(image, model, card, options).labels.array
        b = segment(image, rounded, card, options).labels.array
        for value in card.label_values[1:]:
            ma, mb = a == value, b == value
            if ma.any() or mb.any():
                dice = 2.0 * float((ma & mb).sum()) / float(ma.sum() + mb.sum())
                worst, compared = min(worst, dice), compared + 1
                print(f"  {case.case_id} label {value}: {dice:.5f}", flush=True)
    if not compared:
        raise ValueError(f"{split}: no test image of {data_dir} with a foreground label to compare the float16 "
                         "weights on (an empty test list proves nothing; pass --test-split)")
    return worst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--licence", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--class-names", nargs="+", default=None, metavar="NAME",
                   help="foreground class names (when the training data did not name them)")
    p.add_argument("--keep-largest", action="store_true",
                   help="the card recommends keeping the largest component per class (segment's default for it)")
    p.add_argument("--test-csv", type=Path, default=None,
                   help="per-case test scores to put in the card (default RUN/test.csv; with --keep-largest pass "
                        "the scores of the post-processed labels)")
    p.add_argument("--test-split", default=None,
                   help="split file whose test list --test-csv scores (default: --split); for a model trained on "
                        "every case, the benchmark split its twin held the test scans out of")
    p.add_argument("--test-note", default=None, help="whose figures the test figures are (stored in the card)")
    p.add_argument("--own-test-csv", type=Path, default=None,
                   help="this model's own scores on the test split's scans when the figures are a twin's")
    p.add_argument("--labeled-list", default=None, metavar="NAME",
                   help="the split's list of labeled cases (default: the run's data.split_labeled; needed for a "
                        "model file, e.g. an ensemble, whose card does not name it)")
    p.add_argument("--train-list", default=None, metavar="NAME",
                   help="the split's list the labeled and unlabeled training cases came from (default: the run's "
                        "data.split_all, else 'train')")
    p.add_argument("--half", action="store_true", help="store the weights as float16 if the test labels hold")
    p.add_argument("--half-min-agreement", type=float, default=0.999)
    p.add_argument("--data", type=Path, default=None,
                   help="the dataset folder (default: the run's config; needed when RUN is a model file)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    if args.own_test_csv and not args.test_note:
        p.error("--own-test-csv needs --test-note (say whose figures the card's test figures are)")
    sys.path.insert(0, str(REPO / "src"))
    from semisupseg.checkpoint import load_model, save_model

    import yaml

    repackage = args.run.suffix == ".pt"  # a model file already shipped: new test figures / options, same weights
    model, card = load_model(args.run if repackage else args.run / "last.pt")
    if repackage and args.test_csv is None:
        p.error("re-packaging a model file needs --test-csv")
    if args.class_names:
        if len(args.class_names) != card.num_classes - 1:
            p.error(f"the model has {card.num_classes - 1} foreground classes")
        card.class_names = [card.class_names[0]] + list(args.class_names)
    if repackage:
        data_cfg = {"labeled": args.data, "split_labeled": (card.training.get("data") or {}).get("labeled_list")}
    else:
        data_cfg = yaml.safe_load((args.run / "config.yaml").read_text()).get("data", {})
    if args.data is not None:
        data_cfg["labeled"] = args.data
    if args.labeled_list is not None:
        data_cfg["split_labeled"] = args.labeled_list
    if args.half and not data_cfg.get("labeled"):
        p.error("--half needs the dataset folder (--data) to check the test labels")
    card.training["test"] = test_figures(args.test_csv or args.run / "test.csv", card.class_names)
    card.training["test"]["keep_largest"] = bool(args.keep_largest)
    test_split = args.test_split or args.split
    if args.test_note:
        card.training["test"]["note"] = args.test_note
    if args.own_test_csv:
        card.training["test"]["this_model"] = test_figures(args.own_test_csv, card.class_names)
    if args.keep_largest:
        card.inference["keep_largest"] = True
    card.training["data"] = {"dataset": args.dataset, "licence": args.licence, "split_file": args.split,
                             "labeled_list": data_cfg.get("split_labeled"), "test_list": "test"}
    train_list = args.train_list or data_cfg.get("split_all")
    if train_list and train_list != "train":
        card.training["data"]["train_list"] = train_list
    if test_split != args.split:
        card.training["data"]["test_split_file"] = test_split
    if args.half:
        worst = half_precision_agreement(model, card, Path(data_cfg["labeled"]), Path(test_split))
        print(f"float16 weights: worst test-label agreement with fp32 {worst:.5f}")
        if worst < args.half_min_agreement:
            print(f"not shipped: below --half-min-agreement {args.half_min_agreement}", file=sys.stderr)
            return 1
        card.training["weights_stored_as"] = "float16"
    out = save_model(REPO / "src" / "semisupseg" / "models" / f"{args.name}.pt", model, card, overwrite=args.overwrite,
                     half=args.half)
    print(out.relative_to(REPO))
    for line in card.summary_lines():
        print(" ", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
