"""Colour nodes the library shows results with, made by code (Slicer's file-based tables such as
``DivergingBlueRed`` or ``GenericAnatomyColors`` are not in every build), created once per scene and reused.

Continuous maps are 256-entry ``vtkMRMLColorTableNode`` s (a scalar volume's window/level maps
``[level - window/2, level + window/2]`` onto entries 0..255):

* ``sdm`` — diverging **blue - white - red**: the signed distance map is negative inside the object, so inside is
  blue, the boundary (0, the window's centre) white, outside red.
* ``entropy`` — heat (black - red - yellow - white).
* ``probability`` — dark blue - teal - green - yellow (viridis-like).

All entries are opaque: Slicer's slice views use a scalar volume's colour alpha only as on/off, so overlays are made
see-through where they say little by the display node's threshold instead (:func:`SemiSupSegLib.results.show_overlay`).

Discrete tables (entry index = label value):

* ``regions`` — the SGRS-Net regions of :data:`semisupseg.geometry.REGION_NAMES` (0 ignored: transparent,
  uncertain orange, agree green, disagree magenta);
* :func:`label_color_table` — the classes of a model card (background transparent), names and colours.

A node made here carries the attribute ``SemiSupSeg.ColorMap`` (its kind, or a signature of its class list), which
is how it is found again in the scene instead of being made twice.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np


__all__ = [
    "ATTRIBUTE",
    "CONTINUOUS_KINDS",
    "KINDS",
    "DEFAULT_CLASS_COLORS",
    "class_colors",
    "color_node",
    "colormap_rgba",
    "label_color_table",
    "resolve_class_colors",
]

ATTRIBUTE = "SemiSupSeg.ColorMap"
CONTINUOUS_KINDS = ("sdm", "entropy", "probability")
KINDS = CONTINUOUS_KINDS + ("regions",)
_N = 256

_NAMES = {
    "sdm": "SemiSupSeg SDM (blue inside, white boundary, red outside)",
    "entropy": "SemiSupSeg entropy (heat)",
    "probability": "SemiSupSeg probability",
    "regions": "SemiSupSeg SGRS regions",
}

# control points (position in [0, 1], r, g, b)
_CONTROL = {
    "sdm": [(0.0, 0.02, 0.19, 0.58), (0.25, 0.26, 0.58, 0.76), (0.5, 1.0, 1.0, 1.0), (0.75, 0.84, 0.38, 0.30),
            (1.0, 0.60, 0.0, 0.05)],
    "entropy": [(0.0, 0.0, 0.0, 0.0), (0.35, 0.85, 0.0, 0.0), (0.7, 1.0, 0.85, 0.0), (1.0, 1.0, 1.0, 1.0)],
    "probability": [(0.0, 0.27, 0.0, 0.33), (0.25, 0.23, 0.32, 0.55), (0.5, 0.13, 0.57, 0.55), (0.75, 0.37, 0.79, 0.38),
                    (1.0, 0.99, 0.91, 0.14)],
}

# regions: value -> rgba
_REGION_COLORS = {0: (0.0, 0.0, 0.0, 0.0), 1: (1.0, 0.6, 0.0, 1.0), 2: (0.2, 0.75, 0.3, 1.0), 3: (0.85, 0.1, 0.75, 1.0)}

#: class colours (rgb 0..1) in the order Slicer gives new segments (its generic anatomy colours, from "tissue" on)
DEFAULT_CLASS_COLORS: List[Tuple[float, float, float]] = [
    (c[0] / 255.0, c[1] / 255.0, c[2] / 255.0) for c in (
        (128, 174, 128), (241, 214, 145), (177, 122, 101), (111, 184, 210), (216, 101, 79),
        (221, 130, 101), (144, 238, 144), (192, 104, 88), (220, 245, 20), (78, 63, 0))
]


def colormap_rgba(kind: str, n: int = _N) -> np.ndarray:
    """The ``(n, 4)`` rgba entries (0..1) of a continuous map ``kind`` (``sdm``, ``entropy``, ``probability``)."""
    if kind not in _CONTROL:
        raise ValueError(f"unknown continuous colour map {kind!r}; known: {', '.join(CONTINUOUS_KINDS)}")
    pts = np.array(_CONTROL[kind], dtype=np.float64)
    t = np.linspace(0.0, 1.0, n)
    rgba = np.ones((n, 4))
    for c in range(3):
        rgba[:, c] = np.interp(t, pts[:, 0], pts[:, c + 1])
    return rgba


def class_colors(n: int) -> List[Tuple[float, float, float]]:
    """``n`` colours (rgb 0..1) for the foreground classes 1..n, cycling through :data:`DEFAULT_CLASS_COLORS`."""
    return [DEFAULT_CLASS_COLORS[i % len(DEFAULT_CLASS_COLORS)] for i in range(n)]


def _find(scene, key: str):
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLColorTableNode")
        if node.GetAttribute(ATTRIBUTE) == key:
            return node
    return None


def _new_table(scene, key: str, name: str, rgba: Sequence[Sequence[float]], names: Optional[Sequence[str]] = None):
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", scene.GenerateUniqueName(name))
    was_modifying = node.StartModify()
    node.SetTypeToUser()
    node.SetAttribute(ATTRIBUTE, key)
    node.SetNumberOfColors(len(rgba))
    node.SetHideFromEditors(False)
    for i, (r, g, b, a) in enumerate(rgba):
        label = names[i] if names is not None else ""
        node.SetColor(i, label, float(r), float(g), float(b), float(a))
    if names is not None and not hasattr(node, "SetColorDefined"):
        node.SetNamesInitialised(True)  # Slicer < 5.7: names are ignored until this is set (deprecated since)
    node.GetLookupTable().SetTableRange(0, len(rgba) - 1)
    node.EndModify(was_modifying)
    return node


def color_node(scene, kind: str):
    """The colour table node of ``kind`` (one of :data:`KINDS`) in ``scene``, made on first use."""
    if kind not in KINDS:
        raise ValueError(f"unknown colour map {kind!r}; known: {', '.join(KINDS)}")
    node = _find(scene, kind)
    if node is not None:
        return node
    if kind == "regions":
        from semisupseg.geometry import REGION_NAMES  # here, not at import: geometry needs torch, the panels do not

        size = max(REGION_NAMES) + 1
        rgba = [_REGION_COLORS.get(v, (0.5, 0.5, 0.5, 1.0)) for v in range(size)]
        names = [REGION_NAMES.get(v, f"region {v}") for v in range(size)]
        return _new_table(scene, kind, _NAMES[kind], rgba, names)
    return _new_table(scene, kind, _NAMES[kind], colormap_rgba(kind))


def label_color_table(scene, class_names: Sequence[str], label_values: Optional[Sequence[int]] = None,
                      colors: Optional[Sequence[Sequence[float]]] = None):
    """A discrete colour table whose entry ``label_values[i]`` is named ``class_names[i]`` (class 0, the
    background, is transparent), coloured ``colors[i]`` (rgb 0..1; default: :func:`class_colors` for classes 1..).

    ``colors`` lists one colour per class including the background (whose colour is ignored), or one per
    foreground class. The same classes, values and colours reuse the same node.
    """
    class_names = [str(c) for c in class_names]
    values = list(range(len(class_names))) if label_values is None else [int(v) for v in label_values]
    if len(values) != len(class_names):
        raise ValueError(f"{len(class_names)} class names but {len(values)} label values")
    if min(values) < 0 or len(set(values)) != len(values):
        raise ValueError(f"label values must be distinct and >= 0, got {values}")
    rgb = resolve_class_colors(len(class_names), colors)
    key = "labels:" + repr([(n, v, tuple(round(x, 4) for x in c)) for n, v, c in zip(class_names, values, rgb)])
    node = _find(scene, key)
    if node is not None:
        return node
    size = max(values) + 1
    rgba: List[Tuple[float, float, float, float]] = [(0.0, 0.0, 0.0, 0.0)] * size
    names = [""] * size
    for i, (name, value) in enumerate(zip(class_names, values)):
        names[value] = name
        rgba[value] = (0.0, 0.0, 0.0, 0.0) if i == 0 else (*rgb[i], 1.0)
    return _new_table(scene, key, "SemiSupSeg classes: " + ", ".join(class_names[1:]), rgba, names)


def resolve_class_colors(num_classes: int, colors: Optional[Sequence[Sequence[float]]] = None
                         ) -> List[Tuple[float, float, float]]:
    """One rgb colour (0..1) per class, background first (its colour black): ``colors`` given for every class or for
    the foreground classes only, else the default palette. Colours given as 0..255 integers are scaled."""
    if colors is None:
        return [(0.0, 0.0, 0.0)] + class_colors(num_classes - 1)
    cols = [tuple(float(x) for x in c[:3]) for c in colors]
    if any(len(c) != 3 for c in cols):
        raise ValueError(f"colours must be (r, g, b) triples, got {colors}")
    if len(cols) == num_classes - 1:
        cols = [(0.0, 0.0, 0.0)] + cols
    if len(cols) != num_classes:
        raise ValueError(f"{num_classes} classes need {num_classes} (or {num_classes - 1}) colours, got {len(cols)}")
    if any(x > 1.0 for c in cols for x in c):
        cols = [tuple(x / 255.0 for x in c) for c in cols]
    return cols  # type: ignore[return-value]
