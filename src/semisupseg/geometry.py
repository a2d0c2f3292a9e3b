"""Shape geometry shared by the shape-aware methods and the overlays: signed distance maps, smooth Heaviside,
the boundary ring of the boundary-aware (SB-Net) paper, voxel entropy and the SGRS-Net regions.

Axis order everywhere is array order: a single volume is ``(Z, Y, X)``, a batch ``(B, Z, Y, X)``, class maps
``(C, Z, Y, X)`` / ``(B, C, Z, Y, X)``. ``spacing`` arguments of this module are in the **same array order**
``(z, y, x)`` in mm (use :attr:`semisupseg.volume.Volume.spacing_zyx` to get it from a Volume, whose ``spacing`` is
x, y, z). Functions accept numpy arrays or torch tensors where noted and return the same kind (torch results on the
input's device); distance transforms run on the CPU with scipy.

Empty/full-mask convention of the signed distance map (:func:`signed_distance_map`)
--------------------------------------------------------------------------------
The reference ``compute_sdf`` of SASSNet/DTC returns all zeros for an empty mask and divides 0 by 0 (NaN) for a
mask that fills the whole patch. We default to ``degenerate="saturate"``: an empty mask gives **+1 everywhere**
(every voxel is outside the object, as far as the map can say) and a full mask **-1 everywhere**. Reason: the map is
a training target whose smooth Heaviside (DTC eq. / SB-Net eq. 13, ``sigmoid(-1500 * sdm)``) must agree with the
segmentation target; +1 maps to 0 (background) as the empty label says, whereas the release's zeros map to 0.5 and
ask the dual-task consistency for a half-foreground everywhere. ``degenerate="zero"`` reproduces the release (zeros
for empty, and zeros instead of NaN for full masks).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from scipy import ndimage

ArrayLike = Union[np.ndarray, torch.Tensor]

#: SGRS-Net's entropy threshold tau. It is a **base-10** entropy: for two classes ``H10(p) > 0.296`` holds for
#: background probability ``p`` in about (0.424, 0.576), and the release's code thresholds the background
#: probability at 0.425 < p < 0.575, whose end points have ``H10(0.425) = 0.29613`` (see :func:`entropy`).
SGRS_TAU = 0.296

#: SGRS region codes returned by :func:`sgrs_regions` (uint8 label volume).
REGION_IGNORED = 0  #: outside the ``valid`` mask (padding): belongs to no region
REGION_UNCERTAIN = 1  #: Δ: entropy above tau in either view
REGION_AGREE = 2  #: Ω: confident in both views and the argmax classes agree
REGION_DISAGREE = 3  #: Θ: confident in both views but the argmax classes differ
REGION_NAMES = {
    REGION_IGNORED: "ignored",
    REGION_UNCERTAIN: "uncertain (Delta)",
    REGION_AGREE: "agree (Omega)",
    REGION_DISAGREE: "disagree (Theta)",
}

#: 6-connected (face neighbours) 3x3x3 structuring element, the "cross" of the papers
CROSS_3D = ndimage.generate_binary_structure(3, 1)


# --------------------------------------------------------------------------------------------------------------
# helpers


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _like(result: np.ndarray, reference: ArrayLike) -> ArrayLike:
    """``result`` as the same kind of array as ``reference`` (torch tensors keep the device)."""
    if isinstance(reference, torch.Tensor):
        return torch.from_numpy(np.ascontiguousarray(result)).to(reference.device)
    return result


def _spacing3(spacing: Optional[Sequence[float]]) -> Optional[Tuple[float, float, float]]:
    if spacing is None:
        return None
    if np.isscalar(spacing):
        spacing = (float(spacing),) * 3  # type: ignore[assignment]
    s = tuple(float(v) for v in spacing)  # type: ignore[union-attr]
    if len(s) != 3 or any(v <= 0 for v in s):
        raise ValueError(f"spacing must be 3 positive values (z, y, x) in mm, got {spacing}")
    return s  # type: ignore[return-value]


def _check_spatial(arr: np.ndarray, what: str) -> bool:
    """True if ``arr`` is a batch ``(B, Z, Y, X)``, False for a single ``(Z, Y, X)`` volume."""
    if arr.ndim == 3:
        return False
    if arr.ndim == 4:
        return True
    raise ValueError(f"{what} must be (Z, Y, X) or (B, Z, Y, X), got shape {tuple(arr.shape)}")


# --------------------------------------------------------------------------------------------------------------
# signed distance map


def inner_boundary(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` that have at least one 6-neighbour (inside the array) that is not in ``mask``.

    This is ``skimage.segmentation.find_boundaries(mask, mode="inner", connectivity=1)`` as the reference
    ``compute_sdf`` uses it (skimage compares a grey dilation and erosion in ``reflect`` mode, so the array edge is
    not a boundary), written without skimage: an erosion with the cross and ``border_value=1``.
    """
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1),
                                          border_value=1)


