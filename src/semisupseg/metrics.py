"""Segmentation metrics as the reference papers report them: Dice, Jaccard, 95% Hausdorff distance (HD95), average
surface distance (ASD, medpy's ``asd``) and the symmetric ASSD — binary and per class, in voxels or millimetres.

Semantics are those of ``medpy.metric.binary`` (the papers' evaluation code uses it; our tests use medpy as an
oracle and agree to 1e-6):

* the **surface** of a mask is the mask minus its binary erosion with the 6-connected cross (connectivity 1; the
  array edge counts as outside, so object voxels on the edge are surface);
* the distance from a surface voxel of A to B is the Euclidean distance (scipy EDT with ``sampling=spacing``) to the
  nearest surface voxel of B;
* ``hd95`` is the 95th percentile (numpy's linear interpolation) of the union of both directed distance sets;
  ``asd(pred, ref)`` the mean distance from the surface of ``pred`` to the surface of ``ref`` (directed, as medpy);
  ``assd`` the mean of the union of both directed sets.

``spacing`` of the functions here is given in **array order (z, y, x)**, mm; ``None`` means unit spacing, i.e.
distances in voxels. (A :class:`~semisupseg.volume.Volume` stores x, y, z: pass ``volume.spacing_zyx``.)

Empty masks (documented result, never a flattering 0):

====================  ===========  ============  ====================  =================
case                  Dice         Jaccard       HD95 / ASD / ASSD     ``status``
====================  ===========  ============  ====================  =================
both non-empty        computed     computed      computed              ``"ok"``
prediction empty      0            0             NaN                   ``"empty_pred"``
reference empty       0            0             NaN                   ``"empty_ref"``
both empty            1 (medpy)    1 (medpy)     NaN                   ``"both_empty"``
====================  ===========  ============  ====================  =================

Summaries (:func:`summarize`) average the finite values and report how many cases of each status there are, so a
mean HD95 over fewer cases than the Dice mean is visible. The distance functions (:func:`hd95`, :func:`asd`,
:func:`assd`) return NaN when either mask is empty (medpy raises instead).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

from semisupseg.volume import Volume

#: statuses of one (case, label) evaluation, see the module docstring
STATUS_OK = "ok"
STATUS_EMPTY_PRED = "empty_pred"
STATUS_EMPTY_REF = "empty_ref"
STATUS_BOTH_EMPTY = "both_empty"
STATUSES = (STATUS_OK, STATUS_EMPTY_PRED, STATUS_EMPTY_REF, STATUS_BOTH_EMPTY)

#: metric columns of a :class:`ClassMetrics` row that summaries average
METRIC_NAMES = ("dice", "jaccard", "hd95", "asd", "assd", "hd95_vox", "asd_vox", "assd_vox")


def _binary(x) -> np.ndarray:
    return np.asarray(x).astype(bool)


def _sampling(spacing: Optional[Sequence[float]], ndim: int) -> Optional[Tuple[float, ...]]:
    if spacing is None:
        return None
    if np.isscalar(spacing):
        return (float(spacing),) * ndim  # type: ignore[arg-type]
    s = tuple(float(v) for v in spacing)  # type: ignore[union-attr]
    if len(s) != ndim or any(v <= 0 for v in s):
        raise ValueError(f"spacing must have {ndim} positive values in array order (z, y, x), got {spacing}")
    return s


def _check_shapes(pred: np.ndarray, ref: np.ndarray) -> None:
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")


# --------------------------------------------------------------------------------------------------------------
# overlap


def dice(pred, ref) -> float:
    """Dice coefficient ``2|P∩R| / (|P|+|R|)`` of two binary masks; 1.0 when both are empty (as medpy)."""
    p, r = _binary(pred), _binary(ref)
    _check_shapes(p, r)
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(r))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & r)) / total


def jaccard(pred, ref) -> float:
    """Jaccard index ``|P∩R| / |P∪R|`` of two binary masks; 1.0 when both are empty (as medpy)."""
    p, r = _binary(pred), _binary(ref)
    _check_shapes(p, r)
    union = int(np.count_nonzero(p | r))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(p & r)) / union


# --------------------------------------------------------------------------------------------------------------
# surface distances


def surface(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Surface voxels of a binary mask: the mask minus its erosion (array edge = outside), as medpy."""
    m = _binary(mask)
    footprint = ndimage.generate_binary_structure(m.ndim, connectivity)
    return m & ~ndimage.binary_erosion(m, structure=footprint, iterations=1)


