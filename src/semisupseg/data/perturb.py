"""Orientation-preserving patch perturbations: small rotations and scalings, and intensity changes.

The spatial policies of :mod:`semisupseg.data.augment` choose among the square's symmetries (flips and 90-degree
turns); on lateralised anatomy (one hippocampus, the left atrium) those show the network scans it never meets.
The perturbations here keep a scan's orientation — a patch is turned by at most :data:`MAX_ROTATION_DEG` about
each axis and scaled by a factor in :data:`SCALE_RANGE` — and change its intensities the way scanners and
normalisation do (nnU-Net's default augmentation, minus its mirroring, in reduced form). Policies
(``data.perturb``):

* ``"none"`` — patches as cropped: what the papers and every run before 2026-12-03 trained with.
* ``"intensity"`` — per patch and channel, each independently: Gaussian noise (probability 0.1, variance
  U(0, 0.1) in the z-scored units), brightness x U(0.75, 1.25) (0.15), contrast x U(0.75, 1.25) about the patch
  mean, clipped to the patch's range (0.15), gamma U(0.7, 1.5) on the patch rescaled to [0, 1], mean and standard
  deviation restored (0.3).
* ``"spatial"`` — with probability :data:`SPATIAL_PROB`, the patch is resampled from the case through a rotation
  (uniform in +-15 degrees about z, y and x, in that order) and a zoom in :data:`SCALE_RANGE` (> 1 magnifies)
  about the crop's centre: image trilinear, label nearest, zero outside the case.
* ``"both"`` (the training default) — spatial, then intensity. Held out (``benchmarks/RESULTS.md``): +0.012 Dice
  on the hippocampus with 20 labels (3 seeds; the rotations and zooms carry it, intensity alone changes nothing
  there), +0.005 on the left atrium with 16 (3 seeds, 34 of 48 scans better).

Axis order is z, y, x throughout (the preprocessed arrays'); angles and zooms are in voxel space: on an
anisotropic grid (e.g. 0.7 x 0.7 x 3 mm) a turn out of the (y, x) plane mixes axes of different spacing and so
shears the anatomy a little (both datasets measured here are isotropic). All randomness comes from the caller's
generator.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from semisupseg.data.augment import policy_name

__all__ = ["PERTURBATIONS", "perturbation_name", "has_spatial", "has_intensity", "draw_spatial",
           "resample_patch", "perturb_intensity", "perturb_patch", "MAX_ROTATION_DEG", "SCALE_RANGE", "SPATIAL_PROB"]

#: perturbation policies (see the module docstring)
PERTURBATIONS = ("none", "intensity", "spatial", "both")
#: largest rotation about each axis, degrees
MAX_ROTATION_DEG = 15.0
#: zoom factors drawn uniformly (> 1 magnifies: the patch covers a smaller region of the case)
SCALE_RANGE = (0.85, 1.25)
#: probability that a patch is rotated and scaled under ``"spatial"`` / ``"both"``
SPATIAL_PROB = 0.3


def perturbation_name(value) -> str:
    """The policy name of a config value (``None``/``False`` = ``"none"``); ``ValueError`` for anything else."""
    return policy_name(value, PERTURBATIONS, "perturbation")


def has_spatial(policy) -> bool:
    return perturbation_name(policy) in ("spatial", "both")


def has_intensity(policy) -> bool:
    return perturbation_name(policy) in ("intensity", "both")


def _rotation(angles_rad: Sequence[float]) -> np.ndarray:
    """Rotation matrix (z, y, x coordinates) turning by ``angles_rad[0]`` in the (y, x) plane (about z), then
    ``[1]`` in (z, x) (about y), then ``[2]`` in (z, y) (about x)."""
    def plane(a: float, i: int, j: int) -> np.ndarray:
        m = np.eye(3)
        c, s = np.cos(a), np.sin(a)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m

    az, ay, ax = (float(a) for a in angles_rad)
    return plane(ax, 0, 1) @ plane(ay, 0, 2) @ plane(az, 1, 2)


def draw_spatial(rng: np.random.Generator) -> Optional[np.ndarray]:
    """Draw the patch's spatial transform: ``None`` (keep the crop; probability 1 - :data:`SPATIAL_PROB`) or the
    3x3 matrix mapping output-patch offsets from its centre to case offsets (z, y, x voxels): rotation / zoom."""
    if float(rng.random()) >= SPATIAL_PROB:
        return None
    angles = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, size=3))
    zoom = float(rng.uniform(*SCALE_RANGE))
    return _rotation(angles) / zoom


def resample_patch(volume: np.ndarray, matrix: np.ndarray, centre_zyx: Sequence[float],
                   patch_size_zyx: Sequence[int], order: int) -> np.ndarray:
    """The ``patch_size_zyx`` patch of ``volume`` (``(Z, Y, X)`` or ``(C, Z, Y, X)``) whose centre voxel sits at
    ``centre_zyx`` of the case and whose offsets ``d`` from that centre read the case at ``centre + matrix @ d``.
    ``order`` 1: trilinear (images), 0: nearest (labels); zero outside the case. Keeps the dtype."""
    size = np.asarray(patch_size_zyx, dtype=np.float64)
    offset = np.asarray(centre_zyx, dtype=np.float64) - matrix @ ((size - 1) / 2.0)
    shape = tuple(int(s) for s in patch_size_zyx)

    def one(v: np.ndarray) -> np.ndarray:
        return ndimage.affine_transform(v, matrix, offset=offset, output_shape=shape, order=order,
                                        mode="constant", cval=0, prefilter=False)

    if volume.ndim == 4:
        return np.stack([one(c) for c in volume])
    return one(volume)


def perturb_intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Intensity perturbation of one patch (``(C, z, y, x)`` float32), channel by channel (see the module
    docstring for the probabilities and ranges). Returns a new array."""
    out = np.array(image, dtype=np.float32, copy=True)
    for c in range(out.shape[0]):
        x = out[c]
        if float(rng.random()) < 0.1:
            x += rng.normal(0.0, np.sqrt(rng.uniform(0.0, 0.1)), size=x.shape).astype(np.float32)
        if float(rng.random()) < 0.15:
            x *= np.float32(rng.uniform(0.75, 1.25))
        if float(rng.random()) < 0.15:
            lo, hi, mean = float(x.min()), float(x.max()), float(x.mean())
            x[...] = np.clip((x - mean) * np.float32(rng.uniform(0.75, 1.25)) + mean, lo, hi)
        if float(rng.random()) < 0.3:
            gamma = float(rng.uniform(0.7, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, 1.5))
            lo, hi = float(x.min()), float(x.max())
            if hi > lo:
                mean, std = float(x.mean()), float(x.std())
                y = np.power((x - lo) / (hi - lo), gamma) * (hi - lo) + lo
                s = float(y.std())
                x[...] = (y - y.mean()) / s * std + mean if s > 0 else y
        out[c] = x
    return out


def perturb_patch(volume_image: np.ndarray, volume_label: Optional[np.ndarray], start_zyx: Tuple[int, int, int],
                  patch_size_zyx: Sequence[int], rng: np.random.Generator, policy,
                  image: np.ndarray, label: Optional[np.ndarray]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Apply ``policy`` to a cropped patch ``(image (C, z, y, x), label (z, y, x) or None)`` cut at ``start_zyx``
    from ``volume_image`` / ``volume_label``: a drawn spatial transform resamples the patch from the case about the
    crop's centre (so rotated corners hold case voxels, not padding), then intensities are perturbed."""
    if has_spatial(policy):
        matrix = draw_spatial(rng)
        if matrix is not None:
            centre = [s + (n - 1) / 2.0 for s, n in zip(start_zyx, patch_size_zyx)]
            image = resample_patch(volume_image, matrix, centre, patch_size_zyx, order=1)
            if volume_label is not None:
                label = resample_patch(volume_label, matrix, centre, patch_size_zyx, order=0)
    if has_intensity(policy):
        image = perturb_intensity(image, rng)
    return image, label
