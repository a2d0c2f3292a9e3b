"""Spatial augmentation policies: which in-plane symmetries a training patch may be shown in.

A policy names a set of symmetries of the (y, x) plane (z is never touched) and how they are drawn:

* ``"none"`` — patches are shown as they are stored: the orientation the network meets at inference.
* ``"dihedral"`` — all 8 symmetries of the square, uniformly: a rotation by ``k`` x 90 degrees (``k`` in 0..3) and,
  with probability 1/2, a flip of x. Includes the identity (1 draw in 8).
* ``"papers"`` — the reference releases' ``RandomRotFlip`` (UA-MT / SASSNet / DTC / SGRS-Net data loaders; their
  arrays are stored x, y, z): ``np.rot90(a, k)`` then **always** ``np.flip`` along x or y. In our z, y, x order that
  is a rotation in the (y, x) plane and a flip of axis -1 or -2. "Rotate, then always flip" yields only the four
  *reflections* of the square (each twice): the network never sees a scan in the orientation it is stored in, so
  segmenting an unreflected scan at inference is out of its training distribution. Measured (benchmarks/RESULTS.md)
  this costs ~0.09 held-out Dice on the lateralised hippocampus and median ~0.03 on the left atrium. Kept only to
  reproduce the papers' tables (``--set data.augment=papers``).

``True`` / ``False`` in a config (what ``data.augment`` was before the policies had names) read as ``"papers"`` /
``"none"``, so an old run directory resumes with exactly the patches it was trained on.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np

__all__ = ["AUGMENTATIONS", "augmentation_name", "rot_flip", "draw_rot_flip", "rotates", "tta_axes_for"]

#: spatial augmentation policies (see the module docstring)
AUGMENTATIONS = ("none", "dihedral", "papers")


def augmentation_name(value: Union[str, bool, None]) -> str:
    """The policy name of a config value: a name of :data:`AUGMENTATIONS`, or the legacy booleans
    (``True`` = ``"papers"``, ``False``/``None`` = ``"none"``). Raises ``ValueError`` for anything else."""
    if value is True:
        return "papers"
    return policy_name(value, AUGMENTATIONS, "augmentation")


def policy_name(value, names: Tuple[str, ...], what: str) -> str:
    """``value`` as one of ``names`` (case and surrounding spaces ignored; ``None``/``False`` = ``"none"``);
    ``ValueError`` naming ``what`` and the choices otherwise."""
    if value is False or value is None:
        return "none"
    name = str(value).strip().lower()
    if name not in names:
        raise ValueError(f"{what} must be one of {', '.join(names)}; got {value!r}")
    return name


def rotates(policy: Union[str, bool, None]) -> bool:
    """Whether the policy rotates patches by 90 degrees (then crops need a square (y, x) footprint)."""
    return augmentation_name(policy) in ("dihedral", "papers")


def tta_axes_for(policy: Union[str, bool, None]) -> Tuple[int, ...]:
    """Spatial axes (z, y, x numbering: 1 = y, 2 = x) whose flips keep a scan inside the training distribution of
    ``policy``: flip test-time augmentation may only average over these. ``"none"`` trains on no flip, so ``()``;
    ``"dihedral"`` and ``"papers"`` train on flips of y and x (the papers' patches are all reflections)."""
    return () if augmentation_name(policy) == "none" else (1, 2)


def rot_flip(array: np.ndarray, k: int, flip_axis: Optional[int]) -> np.ndarray:
    """Rotate the last two axes (y, x) of ``array`` (``(..., Z, Y, X)``) by ``k`` x 90 degrees, then flip along
    ``flip_axis`` (``-1`` = x, ``-2`` = y, ``None`` = no flip). Returns a contiguous copy."""
    out = np.rot90(array, int(k) % 4, axes=(-2, -1)) if int(k) % 4 else array
    if flip_axis is not None:
        if flip_axis not in (-1, -2):
            raise ValueError(f"flip_axis must be -1 (x), -2 (y) or None, got {flip_axis}")
        out = np.flip(out, axis=flip_axis)
    return np.ascontiguousarray(out)


def draw_rot_flip(rng: np.random.Generator, policy: Union[str, bool] = "papers") -> Tuple[int, Optional[int]]:
    """Draw ``(k, flip_axis)`` for :func:`rot_flip` under ``policy``.

    ``"papers"`` consumes the generator exactly as before the policies had names (``k``, then the axis), so runs of
    earlier versions resume identically; ``"dihedral"`` draws ``k`` and a fair coin for a flip of x; ``"none"``
    draws nothing and returns ``(0, None)``.
    """
    name = augmentation_name(policy)
    if name == "none":
        return 0, None
    k = int(rng.integers(0, 4))
    if name == "papers":
        return k, (-1 if int(rng.integers(0, 2)) == 0 else -2)
    return k, (-1 if int(rng.integers(0, 2)) == 0 else None)