def _crop_box(a: np.ndarray, b: np.ndarray) -> Tuple[slice, ...]:
    """Bounding box of ``a | b`` grown by one voxel (clipped to the array).

    Inside it the erosion of either mask and the EDT distances to either surface are exactly those of the whole
    array: all surface voxels lie inside, and the extra voxel keeps the box edge from looking like an object edge.
    """
    both = a | b
    slices = []
    for axis in range(both.ndim):
        other = tuple(i for i in range(both.ndim) if i != axis)
        idx = np.flatnonzero(both.any(axis=other))
        slices.append(slice(max(int(idx[0]) - 1, 0), min(int(idx[-1]) + 2, both.shape[axis])))
    return tuple(slices)


def directed_surface_distances(pred, ref, spacing: Optional[Sequence[float]] = None, connectivity: int = 1
                               ) -> Tuple[np.ndarray, np.ndarray]:
    """Both directed sets of surface distances: (surface of ``pred`` -> surface of ``ref``, ``ref`` -> ``pred``).

    1-D float64 arrays (mm with ``spacing`` (z, y, x), voxels without). Both masks must be non-empty
    (``ValueError`` otherwise; the public metrics handle empty masks before calling this).
    """
    p, r = _binary(pred), _binary(ref)
    _check_shapes(p, r)
    if not p.any() or not r.any():
        raise ValueError("surface distances need two non-empty masks")
    sampling = _sampling(spacing, p.ndim)
    box = _crop_box(p, r)
    p, r = p[box], r[box]
    sp, sr = surface(p, connectivity), surface(r, connectivity)
    dist_to_r = ndimage.distance_transform_edt(~sr, sampling=sampling)
    dist_to_p = ndimage.distance_transform_edt(~sp, sampling=sampling)
    return dist_to_r[sp], dist_to_p[sr]


def _hd95_from(d_pr: np.ndarray, d_rp: np.ndarray) -> float:
    return float(np.percentile(np.hstack((d_pr, d_rp)), 95))


def _assd_from(d_pr: np.ndarray, d_rp: np.ndarray) -> float:
    return float(np.concatenate((d_pr, d_rp)).mean())


def _both_nonempty(pred, ref) -> bool:
    p, r = _binary(pred), _binary(ref)
    _check_shapes(p, r)
    return bool(p.any()) and bool(r.any())


def hd95(pred, ref, spacing: Optional[Sequence[float]] = None, connectivity: int = 1) -> float:
    """95% Hausdorff distance (medpy ``hd95``); NaN if either mask is empty. ``spacing`` (z, y, x) mm."""
    if not _both_nonempty(pred, ref):
        return math.nan
    return _hd95_from(*directed_surface_distances(pred, ref, spacing, connectivity))


def asd(pred, ref, spacing: Optional[Sequence[float]] = None, connectivity: int = 1) -> float:
    """Average surface distance from ``pred``'s surface to ``ref``'s (medpy ``asd``, directed, the papers' ASD);
    NaN if either mask is empty. ``spacing`` (z, y, x) mm."""
    if not _both_nonempty(pred, ref):
        return math.nan
    return float(directed_surface_distances(pred, ref, spacing, connectivity)[0].mean())


def assd(pred, ref, spacing: Optional[Sequence[float]] = None, connectivity: int = 1) -> float:
    """Average symmetric surface distance (medpy ``assd``: mean of both directed sets together); NaN if either
    mask is empty. ``spacing`` (z, y, x) mm."""
    if not _both_nonempty(pred, ref):
        return math.nan
    return _assd_from(*directed_surface_distances(pred, ref, spacing, connectivity))


# --------------------------------------------------------------------------------------------------------------
# per class


@dataclass
class ClassMetrics:
    """Metrics of one label of one case. Distances without suffix are in mm (the spacing given), ``*_vox`` in
    voxels. ``status`` tells how empty masks were handled (module docstring)."""

    label: int
    dice: float
    jaccard: float
    hd95: float
    asd: float
    assd: float
    hd95_vox: float
    asd_vox: float
    assd_vox: float
    pred_voxels: int
    ref_voxels: int
    status: str

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


