"""Evaluate predicted label files against reference label files: per-case, per-label metrics and summaries.

``evaluate(pred, ref, labels)`` takes a prediction folder / file / list of files and a reference folder / file /
list of files, matches cases **by file name** (the name without its volume suffix, e.g. ``hippocampus_001``;
``pred_suffix`` strips an extra ending such as ``"_seg"`` from prediction names; ``semisupseg segment``'s
``<case>_label`` files are recognised by default, see :func:`match_cases`), reads them with
:mod:`semisupseg.io` (NIfTI, NRRD, MHA/MHD, DICOM folders, LA ``.h5`` ``label`` datasets), checks that each
prediction lies on its reference's grid, and computes :func:`semisupseg.metrics.evaluate_case` with the
**reference file's spacing** (mm). Metric semantics and the empty-mask convention are documented in
:mod:`semisupseg.metrics`.

Rules (each a clear :class:`~semisupseg.errors.InputError` naming the file):

* every prediction must have a reference of the same name; references without a prediction are not evaluated but
  listed in :attr:`EvaluationResult.missing_predictions` (and printed by the CLI), never silently dropped;
* a prediction whose size, spacing, origin or direction differs from its reference is an error
  (``check_geometry=False`` compares only the array shape); the same grid stored in another voxel order (``LPS``
  against ``RAS``, an exact axis permutation/flip) is brought into the reference's order first;
* ``labels=None`` evaluates every non-zero value found in any reference or prediction; a case where a label is
  absent from both files gets a ``both_empty`` row, exactly as if the labels had been listed.
"""
from __future__ import annotations

import csv
import io as _stdio
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from semisupseg import io as sio
from semisupseg.fileio import atomic_open
from semisupseg.errors import InputError, OutputExistsError
from semisupseg.metrics import STATUS_BOTH_EMPTY, ClassMetrics, MetricSummary, binary_metrics, summarize
from semisupseg.progress import CancelToken, ProgressCallback, no_progress
from semisupseg.volume import Volume

PathLike = Union[str, Path]
PathsArg = Union[PathLike, Sequence[PathLike]]

#: CSV columns of the per-case file (distances ``*_mm`` in millimetres, ``*_vox`` in voxels)
CSV_COLUMNS = ("case", "label", "dice", "jaccard", "hd95_mm", "asd_mm", "assd_mm", "hd95_vox", "asd_vox",
               "assd_vox", "pred_voxels", "ref_voxels", "status")
#: CSV columns of the summary file
SUMMARY_COLUMNS = ("label", "statistic", "dice", "jaccard", "hd95_mm", "asd_mm", "assd_mm", "hd95_vox", "asd_vox",
                   "assd_vox")
_METRIC_TO_COLUMN = {"dice": "dice", "jaccard": "jaccard", "hd95": "hd95_mm", "asd": "asd_mm", "assd": "assd_mm",
                     "hd95_vox": "hd95_vox", "asd_vox": "asd_vox", "assd_vox": "assd_vox"}


@dataclass
class EvaluationCase:
    """One prediction/reference pair matched by name."""

    case_id: str
    pred_path: Path
    ref_path: Path


@dataclass
class CaseRow:
    """One (case, label) result: the case id and its :class:`~semisupseg.metrics.ClassMetrics`."""

    case_id: str
    metrics: ClassMetrics

    def as_csv_dict(self) -> Dict[str, object]:
        m = self.metrics
        return {
            "case": self.case_id, "label": m.label, "dice": m.dice, "jaccard": m.jaccard,
            "hd95_mm": m.hd95, "asd_mm": m.asd, "assd_mm": m.assd,
            "hd95_vox": m.hd95_vox, "asd_vox": m.asd_vox, "assd_vox": m.assd_vox,
            "pred_voxels": m.pred_voxels, "ref_voxels": m.ref_voxels, "status": m.status,
        }


