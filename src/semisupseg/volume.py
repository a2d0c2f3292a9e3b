"""The one in-memory image type of the package."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

from semisupseg.errors import InputError

Vec3 = Tuple[float, float, float]


@dataclass
class Volume:
    """A 3D image (or a stack of channels) with its physical geometry.

    ``array``: ``(Z, Y, X)`` — or ``(C, Z, Y, X)`` for per-class maps — in SimpleITK/Slicer order.
    ``spacing``: voxel size in mm, **x, y, z** (ITK order, as ``sitk.Image.GetSpacing()``).
    ``origin``: physical position of voxel (0, 0, 0) in mm, **x, y, z**, LPS.
    ``direction``: 3x3 direction cosines (ITK/LPS), row-major as a (3, 3) array: column ``i`` is the physical
    direction of index axis ``i`` (x, y, z).
    ``path``: the file it was read from, if any (used in error messages).

    A spacing that is not positive and finite, or a NaN/Inf origin or direction, raises
    :class:`~semisupseg.errors.InputError` (a ``ValueError``) naming ``path``.
    """

    array: np.ndarray
    spacing: Vec3 = (1.0, 1.0, 1.0)
    origin: Vec3 = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    path: Optional[str] = None

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim not in (3, 4):
            raise ValueError(f"Volume array must be (Z, Y, X) or (C, Z, Y, X), got shape {self.array.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.origin = tuple(float(o) for o in self.origin)  # type: ignore[assignment]
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if len(self.spacing) != 3 or len(self.origin) != 3:
            raise ValueError("spacing and origin must have 3 values (x, y, z)")
        if not all(np.isfinite(self.spacing)) or any(s <= 0 for s in self.spacing):
            raise InputError(f"spacing must be positive, got {self.spacing}", self.path)
        if not all(np.isfinite(self.origin)):
            raise InputError(f"origin must be finite, got {self.origin}", self.path)
        if not np.all(np.isfinite(self.direction)):
            raise InputError(f"direction must be finite, got {self.direction.tolist()}", self.path)
        if abs(np.linalg.det(self.direction)) < 1e-6:  # two index axes along one line: no voxel has a place
            raise InputError(f"direction is singular (its columns are not independent): {self.direction.tolist()}",
                             self.path)
        if np.iscomplexobj(self.array):  # a cast would drop the imaginary part without a word
            raise InputError(f"the voxels are complex numbers ({self.array.dtype}): take the magnitude or the real "
                             "part first", self.path)

    @property
    def shape_zyx(self) -> Tuple[int, int, int]:
        """Spatial shape ``(Z, Y, X)`` (channels dropped)."""
        return tuple(self.array.shape[-3:])  # type: ignore[return-value]

    @property
    def size_xyz(self) -> Tuple[int, int, int]:
        """Spatial size in ITK order ``(X, Y, Z)``."""
        z, y, x = self.shape_zyx
        return (x, y, z)

    @property
    def spacing_zyx(self) -> Vec3:
        """Spacing in array order ``(Z, Y, X)``, mm."""
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    def with_array(self, array: np.ndarray) -> "Volume":
        """A new Volume with ``array`` and this volume's geometry (spatial shape must match)."""
        array = np.asarray(array)
        if tuple(array.shape[-3:]) != self.shape_zyx:
            raise ValueError(f"array spatial shape {array.shape[-3:]} != volume shape {self.shape_zyx}")
        return Volume(array, self.spacing, self.origin, self.direction.copy(), self.path)

    def same_geometry(self, other: "Volume", tol: float = 1e-4) -> bool:
        """Whether both volumes share spatial shape, spacing, origin and direction (within ``tol``)."""
        return (
            self.shape_zyx == other.shape_zyx
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol)
            and np.allclose(self.direction, other.direction, atol=tol)
        )
