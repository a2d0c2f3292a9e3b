"""``semisupseg rank --model M IMAGES_OR_FOLDER... -o ranking.csv``: which unlabeled scans to label next.

Segments every scan with the model and ranks the scans by how unsure it is, least sure first, on the predicted
object and its boundary band (the region an annotator checks; background far from the object would dilute every
score). Measures (``--measure``):

  boundary_entropy  (default) mean voxel entropy over the object and its band, in [0, 1] (log base = classes);
                    one prediction per scan, the one the user then corrects
  region_fraction   share of the object and its band outside SGRS-Net's confident-agreement region Omega, i.e.
                    uncertain (Delta) or confidently disagreeing (Theta) between the scan and its MixUp view;
                    about 3x the cost
  member_disagreement  an ensemble model file only: mean mutual information between class and member over the
                    object and its band (BALD), in [0, 1]: where the members disagree, which more labels settle;
                    about 2x the cost

``--measure all`` computes every measure the model has (ranked by the default). Scans where nothing is predicted
come first. The CSV has ``rank, case, score``, one column per measure, ``empty``, ``object_voxels``,
``band_voxels``, ``image``; with
``--labels DIR`` (labels held back, named like the images) also each scan's true ``dice``, and the Spearman
correlation of each measure with 1 - Dice is printed — how well the ranking finds the worst segmentations.
Inputs: image files, folders of images (an imagesTr/ or imagesTs/ inside is used), LA <id>/mri_norm2.h5 folders.
A scan that cannot be read (a truncated or corrupt file) is reported in one line and left out; the others are
ranked and the CSV is written, and the command then exits with status 2 (as ``segment`` does for a batch).
The CSV is written atomically and never replaces a file without ``--overwrite``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List

from semisupseg.cli.parser import add_threads_option, apply_threads


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "rank", help="rank unlabeled scans by the model's uncertainty (which to label next)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_FOLDER", help="image files and/or folders of images")
    p.add_argument("--model", "-m", required=True,
                   help="model file (.pt), the name of a catalogued model ('semisupseg models' lists them) or a "
                        "training run's folder (its best.pt, else last.pt)")
    p.add_argument("-o", "--output", required=True, metavar="CSV", help="ranking CSV to write")
    p.add_argument("--measure", choices=("boundary_entropy", "region_fraction", "member_disagreement", "all"),
                   default="boundary_entropy",
                   help="uncertainty measure to rank by (default boundary_entropy; member_disagreement needs an "
                        "ensemble model; 'all' computes every measure the model has and ranks by the default)")
    p.add_argument("--labels", metavar="DIR", help="held-back labels (named like the images): report each scan's "
                                                   "Dice and how each measure correlates with the error")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_threads_option(p)
    p.add_argument("--no-fast", action="store_true", help="plain fp32 inference (no bf16/channels-last)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    p.set_defaults(func=run)


def _cases(inputs: List[str]):
    from semisupseg.data.cases import Case, discover_unlabeled
    from semisupseg.errors import InputError
    from semisupseg.io import strip_suffix

    out = []
    for text in inputs:
        p = Path(text)
        if p.is_dir() and not (p / "mri_norm2.h5").is_file():
            out.extend(discover_unlabeled(p))
        elif p.is_dir():
            out.append(Case(p.name, p / "mri_norm2.h5", None))
        elif p.exists():
            out.append(Case(strip_suffix(p), p, None))
        else:
            raise InputError("file not found", p)
    seen = {}
    for c in out:
        if c.case_id in seen:
            raise InputError(f"two inputs give the case name {c.case_id!r} ({seen[c.case_id]} and "
                             f"{c.channel_paths[0]})", c.channel_paths[0])
        seen[c.case_id] = c.channel_paths[0]
    return out


def run(args: argparse.Namespace) -> int:
    from semisupseg.catalogue import resolve_model
    from semisupseg.checkpoint import load_model
    from semisupseg.errors import BatchError, InputError, case_error_line
    from semisupseg.fileio import check_writable, write_text_atomic
    from semisupseg.io import list_volume_files, strip_suffix
    from semisupseg.ranking import DEFAULT_MEASURE, labels_note, model_measures, rank_cases, ranking_csv, spearman

    out = check_writable(Path(args.output), args.overwrite)
    cases = _cases(args.inputs)
    labels = None
    if args.labels:
        labels = {strip_suffix(p): p for p in list_volume_files(args.labels)}
        note = labels_note([c.case_id for c in cases], labels, args.labels)
        if note:  # said before the ranking: a wrong folder would otherwise be ignored silently
            print(f"note: {note}", file=sys.stderr)
    path = resolve_model(args.model)
    apply_threads(args.threads)
    model, card = load_model(path, device="cpu")
    available = model_measures(model)
    if args.measure not in available + ["all"]:  # member_disagreement of one network
        raise InputError(f"--measure {args.measure} needs an ensemble model file (semisupseg ensemble A.pt "
                         f"B.pt ...); this one holds one {card.arch!r} network", path)
    measure = DEFAULT_MEASURE if args.measure == "all" else args.measure
    also = available if args.measure == "all" else ()

    def report(row) -> None:
        extra = f", dice {row.dice:.4f}" if row.dice is not None else ""
        print(f"{row.case_id}: {measure} {row.scores[measure]:.4f}{' (nothing predicted)' if row.empty else ''}"
              f"{extra} ({row.seconds:.1f} s)", file=sys.stderr)

    failures = []  # (case, one line): a bad file does not stop the others (as in segment)

    def failed(case, exc: BaseException) -> None:
        if len(cases) == 1:
            raise exc  # one input: its error is the command's error
        line = case_error_line(exc, case.channel_paths[0])
        failures.append((case.case_id, line))
        print(f"failed: {case.case_id}: {line} (going on with the other cases)", file=sys.stderr)

    rows = rank_cases(cases, model, card, measure, also, labels, device=args.device, fast=not args.no_fast,
                      on_case=report, on_error=failed)
    if rows:
        write_text_atomic(ranking_csv(rows, measure), out, overwrite=args.overwrite)
        print(f"ranked {len(rows)} scans by {measure} (least sure first): {out}", file=sys.stderr)
    scored = [r for r in rows if r.dice is not None]
    if len(scored) >= 3:
        for m in sorted(rows[0].scores):
            rho = spearman([r.scores[m] for r in scored], [1.0 - r.dice for r in scored])
            print(f"Spearman({m}, 1 - Dice) over {len(scored)} scans with labels: {rho:.3f}", file=sys.stderr)
    if failures:
        raise BatchError.of(failures, len(cases), f"the others were ranked in {out}" if rows else "no CSV written")
    return 0