@dataclass
class EvaluationResult:
    """Rows per (case, label), their per-label summary, the evaluated labels and unmatched references."""

    rows: List[CaseRow]
    labels: List[int]
    cases: List[EvaluationCase]
    missing_predictions: List[str] = field(default_factory=list)
    #: label values found in some reference that are not among the evaluated labels (``--labels``, ``--model``):
    #: value -> the cases whose reference holds it (not scored: a stray or differently numbered label?)
    unscored: Dict[int, List[str]] = field(default_factory=dict)
    #: references whose grid axes are not perpendicular (a sheared grid, e.g. CT with gantry tilt): their distances
    #: in mm take each axis's spacing as if the axes were, and are approximate
    sheared: List[str] = field(default_factory=list)

    @property
    def summary(self) -> List[MetricSummary]:
        return summarize(r.metrics for r in self.rows)

    def write_csv(self, path: PathLike, overwrite: bool = False) -> Path:
        """Write the per-case rows (columns :data:`CSV_COLUMNS`) atomically; refuse to replace a file unless
        ``overwrite``."""
        return write_csv_atomic(path, CSV_COLUMNS, [r.as_csv_dict() for r in self.rows], overwrite)

    def write_summary_csv(self, path: PathLike, overwrite: bool = False) -> Path:
        """Write mean/std/n per label (columns :data:`SUMMARY_COLUMNS`) atomically."""
        out = []
        for s in self.summary:
            for stat, values in (("mean", s.mean), ("std", s.std), ("n", s.n_finite)):
                row: Dict[str, object] = {"label": s.label, "statistic": stat}
                row.update({_METRIC_TO_COLUMN[k]: v for k, v in values.items()})
                out.append(row)
        return write_csv_atomic(path, SUMMARY_COLUMNS, out, overwrite)

    def grid_notes(self) -> List[str]:
        """One line when some references have non-perpendicular axes (:attr:`sheared`), naming them."""
        if not self.sheared:
            return []
        names = ", ".join(self.sheared[:5]) + (f" and {len(self.sheared) - 5} more" if len(self.sheared) > 5 else "")
        return [f"the grid axes of {names} are not perpendicular (a sheared grid, e.g. CT with gantry tilt): HD95 "
                "and ASD in mm treat them as perpendicular and are approximate there (Dice and Jaccard are exact)"]

    def label_notes(self, include_unscored: bool = True) -> List[str]:
        """One line per evaluated label that is absent from every reference: ``"label 3 occurs in neither the
        prediction nor the reference of any of the 3 cases ..."`` (its Dice 1.0 is only the empty-vs-empty
        convention: usually a wrong ``--labels`` value) or ``"label 3 occurs in no reference of the 3 cases ..."``
        (it is in some prediction only); first, unless ``include_unscored`` is off (labels chosen on purpose), one line
        per reference value that is not an evaluated label (:attr:`unscored`). Empty when there is nothing to say."""
        notes: List[str] = []
        n = len(self.cases)
        for v, cases in sorted(self.unscored.items()) if include_unscored else ():
            listed = ", ".join(cases[:3]) + (f" and {len(cases) - 3} more" if len(cases) > 3 else "")
            notes.append(f"label value {v} is in the reference of {listed} but is not one of the evaluated labels "
                         f"({', '.join(map(str, self.labels))}): it is not scored (a stray or renumbered label?)")
        for v in self.labels:
            rows = [r.metrics for r in self.rows if r.metrics.label == v]
            if not rows or any(m.ref_voxels for m in rows):
                continue
            if not any(m.pred_voxels for m in rows):
                notes.append(f"label {v} occurs in neither the prediction nor the reference of any of the {n} "
                             f"case(s): its Dice 1.0 only means both are empty (is the label value right?)")
            else:
                n_pred = sum(1 for m in rows if m.pred_voxels)
                notes.append(f"label {v} occurs in no reference of the {n} case(s) (only in {n_pred} "
                             f"prediction(s)): its Dice is 0 where predicted, 1.0 where both are empty")
        return notes

    def format_summary(self, label_names: Optional[Dict[int, str]] = None) -> str:
        """A readable table: per label mean ± std of Dice, Jaccard, HD95/ASD/ASSD (mm) and the empty-case counts."""
        return format_summary(self.summary, len(self.cases), self.missing_predictions, label_names)


# --------------------------------------------------------------------------------------------------------------
# matching


def _as_paths(arg: PathsArg) -> Tuple[List[Path], bool]:
    """Files of ``arg`` and whether it was a folder. A folder gives its volume files; without any, its
    ``<ID>/mri_norm2.h5`` sub-folders (LA release layout); without those, it is read as one DICOM series."""
    if isinstance(arg, (str, Path)):
        p = Path(arg)
        if not p.exists():
            raise InputError("no such file or folder", p)
        if p.is_dir():
            files = sio.list_volume_files(p)
            if not files:
                files = sorted(f for f in p.glob("*/mri_norm2.h5") if f.is_file())
            if files:
                return files, True
            if not any(e.is_file() and not e.name.startswith(".") for e in p.iterdir()):
                raise InputError("folder holds no volume files (.nii.gz, .nrrd, .mha, ...)", p)
        return [p], False
    return [Path(a) for a in arg], False


