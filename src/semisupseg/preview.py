"""A picture of a scan and its results: a few slices through the object, label outlines, overlays with colour bars.

:func:`render_preview` draws, with numpy only, one RGB image (``(H, W, 3)`` uint8):

* a title line;
* a row of three slices through the object — axial, coronal, sagittal through the centroid of the label's
  foreground (through the scan's centre without a label) — of the scan in grey (1st-99th percentile window), with the
  label's outline in one colour per class;
* one more row per overlay (``sdm``, ``entropy``, ``prob``): the same slices with the map in a colour map (SDM:
  blue-white-red centred on 0, negative inside; entropy: dark-to-bright, from 0; probability: 0 to 1), the label
  outline (black on the SDM, whose zero level is white; white on the others), and a colour bar with its range;
* a legend of the classes (colour, label value, name).

Slices are shown in the patient's orientation (the volumes are first reoriented to LPS with
``SimpleITK.DICOMOrient``, which only permutes and flips axes): axial with anterior up and the patient's right on the
left, coronal and sagittal with superior up; pixels are square in millimetres (each voxel drawn at its physical
size, nearest neighbour). Text uses a built-in 5x7 pixel font. :func:`write_png` writes the picture (SimpleITK's PNG
writer, atomically). The command line is ``semisupseg preview`` (:mod:`semisupseg.cli.preview`).

Multi-component maps (``_prob``/``_sdm`` of a multi-class model: one component per foreground class) are reduced to
one map: the probability of any foreground class (their sum) and the SDM of the nearest structure (their minimum).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from semisupseg.errors import InputError, OutputExistsError
from semisupseg.volume import Volume

PathLike = Union[str, Path]

#: side of the square box each slice is fitted into (pixels)
PANEL = 240
#: text scale of the 5x7 font (pixels per font pixel)
TEXT_SCALE = 2
#: outline colours of classes 1, 2, ... (RGB), saturated so they stand out on grey
CLASS_COLORS: Tuple[Tuple[int, int, int], ...] = (
    (255, 70, 70), (70, 160, 255), (60, 220, 60), (255, 215, 0), (255, 70, 255), (0, 225, 225), (255, 140, 0),
    (180, 120, 255),
)
OVERLAY_KINDS = ("sdm", "entropy", "prob")
_BACKGROUND = (24, 24, 24)
_TEXT = (235, 235, 235)

# ------------------------------------------------------------------------------------------------- 5x7 font
#: rows top to bottom, bit 4 = leftmost pixel (the HD44780 character shapes); 7 rows, an 8th for descenders
_FONT: Dict[str, Tuple[int, ...]] = {
    "0": (14, 17, 19, 21, 25, 17, 14), "1": (4, 12, 4, 4, 4, 4, 14), "2": (14, 17, 1, 2, 4, 8, 31),
    "3": (31, 2, 4, 2, 1, 17, 14), "4": (2, 6, 10, 18, 31, 2, 2), "5": (31, 16, 30, 1, 1, 17, 14),
    "6": (6, 8, 16, 30, 17, 17, 14), "7": (31, 1, 2, 4, 8, 8, 8), "8": (14, 17, 17, 14, 17, 17, 14),
    "9": (14, 17, 17, 15, 1, 2, 12),
    "A": (14, 17, 17, 17, 31, 17, 17), "B": (30, 17, 17, 30, 17, 17, 30), "C": (14, 17, 16, 16, 16, 17, 14),
    "D": (28, 18, 17, 17, 17, 18, 28), "E": (31, 16, 16, 30, 16, 16, 31), "F": (31, 16, 16, 30, 16, 16, 16),
    "G": (14, 17, 16, 23, 17, 17, 15), "H": (17, 17, 17, 31, 17, 17, 17), "I": (14, 4, 4, 4, 4, 4, 14),
    "J": (7, 2, 2, 2, 2, 18, 12), "K": (17, 18, 20, 24, 20, 18, 17), "L": (16, 16, 16, 16, 16, 16, 31),
    "M": (17, 27, 21, 21, 17, 17, 17), "N": (17, 17, 25, 21, 19, 17, 17), "O": (14, 17, 17, 17, 17, 17, 14),
    "P": (30, 17, 17, 30, 16, 16, 16), "Q": (14, 17, 17, 17, 21, 18, 13), "R": (30, 17, 17, 30, 20, 18, 17),
    "S": (15, 16, 16, 14, 1, 1, 30), "T": (31, 4, 4, 4, 4, 4, 4), "U": (17, 17, 17, 17, 17, 17, 14),
    "V": (17, 17, 17, 17, 17, 10, 4), "W": (17, 17, 17, 21, 21, 21, 10), "X": (17, 17, 10, 4, 10, 17, 17),
    "Y": (17, 17, 17, 10, 4, 4, 4), "Z": (31, 1, 2, 4, 8, 16, 31),
    "a": (0, 0, 14, 1, 15, 17, 15), "b": (16, 16, 22, 25, 17, 17, 30), "c": (0, 0, 14, 16, 16, 17, 14),
    "d": (1, 1, 13, 19, 17, 17, 15), "e": (0, 0, 14, 17, 31, 16, 14), "f": (6, 9, 8, 28, 8, 8, 8),
    "g": (0, 0, 15, 17, 17, 15, 1, 14), "h": (16, 16, 22, 25, 17, 17, 17), "i": (4, 0, 12, 4, 4, 4, 14),
    "j": (2, 0, 6, 2, 2, 2, 18, 12), "k": (16, 16, 18, 20, 24, 20, 18), "l": (12, 4, 4, 4, 4, 4, 14),
    "m": (0, 0, 26, 21, 21, 17, 17), "n": (0, 0, 22, 25, 17, 17, 17), "o": (0, 0, 14, 17, 17, 17, 14),
    "p": (0, 0, 30, 17, 17, 30, 16, 16), "q": (0, 0, 15, 17, 17, 15, 1, 1), "r": (0, 0, 22, 25, 16, 16, 16),
    "s": (0, 0, 14, 16, 14, 1, 30), "t": (8, 8, 28, 8, 8, 9, 6), "u": (0, 0, 17, 17, 17, 19, 13),
    "v": (0, 0, 17, 17, 17, 10, 4), "w": (0, 0, 17, 17, 21, 21, 10), "x": (0, 0, 17, 10, 4, 10, 17),
    "y": (0, 0, 17, 17, 17, 15, 1, 14), "z": (0, 0, 31, 2, 4, 8, 31),
    " ": (0,) * 7, ".": (0, 0, 0, 0, 0, 12, 12), ",": (0, 0, 0, 0, 0, 12, 4, 8), ":": (0, 12, 12, 0, 12, 12, 0),
    "-": (0, 0, 0, 31, 0, 0, 0), "+": (0, 4, 4, 31, 4, 4, 0), "=": (0, 0, 31, 0, 31, 0, 0),
    "(": (2, 4, 8, 8, 8, 4, 2), ")": (8, 4, 2, 2, 2, 4, 8), "/": (0, 1, 2, 4, 8, 16, 0),
    "_": (0, 0, 0, 0, 0, 0, 31), "%": (24, 25, 2, 4, 8, 19, 3), "?": (14, 17, 1, 2, 4, 0, 4),
    "<": (2, 4, 8, 16, 8, 4, 2), ">": (8, 4, 2, 1, 2, 4, 8), "[": (14, 8, 8, 8, 8, 8, 14),
    "]": (14, 2, 2, 2, 2, 2, 14), "'": (12, 4, 8, 0, 0, 0, 0), "#": (10, 10, 31, 10, 31, 10, 10),
    "*": (0, 4, 21, 14, 21, 4, 0), "|": (4, 4, 4, 4, 4, 4, 4), "!": (4, 4, 4, 4, 4, 0, 4),
    "&": (12, 18, 20, 8, 21, 18, 13), "~": (0, 0, 8, 21, 2, 0, 0),
    # the SGRS-Net region letters
    "Δ": (4, 4, 10, 10, 17, 17, 31), "Ω": (14, 17, 17, 17, 10, 10, 27), "Θ": (14, 17, 17, 31, 17, 17, 14),
}


def _glyph(ch: str) -> np.ndarray:
    rows = tuple(_FONT.get(ch) or _FONT.get(ch.upper()) or _FONT["?"])
    rows = rows + (0,) * (8 - len(rows))
    return np.array([[(r >> (4 - i)) & 1 for i in range(5)] for r in rows], dtype=bool)


def text_size(text: str, scale: int = TEXT_SCALE) -> Tuple[int, int]:
    """``(height, width)`` in pixels of ``text`` drawn by :func:`draw_text`."""
    return 8 * scale, max(0, 6 * len(text) - 1) * scale


def draw_text(canvas: np.ndarray, y: int, x: int, text: str, color=_TEXT, scale: int = TEXT_SCALE) -> int:
    """Draw ``text`` with its top-left corner at ``(y, x)`` (clipped to the canvas); returns the x after it."""
    h, w = canvas.shape[:2]
    for ch in text:
        g = np.kron(_glyph(ch), np.ones((scale, scale), dtype=bool))
        y0, x0 = max(0, y), max(0, x)
        y1, x1 = min(h, y + g.shape[0]), min(w, x + g.shape[1])
        if y1 > y0 and x1 > x0:
            canvas[y0:y1, x0:x1][g[y0 - y:y1 - y, x0 - x:x1 - x]] = color
        x += 6 * scale
    return x


def wrap_text(text: str, width: int, scale: int = TEXT_SCALE) -> List[str]:
    """``text`` broken at spaces into lines that :func:`draw_text` fits in ``width`` pixels (a word longer than a
    line is cut into pieces); ``[]`` for an empty text."""
    per_line = max(1, (width // scale + 1) // 6)  # n characters take (6 n - 1) * scale pixels (text_size)
    pieces = [w[i:i + per_line] for w in text.split() for i in range(0, len(w), per_line)]
    lines: List[str] = []
    for piece in pieces:
        if lines and len(lines[-1]) + 1 + len(piece) <= per_line:
            lines[-1] += " " + piece
        else:
            lines.append(piece)
    return lines


# ------------------------------------------------------------------------------------------------- colour maps
_MAPS = {
    # perceptual maps as piecewise-linear control points (viridis, inferno) and a diverging blue-white-red
    "prob": [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)],
    "entropy": [(0, 0, 4), (66, 10, 104), (147, 38, 103), (221, 81, 58), (252, 165, 10), (252, 255, 164)],
    "sdm": [(33, 102, 172), (103, 169, 207), (247, 247, 247), (239, 138, 98), (178, 24, 43)],
}
_TITLES = {"sdm": "SDM (negative inside)", "entropy": "entropy (nats)", "prob": "probability"}


def colormap(values: np.ndarray, kind: str) -> np.ndarray:
    """RGB uint8 of ``values`` in [0, 1] with the colour map of ``kind`` (``sdm``, ``entropy``, ``prob``)."""
    stops = np.asarray(_MAPS[kind], dtype=np.float64)
    t = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0) * (len(stops) - 1)
    i = np.minimum(t.astype(int), len(stops) - 2)
    f = (t - i)[..., None]
    return np.round(stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def overlay_range(array: np.ndarray, kind: str) -> Tuple[float, float]:
    """The colour-bar range of a map: SDM symmetric around 0, entropy from 0, probability [0, 1]."""
    finite = array[np.isfinite(array)]
    if kind == "prob":
        return 0.0, 1.0
    top = float(np.max(np.abs(finite))) if finite.size else 1.0
    top = top if top > 0 else 1.0
    return (-top, top) if kind == "sdm" else (0.0, top)


# ------------------------------------------------------------------------------------------------- geometry
def _lps(volume: Volume) -> Volume:
    """``volume`` with its axes permuted/flipped to LPS (no resampling); maps with components keep them."""
    import SimpleITK as sitk

    from semisupseg.io import from_sitk, to_sitk

    if np.allclose(volume.direction, np.eye(3)):
        return volume
    arr = volume.array
    if arr.ndim == 4:  # orient each component the same way
        comps = [_lps(volume.with_array(a)) for a in arr]
        return comps[0].with_array(np.stack([c.array for c in comps]))
    return from_sitk(sitk.DICOMOrient(to_sitk(volume), "LPS"), allow_channels=True)


def _scalar(volume: Volume, kind: str) -> Volume:
    arr = np.asarray(volume.array, dtype=np.float32)
    if arr.ndim == 4:
        arr = arr.sum(axis=0) if kind == "prob" else arr.min(axis=0) if kind == "sdm" else arr.max(axis=0)
    return volume.with_array(arr)


def slice_centre(label: Optional[np.ndarray], shape_zyx: Sequence[int]) -> Tuple[int, int, int]:
    """``(z, y, x)`` through which the slices are cut: the centroid of the label's foreground, rounded to a voxel
    that is in the foreground when possible (a C-shaped object's centroid may be outside it), else the centre."""
    if label is None or not np.any(label):
        return tuple(int(s) // 2 for s in shape_zyx)  # type: ignore[return-value]
    idx = np.argwhere(label)
    c = idx.mean(axis=0)
    nearest = idx[np.argmin(((idx - c) ** 2).sum(axis=1))]
    return tuple(int(v) for v in nearest)  # type: ignore[return-value]


def _views(shape_zyx, spacing_xyz, centre) -> List[Tuple[str, tuple, Tuple[float, float]]]:
    """``(name, index, (row mm, column mm))`` of the axial, coronal and sagittal slices; rows go up for coronal and
    sagittal (superior on top: rows are flipped when drawn)."""
    z, y, x = centre
    sx, sy, sz = (float(s) for s in spacing_xyz)
    return [(f"axial z={z}", (z, slice(None), slice(None)), (sy, sx)),
            (f"coronal y={y}", (slice(None), y, slice(None)), (sz, sx)),
            (f"sagittal x={x}", (slice(None), slice(None), x), (sz, sy))]


def _resize_nearest(plane: np.ndarray, spacing_rc: Tuple[float, float], px_per_mm: float) -> np.ndarray:
    rows, cols = plane.shape[:2]
    out_r = max(1, int(round(rows * spacing_rc[0] * px_per_mm)))
    out_c = max(1, int(round(cols * spacing_rc[1] * px_per_mm)))
    ri = np.minimum((np.arange(out_r) / out_r * rows).astype(int), rows - 1)
    ci = np.minimum((np.arange(out_c) / out_c * cols).astype(int), cols - 1)
    return plane[ri][:, ci]


def _outline(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """The inner ``width``-pixel border of a 2D mask."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return mask & ~inner


# ------------------------------------------------------------------------------------------------- rendering
def render_preview(image: Volume, label: Optional[Volume] = None, overlays: Optional[Dict[str, Volume]] = None,
                   class_names: Optional[Dict[int, str]] = None, title: str = "") -> np.ndarray:
    """The preview picture (see the module doc) as an ``(H, W, 3)`` uint8 array.

    ``image``: the scan (first channel of a multi-channel one); ``label``: a label map on the same grid (values
    are class label values); ``overlays``: ``{"sdm"|"entropy"|"prob": map on the same grid}`` (one row each);
    ``class_names``: ``{label value: name}`` for the legend (missing values are called ``class N``)."""
    overlays = dict(overlays or {})
    unknown = set(overlays) - set(OVERLAY_KINDS)
    if unknown:
        raise InputError(f"unknown overlay kind(s) {sorted(unknown)}; known: {', '.join(OVERLAY_KINDS)}")
    img = image.with_array(np.asarray(image.array)[0] if np.asarray(image.array).ndim == 4 else image.array)
    for name, other in [("label", label)] + list(overlays.items()):
        if other is not None and tuple(np.asarray(other.array).shape[-3:]) != tuple(img.shape_zyx):
            raise InputError(f"the {name} map ({' x '.join(map(str, other.size_xyz))} voxels) is not on the "
                             f"image's grid ({' x '.join(map(str, img.size_xyz))} voxels)")
    img = _lps(img)
    lab = None if label is None else np.asarray(_lps(label).array)
    maps = {k: _lps(_scalar(v, k)) for k, v in overlays.items()}
    arr = np.asarray(img.array, dtype=np.float32)
    lo, hi = np.percentile(arr, (1.0, 99.0)) if arr.size else (0.0, 1.0)
    grey = np.clip((arr - lo) / max(float(hi - lo), 1e-6), 0, 1)
    centre = slice_centre(None if lab is None else lab != 0, arr.shape)
    views = _views(arr.shape, img.spacing, centre)
    extent = max(float(n) * float(s) for n, s in zip(img.size_xyz, img.spacing))
    px_per_mm = PANEL / max(extent, 1e-6)
    values = [int(v) for v in np.unique(lab) if v != 0] if lab is not None else []
    colours = {v: CLASS_COLORS[i % len(CLASS_COLORS)] for i, v in enumerate(values)}
    rows_spec = [("image", None)] + [(k, maps[k]) for k in OVERLAY_KINDS if k in maps]

    th, _ = text_size("A")
    gap, bar_w = 10, 16
    caption_h = th + 6
    row_h = PANEL + caption_h
    bar_text = max((text_size(f"{v:.3g}")[1] for k, m in maps.items() for v in overlay_range(m.array, k)),
                   default=0)
    right = (gap + bar_w + 6 + max(bar_text, text_size("-0.00")[1])) if maps else 0
    width = gap + 3 * (PANEL + gap) + right
    legend_lines = [f"{v} {(class_names or {}).get(v, f'class {v}')}" for v in values]
    legend_h = (th + 8) if legend_lines else 0
    title_lines = wrap_text(title, width - 2 * gap) or [""]
    title_h = len(title_lines) * (th + 4) - 4
    height = gap + title_h + gap + len(rows_spec) * (row_h + gap) + legend_h + gap
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas[:] = _BACKGROUND
    for i, line in enumerate(title_lines):
        draw_text(canvas, gap + i * (th + 4), gap, line)
    top = gap + title_h + gap
    for kind, vol in rows_spec:
        for col, (name, index, sp) in enumerate(views):
            flip = col > 0  # coronal / sagittal: superior up
            g = grey[index][::-1] if flip else grey[index]
            panel_grey = _resize_nearest(g, sp, px_per_mm)
            if kind == "image":
                rgb = np.repeat((panel_grey * 255).astype(np.uint8)[..., None], 3, axis=2)
            else:
                a0, a1 = overlay_range(vol.array, kind)
                m = np.asarray(vol.array)[index]
                m = m[::-1] if flip else m
                rgb = colormap((_resize_nearest(m, sp, px_per_mm) - a0) / (a1 - a0), kind)
            if lab is not None:
                lplane = lab[index][::-1] if flip else lab[index]
                lpanel = _resize_nearest(lplane, sp, px_per_mm)
                for v in values:
                    edge = _outline(lpanel == v)
                    rgb[edge] = colours[v] if kind == "image" else (0, 0, 0) if kind == "sdm" else (255, 255, 255)
            ph, pw = rgb.shape[:2]
            y0 = top + (PANEL - ph) // 2
            x0 = gap + col * (PANEL + gap) + (PANEL - pw) // 2
            canvas[y0:y0 + ph, x0:x0 + pw] = rgb
            label_text = name if kind == "image" else f"{_TITLES[kind].split(' ')[0]} {name.split(' ')[0]}"
            draw_text(canvas, top + PANEL + 4, gap + col * (PANEL + gap), label_text)
        if kind != "image":
            a0, a1 = overlay_range(vol.array, kind)
            bx = gap + 3 * (PANEL + gap)
            ramp = colormap(np.linspace(1, 0, PANEL)[:, None].repeat(bar_w, axis=1), kind)
            canvas[top:top + PANEL, bx:bx + bar_w] = ramp
            for frac, value in ((0.0, a1), (0.5, (a0 + a1) / 2), (1.0, a0)):
                ty = int(top + frac * (PANEL - th))
                draw_text(canvas, ty, bx + bar_w + 6, f"{value:.3g}")
        top += row_h + gap
    if legend_lines:
        x = gap
        for v, text in zip(values, legend_lines):
            canvas[top + 1:top + th - 1, x:x + th - 2] = colours[v]
            x = draw_text(canvas, top, x + th + 4, text) + 4 * TEXT_SCALE * 3
    return canvas


def write_png(rgb: np.ndarray, path: PathLike, overwrite: bool = False) -> Path:
    """Write an ``(H, W, 3)`` uint8 picture as PNG, atomically (never replacing a file unless ``overwrite``)."""
    import SimpleITK as sitk

    from semisupseg.fileio import check_writable, replace_file, temp_beside

    p = Path(path)
    if p.suffix.lower() != ".png":
        raise InputError("the preview is written as PNG: give a file name ending in .png", p)
    check_writable(p, overwrite)  # a folder of that name too, with --overwrite
    tmp = str(temp_beside(p, ".png"))
    try:
        sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(rgb, dtype=np.uint8), isVector=True), tmp)
        os.chmod(tmp, 0o644)
        replace_file(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


def class_names_for(label_path: Optional[PathLike] = None, card=None) -> Dict[int, str]:
    """``{label value: class name}``: from a model card, else the label file's own segment names (``.seg.nrrd``),
    else a ``dataset.json`` beside the label file (its folder or the parent), else empty."""
    if card is not None:
        return {int(v): str(n) for n, v in zip(card.class_names, card.label_values)}
    if label_path is None:
        return {}
    p = Path(label_path)
    if p.name.lower().endswith(".seg.nrrd") and p.is_file():
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            return {}
        names: Dict[int, str] = {}
        i = 0
        while reader.HasMetaDataKey(f"Segment{i}_Name"):
            value = reader.GetMetaData(f"Segment{i}_LabelValue") if reader.HasMetaDataKey(
                f"Segment{i}_LabelValue") else str(i + 1)
            names[int(value)] = reader.GetMetaData(f"Segment{i}_Name")
            i += 1
        if names:
            return names
    from semisupseg.data import read_dataset_json

    for candidate in (p.parent / "dataset.json", p.parent.parent / "dataset.json"):
        if candidate.is_file():
            try:
                classes = read_dataset_json(candidate)
            except InputError:
                return {}
            return {int(v): str(n) for n, v in zip(classes.names, classes.label_values)}
    return {}


def preview_files(image: PathLike, output: PathLike, label: Optional[PathLike] = None,
                  overlays: Optional[Dict[str, PathLike]] = None, card=None, title: Optional[str] = None,
                  overwrite: bool = False, h5_spacing: Sequence[float] = (0.625, 0.625, 0.625)) -> Path:
    """Read the files, render (:func:`render_preview`) and write the PNG ``output``; returns its path. Every map
    must be on the image's grid (what ``semisupseg segment`` writes is)."""
    from semisupseg.io import read_image_or_h5, read_label_or_h5, read_volume, strip_suffix

    out = Path(output)
    if out.exists() and not overwrite:  # before any reading
        raise OutputExistsError("output exists; pass --overwrite to replace it", out)
    vol = read_image_or_h5(image, h5_spacing=h5_spacing)
    lab = None if label is None else read_label_or_h5(label, vol, h5_spacing=h5_spacing)
    maps = {k: read_volume(v, allow_channels=True, nonfinite="zero") for k, v in (overlays or {}).items()}
    names = class_names_for(label, card)
    rgb = render_preview(vol, lab, maps, names, title if title is not None else strip_suffix(Path(image)))
    return write_png(rgb, out, overwrite=overwrite)


__all__ = ["render_preview", "write_png", "preview_files", "class_names_for", "colormap", "overlay_range",
           "slice_centre", "draw_text", "text_size", "OVERLAY_KINDS", "CLASS_COLORS"]