def binary_metrics(pred, ref, spacing: Optional[Sequence[float]] = None, label: int = 1,
                   voxel_units: bool = True) -> ClassMetrics:
    """All metrics of one binary pair, distance transforms computed once per unit system.

    ``spacing`` (z, y, x) mm (``None``: unit spacing, then mm and voxel values coincide). ``voxel_units=False``
    skips the voxel-unit distances (NaN) when only mm are wanted.
    """
    p, r = _binary(pred), _binary(ref)
    _check_shapes(p, r)
    n_p, n_r = int(np.count_nonzero(p)), int(np.count_nonzero(r))
    nan = math.nan
    if n_p == 0 or n_r == 0:
        status = STATUS_BOTH_EMPTY if n_p == n_r == 0 else (STATUS_EMPTY_PRED if n_p == 0 else STATUS_EMPTY_REF)
        overlap = 1.0 if status == STATUS_BOTH_EMPTY else 0.0
        return ClassMetrics(label, overlap, overlap, nan, nan, nan, nan, nan, nan, n_p, n_r, status)
    d_mm = directed_surface_distances(p, r, spacing)
    if voxel_units:
        d_vox = d_mm if spacing is None else directed_surface_distances(p, r, None)
        vox = (_hd95_from(*d_vox), float(d_vox[0].mean()), _assd_from(*d_vox))
    else:
        vox = (nan, nan, nan)
    return ClassMetrics(
        label=label, dice=dice(p, r), jaccard=jaccard(p, r),
        hd95=_hd95_from(*d_mm), asd=float(d_mm[0].mean()), assd=_assd_from(*d_mm),
        hd95_vox=vox[0], asd_vox=vox[1], assd_vox=vox[2],
        pred_voxels=n_p, ref_voxels=n_r, status=STATUS_OK,
    )


def evaluate_case(pred: Union[np.ndarray, Volume], ref: Union[np.ndarray, Volume], labels: Iterable[int],
                  spacing: Optional[Sequence[float]] = None, voxel_units: bool = True) -> List[ClassMetrics]:
    """Per-label metrics of a predicted label map against a reference label map.

    ``pred``, ``ref``: integer label maps ``(Z, Y, X)`` (arrays or Volumes, same shape). ``labels``: the label
    values to evaluate (each compared as ``pred == v`` vs ``ref == v``). ``spacing``: voxel size in **array order
    (z, y, x)** mm; when omitted and ``ref`` is a Volume its spacing is used (converted from x, y, z), else unit
    spacing (distances in voxels). Returns one :class:`ClassMetrics` per label, in the given order.
    """
    if spacing is None and isinstance(ref, Volume):
        spacing = ref.spacing_zyx
    p = pred.array if isinstance(pred, Volume) else np.asarray(pred)
    r = ref.array if isinstance(ref, Volume) else np.asarray(ref)
    if p.shape != r.shape:
        raise ValueError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    return [binary_metrics(p == v, r == v, spacing, int(v), voxel_units) for v in labels]


# --------------------------------------------------------------------------------------------------------------
# summaries


@dataclass
class MetricSummary:
    """Mean/std (population, ``ddof=0``) of each metric over the cases where it is finite, per label."""

    label: int
    n_cases: int
    mean: Dict[str, float]
    std: Dict[str, float]
    n_finite: Dict[str, int]
    status_counts: Dict[str, int]

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


def summarize(rows: Iterable[ClassMetrics]) -> List[MetricSummary]:
    """Mean/std per label of a list of per-case rows; NaN distances (empty masks) are left out of the means and
    counted in ``status_counts`` (and ``n_finite`` says how many values each mean is over)."""
    by_label: Dict[int, List[ClassMetrics]] = {}
    for row in rows:
        by_label.setdefault(int(row.label), []).append(row)
    out = []
    for label in sorted(by_label):
        group = by_label[label]
        mean, std, n_finite = {}, {}, {}
        for name in METRIC_NAMES:
            vals = np.array([getattr(r, name) for r in group], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            n_finite[name] = int(vals.size)
            mean[name] = float(vals.mean()) if vals.size else math.nan
            std[name] = float(vals.std()) if vals.size else math.nan
        counts = {s: sum(1 for r in group if r.status == s) for s in STATUSES}
        out.append(MetricSummary(label, len(group), mean, std, n_finite, counts))
    return out


__all__ = [
    "STATUS_OK", "STATUS_EMPTY_PRED", "STATUS_EMPTY_REF", "STATUS_BOTH_EMPTY", "STATUSES", "METRIC_NAMES",
    "dice", "jaccard", "surface", "directed_surface_distances", "hd95", "asd", "assd", "ClassMetrics",
    "binary_metrics", "evaluate_case", "MetricSummary", "summarize",
]