def _sdm_single(mask: np.ndarray, sampling: Optional[Tuple[float, ...]], degenerate: str) -> np.ndarray:
    if not mask.any():
        return np.full(mask.shape, 1.0 if degenerate == "saturate" else 0.0, dtype=np.float32)
    if mask.all():
        return np.full(mask.shape, -1.0 if degenerate == "saturate" else 0.0, dtype=np.float32)
    # seed paper eq. 1 (SASSNet/DTC compute_sdf): outside distance / its max - inside distance / its max, 0 on
    # the boundary. Both minima are 0 because both sets are non-empty, so min-max normalisation is a division.
    outside = ndimage.distance_transform_edt(~mask, sampling=sampling)  # > 0 outside: distance to the object
    # > 0 inside: distance to the background. Computed in the object's bounding box grown by one voxel: that
    # layer is background, and any background voxel farther out is never nearer than its projection onto it.
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(mask))
    inside = np.zeros(mask.shape, dtype=np.float64)
    inside[box] = ndimage.distance_transform_edt(mask[box], sampling=sampling)
    sdm = outside / outside.max() - inside / inside.max()
    sdm[inner_boundary(mask)] = 0.0
    return sdm.astype(np.float32)


def signed_distance_map(mask: ArrayLike, spacing: Optional[Sequence[float]] = None,
                        degenerate: str = "saturate") -> ArrayLike:
    """Normalised signed distance map of a binary mask (seed paper eq. 1, SASSNet/DTC ``compute_sdf``).

    ``mask``: ``(Z, Y, X)`` or a batch ``(B, Z, Y, X)``, numpy or torch, anything non-zero is the object.
    ``spacing``: voxel size ``(z, y, x)`` in mm for a spacing-aware map (``None``: voxel units as the release).
    Returns float32 of the same shape (and kind: torch in, torch out on the same device) in [-1, 1]: negative
    inside (-1 at the voxel deepest inside), positive outside (+1 farthest away), exactly 0 on the inner boundary
    (object voxels with a 6-neighbour outside, see :func:`inner_boundary`). Inside and outside are normalised
    separately by their own maximum, per volume, as the release does.
    ``degenerate``: ``"saturate"`` (default: empty mask -> +1, full mask -> -1) or ``"zero"`` (the release: 0);
    see the module docstring for why.
    """
    if degenerate not in ("saturate", "zero"):
        raise ValueError(f"degenerate must be 'saturate' or 'zero', got {degenerate!r}")
    arr = _to_numpy(mask).astype(bool)
    batched = _check_spatial(arr, "mask")
    sampling = _spacing3(spacing)
    if batched:
        out = np.stack([_sdm_single(m, sampling, degenerate) for m in arr]) if len(arr) else \
            np.zeros(arr.shape, np.float32)
    else:
        out = _sdm_single(arr, sampling, degenerate)
    return _like(out, mask)


