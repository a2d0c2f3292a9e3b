"""Property-based tests (hypothesis) of :mod:`semisupseg.geometry` on random shapes, grids and spacings.

Shapes: balls and ellipsoids, boxes, unions of both, random blobs (smoothed noise), on grids of 3-14 voxels a side
with isotropic or anisotropic spacings of 0.3-4 mm (array order z, y, x).

Conventions checked (the module's docstrings): the signed distance map is **negative inside, positive outside,
exactly 0 on the inner boundary** (object voxels with a 6-neighbour outside), each side normalised by its own
maximum, so values lie in [-1, 1] with +1 at the farthest outside voxel; empty mask +1 everywhere, full mask -1
(``degenerate="saturate"``). The boundary ring M_bound is ``it`` voxels (city-block) on each side of the surface,
``it`` from eq. 8; the patch edge is not a surface. The SGRS regions partition the valid voxels into Δ / Ω / Θ.

Settings: ``max_examples`` 60 (``deadline=None``; ``SEMISUPSEG_PROPERTY_EXAMPLES=N`` for a longer hunt); with
``CI`` set the examples are derandomised and no example database is written, so CI runs the same cases every
time.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from semisupseg import geometry as G

CI = bool(os.environ.get("CI"))
#: examples per property: 60 (seconds); a longer hunt: SEMISUPSEG_PROPERTY_EXAMPLES=2000
EXAMPLES = int(os.environ.get("SEMISUPSEG_PROPERTY_EXAMPLES", "60"))
#: modest, fast, reproducible in CI
PROPERTY_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=CI, database=None if CI else
                             settings.default.database, suppress_health_check=[HealthCheck.too_slow,
                                                                               HealthCheck.filter_too_much])


# ----------------------------------------------------------------------------------------------------------------------
# Strategies: grids, spacings, shapes
# ----------------------------------------------------------------------------------------------------------------------

def _coords(shape):
    return np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")


def ball(shape, center, radii) -> np.ndarray:
    """Ellipsoid (voxel units) of ``radii`` around ``center`` (z, y, x)."""
    return sum(((c - c0) / r) ** 2 for c, c0, r in zip(_coords(shape), center, radii)) <= 1.0


def box(shape, lo, hi) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return m


def blob(shape, seed: int, density: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random(shape), 1.0)
    return noise > np.quantile(noise, 1.0 - density)


@st.composite
def grids(draw, min_side: int = 1, max_side: int = 14):
    return tuple(draw(st.integers(min_side, max_side)) for _ in range(3))


@st.composite
def spacings(draw):
    """(z, y, x) mm: isotropic or anisotropic."""
    if draw(st.booleans()):
        s = draw(st.floats(0.3, 4.0))
        return (s, s, s)
    return tuple(draw(st.floats(0.3, 4.0)) for _ in range(3))


@st.composite
def shapes_on(draw, shape, kind=None):
    """A mask of ``shape``: ball, box, union of a ball and a box, or a random blob (may be empty or full)."""
    kind = kind or draw(st.sampled_from(["ball", "box", "union", "blob"]))

    def a_ball():
        center = [draw(st.floats(-1.0, n)) for n in shape]
        radii = [draw(st.floats(0.5, max(shape) / 1.5))] * 3 if draw(st.booleans()) else \
            [draw(st.floats(0.5, max(shape) / 1.5)) for _ in shape]
        return ball(shape, center, radii)

    def a_box():
        lo = [draw(st.integers(0, n - 1)) for n in shape]
        hi = [draw(st.integers(a + 1, n)) for a, n in zip(lo, shape)]
        return box(shape, lo, hi)

    if kind == "ball":
        return a_ball()
    if kind == "box":
        return a_box()
    if kind == "union":
        return a_ball() | a_box()
    return blob(shape, draw(st.integers(0, 2 ** 32 - 1)), draw(st.floats(0.05, 0.7)))


@st.composite
def masks(draw, min_side: int = 1, max_side: int = 14, proper: bool = True, kind=None):
    """A mask on a random grid; ``proper``: neither empty nor full."""
    shape = draw(grids(min_side, max_side))
    if proper and math.prod(shape) < 2:
        shape = (1, 1, 2)
    m = draw(shapes_on(shape, kind))
    if proper:
        if not m.any():
            m[tuple(draw(st.integers(0, n - 1)) for n in shape)] = True
        if m.all():
            m[tuple(draw(st.integers(0, n - 1)) for n in shape)] = False
    return m


# ----------------------------------------------------------------------------------------------------------------------
# Signed distance map
# ----------------------------------------------------------------------------------------------------------------------

def brute_force_sdm(mask: np.ndarray, spacing) -> np.ndarray:
    """The definition, voxel pair by voxel pair: outside distance to the nearest object voxel over its maximum,
    minus inside distance to the nearest background voxel over its maximum, 0 on the inner boundary."""
    s = np.asarray(spacing, dtype=np.float64)
    pts = np.argwhere(np.ones(mask.shape, bool)) * s
    obj, bg = pts[mask.ravel()], pts[~mask.ravel()]
    d_obj = np.sqrt(((pts[:, None, :] - obj[None]) ** 2).sum(-1)).min(1).reshape(mask.shape)
    d_bg = np.sqrt(((pts[:, None, :] - bg[None]) ** 2).sum(-1)).min(1).reshape(mask.shape)
    outside, inside = np.where(mask, 0.0, d_obj), np.where(mask, d_bg, 0.0)
    sdm = outside / outside.max() - inside / inside.max()
    sdm[G.inner_boundary(mask)] = 0.0
    return sdm


@PROPERTY_SETTINGS
@given(masks(max_side=9), spacings())
def test_sdm_equals_its_definition(mask, spacing):
    """Against the brute-force definition (every voxel pair; small grids), anisotropic spacings included: checks
    the bounding-box shortcut of the inside distance too."""
    np.testing.assert_allclose(G.signed_distance_map(mask, spacing), brute_force_sdm(mask, spacing), atol=1e-6)


@PROPERTY_SETTINGS
@given(masks(), spacings())
def test_sdm_sign_range_and_zero_set(mask, spacing):
    sdm = G.signed_distance_map(mask, spacing)
    boundary = G.inner_boundary(mask)
    assert sdm.dtype == np.float32 and sdm.shape == mask.shape
    assert (sdm[~mask] > 0).all()  # outside: positive
    assert (sdm[mask & ~boundary] < 0).all()  # inside: negative
    assert (sdm == 0).sum() == boundary.sum() and (sdm[boundary] == 0).all()  # zero set = inner boundary
    assert sdm.min() >= -1.0 and sdm.max() == 1.0  # bounded; +1 at the farthest outside voxel
    interior = mask & ~boundary
    if interior.any() and len(set(spacing)) == 1:  # isotropic: the deepest voxel is interior, it gets -1
        assert sdm.min() == -1.0
    # the smallest positive values are on the outer side of the surface: 6-neighbours of the object
    outer_neighbours = ndimage.binary_dilation(mask, structure=G.CROSS_3D) & ~mask
    smallest = ~mask & (sdm == sdm[~mask].min())
    assert (smallest <= outer_neighbours).all()


@PROPERTY_SETTINGS
@given(masks(), spacings(), st.floats(0.1, 10.0))
def test_sdm_is_invariant_to_the_unit_and_follows_the_spacing(mask, spacing, scale):
    """Each side is normalised by its own maximum: scaling every spacing by one factor changes nothing; unit
    spacing is the voxel-unit map."""
    base = G.signed_distance_map(mask, spacing)
    scaled = G.signed_distance_map(mask, tuple(scale * s for s in spacing))
    np.testing.assert_allclose(scaled, base, atol=2e-6)
    np.testing.assert_array_equal(G.signed_distance_map(mask, (1.0, 1.0, 1.0)), G.signed_distance_map(mask))


@PROPERTY_SETTINGS
@given(st.integers(3, 9), st.integers(1, 3), st.floats(1.5, 5.0))
def test_sdm_follows_a_stretched_axis(n, axis, stretch):
    """A slab across ``axis`` (all voxels with index < k along it): the outside values grow along that axis only
    and their ratios are those of the distances, whatever the spacing of that axis."""
    axis -= 1
    shape = [n + 3] * 3
    k = 2
    mask = np.zeros(shape, bool)
    sl = [slice(None)] * 3
    sl[axis] = slice(0, k)
    mask[tuple(sl)] = True
    spacing = [1.0, 1.0, 1.0]
    spacing[axis] = stretch
    sdm = G.signed_distance_map(mask, spacing)
    line = np.moveaxis(sdm, axis, 0)[:, 0, 0]
    outside = line[k:]
    np.testing.assert_allclose(outside, np.arange(1, len(outside) + 1) / len(outside), rtol=1e-6)
    assert np.ptp(np.moveaxis(sdm, axis, 0), axis=(1, 2)).max() == 0.0  # constant across the slab


@PROPERTY_SETTINGS
@given(grids(), st.sampled_from(["saturate", "zero"]), st.booleans())
def test_sdm_degenerate_masks(shape, degenerate, full):
    mask = np.full(shape, full)
    sdm = G.signed_distance_map(mask, degenerate=degenerate)
    expected = 0.0 if degenerate == "zero" else (-1.0 if full else 1.0)
    assert (sdm == expected).all()


@PROPERTY_SETTINGS
@given(st.lists(masks(min_side=4, max_side=8, proper=False, kind="blob"), min_size=1, max_size=3), spacings())
def test_sdm_batch_and_torch_agree_with_single_volumes(ms, spacing):
    shape = ms[0].shape
    batch = np.stack([np.resize(m, shape) for m in ms])
    singles = np.stack([G.signed_distance_map(m, spacing) for m in batch])
    np.testing.assert_array_equal(G.signed_distance_map(batch, spacing), singles)
    as_torch = G.signed_distance_map(torch.from_numpy(batch), spacing)
    assert isinstance(as_torch, torch.Tensor)
    np.testing.assert_array_equal(as_torch.numpy(), singles)


@PROPERTY_SETTINGS
@given(masks(), st.floats(-2000.0, -50.0))
def test_smooth_heaviside_turns_the_sdm_into_the_mask(mask, k):
    """sigmoid(k * sdm), k << 0: above 0.5 exactly inside (negative SDM), 0.5 on the boundary, below outside."""
    sdm = G.signed_distance_map(mask)
    h = G.smooth_heaviside(sdm, k)
    boundary = G.inner_boundary(mask)
    assert (h[mask & ~boundary] > 0.5).all() and (h[~mask] < 0.5).all() and (h[boundary] == 0.5).all()


# ----------------------------------------------------------------------------------------------------------------------
# Boundary ring (SB-Net M_bound)
# ----------------------------------------------------------------------------------------------------------------------

def _cityblock_to(target: np.ndarray) -> np.ndarray:
    """City-block distance (voxels) of every voxel to the nearest voxel of ``target`` (inf when it is empty)."""
    if not target.any():
        return np.full(target.shape, np.inf)
    return ndimage.distance_transform_cdt(~target, metric="taxicab").astype(float)


@PROPERTY_SETTINGS
@given(masks(proper=False), st.integers(1, 30), st.one_of(st.none(), st.integers(1, 4000)))
def test_ring_is_the_band_of_the_stated_width(mask, w_max, whole):
    ring = G.boundary_ring(mask, w_max=w_max, whole_voxels=whole)
    it = G.ring_iterations(mask, w_max, whole)
    a_whole = mask.size if whole is None else whole
    assert it == max(1, math.floor(min(mask.sum(), a_whole) / a_whole * w_max + 0.5))  # eq. 8, half-up
    outer, inner = ring.outer, ring.inner
    assert not (outer & mask).any() and (inner <= mask).all() and not (outer & inner).any()
    assert (ring.ring == (outer | inner)).all()
    # exactly the voxels within `it` steps (city-block) of the other side; the array edge is not a surface
    assert (outer == (~mask & (_cityblock_to(mask) <= it))).all()
    assert (inner == (mask & (_cityblock_to(~mask) <= it))).all()
    # so the ring lies in the Euclidean band of width `it` voxels around the surface
    if mask.any() and (~mask).any():
        to_obj, to_bg = ndimage.distance_transform_edt(~mask), ndimage.distance_transform_edt(mask)
        assert (to_obj[outer] <= it).all() and (to_bg[inner] <= it).all()
    if not mask.any():
        assert not ring.ring.any()


@PROPERTY_SETTINGS
@given(masks(max_side=10, proper=False), st.integers(1, 6))
def test_torch_band_operations_match_scipy(mask, iterations):
    """The device path (shifts, used on GPUs) dilates and erodes exactly as scipy does on the CPU."""
    m = torch.from_numpy(mask)
    grown = G._dilate_cross_torch(m, iterations).numpy()
    assert (grown == ndimage.binary_dilation(mask, structure=G.CROSS_3D, iterations=iterations)).all()
    shrunk = (~G._dilate_cross_torch(~m, iterations)).numpy()
    assert (shrunk == ndimage.binary_erosion(mask, structure=G.CROSS_3D, iterations=iterations,
                                             border_value=1)).all()
    ring_np = G.boundary_ring(mask, w_max=iterations * 3)
    ring_t = G.boundary_ring(m, w_max=iterations * 3)
    assert (ring_t.outer.numpy() == ring_np.outer).all() and (ring_t.inner.numpy() == ring_np.inner).all()


# ----------------------------------------------------------------------------------------------------------------------
# Entropy and SGRS regions
# ----------------------------------------------------------------------------------------------------------------------

@st.composite
def probability_pairs(draw):
    """Two class-probability volumes ``(C, Z, Y, X)`` (softmax of random logits, sometimes sharpened or
    one-hot), C = 2-4."""
    c = draw(st.integers(2, 4))
    shape = draw(grids(2, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    out = []
    for _ in range(2):
        logits = rng.normal(size=(c, *shape)) * draw(st.sampled_from([0.1, 1.0, 5.0, 50.0]))
        p = np.exp(logits - logits.max(0))
        out.append((p / p.sum(0)).astype(np.float32))
    return out


@PROPERTY_SETTINGS
@given(probability_pairs(), st.sampled_from([math.e, 2, 10]))
def test_entropy_is_bounded_by_log_c(pair, base):
    p = pair[0]
    h = G.entropy(p, axis=0, base=base)
    c = p.shape[0]
    assert (h >= -1e-6).all() and (h <= math.log(c) / math.log(base) + 1e-5).all()
    uniform = np.full_like(p, 1.0 / c)
    np.testing.assert_allclose(G.entropy(uniform, axis=0, base=base), math.log(c) / math.log(base), rtol=1e-5)
    one_hot = np.eye(c, dtype=np.float32)[p.argmax(0)].transpose(3, 0, 1, 2)
    assert (G.entropy(one_hot, axis=0, base=base) == 0).all()
    np.testing.assert_allclose(G.entropy(torch.from_numpy(p), axis=0, base=base).numpy(), h, rtol=1e-5, atol=1e-6)


@PROPERTY_SETTINGS
@given(probability_pairs(), st.floats(0.0, 0.7), st.integers(0, 2 ** 32 - 1))
def test_sgrs_regions_partition_the_volume(pair, tau, seed):
    a, b = pair
    valid = np.random.default_rng(seed).random(a.shape[1:]) > 0.2
    codes = G.sgrs_regions(a, b, tau=tau, axis=0, valid=valid)
    assert codes.dtype == np.uint8 and codes.shape == a.shape[1:]
    delta = (G.entropy(a, 0, 10) > tau) | (G.entropy(b, 0, 10) > tau)
    agree = a.argmax(0) == b.argmax(0)
    expected = {G.REGION_IGNORED: ~valid, G.REGION_UNCERTAIN: valid & delta,
                G.REGION_AGREE: valid & ~delta & agree, G.REGION_DISAGREE: valid & ~delta & ~agree}
    assert sum(int(m.sum()) for m in expected.values()) == codes.size  # a partition: every voxel once
    for code, m in expected.items():
        assert ((codes == code) == m).all(), G.REGION_NAMES[code]
    # symmetric in the two views, torch agrees, identical views never disagree
    assert (G.sgrs_regions(b, a, tau=tau, axis=0, valid=valid) == codes).all()
    as_torch = G.sgrs_regions(torch.from_numpy(a), torch.from_numpy(b), tau=tau, axis=0,
                              valid=torch.from_numpy(valid))
    assert (as_torch.numpy() == codes).all()
    assert not (G.sgrs_regions(a, a, tau=tau, axis=0) == G.REGION_DISAGREE).any()


@PROPERTY_SETTINGS
@given(probability_pairs())
def test_sgrs_tau_extremes(pair):
    a, b = pair
    c = a.shape[0]
    assert not (G.sgrs_regions(a, b, tau=math.log10(c) + 1e-3, axis=0) == G.REGION_UNCERTAIN).any()
    assert (G.sgrs_regions(a, b, tau=-1.0, axis=0) == G.REGION_UNCERTAIN).all()