def case_id(path: PathLike, suffix: str = "") -> str:
    """Case name of a file: its name without the volume suffix (``<ID>/mri_norm2.h5`` -> ``<ID>``), without
    ``suffix`` at its end (e.g. ``"_label"``) when present."""
    path = Path(path)
    name = sio.strip_suffix(path)
    if name == "mri_norm2" and sio.volume_suffix(path) in (".h5", ".hdf5") and path.parent.name:
        name = path.resolve().parent.name
    if suffix and name.endswith(suffix) and len(name) > len(suffix):
        name = name[: -len(suffix)]
    return name


#: ending of the label maps ``semisupseg segment`` writes (``<case>_label.nii.gz`` next to ``_prob``/``_sdm``...)
SEGMENT_LABEL_SUFFIX = "_label"


def match_cases(pred: PathsArg, ref: PathsArg, pred_suffix: Optional[str] = None,
                only: Optional[Sequence[str]] = None) -> Tuple[List[EvaluationCase], List[str]]:
    """Pair predictions with references by case id; returns the pairs (sorted by id) and the ids of references
    that have no prediction. A single prediction file and a single reference file are paired whatever their
    names. Raises :class:`InputError` for a prediction without reference or duplicate case ids.

    ``pred_suffix``: an ending of prediction names to drop before matching. In a prediction **folder** only the
    files carrying it are used, so ``semisupseg segment``'s output folder (``<case>_label`` beside
    ``<case>_prob``, ``_sdm``, ``_entropy``) is evaluated as is: ``None`` (default) picks ``"_label"``
    automatically when the folder holds such files (or the one prediction file is such a file), else uses the
    names unchanged.

    ``only``: evaluate just these case ids (others on either side are ignored); an id without a reference file is
    an :class:`InputError`.
    """
    pred_files, pred_is_folder = _as_paths(pred)
    ref_files, _ = _as_paths(ref)
    if pred_suffix is None:  # a folder holding segment's <case>_label files, or one such file against a folder
        has_label_files = (pred_is_folder or len(pred_files) == 1) and any(
            sio.strip_suffix(f).endswith(SEGMENT_LABEL_SUFFIX) for f in pred_files)
        pred_suffix = SEGMENT_LABEL_SUFFIX if has_label_files else ""
    if pred_is_folder and pred_suffix:
        pred_files = [f for f in pred_files if sio.strip_suffix(f).endswith(pred_suffix)]
        if not pred_files:
            raise InputError(f"no prediction file name ends with {pred_suffix!r}", Path(pred))  # type: ignore[arg-type]
    if len(pred_files) == 1 and len(ref_files) == 1 and not isinstance(pred, (list, tuple)) and not pred_is_folder:
        return [EvaluationCase(case_id(pred_files[0], pred_suffix), pred_files[0], ref_files[0])], []
    if only is not None:
        wanted = set(only)
        ref_files = [f for f in ref_files if case_id(f) in wanted]
        unknown = sorted(wanted - {case_id(f) for f in ref_files})
        if unknown:
            raise InputError(f"no reference file for case(s) {', '.join(unknown)}", Path(str(ref)))
        pred_files = [f for f in pred_files if case_id(f, pred_suffix) in wanted]
    refs: Dict[str, Path] = {}
    for f in ref_files:
        cid = case_id(f)
        if cid in refs:
            raise InputError(f"two reference files share the case name {cid!r}: {refs[cid]}, {f}", f)
        refs[cid] = f
    cases: Dict[str, EvaluationCase] = {}
    for f in pred_files:
        cid = case_id(f, pred_suffix)
        if cid in cases:
            raise InputError(f"two predictions share the case name {cid!r}", f)
        if cid not in refs:
            hint = f" (known references: {', '.join(sorted(refs)[:5])}{', ...' if len(refs) > 5 else ''})"
            raise InputError(f"no reference file named {cid!r}{hint}; use --pred-suffix if prediction names carry an "
                             "extra ending", f)
        cases[cid] = EvaluationCase(cid, f, refs[cid])
    missing = sorted(set(refs) - set(cases))
    return [cases[k] for k in sorted(cases)], missing


