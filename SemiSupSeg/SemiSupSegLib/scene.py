"""Volume nodes <-> :class:`semisupseg.volume.Volume`, with exact geometry.

Conventions on each side:

* ``Volume`` (the package): ``array`` in **z, y, x** order; ``spacing`` and ``origin`` in **x, y, z** mm;
  ``direction`` a 3x3 matrix whose column ``c`` is the direction of index axis ``c`` (x, y, z) — all in **LPS**
  (ITK, DICOM).
* Volume node (Slicer): image data indexed **i, j, k** (x fastest in memory, so the numpy view of the voxels is
  ``[k, j, i]`` = ``[z, y, x]``); ``Spacing`` (i, j, k mm), ``Origin`` and ``IJKToRASDirections`` in **RAS**.

So ``k, j, i = z, y, x``, the spacing is the same numbers, and origin and direction change sign on their first two
physical rows (RAS = diag(-1, -1, 1) LPS). The node stores spacing, origin and directions as separate numbers, and
they are set and read as such (never through the composed IJKToRAS matrix, and past the node's fuzzy "unchanged"
test), so both round trips are exact to the last bit, oblique and anisotropic volumes included:
``IJKToRAS = F [D diag(spacing) | origin]`` with ``F = diag(-1, -1, 1)``.

A node's parent transform is not applied: a Volume is the node in its own (local) coordinates, as Slicer writes it
to a file. Result nodes are placed under the same parent transform as their input (see :mod:`SemiSupSegLib.results`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from semisupseg.errors import InputError
from semisupseg.volume import Volume

from . import colors as colors_module

__all__ = [
    "LPS_TO_RAS",
    "ijk_to_ras_matrix",
    "node_geometry",
    "volume_from_node",
    "update_volume_node",
    "oriented_image_from_volume",
    "vtk_image_from_array",
]

#: diag(-1, -1, 1): flips LPS <-> RAS (its own inverse)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_FLIP = np.array([-1.0, -1.0, 1.0])


def _node_label(node) -> str:
    return f"volume '{node.GetName()}'" if node is not None and node.GetName() else "volume node"


def ijk_to_ras_matrix(volume: Volume) -> np.ndarray:
    """The 4x4 IJKToRAS matrix of ``volume``'s geometry (maps voxel index (i, j, k) = (x, y, z) to RAS mm)."""
    m = np.eye(4)
    m[:3, :3] = LPS_TO_RAS @ np.asarray(volume.direction) @ np.diag(volume.spacing)
    m[:3, 3] = _FLIP * np.asarray(volume.origin)
    return m


def node_geometry(node) -> Tuple[Tuple[float, float, float], Tuple[float, float, float], np.ndarray]:
    """``(spacing_xyz, origin_xyz_lps, direction_lps)`` of a volume node, exactly as a :class:`Volume` holds them."""
    spacing = tuple(float(s) for s in node.GetSpacing())
    origin = tuple(float(o) for o in _FLIP * np.asarray(node.GetOrigin(), dtype=np.float64))
    direction = np.empty((3, 3))
    for col, getter in enumerate((node.GetIToRASDirection, node.GetJToRASDirection, node.GetKToRASDirection)):
        d = [0.0, 0.0, 0.0]
        getter(d)
        direction[:, col] = _FLIP * np.asarray(d, dtype=np.float64)
    return spacing, origin, direction  # type: ignore[return-value]


#: a value no geometry has: written first so that the true value is always stored (see _set_node_geometry)
_SENTINEL = 1e300


def _set_node_geometry(node, volume: Volume) -> None:
    # vtkMRMLVolumeNode ignores a new origin / direction within an absolute 2.2e-16 of the stored one (fuzzy
    # compare), which would keep e.g. 1 instead of 1 - 1.1e-16: writing a far value first makes every set exact.
    node.SetSpacing(_SENTINEL, _SENTINEL, _SENTINEL)
    node.SetOrigin(_SENTINEL, _SENTINEL, _SENTINEL)
    for setter in (node.SetIToRASDirection, node.SetJToRASDirection, node.SetKToRASDirection):
        setter(_SENTINEL, _SENTINEL, _SENTINEL)
    node.SetSpacing(*volume.spacing)
    node.SetOrigin(*(float(v) for v in _FLIP * np.asarray(volume.origin)))
    d = LPS_TO_RAS @ np.asarray(volume.direction, dtype=np.float64)
    node.SetIToRASDirection(*(float(v) for v in d[:, 0]))
    node.SetJToRASDirection(*(float(v) for v in d[:, 1]))
    node.SetKToRASDirection(*(float(v) for v in d[:, 2]))


def _storage_path(node) -> Optional[str]:
    storage = node.GetStorageNode()
    name = storage.GetFileName() if storage is not None else None
    return name or None


