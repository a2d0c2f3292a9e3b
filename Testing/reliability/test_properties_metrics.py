"""Property-based tests (hypothesis) of :mod:`semisupseg.metrics` on random shapes, grids and spacings.

The shapes and settings are those of :mod:`test_properties_geometry` (balls, boxes, unions, random blobs; grids of
3-14 voxels a side; spacings 0.3-4 mm, z, y, x). Identities checked: Dice(a, a) = Jaccard(a, a) = 1, symmetry,
J = D / (2 - D), 0 <= D, J <= 1; surface distances equal their brute-force definition (medpy's: surface = mask minus
its erosion with the 6-cross, the array edge outside); HD95 <= HD, ASD <= HD (both directions), min ASD <= ASSD <=
max ASD; all zero on identical masks; a shape moved by k voxels along an axis has HD = k x that axis's spacing;
mm = voxels x s for an isotropic spacing s; the per-case rows agree with the single metrics; empty-mask conventions
(the module's table): both empty Dice = Jaccard = 1, one empty 0, distances NaN, a status says which, summaries
leave NaN out and count the statuses.
"""
from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage

from semisupseg import metrics as M
from test_properties_geometry import PROPERTY_SETTINGS, grids, shapes_on, spacings


@st.composite
def mask_pairs(draw, max_side: int = 14, nonempty: bool = True):
    """Two masks on one grid (independent shapes, or the second a perturbation of the first)."""
    shape = draw(grids(1, max_side))
    a = draw(shapes_on(shape))
    if draw(st.booleans()):
        b = draw(shapes_on(shape))
    else:  # a nearby shape: a grown or shrunk, with a few voxels flipped
        b = ndimage.binary_dilation(a) if draw(st.booleans()) else ndimage.binary_erosion(a)
        rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
        b = b ^ (rng.random(shape) < 0.03)
    if nonempty:
        for m in (a, b):
            if not m.any():
                m[tuple(draw(st.integers(0, n - 1)) for n in shape)] = True
    return a, b


