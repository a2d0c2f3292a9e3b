"""Tests of semisupseg.geometry: SDM, smooth Heaviside, boundary ring, entropy, SGRS regions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from semisupseg import geometry as G


def _ball(shape, center, radius, spacing=(1.0, 1.0, 1.0)):
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    d2 = sum(((a - c) * s) ** 2 for a, c, s in zip((zz, yy, xx), center, spacing))
    return d2 <= radius ** 2


def _random_shape(rng, shape=(14, 16, 18)):
    m = rng.random(shape) > 0.6
    m = ndimage.binary_opening(ndimage.gaussian_filter(m.astype(float), 1.2) > 0.45)
    return m


def _find_boundaries_inner(mask):
    """skimage.segmentation.find_boundaries(mode='inner', connectivity=1) as skimage computes it."""
    fp = ndimage.generate_binary_structure(mask.ndim, 1)
    lab = mask.astype(np.uint8)
    b = ndimage.grey_dilation(lab, footprint=fp) != ndimage.grey_erosion(lab, footprint=fp)
    return b & mask


def _release_compute_sdf(mask):
    """The SASSNet/DTC compute_sdf formula for one non-empty, non-full mask (reference for our implementation)."""
    posmask = mask.astype(bool)
    negmask = ~posmask
    posdis = ndimage.distance_transform_edt(posmask)
    negdis = ndimage.distance_transform_edt(negmask)
    sdf = (negdis - negdis.min()) / (negdis.max() - negdis.min()) - (posdis - posdis.min()) / (
        posdis.max() - posdis.min())
    sdf[_find_boundaries_inner(posmask)] = 0
    return sdf


def test_inner_boundary_matches_skimage_semantics(rng):
    for _ in range(5):
        m = _random_shape(rng)
        m[0, :, :3] = True  # touch the array edge
        np.testing.assert_array_equal(G.inner_boundary(m), _find_boundaries_inner(m))
        # isotropic: inner boundary == object voxels at EDT distance exactly 1
        np.testing.assert_array_equal(G.inner_boundary(m), m & (ndimage.distance_transform_edt(m) == 1))


def test_sdm_matches_release_formula_and_signs(rng):
    for _ in range(4):
        m = _random_shape(rng)
        assert m.any() and not m.all()
        sdm = G.signed_distance_map(m)
        assert sdm.dtype == np.float32 and sdm.shape == m.shape
        np.testing.assert_allclose(sdm, _release_compute_sdf(m), atol=1e-6)
        assert sdm.min() == pytest.approx(-1.0) and sdm.max() == pytest.approx(1.0)
        boundary = G.inner_boundary(m)
        assert np.all(sdm[boundary] == 0)
        assert np.all(sdm[m & ~boundary] < 0)
        assert np.all(sdm[~m] > 0)


def test_sdm_small_objects_match_release_formula(rng):
    """Objects far from the edges (the inside distance is computed in their bounding box) and on the edge."""
    for k in range(4):
        m = np.zeros((20, 22, 24), bool)
        m[5:11, 6:13, 4:12] = _random_shape(rng, (6, 7, 8))
        m[15:18, 2:4, 20:23] = True
        if k % 2:
            m[0, :3, :3] = True
        if not m.any():
            continue
        np.testing.assert_allclose(G.signed_distance_map(m), _release_compute_sdf(m), atol=1e-6)
        sp = (2.0, 0.7, 1.3)
        inside = ndimage.distance_transform_edt(m, sampling=sp)
        outside = ndimage.distance_transform_edt(~m, sampling=sp)
        expected = outside / outside.max() - inside / inside.max()
        expected[G.inner_boundary(m)] = 0
        np.testing.assert_allclose(G.signed_distance_map(m, spacing=sp), expected, atol=1e-6)


def test_sdm_ball_is_radial():
    m = _ball((21, 21, 21), (10, 10, 10), 6)
    sdm = G.signed_distance_map(m)
    assert sdm[10, 10, 10] == pytest.approx(-1.0)
    # monotone along a ray from the centre outwards
    ray = sdm[10, 10, 10:]
    assert np.all(np.diff(ray) > 0)


def test_sdm_degenerate_conventions():
    empty = np.zeros((4, 5, 6), bool)
    full = np.ones((4, 5, 6), bool)
    assert np.all(G.signed_distance_map(empty) == 1.0)
    assert np.all(G.signed_distance_map(full) == -1.0)
    assert np.all(G.signed_distance_map(empty, degenerate="zero") == 0.0)
    assert np.all(G.signed_distance_map(full, degenerate="zero") == 0.0)
    # the default keeps the smooth Heaviside consistent with the label
    h = G.smooth_heaviside(torch.from_numpy(G.signed_distance_map(np.stack([empty, full]))))
    assert torch.all(h[0] < 1e-6) and torch.all(h[1] > 1 - 1e-6)
    with pytest.raises(ValueError):
        G.signed_distance_map(empty, degenerate="nan")


def test_sdm_batch_torch_and_spacing(rng):
    masks = np.stack([_random_shape(rng) for _ in range(3)])
    masks[1] = False
    batch = G.signed_distance_map(torch.from_numpy(masks))
    assert isinstance(batch, torch.Tensor) and batch.dtype == torch.float32 and batch.shape == masks.shape
    for b in range(3):
        np.testing.assert_array_equal(batch[b].numpy(), G.signed_distance_map(masks[b]))
    # spacing-aware: a ball in mm on an anisotropic grid is radial in mm
    sp = (2.0, 1.0, 0.5)
    m = _ball((15, 31, 61), (7, 15, 30), 10.0, sp)
    sdm = G.signed_distance_map(m, spacing=sp)
    out_iso = G.signed_distance_map(m)
    # outside points at the same physical distance 4 mm from the surface along z and along x agree in mm-map
    z_pt, x_pt = sdm[7 + 7, 15, 30], sdm[7, 15, 30 + 28]  # 14 mm from centre in both
    assert z_pt == pytest.approx(x_pt, abs=1e-6)
    assert out_iso[7 + 7, 15, 30] != pytest.approx(out_iso[7, 15, 30 + 28], abs=1e-3)


def test_class_sdm_shapes_and_channels(rng):
    labels = np.zeros((10, 12, 14), np.int64)
    labels[2:6, 3:8, 4:9] = 1
    labels[6:9, 3:8, 4:9] = 2
    out = G.class_sdm(labels, 3)
    assert out.shape == (2, 10, 12, 14)
    np.testing.assert_array_equal(out[0], G.signed_distance_map(labels == 1))
    np.testing.assert_array_equal(out[1], G.signed_distance_map(labels == 2))
    tb = G.class_sdm(torch.from_numpy(np.stack([labels, labels * 0])), 3)
    assert tuple(tb.shape) == (2, 2, 10, 12, 14)
    assert torch.all(tb[1] == 1.0)
    with pytest.raises(ValueError):
        G.class_sdm(labels, 1)


def test_smooth_heaviside_values_and_grad():
    sdm = torch.tensor([-0.5, -0.01, 0.0, 0.01, 0.5], requires_grad=True)
    h = G.smooth_heaviside(sdm)
    from scipy.special import expit
    np.testing.assert_allclose(h.detach().numpy(), expit(-1500 * sdm.detach().numpy()), rtol=1e-6)
    assert h[2].item() == pytest.approx(0.5)
    assert h[0].item() > 0.999999 and h[-1].item() < 1e-6
    h.sum().backward()
    assert torch.isfinite(sdm.grad).all()
    np.testing.assert_allclose(G.smooth_heaviside(np.array([0.0, -1.0]), k=-2.0), [0.5, 1 / (1 + np.exp(-2))],
                               rtol=1e-6)


def _brute_ring(mask, it):
    """City-block (L1) distance bands computed by brute force: outer = outside with L1 dist to object <= it,
    inner = inside with L1 dist to in-array background <= it."""
    idx_in = np.argwhere(mask)
    idx_out = np.argwhere(~mask)
    outer = np.zeros_like(mask)
    inner = np.zeros_like(mask)
    for p in idx_out:
        if len(idx_in) and np.abs(idx_in - p).sum(1).min() <= it:
            outer[tuple(p)] = True
    for p in idx_in:
        if len(idx_out) and np.abs(idx_out - p).sum(1).min() <= it:
            inner[tuple(p)] = True
    return outer, inner


def test_ring_iterations_formula():
    m = np.zeros((10, 10, 10), bool)
    assert G.ring_iterations(m) == 1  # max(1, 0)
    m[:5] = True  # half the patch -> round(0.5 * 20) = 10
    assert G.ring_iterations(m) == 10
    m[:] = False
    m.flat[:25] = True  # 0.025 * 20 = 0.5 -> half-up rounds to 1
    assert G.ring_iterations(m) == 1
    m.flat[:75] = True  # 0.075 * 20 = 1.5 -> 2 (banker's rounding would give 2 too); 0.125*20=2.5 -> 3
    assert G.ring_iterations(m) == 2
    m.flat[:125] = True
    assert G.ring_iterations(m) == 3
    assert G.ring_iterations(m, w_max=40) == 5


def test_boundary_ring_matches_brute_force_numpy_and_torch(rng):
    for _ in range(3):
        m = _random_shape(rng, (9, 10, 11))
        it = G.ring_iterations(m)
        outer, inner = G.boundary_ring(m)
        bo, bi = _brute_ring(m, it)
        np.testing.assert_array_equal(outer, bo)
        np.testing.assert_array_equal(inner, bi)
        tr = G.boundary_ring(torch.from_numpy(m))
        np.testing.assert_array_equal(tr.outer.numpy(), outer)
        np.testing.assert_array_equal(tr.inner.numpy(), inner)
        ring = G.boundary_ring(m).ring
        np.testing.assert_array_equal(ring, outer | inner)
        assert not (outer & m).any() and not (inner & ~m).any()


def test_boundary_ring_width_grows_with_area_and_batch():
    small = _ball((20, 20, 20), (10, 10, 10), 3)
    big = _ball((20, 20, 20), (10, 10, 10), 8)
    assert G.ring_iterations(small) == 1 and G.ring_iterations(big) >= 4
    batch = np.stack([small, big, np.zeros_like(small)])
    outer, inner = G.boundary_ring(batch)
    assert outer.shape == batch.shape
    for b in range(3):
        o, i = G.boundary_ring(batch[b])
        np.testing.assert_array_equal(outer[b], o)
        np.testing.assert_array_equal(inner[b], i)
    assert not outer[2].any() and not inner[2].any()
    # a box touching the patch edge has no inner band along the edge
    m = np.zeros((6, 6, 6), bool)
    m[:, :3] = True
    _, inner = G.boundary_ring(m, w_max=2)  # it = max(1, round(0.5*2)) = 1
    np.testing.assert_array_equal(np.argwhere(inner)[:, 1], np.full(int(inner.sum()), 2))


def test_entropy_bases_and_safety():
    p = np.array([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]]).T  # classes on axis 0
    h_e = G.entropy(p, axis=0)
    np.testing.assert_allclose(h_e, [math.log(2), 0.0, -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))], rtol=1e-6)
    np.testing.assert_allclose(G.entropy(p, axis=0, base=2), h_e / math.log(2), rtol=1e-6)
    np.testing.assert_allclose(G.entropy(p, axis=0, base=10), h_e / math.log(10), rtol=1e-6)
    np.testing.assert_allclose(G.entropy(p, axis=0, base=None), h_e, rtol=1e-6)
    # torch, batched (B, C, Z, Y, X), equals numpy, finite gradient at p = 0
    logits = torch.randn(2, 3, 4, 5, 6)
    prob = torch.softmax(logits, 1)
    prob[0, :, 0, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    prob.requires_grad_(True)
    ht = G.entropy(prob, axis=1, base=10)
    assert ht.shape == (2, 4, 5, 6)
    np.testing.assert_allclose(ht.detach().numpy(), G.entropy(prob.detach().numpy(), axis=1, base=10),
                               rtol=1e-5, atol=1e-7)
    assert ht[0, 0, 0, 0].item() == 0.0
    ht.sum().backward()
    assert torch.isfinite(prob.grad).all()
    # maximum entropy of C classes is log_base C
    uni = torch.full((1, 4, 2, 2, 2), 0.25)
    assert torch.allclose(G.entropy(uni, base=2), torch.full((1, 2, 2, 2), 2.0))
    with pytest.raises(ValueError):
        G.entropy(p, axis=0, base=1)


def test_sgrs_tau_is_base10_entropy_of_release_probability_window():
    """SGRS-Net's release thresholds the background probability at 0.425 < p < 0.575; that is log10 entropy 0.296."""
    h_edge = float(G.entropy(np.array([0.425, 0.575]), axis=0, base=10))
    assert round(h_edge, 3) == G.SGRS_TAU == 0.296
    assert float(G.entropy(np.array([0.575, 0.425]), axis=0, base=10)) == pytest.approx(h_edge)
    # in nats or bits the same tau would mean a very different window
    assert round(float(G.entropy(np.array([0.425, 0.575]), axis=0)), 3) != 0.296
    p = (np.arange(200000) + 0.5) / 200000  # never exactly on 0.425 / 0.575
    prob = np.stack([p, 1 - p])
    h10 = G.entropy(prob, axis=0, base=10)
    window = (p > 0.425) & (p < 0.575)
    # the exact threshold of the release window is H10(0.425); with it the two rules are identical
    np.testing.assert_array_equal(h10 > h_edge, window)
    # with tau = 0.296 (3 digits) they differ only for p within 0.001 of the window's ends
    differ = (h10 > G.SGRS_TAU) != window
    assert differ.any() and np.all(np.minimum(np.abs(p[differ] - 0.425), np.abs(p[differ] - 0.575)) < 1e-3)
    # regions: the same window decides Δ in sgrs_regions for two classes
    a = prob[None, :, :, None, None]  # (1, 2, N, 1, 1)
    regions = G.sgrs_regions(a, a, tau=h_edge)
    np.testing.assert_array_equal(regions[0, :, 0, 0] == G.REGION_UNCERTAIN, window)


