"""Spatial augmentation of the reference papers (UA-MT / SASSNet / DTC ``RandomRotFlip``).

The reference loaders (arrays stored x, y, z) draw ``k`` in {0, 1, 2, 3} and rotate by ``k`` x 90 degrees in the
x-y plane (``np.rot90(a, k)``, axes 0 and 1), then draw ``axis`` in {0, 1} and always flip along x or y. In our
z, y, x order that is a rotation in the (y, x) plane and a flip of axis -1 (x) or -2 (y); z is never touched.
Note that "rotate then always flip one in-plane axis" produces only the four *reflections* of the square's symmetry
group (each twice), never the identity or a pure rotation — this is what the papers trained with, so it is the
default (``flip="always"``); ``flip="random"`` flips with probability 1/2 instead and covers all 8 symmetries.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["rot_flip", "draw_rot_flip"]


def rot_flip(array: np.ndarray, k: int, flip_axis: Optional[int]) -> np.ndarray:
    """Rotate the last two axes (y, x) of ``array`` (``(..., Z, Y, X)``) by ``k`` x 90 degrees, then flip along
    ``flip_axis`` (``-1`` = x, ``-2`` = y, ``None`` = no flip). Returns a contiguous copy."""
    out = np.rot90(array, int(k) % 4, axes=(-2, -1)) if int(k) % 4 else array
    if flip_axis is not None:
        if flip_axis not in (-1, -2):
            raise ValueError(f"flip_axis must be -1 (x), -2 (y) or None, got {flip_axis}")
        out = np.flip(out, axis=flip_axis)
    return np.ascontiguousarray(out)


def draw_rot_flip(rng: np.random.Generator, flip: str = "always"):
    """Draw ``(k, flip_axis)`` as the papers' ``RandomRotFlip`` does (``flip="always"``) or with a fair coin for
    the flip (``flip="random"``)."""
    k = int(rng.integers(0, 4))
    axis = -1 if int(rng.integers(0, 2)) == 0 else -2
    if flip == "random":
        if int(rng.integers(0, 2)) == 0:
            axis = None
    elif flip != "always":
        raise ValueError(f"flip must be 'always' or 'random', got {flip!r}")
    return k, axis
