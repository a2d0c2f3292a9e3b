"""Tests of semisupseg.metrics against medpy (test-only oracle) and the documented empty-mask results."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from semisupseg import metrics as M
from semisupseg.volume import Volume

medpy_binary = pytest.importorskip("medpy.metric.binary")


def _blob(rng, shape, threshold):
    field = ndimage.gaussian_filter(rng.random(shape), rng.uniform(0.8, 2.0))
    return field > np.quantile(field, threshold)


def _pairs(rng, n=12):
    """Varied random shapes: blobs of different sizes, several components, touching the array edge, thin ones,
    shifted/eroded copies of each other."""
    for i in range(n):
        shape = tuple(int(v) for v in rng.integers(8, 22, size=3))
        ref = _blob(rng, shape, rng.uniform(0.5, 0.95))
        kind = i % 4
        if kind == 0:
            pred = _blob(rng, shape, rng.uniform(0.5, 0.95))
        elif kind == 1:
            pred = np.roll(ref, tuple(int(v) for v in rng.integers(-2, 3, size=3)), axis=(0, 1, 2))
        elif kind == 2:
            pred = ndimage.binary_dilation(ref, iterations=int(rng.integers(1, 3))) ^ (rng.random(shape) > 0.97)
        else:
            pred = ref.copy()
            pred[:, : shape[1] // 2] = False  # half removed
            pred[0] = True  # a slab on the array edge
        if not pred.any():
            pred[tuple(s // 2 for s in shape)] = True
        if not ref.any():
            ref[0, 0, 0] = True
        spacing = tuple(float(v) for v in rng.uniform(0.3, 3.0, size=3))
        yield pred, ref, spacing


def test_agrees_with_medpy_on_random_shapes_anisotropic(rng):
    for pred, ref, spacing in _pairs(rng):
        assert M.dice(pred, ref) == pytest.approx(medpy_binary.dc(pred, ref), abs=1e-12)
        assert M.jaccard(pred, ref) == pytest.approx(medpy_binary.jc(pred, ref), abs=1e-12)
        for sp in (spacing, None):
            assert M.hd95(pred, ref, sp) == pytest.approx(medpy_binary.hd95(pred, ref, sp), abs=1e-6)
            assert M.asd(pred, ref, sp) == pytest.approx(medpy_binary.asd(pred, ref, sp), abs=1e-6)
            assert M.asd(ref, pred, sp) == pytest.approx(medpy_binary.asd(ref, pred, sp), abs=1e-6)
            assert M.assd(pred, ref, sp) == pytest.approx(medpy_binary.assd(pred, ref, sp), abs=1e-6)
        row = M.binary_metrics(pred, ref, spacing, label=3)
        assert row.status == M.STATUS_OK and row.label == 3
        assert row.hd95 == pytest.approx(medpy_binary.hd95(pred, ref, spacing), abs=1e-6)
        assert row.asd == pytest.approx(medpy_binary.asd(pred, ref, spacing), abs=1e-6)
        assert row.assd == pytest.approx(medpy_binary.assd(pred, ref, spacing), abs=1e-6)
        assert row.hd95_vox == pytest.approx(medpy_binary.hd95(pred, ref), abs=1e-6)
        assert row.asd_vox == pytest.approx(medpy_binary.asd(pred, ref), abs=1e-6)
        assert row.assd_vox == pytest.approx(medpy_binary.assd(pred, ref), abs=1e-6)
        assert row.pred_voxels == pred.sum() and row.ref_voxels == ref.sum()


def test_known_values_shifted_box():
    ref = np.zeros((10, 12, 14), bool)
    ref[2:7, 3:9, 4:10] = True
    pred = np.roll(ref, 1, axis=2)  # one voxel along x
    assert M.dice(pred, ref) == pytest.approx(2 * 5 * 6 * 5 / (2 * 180))
    assert M.jaccard(pred, ref) == pytest.approx(150 / 210)
    assert M.hd95(ref, ref) == 0.0 and M.assd(ref, ref) == 0.0 and M.dice(ref, ref) == 1.0
    # spacing (z, y, x): a shift along x is measured in x-spacing
    h1 = M.hd95(pred, ref, (1.0, 1.0, 1.0))
    h2 = M.hd95(pred, ref, (5.0, 5.0, 2.0))
    assert h1 == pytest.approx(1.0) and h2 == pytest.approx(2.0)
    assert M.asd(pred, ref, (1.0, 1.0, 1.0)) > 0


@pytest.mark.parametrize("pred_empty,ref_empty,status,overlap", [
    (True, False, M.STATUS_EMPTY_PRED, 0.0),
    (False, True, M.STATUS_EMPTY_REF, 0.0),
    (True, True, M.STATUS_BOTH_EMPTY, 1.0),
])
def test_empty_masks_documented(pred_empty, ref_empty, status, overlap):
    full = np.zeros((6, 6, 6), bool)
    full[1:4, 1:4, 1:4] = True
    empty = np.zeros_like(full)
    pred = empty if pred_empty else full
    ref = empty if ref_empty else full
    row = M.binary_metrics(pred, ref, (1.0, 2.0, 3.0))
    assert row.status == status
    assert row.dice == overlap and row.jaccard == overlap
    for name in ("hd95", "asd", "assd", "hd95_vox", "asd_vox", "assd_vox"):
        assert math.isnan(getattr(row, name))
    assert math.isnan(M.hd95(pred, ref)) and math.isnan(M.asd(pred, ref)) and math.isnan(M.assd(pred, ref))
    with pytest.raises(ValueError):
        M.directed_surface_distances(pred, ref)


def test_evaluate_case_per_label_and_volume_spacing():
    ref = np.zeros((8, 9, 10), np.uint8)
    ref[1:4, 2:6, 2:7] = 1
    ref[4:7, 2:6, 2:7] = 2
    pred = np.roll(ref, 1, axis=0)
    pred[pred == 2] = 0  # class 2 missing in the prediction
    vol_ref = Volume(ref, spacing=(0.5, 1.0, 3.0))  # x, y, z
    rows = M.evaluate_case(Volume(pred, spacing=(0.5, 1.0, 3.0)), vol_ref, [1, 2, 3])
    assert [r.label for r in rows] == [1, 2, 3]
    assert [r.status for r in rows] == [M.STATUS_OK, M.STATUS_EMPTY_PRED, M.STATUS_BOTH_EMPTY]
    sp_zyx = (3.0, 1.0, 0.5)
    assert rows[0].hd95 == pytest.approx(medpy_binary.hd95(pred == 1, ref == 1, sp_zyx), abs=1e-6)
    assert rows[0].hd95 == pytest.approx(3.0)  # shift of one voxel along z = 3 mm
    assert rows[0].hd95_vox == pytest.approx(1.0)
    # explicit spacing overrides, arrays work too
    rows2 = M.evaluate_case(pred, ref, [1], spacing=(1.0, 1.0, 1.0))
    assert rows2[0].hd95 == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.evaluate_case(pred[:-1], ref, [1])
    with pytest.raises(ValueError):
        M.hd95(pred == 1, ref == 1, spacing=(1.0, 1.0))


def test_summarize_counts_empty_cases_and_skips_nan():
    rows = [
        M.ClassMetrics(1, 0.8, 0.6, 2.0, 1.0, 1.5, 2.0, 1.0, 1.5, 10, 12, M.STATUS_OK),
        M.ClassMetrics(1, 0.6, 0.4, 4.0, 3.0, 3.5, 4.0, 3.0, 3.5, 10, 12, M.STATUS_OK),
        M.ClassMetrics(1, 0.0, 0.0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0, 12,
                       M.STATUS_EMPTY_PRED),
        M.ClassMetrics(2, 1.0, 1.0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0, 0,
                       M.STATUS_BOTH_EMPTY),
    ]
    s1, s2 = M.summarize(rows)
    assert s1.label == 1 and s1.n_cases == 3
    assert s1.mean["dice"] == pytest.approx(1.4 / 3)
    assert s1.mean["hd95"] == pytest.approx(3.0) and s1.std["hd95"] == pytest.approx(1.0)
    assert s1.n_finite["hd95"] == 2 and s1.n_finite["dice"] == 3
    assert s1.status_counts == {"ok": 2, "empty_pred": 1, "empty_ref": 0, "both_empty": 0}
    assert s2.status_counts["both_empty"] == 1 and math.isnan(s2.mean["hd95"])


def test_small_objects_in_large_array_match_medpy(rng):
    """Objects far from the array edge exercise the bounding-box crop of the distance transforms."""
    for _ in range(4):
        ref = np.zeros((30, 34, 38), bool)
        pred = np.zeros_like(ref)
        ref[8:15, 10:19, 12:20] = _blob(rng, (7, 9, 8), 0.4)
        pred[9:17, 11:18, 11:21] = _blob(rng, (8, 7, 10), 0.5)
        pred[25, 30, 3] = True  # a far outlier voxel
        sp = tuple(float(v) for v in rng.uniform(0.4, 2.5, size=3))
        assert M.hd95(pred, ref, sp) == pytest.approx(medpy_binary.hd95(pred, ref, sp), abs=1e-6)
        assert M.asd(pred, ref, sp) == pytest.approx(medpy_binary.asd(pred, ref, sp), abs=1e-6)
        assert M.assd(pred, ref, sp) == pytest.approx(medpy_binary.assd(pred, ref, sp), abs=1e-6)
