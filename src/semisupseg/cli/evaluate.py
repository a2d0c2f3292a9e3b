"""``semisupseg evaluate PRED REF``: Dice, Jaccard, HD95, ASD, ASSD per case and label; summary table + CSV."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, Optional


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "evaluate", help="compare predicted label maps with reference label maps (Dice, HD95, ASD, ...)",
        description="Evaluate predicted label files against reference label files, matched by file name "
                    "(e.g. predictions/hippocampus_001.nii.gz with labelsTr/hippocampus_001.nii.gz). Distances use "
                    "the reference file's spacing (mm) and follow medpy's definitions: HD95 = 95th percentile of "
                    "the union of both directed surface-distance sets (MONAI and surface-distance take the larger "
                    "of the two directed percentiles instead), ASD = mean distance from the prediction's surface to "
                    "the reference's, ASSD = symmetric mean. When a label is empty in the prediction or the reference "
                    "its distances are undefined (nan in the CSV), Dice is 0 (1 when both are empty), and the table "
                    "counts these cases.")
    p.add_argument("pred", metavar="PRED", help="prediction label file or folder of label files")
    p.add_argument("ref", metavar="REF", help="reference label file or folder (same case names)")
    p.add_argument("--labels", type=int, nargs="+", metavar="L",
                   help="label values to evaluate (default: every non-zero value found)")
    p.add_argument("--cases", nargs="+", metavar="ID",
                   help="evaluate only these case ids (e.g. a validation split inside a full labels folder)")
    p.add_argument("-o", "--output", metavar="CSV", help="write the per-case, per-label rows to this CSV file")
    p.add_argument("--summary-csv", metavar="CSV", help="also write mean/std/n per label to this CSV file")
    p.add_argument("--overwrite", action="store_true", help="replace existing CSV files")
    p.add_argument("--pred-suffix", default=None, metavar="TEXT",
                   help="extra ending of prediction names to drop before matching (e.g. _seg); in a folder only "
                        "files with it are used. Default: '_label' when PRED is a folder written by "
                        "'semisupseg segment' (<case>_label beside _prob/_sdm/_entropy), else none")
    p.add_argument("--no-geometry-check", action="store_true",
                   help="only require equal array sizes (default: spacing, origin and direction must match too)")
    p.add_argument("--model", metavar="MODEL",
                   help="name the labels with this model's classes (model file or catalogue name); default: the "
                        "dataset.json beside REF (in REF or its parent folder), when there is one")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def label_names(ref, model=None) -> Optional[Dict[int, str]]:
    """``{label value: class name}`` for the table: from ``model``'s card (a model file or catalogue name) when
    given, else from a ``dataset.json`` in the reference folder or its parent (MSD/nnU-Net layout: REF is
    ``labelsTr/``), else ``None``."""
    from semisupseg.data import read_dataset_json
    from semisupseg.errors import InputError

    if model:
        from semisupseg.catalogue import resolve_model
        from semisupseg.checkpoint import read_card

        card = read_card(resolve_model(model))
        return {int(v): str(n) for n, v in zip(card.class_names, card.label_values)}
    ref = Path(ref)
    folder = ref if ref.is_dir() else ref.parent
    for candidate in (folder / "dataset.json", folder.parent / "dataset.json"):
        if candidate.is_file():
            try:
                classes = read_dataset_json(candidate)
            except InputError:  # a dataset.json without usable labels: plain numbers
                return None
            return {int(v): str(n) for n, v in zip(classes.names, classes.label_values)}
    return None


def run(args: argparse.Namespace) -> int:
    from semisupseg.cli.console import Progress
    from semisupseg.errors import OutputExistsError
    from semisupseg.evaluation import evaluate

    outputs = [o for o in (args.output, args.summary_csv) if o]
    if not args.overwrite:  # fail before the (possibly long) evaluation
        for o in outputs:
            if Path(o).exists():
                raise OutputExistsError("output exists; pass --overwrite to replace it", o)

    names = label_names(args.ref, args.model)
    # a bar on a terminal (cleared at the end), plain lines in a log
    progress = None if args.quiet else Progress("evaluate", leave=False,
                                                bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
    labels = args.labels
    if labels is None and names:  # the classes are known (--model, dataset.json): every one is scored, even a
        labels = sorted(v for v in names if v != 0)  # class no file holds (a true negative) - not only those found
    try:
        result = evaluate(args.pred, args.ref, labels, pred_suffix=args.pred_suffix, cases=args.cases,
                          check_geometry=not args.no_geometry_check, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    if not result.labels:
        from semisupseg.errors import InputError

        raise InputError("no label value other than 0 in any prediction or reference, so there is nothing to score: "
                         "name the classes with --labels L [L ...] or --model MODEL (both empty then scores Dice 1)",
                         args.ref)
    print(result.format_summary(names))
    # what the table cannot say: sheared grids, labels absent from every reference, and reference values outside the
    # classes when these came from --model or dataset.json (not from --labels: a subset chosen on purpose)
    for note in result.grid_notes() + result.label_notes(include_unscored=args.labels is None):
        print(f"note: {note}", file=sys.stderr)
    if args.output:
        path = _written(result.write_csv, args.output, args.overwrite)
        print(f"per-case metrics written to {path}")
    if args.summary_csv:
        path = _written(result.write_summary_csv, args.summary_csv, args.overwrite)
        print(f"summary written to {path}")
    return 0


def _written(write, path, overwrite: bool):
    """``write(path, overwrite=...)``; a file-system error (full disk, read-only place) names the CSV file."""
    from semisupseg.errors import InputError

    try:
        return write(path, overwrite=overwrite)
    except OSError as exc:
        if isinstance(exc, FileExistsError) and isinstance(exc, InputError):
            raise
        raise InputError(f"cannot write the file: {exc.strerror or exc}", exc.filename or path) from exc