# --------------------------------------------------------------------------------------------------------------
# evaluation


def _check_pred_geometry(pred: Volume, ref: Volume, pred_path: Path, ref_path: Path, full: bool,
                         tol: float = 1e-3) -> None:
    if pred.shape_zyx != ref.shape_zyx:
        raise InputError(f"prediction size {pred.size_xyz} (x,y,z) differs from reference {ref_path.name} size "
                         f"{ref.size_xyz}", pred_path)
    if not full:
        return
    if not np.allclose(pred.spacing, ref.spacing, rtol=tol, atol=0):
        raise InputError(f"prediction spacing {tuple(round(s, 6) for s in pred.spacing)} mm differs from reference "
                         f"{ref_path.name} spacing {tuple(round(s, 6) for s in ref.spacing)} mm", pred_path)
    if not np.allclose(pred.origin, ref.origin, rtol=0, atol=tol * min(ref.spacing)):
        raise InputError(f"prediction origin {tuple(round(o, 4) for o in pred.origin)} mm differs from reference "
                         f"{ref_path.name} origin {tuple(round(o, 4) for o in ref.origin)} mm", pred_path)
    if not np.allclose(pred.direction, ref.direction, rtol=0, atol=tol):
        from semisupseg.orientation import orientation_code

        raise InputError(f"prediction direction differs from reference {ref_path.name} (voxel order "
                         f"{orientation_code(pred.direction)} against {orientation_code(ref.direction)})", pred_path)


def _in_reference_order(pred: Volume, ref: Volume, tol: float = 1e-3) -> Volume:
    """``pred`` in ``ref``'s voxel order when it is stored another way and so has ``ref``'s size (e.g. written
    ``LPS`` by one tool, ``RAS`` by another: an exact axis permutation/flip); else ``pred`` as it is. The geometry
    check that follows says whether it is then the reference's grid."""
    from semisupseg.orientation import orientation_code, reorientation_to

    turn = reorientation_to(pred.direction, orientation_code(ref.direction)) if pred.array.ndim == 3 else None
    if turn is None:
        return pred
    turned = turn.volume(pred)
    return turned if turned.shape_zyx == ref.shape_zyx else pred  # then checked as any prediction