def brute_force_directed(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    """Distances from each surface voxel of ``a`` to the nearest surface voxel of ``b`` (all pairs)."""
    s = np.ones(3) if spacing is None else np.asarray(spacing, float)
    cross = ndimage.generate_binary_structure(3, 1)
    sa = a & ~ndimage.binary_erosion(a, structure=cross)
    sb = b & ~ndimage.binary_erosion(b, structure=cross)
    pa, pb = np.argwhere(sa) * s, np.argwhere(sb) * s
    return np.sqrt(((pa[:, None, :] - pb[None]) ** 2).sum(-1)).min(1)


def hausdorff(a, b, spacing=None) -> float:
    d_ab, d_ba = M.directed_surface_distances(a, b, spacing)
    return float(max(d_ab.max(), d_ba.max()))


@PROPERTY_SETTINGS
@given(mask_pairs(max_side=10), st.one_of(st.none(), spacings()))
def test_surface_distances_equal_their_definition(pair, spacing):
    a, b = pair
    d_ab, d_ba = M.directed_surface_distances(a, b, spacing)
    np.testing.assert_allclose(np.sort(d_ab), np.sort(brute_force_directed(a, b, spacing)), atol=1e-9)
    np.testing.assert_allclose(np.sort(d_ba), np.sort(brute_force_directed(b, a, spacing)), atol=1e-9)


@PROPERTY_SETTINGS
@given(mask_pairs(nonempty=False))
def test_overlap_identities(pair):
    a, b = pair
    d, j = M.dice(a, b), M.jaccard(a, b)
    assert 0.0 <= d <= 1.0 and 0.0 <= j <= 1.0
    assert d == M.dice(b, a) and j == M.jaccard(b, a)
    assert math.isclose(j, d / (2.0 - d), abs_tol=1e-12) and math.isclose(d, 2 * j / (1 + j), abs_tol=1e-12)
    assert M.dice(a, a) == 1.0 and M.jaccard(a, a) == 1.0  # empty included (the medpy convention)
    if a.any() and b.any() and not (a & b).any():
        assert d == 0.0 and j == 0.0
    inter, total = int((a & b).sum()), int(a.sum() + b.sum())
    if total:
        assert math.isclose(d, 2 * inter / total)


@PROPERTY_SETTINGS
@given(mask_pairs(), spacings())
def test_distance_inequalities(pair, spacing):
    a, b = pair
    hd = hausdorff(a, b, spacing)
    h95, asd_ab, asd_ba, assd = (M.hd95(a, b, spacing), M.asd(a, b, spacing), M.asd(b, a, spacing),
                                 M.assd(a, b, spacing))
    tol = 1e-9 * max(1.0, hd)
    assert 0.0 <= h95 <= hd + tol
    assert 0.0 <= asd_ab <= hd + tol and 0.0 <= asd_ba <= hd + tol
    assert min(asd_ab, asd_ba) - tol <= assd <= max(asd_ab, asd_ba) + tol and assd <= hd + tol
    assert h95 == M.hd95(b, a, spacing) and math.isclose(assd, M.assd(b, a, spacing), rel_tol=1e-12)
    assert M.hd95(a, a, spacing) == 0.0 and M.asd(a, a, spacing) == 0.0 and M.assd(a, a, spacing) == 0.0
    assert hausdorff(a, a, spacing) == 0.0


@PROPERTY_SETTINGS
@given(grids(3, 8), st.integers(0, 2), st.integers(1, 4), spacings(), st.data())
def test_translation_by_k_voxels_gives_hd_k_times_the_spacing(inner, axis, k, spacing, data):
    """Any shape moved by ``k`` voxels along ``axis`` (with room around it, so the array edge plays no part): the
    Hausdorff distance of the surfaces is exactly ``k * spacing[axis]``; HD95 and ASD are at most that."""
    shape = data.draw(shapes_on(inner))
    if not shape.any():
        shape[0, 0, 0] = True
    pad = k + 1
    a = np.pad(shape, pad)
    b = np.roll(a, k, axis=axis)
    assert b.sum() == a.sum()  # nothing wrapped round
    expected = k * spacing[axis]
    assert math.isclose(hausdorff(a, b, spacing), expected, rel_tol=1e-12)
    assert M.hd95(a, b, spacing) <= expected * (1 + 1e-12) and M.asd(a, b, spacing) <= expected * (1 + 1e-12)
    assert math.isclose(hausdorff(a, b), k, rel_tol=1e-12)  # in voxels


@PROPERTY_SETTINGS
@given(mask_pairs(), st.floats(0.3, 4.0))
def test_millimetres_are_voxels_times_an_isotropic_spacing(pair, s):
    a, b = pair
    row = M.binary_metrics(a, b, spacing=(s, s, s))
    for mm, vox in (("hd95", "hd95_vox"), ("asd", "asd_vox"), ("assd", "assd_vox")):
        assert math.isclose(getattr(row, mm), s * getattr(row, vox), rel_tol=1e-9), (mm, row)
    assert math.isclose(row.hd95_vox, M.hd95(a, b)) and math.isclose(row.asd_vox, M.asd(a, b))


@PROPERTY_SETTINGS
@given(mask_pairs(nonempty=False), spacings())
def test_rows_agree_with_the_single_metrics_and_document_empty_masks(pair, spacing):
    a, b = pair
    row = M.binary_metrics(a, b, spacing, label=3)
    assert row.label == 3 and row.pred_voxels == int(a.sum()) and row.ref_voxels == int(b.sum())
    assert row.dice == M.dice(a, b) and row.jaccard == M.jaccard(a, b)
    if a.any() and b.any():
        assert row.status == M.STATUS_OK
        assert math.isclose(row.hd95, M.hd95(a, b, spacing)) and math.isclose(row.asd, M.asd(a, b, spacing))
        assert math.isclose(row.assd, M.assd(a, b, spacing))
        assert math.isclose(row.hd95_vox, M.hd95(a, b)) and math.isclose(row.assd_vox, M.assd(a, b))
    else:
        expected = (M.STATUS_BOTH_EMPTY if not a.any() and not b.any() else
                    M.STATUS_EMPTY_PRED if not a.any() else M.STATUS_EMPTY_REF)
        assert row.status == expected
        overlap = 1.0 if expected == M.STATUS_BOTH_EMPTY else 0.0
        assert row.dice == overlap and row.jaccard == overlap
        for name in ("hd95", "asd", "assd", "hd95_vox", "asd_vox", "assd_vox"):
            assert math.isnan(getattr(row, name)), name
        assert math.isnan(M.hd95(a, b, spacing)) and math.isnan(M.asd(a, b)) and math.isnan(M.assd(b, a))


@PROPERTY_SETTINGS
@given(grids(3, 10), st.data(), spacings())
def test_label_maps_and_summaries(shape, data, spacing):
    """evaluate_case on label maps = binary_metrics per label; summarize averages the finite values only and
    counts the statuses (an absent label is 'both_empty' or 'empty_*', never a flattering 0 distance)."""
    cases = []
    for _ in range(data.draw(st.integers(1, 4))):
        pred = np.zeros(shape, np.uint8)
        ref = np.zeros(shape, np.uint8)
        for lab in (1, 2):
            pred[data.draw(shapes_on(shape))] = lab
            ref[data.draw(shapes_on(shape))] = lab
        rows = M.evaluate_case(pred, ref, labels=[1, 2, 3], spacing=spacing)
        for row in rows:
            single = M.binary_metrics(pred == row.label, ref == row.label, spacing, row.label)
            assert row.as_dict().keys() == single.as_dict().keys()
            for key, value in single.as_dict().items():
                other = getattr(row, key)
                assert other == value or (isinstance(value, float) and math.isnan(value) and math.isnan(other))
        assert rows[2].status == M.STATUS_BOTH_EMPTY  # label 3 is in neither map
        cases += rows
    for summary in M.summarize(cases):
        rows = [r for r in cases if r.label == summary.label]
        assert summary.n_cases == len(rows) and sum(summary.status_counts.values()) == len(rows)
        for name in M.METRIC_NAMES:
            finite = [getattr(r, name) for r in rows if math.isfinite(getattr(r, name))]
            assert summary.n_finite[name] == len(finite)
            if finite:
                assert math.isclose(summary.mean[name], float(np.mean(finite)), rel_tol=1e-12, abs_tol=1e-12)
            else:
                assert math.isnan(summary.mean[name])
