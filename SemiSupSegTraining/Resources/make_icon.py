"""Draw the SemiSupSegTraining module icon: the extension's icon (``Resources/make_icons.py``: the signed distance map
of a curved shape) with a falling training-loss curve across it.

Run from the repository root (numpy, scipy and SimpleITK are all it needs)::

    python SemiSupSegTraining/Resources/make_icon.py

It writes a 128 x 128 RGBA PNG to ``SemiSupSegTraining/Resources/Icons/SemiSupSegTraining.png`` and leaves the other
icons alone.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "SemiSupSegTraining" / "Resources" / "Icons" / "SemiSupSegTraining.png"


def _extension_icon_module():
    spec = importlib.util.spec_from_file_location("make_icons", REPO / "Resources" / "make_icons.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def loss_curve(size: int) -> np.ndarray:
    """``(n, 2)`` points (x, y in pixels, y down) of a noisy, decaying loss curve across the icon."""
    rng = np.random.default_rng(3)
    t = np.linspace(0.0, 1.0, 40)
    loss = 0.18 + 0.72 * np.exp(-4.0 * t) + 0.025 * rng.standard_normal(t.size) * (1.0 - 0.6 * t)
    x = size * (0.14 + 0.72 * t)
    y = size * (0.10 + 0.62 * (1.0 - loss))  # high loss at the top
    return np.stack([x, y], axis=1)


def distance_to_polyline(points: np.ndarray, size: int) -> np.ndarray:
    """Distance in pixels from each pixel centre to the polyline ``points``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    best = np.full((size, size), np.inf)
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((x - x0) * dx + (y - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
        best = np.minimum(best, np.hypot(x - (x0 + t * dx), y - (y0 + t * dy)))
    return best


def draw_icon() -> np.ndarray:
    """The module icon as a ``(128, 128, 4)`` uint8 RGBA array."""
    base = _extension_icon_module()
    rgba = base.draw_icon().astype(np.float64) / 255.0
    size = rgba.shape[0]
    d = distance_to_polyline(loss_curve(size), size)
    halo = np.clip(1.0 - np.abs(d - 2.6) / 1.2, 0.0, 1.0)[..., None] * (d > 1.6)[..., None]
    line = np.clip(2.2 - d, 0.0, 1.0)[..., None]
    rgb = rgba[..., :3]
    rgb = rgb * (1 - halo) + np.array([0.10, 0.11, 0.16]) * halo
    rgb = rgb * (1 - line) + np.array([1.0, 1.0, 1.0]) * line
    inside = rgba[..., 3:] > 0
    rgba[..., :3] = np.where(inside, rgb, rgba[..., :3])
    return (rgba * 255).round().clip(0, 255).astype(np.uint8)


def main() -> int:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(draw_icon(), isVector=True), str(OUTPUT))
    print(OUTPUT.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