def class_sdm(labels: ArrayLike, num_classes: int, spacing: Optional[Sequence[float]] = None,
              degenerate: str = "saturate") -> ArrayLike:
    """Signed distance map of every foreground class of a label map (class ``c`` -> channel ``c - 1``).

    ``labels``: integer ``(Z, Y, X)`` -> result ``(C-1, Z, Y, X)``; or a batch ``(B, Z, Y, X)`` ->
    ``(B, C-1, Z, Y, X)``. ``num_classes`` counts the background. Same kind as the input (numpy/torch), float32.
    This is the regression target of the SDM heads (one channel per foreground class).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + foreground), got {num_classes}")
    arr = _to_numpy(labels)
    batched = _check_spatial(arr, "labels")
    channel_axis = 1 if batched else 0
    maps = [signed_distance_map(arr == c, spacing, degenerate) for c in range(1, num_classes)]
    return _like(np.stack(maps, axis=channel_axis), labels)


def smooth_heaviside(sdm: ArrayLike, k: float = -1500.0) -> ArrayLike:
    """Smooth Heaviside ``sigmoid(k * sdm)`` turning a signed distance map into a soft segmentation.

    DTC's transform / boundary-aware paper eq. 13: with the default ``k = -1500`` a voxel inside (sdm < 0) maps to
    ~1 and outside to ~0. Differentiable (torch); numpy input gives a numpy result.
    """
    if isinstance(sdm, torch.Tensor):
        return torch.sigmoid(k * sdm)  # eq. 13
    from scipy.special import expit

    return expit(k * np.asarray(sdm)).astype(np.result_type(np.asarray(sdm).dtype, np.float32))


# --------------------------------------------------------------------------------------------------------------
# boundary ring (SB-Net)


class BoundaryRing(NamedTuple):
    """Result of :func:`boundary_ring`; unpacks as ``outer, inner`` (``ring`` is their union M_bound)."""

    outer: ArrayLike
    inner: ArrayLike

    @property
    def ring(self) -> ArrayLike:
        """M_bound = outer band | inner band."""
        return self.outer | self.inner


def ring_iterations(mask: ArrayLike, w_max: int = 20, whole_voxels: Optional[int] = None) -> int:
    """Band width ``it = max(1, round(A_target / A_whole * W_max))`` (boundary-aware paper eq. 8).

    ``A_target`` is the number of voxels of the (binary, single-volume) mask, ``A_whole`` the number of voxels of
    the patch: the mask's own size, or ``whole_voxels`` when the mask is larger than a training patch (a whole
    case shown with the width training gives it; ``A_target`` is then capped at ``A_whole``, as in a patch).
    Rounding is half-up (``floor(x + 0.5)``), not Python's banker's rounding.
    """
    arr = _to_numpy(mask).astype(bool)
    whole = float(max(arr.size if whole_voxels is None else int(whole_voxels), 1))
    frac = min(float(arr.sum()), whole) / whole
    return max(1, int(math.floor(frac * w_max + 0.5)))


def _dilate_cross_torch(m: torch.Tensor, iterations: int) -> torch.Tensor:
    """Binary dilation of a ``(Z, Y, X)`` bool tensor with the 6-connected cross; nothing enters from outside."""
    out = m.clone()
    for _ in range(iterations):
        cur = out.clone()
        for dim in range(3):
            n = cur.shape[dim]
            if n < 2:
                continue
            out.narrow(dim, 1, n - 1).logical_or_(cur.narrow(dim, 0, n - 1))
            out.narrow(dim, 0, n - 1).logical_or_(cur.narrow(dim, 1, n - 1))
    return out


def _ring_single(mask: ArrayLike, w_max: int, whole_voxels: Optional[int] = None) -> Tuple[ArrayLike, ArrayLike]:
    it = ring_iterations(mask, w_max, whole_voxels)
    if isinstance(mask, torch.Tensor) and mask.device.type == "cpu":  # scipy is ~5x faster than shifts on CPU
        outer, inner = _ring_single(mask.numpy().astype(bool), w_max, whole_voxels)
        return torch.from_numpy(outer), torch.from_numpy(inner)
    if isinstance(mask, torch.Tensor):
        m = mask.bool()
        grown = _dilate_cross_torch(m, it)
        shrunk = ~_dilate_cross_torch(~m, it)  # erosion = complement of the background's dilation
        return grown & ~m, m & ~shrunk
    m = np.asarray(mask, dtype=bool)
    grown = ndimage.binary_dilation(m, structure=CROSS_3D, iterations=it)
    shrunk = ndimage.binary_erosion(m, structure=CROSS_3D, iterations=it, border_value=1)
    return grown & ~m, m & ~shrunk


def boundary_ring(mask: ArrayLike, w_max: int = 20, whole_voxels: Optional[int] = None) -> BoundaryRing:
    """Outer and inner boundary bands of a binary mask (boundary-aware SB-Net paper, eq. 8-9).

    Our reading of eq. 8-9: ``it`` from :func:`ring_iterations` (eq. 8); the object is dilated ``it`` times and
    eroded ``it`` times with the 6-connected cross; the outer band is ``dilate(G) \\ G``, the inner band is
    ``G \\ erode(G)`` and M_bound (eq. 9) their union, a ring ``it`` voxels wide (city-block distance) on each side
    of the surface. The patch edge is not treated as a surface: the erosion uses ``border_value=1`` (the object is
    assumed to continue outside the crop), the dilation brings in nothing from outside. An empty mask gives empty
    bands.

    ``mask``: ``(Z, Y, X)`` or a batch ``(B, Z, Y, X)`` (``it`` computed per sample), numpy or torch (computed with
    torch ops on the tensor's device; CPU tensors go through scipy, which is faster). Returns a
    :class:`BoundaryRing` ``(outer, inner)`` of bool arrays of the same shape; ``.ring`` is M_bound.
    ``whole_voxels``: ``A_whole`` of eq. 8 when ``mask`` is not a training patch (see :func:`ring_iterations`).
    """
    batched = _check_spatial(_to_numpy(mask) if not isinstance(mask, torch.Tensor) else mask, "mask")
    if not batched:
        return BoundaryRing(*_ring_single(mask, w_max, whole_voxels))
    pairs = [_ring_single(m, w_max, whole_voxels) for m in mask]
    if isinstance(mask, torch.Tensor):
        return BoundaryRing(torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]))
    return BoundaryRing(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))


# --------------------------------------------------------------------------------------------------------------
# entropy and SGRS regions


def entropy(prob: ArrayLike, axis: int = 1, base: Optional[float] = math.e) -> ArrayLike:
    """Voxel entropy ``-sum_c p_c log_base p_c`` of class probabilities along ``axis`` (0 log 0 = 0).

    ``prob``: probabilities (softmax output) with the class channels on ``axis`` (1 for ``(B, C, Z, Y, X)``, 0 for
    ``(C, Z, Y, X)``); numpy or torch (differentiable, finite gradients even at p = 0). ``base``: ``math.e``
    (nats, default; ``None`` means the same), 2 (bits) or 10. SGRS-Net's tau = 0.296 (:data:`SGRS_TAU`) is a
    base-10 entropy.
    """
    if base is not None and base <= 1:
        raise ValueError(f"entropy base must be > 1, got {base}")
    scale = 1.0 if base is None or base == math.e else 1.0 / math.log(base)
    if isinstance(prob, torch.Tensor):
        tiny = torch.finfo(prob.dtype).tiny if prob.is_floating_point() else 1e-38
        h = -(prob * torch.log(prob.clamp_min(tiny))).sum(dim=axis)
        return h * scale if scale != 1.0 else h
    p = np.asarray(prob, dtype=np.result_type(np.asarray(prob).dtype, np.float32))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)
    return (-terms.sum(axis=axis) * scale).astype(p.dtype)


def mutual_information(member_probs: Sequence[np.ndarray], axis: int = 0,
                       base: Optional[float] = math.e) -> np.ndarray:
    """Voxel mutual information between the class and the ensemble member, ``H(mean_k p_k) - mean_k H(p_k)``
    (BALD, Houlsby et al. 2011, with an ensemble's members as the samples of the posterior as in Beluch et al.,
    CVPR 2018): the part of the ensemble's entropy that comes from its members disagreeing, not from each member
    being unsure (>= 0; 0 when all members give the same probabilities; at most ``log_base K`` for K members).

    ``member_probs``: K >= 2 arrays of class probabilities of the same shape, classes on ``axis`` (0 for
    ``(C, Z, Y, X)``). ``base`` as in :func:`entropy` (``C`` normalises the entropies to [0, 1]).
    """
    if len(member_probs) < 2:
        raise ValueError(f"mutual information needs 2 or more members' probabilities, got {len(member_probs)}")
    stacked = [np.asarray(p, dtype=np.float32) for p in member_probs]
    if any(p.shape != stacked[0].shape for p in stacked[1:]):
        raise ValueError(f"member probabilities differ in shape: {sorted({p.shape for p in stacked})}")
    mean_entropy = sum(entropy(p, axis=axis, base=base) for p in stacked) / len(stacked)
    mi = entropy(sum(stacked) / len(stacked), axis=axis, base=base) - mean_entropy
    return np.maximum(mi, 0.0).astype(np.float32)  # >= 0 by Jensen; clip float rounding


def sgrs_regions(prob_a: ArrayLike, prob_b: ArrayLike, tau: float = SGRS_TAU, base: Optional[float] = 10,
                 axis: int = 1, valid: Optional[ArrayLike] = None) -> ArrayLike:
    """SGRS-Net's partition of voxels from the predictions of the original and the mixed view.

    ``prob_a``, ``prob_b``: class probabilities of the two views, same shape, classes on ``axis``.
    Every voxel gets one code (uint8, shape of the input without the class axis):
    :data:`REGION_UNCERTAIN` (1, Δ: entropy > ``tau`` in either view), :data:`REGION_AGREE` (2, Ω: not Δ and the
    argmax classes agree), :data:`REGION_DISAGREE` (3, Θ: not Δ and the argmax classes differ), and
    :data:`REGION_IGNORED` (0) where ``valid`` (optional bool mask, e.g. padding excluded) is False.
    ``tau``/``base``: SGRS-Net's 0.296 is a base-10 entropy (:data:`SGRS_TAU`). Numpy or torch.
    """
    if tuple(prob_a.shape) != tuple(prob_b.shape):
        raise ValueError(f"prob_a and prob_b shapes differ: {tuple(prob_a.shape)} vs {tuple(prob_b.shape)}")
    uncertain = (entropy(prob_a, axis, base) > tau) | (entropy(prob_b, axis, base) > tau)
    if isinstance(prob_a, torch.Tensor):
        agree = prob_a.argmax(dim=axis) == prob_b.argmax(dim=axis)
        codes = torch.full(agree.shape, REGION_DISAGREE, dtype=torch.uint8, device=prob_a.device)
        codes[agree] = REGION_AGREE
        codes[uncertain] = REGION_UNCERTAIN
        if valid is not None:
            codes[~torch.as_tensor(valid, device=prob_a.device).bool()] = REGION_IGNORED
        return codes
    agree = np.argmax(prob_a, axis=axis) == np.argmax(prob_b, axis=axis)
    codes = np.where(uncertain, REGION_UNCERTAIN, np.where(agree, REGION_AGREE, REGION_DISAGREE)).astype(np.uint8)
    if valid is not None:
        codes[~np.asarray(valid, dtype=bool)] = REGION_IGNORED
    return codes


__all__ = [
    "SGRS_TAU", "REGION_IGNORED", "REGION_UNCERTAIN", "REGION_AGREE", "REGION_DISAGREE", "REGION_NAMES",
    "CROSS_3D", "inner_boundary", "signed_distance_map", "class_sdm", "smooth_heaviside", "BoundaryRing",
    "ring_iterations", "boundary_ring", "entropy", "sgrs_regions",
]