def volume_from_node(node) -> Volume:
    """A :class:`Volume` with a copy of the node's voxels and its exact geometry (local coordinates, LPS).

    Scalar volumes come back as float32, labelmap volumes (``vtkMRMLLabelMapVolumeNode``) keep their voxel type.
    ``path`` is the node's file if it was loaded from one. Image data whose extent does not start at 0 (legal in
    VTK; Slicer's ``ShiftImageDataExtentToZeroStart`` exists for it) keeps its voxels where Slicer shows them: the
    Volume's origin is its first voxel's position. Raises :class:`InputError` (naming the node) when there
    is no node, no image data, or more than one component per voxel (vector / RGB volumes).
    """
    if node is None:
        raise InputError("no input volume selected")
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"{_node_label(node)} is a {node.GetClassName()}, not a scalar volume")
    image = node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise InputError(f"{_node_label(node)} has no image data")
    components = image.GetNumberOfScalarComponents()
    if components != 1:
        raise InputError(f"{_node_label(node)} has {components} components per voxel; a single-component "
                         "(scalar) volume is needed")
    dims = image.GetDimensions()  # i, j, k
    if min(dims) < 1:
        raise InputError(f"{_node_label(node)} is empty (size {dims})")
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    array = flat.reshape(dims[2], dims[1], dims[0])  # k, j, i = z, y, x
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        array = array.copy()
    else:
        array = array.astype(np.float32, copy=True)
    spacing, origin, direction = node_geometry(node)
    start = np.asarray(image.GetExtent()[0::2], dtype=np.float64)  # i, j, k of array[0, 0, 0] (usually 0, 0, 0)
    if start.any():  # the node's origin is index (0, 0, 0): the Volume's is its first voxel
        origin = tuple(float(v) for v in np.asarray(origin) + direction @ (np.asarray(spacing) * start))
    try:
        return Volume(array, spacing, origin, direction, _storage_path(node))
    except InputError as exc:  # a zero spacing or a NaN origin set on the node: say which node
        raise InputError(f"{_node_label(node)} has an invalid geometry: {exc}") from None


def vtk_image_from_array(array: np.ndarray, image=None):
    """A ``vtkImageData`` (or ``image``, filled in place) holding a copy of a ``(Z, Y, X)`` array, unit spacing,
    zero origin (Slicer keeps the geometry in the node). bool becomes uint8, float16 float32."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) array, got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    if image is None:
        image = vtk.vtkImageData()
    z, y, x = array.shape
    image.SetDimensions(x, y, z)
    image.SetSpacing(1.0, 1.0, 1.0)
    image.SetOrigin(0.0, 0.0, 0.0)
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=1)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    return image


def _check_single_channel(volume: Volume, what: str) -> None:
    if volume.array.ndim != 3:
        raise InputError(f"{what}: a ({', '.join('CZYX')}) volume with {volume.array.shape[0]} channels cannot be "
                         "one volume node; show one channel per node (e.g. one probability node per class)")


def update_volume_node(scene, volume: Volume, node=None, name: Optional[str] = None, labelmap: bool = False,
                       class_names: Optional[Sequence[str]] = None, label_values: Optional[Sequence[int]] = None,
                       colors: Optional[Sequence[Sequence[float]]] = None):
    """Create (``node=None``) or update a volume node holding a copy of ``volume`` with exactly its geometry.

    ``labelmap``: a ``vtkMRMLLabelMapVolumeNode`` (voxel type kept); otherwise a ``vtkMRMLScalarVolumeNode``
    with the array's voxel type (bool -> uint8, float16 -> float32). ``class_names`` (labelmaps): the display
    colour table names label value ``label_values[i]`` (default ``i``) ``class_names[i]`` (colours from ``colors``,
    default palette of :func:`SemiSupSegLib.colors.class_colors`). Display nodes are created. ``(C, Z, Y, X)``
    volumes are refused: show one channel per node. The node must be of the kind asked for.
    """
    _check_single_channel(volume, name or (node.GetName() if node is not None else "update_volume_node"))
    wanted = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    if node is None:
        if name is None:
            name = _default_name(volume)
        node = scene.AddNewNodeByClass(wanted, scene.GenerateUniqueName(name))
    else:
        if labelmap != bool(node.IsA("vtkMRMLLabelMapVolumeNode")) or not node.IsA("vtkMRMLScalarVolumeNode"):
            raise ValueError(f"{_node_label(node)} is a {node.GetClassName()}; asked for a "
                             f"{'labelmap' if labelmap else 'scalar'} volume")
        if name is not None:
            node.SetName(name)
    was_modifying = node.StartModify()
    try:
        _set_node_geometry(node, volume)
        node.SetAndObserveImageData(vtk_image_from_array(volume.array))
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        if labelmap and class_names is not None:
            table = colors_module.label_color_table(scene, class_names, label_values, colors)
            node.GetDisplayNode().SetAndObserveColorNodeID(table.GetID())
    finally:
        node.EndModify(was_modifying)
    return node


def _default_name(volume: Volume) -> str:
    if volume.path:
        base = Path(volume.path).name
        for suffix in (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".mha", ".mhd", ".h5"):
            if base.lower().endswith(suffix):
                return base[: -len(suffix)]
        return base
    return "volume"


def oriented_image_from_volume(volume: Volume):
    """A ``vtkOrientedImageData`` (segmentation representation) with a copy of ``volume``'s voxels and geometry."""
    _check_single_channel(volume, "oriented_image_from_volume")
    image = slicer.vtkOrientedImageData()
    vtk_image_from_array(volume.array, image)
    image.SetSpacing(*volume.spacing)
    image.SetOrigin(*(float(v) for v in _FLIP * np.asarray(volume.origin)))
    d = LPS_TO_RAS @ np.asarray(volume.direction, dtype=np.float64)
    directions = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            directions.SetElement(r, c, float(d[r, c]))
    image.SetDirectionMatrix(directions)
    return image
