"""The order a scan's voxels are stored in (its orientation code) and exact reorientation to another order.

The same head can be stored with its voxel index x growing toward the patient's left or right, and with the axes in
any order: the header's direction matrix says which, and every reader puts the anatomy where it is. A network does
not read headers: it sees the voxel array, so a scan stored in another order than its training scans is, to it, a
mirrored or turned scan (a hippocampus model's Dice fell from 0.87 to 0.07 on its own scan stored ``PIR`` instead of
``RAS``). Models therefore record the order of their training scans (``ModelCard.inference["orientation"]``), and
:func:`semisupseg.inference.segment` brings each scan into it first and its outputs back afterwards.

Codes follow ITK's ``DICOMOrientImageFilter``: three letters, one per voxel index axis x, y, z, each the patient
direction that index grows toward — ``L``/``R`` (physical x in LPS), ``P``/``A`` (y), ``S``/``I`` (z). The identity
direction in LPS is ``"LPS"``; a NIfTI stored as ``RAS`` has direction ``diag(-1, -1, 1)``. An oblique scan gets the
code of the nearest axis-aligned order.

Reorienting only permutes and reverses array axes (:class:`Reorientation`): no voxel is interpolated, the geometry
(spacing, origin, direction) is rewritten to match, and :meth:`Reorientation.undo` gives back the original array
exactly. Arrays are **z, y, x** (channels, if any, first); spacings and directions **x, y, z**, LPS.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from semisupseg.errors import InputError
from semisupseg.volume import Volume

#: (physical LPS axis, sign) -> the letter an index axis pointing that way gets
_LETTER = {(0, 1): "L", (0, -1): "R", (1, 1): "P", (1, -1): "A", (2, 1): "S", (2, -1): "I"}
_AXIS_SIGN = {letter: axis_sign for axis_sign, letter in _LETTER.items()}

__all__ = ["Reorientation", "file_orientation", "orientation_code", "orientation_problem", "parse_orientation",
           "reorientation", "reorientation_to"]


def _nearest_axes(direction: np.ndarray) -> Tuple[Tuple[int, int, int], Tuple[int, int, int]]:
    """For each index axis (x, y, z): the physical axis it is closest to (one each: the permutation with the largest
    product of cosines, so that a 45-degree tie never gives two index axes the same physical axis) and the sign."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    best = max(itertools.permutations(range(3)), key=lambda p: np.prod([abs(d[p[c], c]) for c in range(3)]))
    signs = tuple(1 if d[best[c], c] >= 0 else -1 for c in range(3))
    return best, signs  # type: ignore[return-value]


def orientation_code(direction: np.ndarray) -> str:
    """The three-letter code of a direction matrix (columns = index axes x, y, z in LPS), e.g. ``"RAS"``."""
    axes, signs = _nearest_axes(direction)
    return "".join(_LETTER[(a, s)] for a, s in zip(axes, signs))


def orientation_problem(code: str) -> Optional[str]:
    """Why ``code`` is no orientation code (``None`` when it is one)."""
    if not isinstance(code, str) or len(code) != 3 or any(c not in _AXIS_SIGN for c in code.upper()):
        return f"{code!r} is no orientation code (three of the letters L/R, P/A, S/I, e.g. RAS or LPS)"
    if len({_AXIS_SIGN[c][0] for c in code.upper()}) != 3:
        return f"{code!r} names one axis twice (one each of L/R, P/A and S/I, e.g. RAS or LPS)"
    return None


def parse_orientation(code: str) -> Tuple[Tuple[int, int, int], Tuple[int, int, int]]:
    """``(physical axis, sign)`` of each index axis of ``code``; :class:`InputError` for a bad code."""
    problem = orientation_problem(code)
    if problem:
        raise InputError(problem)
    pairs = [_AXIS_SIGN[c] for c in code.upper()]
    return tuple(a for a, _ in pairs), tuple(s for _, s in pairs)  # type: ignore[return-value]


