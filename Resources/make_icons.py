"""Draw the extension and module icon: a signed distance map of a curved, hippocampus-like shape.

The picture is what the module shows: a diverging colour map centred on 0 (blue inside, red outside, pale near the
boundary), iso-distance bands every few pixels, and the zero level (the segmentation boundary) as a bright outline,
on a rounded square with a transparent corner area.

Run from the repository root (numpy, scipy and SimpleITK, the package's own dependencies, are all it needs)::

    python Resources/make_icons.py

It writes the same 128 x 128 RGBA PNG to ``Resources/Icons/SemiSupSeg.png`` (extension icon, EXTENSION_ICONURL)
and ``SemiSupSeg/Resources/Icons/SemiSupSeg.png`` (module icon).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

SIZE = 128
REPO = Path(__file__).resolve().parents[1]
OUTPUTS = (REPO / "Resources" / "Icons" / "SemiSupSeg.png", REPO / "SemiSupSeg" / "Resources" / "Icons" / "SemiSupSeg.png")


def shape_mask(size: int = SIZE) -> np.ndarray:
    """A curved tube (an arc of a thick ring, thicker at one end) as a boolean ``(y, x)`` mask."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    cx, cy = 0.50 * size, 0.70 * size
    radius = np.hypot(x - cx, y - cy)
    angle = np.arctan2(cy - y, x - cx)                        # 0 at the right, pi at the left, y up
    t = np.clip((angle - 0.35) / (np.pi - 0.7), 0.0, 1.0)     # 0 .. 1 along the arc
    on_arc = (angle > 0.35) & (angle < np.pi - 0.35)
    half_width = size * (0.055 + 0.075 * t)                     # a head and a thinner tail
    tube = on_arc & (np.abs(radius - 0.33 * size) < half_width)
    ends = np.zeros_like(tube)
    for a in (0.35, np.pi - 0.35):                            # round caps at both ends of the arc
        tt = np.clip((a - 0.35) / (np.pi - 0.7), 0.0, 1.0)
        ex, ey = cx + 0.33 * size * np.cos(a), cy - 0.33 * size * np.sin(a)
        ends |= np.hypot(x - ex, y - ey) < size * (0.055 + 0.075 * tt)
    return tube | ends


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean signed distance in pixels, negative inside (the package's SDM convention)."""
    return ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)


def diverging(values: np.ndarray) -> np.ndarray:
    """Blue (-1) - near white (0) - red (+1) as ``(..., 3)`` floats in [0, 1]."""
    v = np.clip(values, -1.0, 1.0)[..., None]
    blue, white, red = np.array([0.13, 0.35, 0.80]), np.array([0.96, 0.95, 0.92]), np.array([0.80, 0.16, 0.16])
    return np.where(v < 0, white + (blue - white) * (-v), white + (red - white) * v)


def draw_icon(size: int = SIZE) -> np.ndarray:
    """The icon as a ``(size, size, 4)`` uint8 RGBA array."""
    sdm = signed_distance(shape_mask(size))
    scale = 0.12 * size
    rgb = diverging(np.tanh(sdm / scale) * 1.15)
    band = (np.floor(sdm / (0.06 * size)).astype(int) % 2 == 0)   # iso-distance bands
    rgb = rgb * np.where(band, 1.0, 0.88)[..., None]
    outline = np.clip(1.0 - np.abs(sdm) / 2.2, 0.0, 1.0)[..., None]  # the zero level, anti-aliased
    rgb = rgb * (1 - outline) + np.array([1.0, 0.85, 0.10]) * outline
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    r, inner = 0.16 * size, size / 2 - 0.16 * size - 2              # rounded square, 2 px margin
    d = np.hypot(np.maximum(np.abs(x - size / 2) - inner, 0), np.maximum(np.abs(y - size / 2) - inner, 0)) - r
    alpha = np.clip(0.5 - d, 0.0, 1.0)
    border = np.clip(1.0 - np.abs(d + 1.5) / 1.2, 0.0, 1.0)[..., None]
    rgb = rgb * (1 - border) + np.array([0.20, 0.22, 0.28]) * border
    return np.dstack([rgb, alpha]).__mul__(255).round().clip(0, 255).astype(np.uint8)


def main() -> int:
    image = sitk.GetImageFromArray(draw_icon(), isVector=True)
    for path in OUTPUTS:
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(path))
        print(path.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