def test_sgrs_regions_partition_numpy_and_torch():
    gen = torch.Generator().manual_seed(0)
    la = torch.randn(2, 3, 6, 7, 8, generator=gen) * 3
    lb = la + torch.randn(2, 3, 6, 7, 8, generator=gen) * 2
    pa, pb = torch.softmax(la, 1), torch.softmax(lb, 1)
    valid = torch.ones(2, 6, 7, 8, dtype=torch.bool)
    valid[:, :, :, -2:] = False
    r = G.sgrs_regions(pa, pb, valid=valid)
    assert r.dtype == torch.uint8 and r.shape == (2, 6, 7, 8)
    delta = (G.entropy(pa, base=10) > 0.296) | (G.entropy(pb, base=10) > 0.296)
    agree = pa.argmax(1) == pb.argmax(1)
    masks = {c: r == c for c in (G.REGION_IGNORED, G.REGION_UNCERTAIN, G.REGION_AGREE, G.REGION_DISAGREE)}
    # exhaustive and disjoint
    total = sum(m.int() for m in masks.values())
    assert torch.all(total == 1)
    assert torch.equal(masks[G.REGION_IGNORED], ~valid)
    assert torch.equal(masks[G.REGION_UNCERTAIN], delta & valid)
    assert torch.equal(masks[G.REGION_AGREE], ~delta & agree & valid)
    assert torch.equal(masks[G.REGION_DISAGREE], ~delta & ~agree & valid)
    for c in (1, 2, 3):  # the random maps exercise every region
        assert masks[c].any()
    rn = G.sgrs_regions(pa.numpy(), pb.numpy(), valid=valid.numpy())
    assert rn.dtype == np.uint8
    np.testing.assert_array_equal(rn, r.numpy())
    # unbatched with the class axis first
    np.testing.assert_array_equal(G.sgrs_regions(pa[0].numpy(), pb[0].numpy(), axis=0),
                                  G.sgrs_regions(pa.numpy(), pb.numpy())[0])
    with pytest.raises(ValueError):
        G.sgrs_regions(pa, pb[:, :2])
    assert set(G.REGION_NAMES) == {0, 1, 2, 3}


def test_torch_shift_morphology_equals_scipy(rng):
    """The device-side (CUDA) path of boundary_ring: dilation/erosion by shifts equal scipy's with the cross."""
    for it in (1, 3):
        m = _random_shape(rng, (9, 10, 11))
        t = torch.from_numpy(m)
        np.testing.assert_array_equal(G._dilate_cross_torch(t, it).numpy(),
                                      ndimage.binary_dilation(m, G.CROSS_3D, iterations=it))
        np.testing.assert_array_equal((~G._dilate_cross_torch(~t, it)).numpy(),
                                      ndimage.binary_erosion(m, G.CROSS_3D, iterations=it, border_value=1))