@dataclass(frozen=True)
class Reorientation:
    """An exact change of voxel order: new index axis ``a`` (x, y, z numbering) is old index axis ``source[a]``,
    reversed when ``flip[a]``. ``source_code`` / ``target_code``: the orders before and after."""

    source: Tuple[int, int, int]
    flip: Tuple[bool, bool, bool]
    source_code: str = ""
    target_code: str = ""

    @property
    def identity(self) -> bool:
        return self.source == (0, 1, 2) and not any(self.flip)

    def _order(self, ndim: int) -> list:
        lead = ndim - 3  # channel axes before z, y, x are kept
        return list(range(lead)) + [lead + 2 - self.source[2 - p] for p in range(3)]

    def array(self, a: np.ndarray) -> np.ndarray:
        """``a`` (``(..., Z, Y, X)`` in the old order) in the new order (a view when no copy is needed)."""
        out = np.transpose(a, self._order(a.ndim))
        flips = tuple(a.ndim - 1 - i for i in range(3) if self.flip[i])
        return np.flip(out, axis=flips) if flips else out

    def undo(self, a: np.ndarray) -> np.ndarray:
        """``a`` (``(..., Z, Y, X)`` in the new order) back in the old order: exactly the array :meth:`array` took."""
        flips = tuple(a.ndim - 1 - i for i in range(3) if self.flip[i])
        if flips:
            a = np.flip(a, axis=flips)
        return np.transpose(a, np.argsort(self._order(a.ndim)))

    def volume(self, v: Volume) -> Volume:
        """``v`` in the new order, with the geometry that keeps every voxel at its physical place."""
        spacing = np.asarray(v.spacing, dtype=np.float64)
        direction = np.asarray(v.direction, dtype=np.float64).reshape(3, 3)
        size = np.asarray(v.size_xyz)
        first = np.zeros(3)  # old index (x, y, z) of the new first voxel
        new_direction = np.empty((3, 3))
        for a, (c, flip) in enumerate(zip(self.source, self.flip)):
            first[c] = size[c] - 1 if flip else 0
            new_direction[:, a] = -direction[:, c] if flip else direction[:, c]
        origin = np.asarray(v.origin, dtype=np.float64) + direction @ (spacing * first)
        return Volume(np.ascontiguousarray(self.array(v.array)), tuple(float(spacing[c]) for c in self.source),
                      tuple(float(o) for o in origin), new_direction, v.path)

    def box(self, roi_zyx: Sequence[Tuple[int, int]], shape_zyx: Sequence[int]) -> Tuple[Tuple[int, int], ...]:
        """A half-open voxel box ``((z0, z1), (y0, y1), (x0, x1))`` of the old array as a box of the new one."""
        old = {2 - p: tuple(int(v) for v in roi_zyx[p]) for p in range(3)}  # by index axis x, y, z
        n = {2 - p: int(shape_zyx[p]) for p in range(3)}
        new = []
        for a in (2, 1, 0):  # new array order z, y, x
            c = self.source[a]
            lo, hi = old[c]
            new.append((n[c] - hi, n[c] - lo) if self.flip[a] else (lo, hi))
        return tuple(new)


def reorientation(direction: np.ndarray, target: str) -> Reorientation:
    """The :class:`Reorientation` taking a scan with ``direction`` (x, y, z columns, LPS) to the order ``target``."""
    target_axes, target_signs = parse_orientation(target)
    axes, signs = _nearest_axes(direction)
    source, flip = [], []
    for want_axis, want_sign in zip(target_axes, target_signs):
        c = axes.index(want_axis)
        source.append(c)
        flip.append(signs[c] != want_sign)
    return Reorientation(tuple(source), tuple(flip), orientation_code(direction), target.upper())  # type: ignore


def reorientation_to(direction: np.ndarray, target: Optional[str]) -> Optional[Reorientation]:
    """The :class:`Reorientation` to ``target`` (see :func:`reorientation`), or ``None`` when there is nothing to do:
    no target (a card or config that does not know its order) or a scan stored that way already."""
    if not target:
        return None
    turn = reorientation(direction, target)
    return None if turn.identity else turn


def file_orientation(path, h5_spacing: Sequence[float] = (0.625, 0.625, 0.625)) -> str:
    """The orientation code of an image file from its header (the voxels are not read, except for formats without
    a header reader). The LA release's ``.h5`` arrays have no direction: read as the identity, ``"LPS"``."""
    from pathlib import Path

    from semisupseg.io import header_information, read_image_or_h5, volume_suffix

    p = Path(path)
    if volume_suffix(p) in (".h5", ".hdf5"):
        return orientation_code(np.eye(3))
    reader = header_information(p) if p.is_file() else None
    if reader is not None and len(reader.GetDirection()) >= 9:
        n = int(round(len(reader.GetDirection()) ** 0.5))
        return orientation_code(np.asarray(reader.GetDirection(), dtype=np.float64).reshape(n, n)[:3, :3])
    return orientation_code(read_image_or_h5(p, h5_spacing=h5_spacing).direction)