def evaluate(
    pred: PathsArg,
    ref: PathsArg,
    labels: Optional[Sequence[int]] = None,
    *,
    pred_suffix: Optional[str] = None,
    cases: Optional[Sequence[str]] = None,
    check_geometry: bool = True,
    voxel_units: bool = True,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> EvaluationResult:
    """Evaluate prediction label files against reference label files (see the module docstring).

    ``labels``: label values to evaluate (``None``: every non-zero value present); ``cases``: only these case ids.
    Distances use each reference file's spacing (mm) and are also given in voxels (``voxel_units``). ``progress(fraction, message)`` is called
    after each case; ``cancel`` is polled between cases (raises :class:`~semisupseg.errors.Cancelled`).
    """
    progress = progress or no_progress
    if labels is not None:
        labels = [int(v) for v in labels]
        if not labels:
            raise InputError("no labels to evaluate")
        if any(v == 0 for v in labels):
            raise InputError("label 0 is the background; evaluate foreground labels only")
        if len(set(labels)) != len(labels):
            raise InputError(f"labels listed twice: {labels}")
    only = cases
    cases, missing = match_cases(pred, ref, pred_suffix, only)
    if not cases:
        raise InputError("no prediction/reference pairs to evaluate")
    per_case: List[Tuple[str, List[ClassMetrics], set]] = []
    found: set = set()
    sheared: List[str] = []
    unscored: Dict[int, List[str]] = {}
    for i, case in enumerate(cases):
        if cancel is not None:
            cancel.raise_if_cancelled("evaluation")
        ref_vol = sio.read_label_or_h5(case.ref_path)
        pred_vol = sio.read_label_or_h5(case.pred_path)
        if check_geometry:  # the same grid stored in another voxel order is compared voxel by voxel as it is
            pred_vol = _in_reference_order(pred_vol, ref_vol)
        _check_pred_geometry(pred_vol, ref_vol, case.pred_path, case.ref_path, check_geometry)
        in_ref = set(int(v) for v in np.unique(ref_vol.array)) - {0}
        present = in_ref | (set(int(v) for v in np.unique(pred_vol.array)) - {0})
        found |= present
        todo = labels if labels is not None else sorted(present)
        if labels is not None:
            for v in sorted(in_ref - set(labels)):
                unscored.setdefault(v, []).append(case.case_id)
        spacing = ref_vol.spacing_zyx
        d = np.asarray(ref_vol.direction, dtype=np.float64).reshape(3, 3)
        if not np.allclose(d.T @ d, np.eye(3), atol=1e-3):  # distances below assume perpendicular axes
            sheared.append(case.case_id)
        rows = [binary_metrics(pred_vol.array == v, ref_vol.array == v, spacing, v, voxel_units) for v in todo]
        per_case.append((case.case_id, rows, present))
        progress((i + 1) / len(cases), f"evaluated {case.case_id} ({i + 1}/{len(cases)})")
    final_labels = list(labels) if labels is not None else sorted(found)
    out_rows: List[CaseRow] = []
    for case_id, rows, present in per_case:
        by_label = {r.label: r for r in rows}
        for v in final_labels:
            row = by_label.get(v)
            if row is None:  # labels=None and the label is in neither file of this case
                nan = math.nan
                row = ClassMetrics(v, 1.0, 1.0, nan, nan, nan, nan, nan, nan, 0, 0, STATUS_BOTH_EMPTY)
            out_rows.append(CaseRow(case_id, row))
    return EvaluationResult(out_rows, final_labels, cases, missing, unscored, sheared)


# --------------------------------------------------------------------------------------------------------------
# output


def _csv_value(v: object) -> object:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return v


def write_csv_atomic(path: PathLike, columns: Sequence[str], rows: Sequence[Dict[str, object]],
                     overwrite: bool = False) -> Path:
    """Write ``rows`` as CSV to ``path`` via a temporary file in the same folder and :func:`os.replace`.

    Refuses to replace an existing file unless ``overwrite`` (:class:`~semisupseg.errors.OutputExistsError`).
    NaN is written as ``nan``; floats with full precision.
    """
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError("output exists; pass --overwrite to replace it", p)
    if p.is_dir():
        raise InputError("output path is a folder", p)
    if not p.parent.exists():
        raise InputError("output folder does not exist", p.parent)
    buf = _stdio.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k, "")) for k in columns})
    with atomic_open(p, "w", overwrite, newline="") as fh:
        fh.write(buf.getvalue())
    return p


def _pm(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_summary(summary: Sequence[MetricSummary], n_cases: int, missing: Sequence[str] = (),
                   label_names: Optional[Dict[int, str]] = None) -> str:
    """Summary table text: one line per label with mean ± std (population std) over the cases where the metric is
    defined, the number of cases each distance mean covers, and the counts of empty predictions/references."""
    header = ["label", "Dice", "Jaccard", "HD95 mm", "ASD mm", "ASSD mm", "n dist", "empty pred", "empty ref",
              "both empty"]
    lines = []
    for s in summary:
        name = str(s.label) if not label_names or s.label not in label_names else f"{s.label} {label_names[s.label]}"
        lines.append([
            name,
            _pm(s.mean["dice"], s.std["dice"], 4),
            _pm(s.mean["jaccard"], s.std["jaccard"], 4),
            _pm(s.mean["hd95"], s.std["hd95"], 2),
            _pm(s.mean["asd"], s.std["asd"], 2),
            _pm(s.mean["assd"], s.std["assd"], 2),
            f"{s.n_finite['hd95']}/{s.n_cases}",
            str(s.status_counts["empty_pred"]),
            str(s.status_counts["empty_ref"]),
            str(s.status_counts["both_empty"]),
        ])
    widths = [max(len(header[i]), *(len(l[i]) for l in lines)) if lines else len(header[i])
              for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:  # first column left-aligned, numbers right-aligned
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [f"{n_cases} case(s) evaluated; mean ± std over cases (distances over the cases where both masks are "
           "non-empty)", fmt(header), fmt(["-" * w for w in widths])]
    out += [fmt(l) for l in lines]
    if missing:
        shown = ", ".join(missing[:8]) + (", ..." if len(missing) > 8 else "")
        out.append(f"{len(missing)} reference case(s) without a prediction (not evaluated): {shown}")
    return "\n".join(out)


__all__ = [
    "CSV_COLUMNS", "SUMMARY_COLUMNS", "SEGMENT_LABEL_SUFFIX", "EvaluationCase", "CaseRow", "EvaluationResult",
    "case_id", "match_cases", "evaluate",
    "write_csv_atomic", "format_summary",
]
