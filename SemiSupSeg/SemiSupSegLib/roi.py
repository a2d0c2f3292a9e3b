"""A markups ROI -> the box of voxels of a volume it covers, in array order (z, y, x).

The ROI's 8 corners are taken to world RAS (its box, its orientation and its parent transform), then into the
volume's voxel coordinates (the volume's parent transform inverted, then RASToIJK). The box is every voxel whose
centre lies within the corners' bounding box in voxel coordinates — for an ROI aligned with the volume, exactly the
voxels whose centres are inside the ROI; for an ROI oblique to the volume (or an oblique volume under an
axis-aligned ROI), the smallest voxel box containing it. The box is clipped to the volume.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import slicer
import vtk

from semisupseg.errors import InputError

__all__ = ["roi_corners_ras", "roi_box_zyx"]

_EPS = 1e-6  # voxel units: a corner on a voxel centre (to rounding) includes that voxel


def roi_corners_ras(roi_node) -> np.ndarray:
    """The 8 corners of a markups ROI in world RAS mm, ``(8, 3)``."""
    bounds = [0.0] * 6
    roi_node.GetObjectBounds(bounds)
    object_to_world = roi_node.GetObjectToWorldMatrix()
    m = slicer.util.arrayFromVTKMatrix(object_to_world)
    corners = np.array([[x, y, z, 1.0] for x in bounds[0:2] for y in bounds[2:4] for z in bounds[4:6]])
    return (m @ corners.T)[:3].T


def _world_to_volume_ijk(volume_node, points_ras: np.ndarray) -> np.ndarray:
    parent = volume_node.GetParentTransformNode()
    if parent is not None:
        world_to_local = vtk.vtkGeneralTransform()
        slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, parent, world_to_local)
        points_ras = np.array([world_to_local.TransformPoint(*map(float, p)) for p in points_ras])
    ras_to_ijk = vtk.vtkMatrix4x4()
    volume_node.GetRASToIJKMatrix(ras_to_ijk)
    m = slicer.util.arrayFromVTKMatrix(ras_to_ijk)
    homogeneous = np.c_[points_ras, np.ones(len(points_ras))]
    return (m @ homogeneous.T)[:3].T


def roi_box_zyx(roi_node, volume_node) -> Tuple[int, int, int, int, int, int]:
    """``(z0, z1, y0, y1, x0, x1)``: half-open voxel box of ``volume_node`` (array order, ``array[z0:z1, y0:y1,
    x0:x1]``) covered by the markups ROI ``roi_node``, clipped to the volume.

    Raises :class:`InputError` naming the ROI when it has no size or does not overlap the volume.
    """
    if roi_node is None:
        raise InputError("no ROI given")
    if volume_node is None or volume_node.GetImageData() is None:
        raise InputError("no input volume (with image data) to restrict with the ROI")
    name = roi_node.GetName() or "ROI"
    size = roi_node.GetSize()
    if roi_node.GetNumberOfDefinedControlPoints() == 0 and not any(s > 0 for s in size):
        raise InputError(f"ROI '{name}' is not placed")
    if not all(s > 0 for s in size):
        raise InputError(f"ROI '{name}' has no volume (size {tuple(round(s, 3) for s in size)} mm)")
    # array index = IJK index - the image's first index (extents not starting at 0, see scene.volume_from_node)
    ijk = _world_to_volume_ijk(volume_node, roi_corners_ras(roi_node)) - volume_node.GetImageData().GetExtent()[0::2]
    lo = np.ceil(ijk.min(axis=0) - _EPS).astype(np.int64)
    hi = np.floor(ijk.max(axis=0) + _EPS).astype(np.int64) + 1
    dims = np.array(volume_node.GetImageData().GetDimensions(), dtype=np.int64)  # i, j, k
    lo = np.clip(lo, 0, dims)
    hi = np.clip(hi, 0, dims)
    if np.any(hi <= lo):
        raise InputError(f"ROI '{name}' does not overlap volume '{volume_node.GetName()}'")
    (x0, y0, z0), (x1, y1, z1) = lo.tolist(), hi.tolist()
    return (z0, z1, y0, y1, x0, x1)
