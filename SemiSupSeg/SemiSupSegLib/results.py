"""Results in the scene: the segmentation node, overlay volume nodes (SDM, entropy, probabilities, SGRS regions)
and the slice views' foreground.

* :func:`show_segmentation` — one segment per foreground class of the model card (segment ID and name = class name,
  colour from ``colors`` or the default palette, label value kept as the segment's label value), all sharing one
  binary labelmap made from the label :class:`~semisupseg.volume.Volume` (its exact geometry), reference image
  geometry from the input volume node (the node is put under the input's parent transform first, so that the
  geometry is the input's own grid), optional closed surfaces for 3D. Re-running with the same node replaces its
  segments and keeps the node (and its display node).
* :func:`show_overlay` — a scalar volume node with the colour map of :mod:`SemiSupSegLib.colors` and a fixed
  window: SDM centred on 0 with a symmetric range (blue inside, red outside), entropy heat from 0 to its maximum,
  probabilities on [0, 1] (both see-through where they are near 0), SGRS regions as a labelmap with their legend.
* Every result node is put beside its input: under the same subject-hierarchy parent (headless scenes give data
  nodes no SH item by themselves, so items are created here) and under the input's parent transform.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import slicer
import vtk

from semisupseg.errors import InputError
from semisupseg.volume import Volume

from . import colors as colors_module
from .scene import oriented_image_from_volume, update_volume_node, volume_from_node

__all__ = [
    "LABEL_VALUE_TAG",
    "OVERLAY_KINDS",
    "SEE_THROUGH_BELOW",
    "ensure_sh_item",
    "place_in_hierarchy",
    "place_beside",
    "show_segmentation",
    "labels_from_segmentation",
    "overlay_window",
    "show_overlay",
    "set_foreground",
]

#: segment tag holding the class's label value in the package's label maps
LABEL_VALUE_TAG = "SemiSupSeg.LabelValue"
#: attribute of every overlay node :func:`show_overlay` made (its kind): what :func:`set_foreground` may take away
OVERLAY_KIND_ATTRIBUTE = "SemiSupSeg.Overlay"
OVERLAY_KINDS = ("sdm", "entropy", "probability", "regions")
#: overlays are not drawn (the anatomy shows) below this fraction of their window: near-certain voxels for entropy,
#: near-zero probability (a display threshold: Slicer's slice views honour a colour table's alpha only as on/off)
SEE_THROUGH_BELOW = {"entropy": 0.05, "probability": 0.05}


# ----------------------------------------------------------------------------------------------------------------------
# subject hierarchy and transforms
# ----------------------------------------------------------------------------------------------------------------------

def ensure_sh_item(scene, node) -> int:
    """The subject-hierarchy item of ``node``, created under the scene item when it has none (headless scenes and
    nodes made by scripts have none until the application's plugins run)."""
    sh = scene.GetSubjectHierarchyNode()
    item = sh.GetItemByDataNode(node)
    if not item:
        item = sh.CreateItem(sh.GetSceneItemID(), node)
    return item


def place_in_hierarchy(scene, node, beside) -> int:
    """Put ``node``'s subject-hierarchy item under ``beside``'s parent item (the scene item when ``beside`` is
    None or has no parent); returns ``node``'s item."""
    sh = scene.GetSubjectHierarchyNode()
    item = ensure_sh_item(scene, node)
    parent = sh.GetItemParent(ensure_sh_item(scene, beside)) if beside is not None else sh.GetSceneItemID()
    if parent and sh.GetItemParent(item) != parent:
        sh.SetItemParent(item, parent)
    return item


def place_beside(scene, node, input_node) -> None:
    """Put ``node`` under ``input_node``'s subject-hierarchy parent and parent transform (``input_node`` None: an
    item under the scene, no transform change)."""
    if node is input_node:
        return
    place_in_hierarchy(scene, node, input_node)
    if input_node is not None and node.IsA("vtkMRMLTransformableNode"):
        node.SetAndObserveTransformNodeID(input_node.GetTransformNodeID())


# ----------------------------------------------------------------------------------------------------------------------
# segmentation
# ----------------------------------------------------------------------------------------------------------------------

def _smallest_int_type(values: Sequence[int]) -> type:
    """uint8 / int16 / int32: the smallest holding every value (the package's label maps use the same rule)."""
    lo, hi = min(values), max(values)
    for dt in (np.uint8, np.int16, np.int32):
        if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
            return dt
    raise ValueError(f"label values {lo}..{hi} do not fit in int32")


def _label_array(labels: Volume, label_values: Sequence[int]) -> np.ndarray:
    """The label array as the smallest integer type holding its classes; refuses values that are no class."""
    array = labels.array
    if array.ndim != 3:
        raise InputError(f"labels must be one (Z, Y, X) label map, got shape {array.shape}", labels.path)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.array_equal(array, np.round(array)):
            raise InputError("labels are not whole numbers", labels.path)
    dt = _smallest_int_type(label_values)
    if array.dtype != dt:
        if array.size and (array.min() < np.iinfo(dt).min or array.max() > np.iinfo(dt).max):
            raise InputError(f"label values outside the classes {list(label_values)}", labels.path)
        array = array.astype(dt)
    if dt == np.uint8:
        present = np.flatnonzero(np.bincount(array.ravel(), minlength=256))
    else:
        present = np.unique(array)
    stray = sorted(set(int(v) for v in present) - set(int(v) for v in label_values))
    if stray:
        raise InputError(f"labels contain value(s) {stray} that are none of the classes' label values "
                         f"{list(label_values)}", labels.path)
    return array


def show_segmentation(scene, segmentations_logic, labels: Volume, class_names: Sequence[str],
                      label_values: Sequence[int], colors: Optional[Sequence[Sequence[float]]] = None,
                      reference_node=None, segmentation_node=None, name: Optional[str] = None,
                      closed_surface: bool = False, subject_hierarchy_parent_of=None):
    """Create or update (``segmentation_node``) a ``vtkMRMLSegmentationNode`` from a label map.

    ``labels``: ``(Z, Y, X)`` integer Volume whose voxels are ``label_values`` (class ``i`` = ``label_values[i]``;
    class 0 is the background and gets no segment). ``class_names``: segment names (and IDs), one per class,
    background first; ``colors``: rgb 0..1 (or 0..255) per class or per foreground class, default palette of
    :func:`SemiSupSegLib.colors.class_colors`. ``reference_node``: the input volume node — its geometry becomes the
    segmentation's reference image geometry (else the labels' own), its parent transform the segmentation's,
    and (unless ``subject_hierarchy_parent_of`` names another node) its subject-hierarchy parent the
    segmentation's. ``closed_surface``: also make closed surfaces and show them in 3D.
    ``segmentations_logic`` is the ``Segmentations`` module logic (``slicer.modules.segmentations.logic()``).
    """
    class_names = [str(c) for c in class_names]
    label_values = [int(v) for v in label_values]
    if len(class_names) != len(label_values) or len(class_names) < 2:
        raise ValueError(f"need one label value per class and at least 2 classes, got {class_names} / "
                         f"{label_values}")
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class names must be distinct, got {class_names}")
    rgb = colors_module.resolve_class_colors(len(class_names), colors)
    array = _label_array(labels, label_values)
    image = oriented_image_from_volume(labels.with_array(array))

    if segmentation_node is None:
        segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                    scene.GenerateUniqueName(name or "Segmentation"))
    elif not segmentation_node.IsA("vtkMRMLSegmentationNode"):
        raise ValueError(f"'{segmentation_node.GetName()}' is a {segmentation_node.GetClassName()}, "
                         "not a segmentation node")
    elif name:
        segmentation_node.SetName(name)
    if segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()
    if reference_node is not None:  # first: the reference geometry below is taken relative to this transform
        segmentation_node.SetAndObserveTransformNodeID(reference_node.GetTransformNodeID())

    segmentation = segmentation_node.GetSegmentation()
    was_modifying = segmentation_node.StartModify()
    try:
        segmentation_node.SetSourceRepresentationToBinaryLabelmap()
        if reference_node is not None:
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
        else:
            geometry = slicer.vtkSegmentationConverter.SerializeImageGeometry(image)
            segmentation.SetConversionParameter(
                slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), geometry)
        segmentation.RemoveAllSegments()
        labelmap_name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
        for i in range(1, len(class_names)):
            segment = slicer.vtkSegment()
            segment.SetName(class_names[i])
            segment.SetNameAutoGenerated(False)
            segment.SetColor(*rgb[i])
            segment.SetColorAutoGenerated(False)
            segment.SetLabelValue(label_values[i])
            segment.SetTag(LABEL_VALUE_TAG, str(label_values[i]))
            segment.AddRepresentation(labelmap_name, image)  # one labelmap shared by every segment
            segmentation.AddSegment(segment, class_names[i])
        display = segmentation_node.GetDisplayNode()
        if closed_surface:
            segmentation_node.CreateClosedSurfaceRepresentation()
            display.SetPreferredDisplayRepresentationName3D(
                slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName())
            display.SetVisibility3D(True)
        else:
            segmentation_node.RemoveClosedSurfaceRepresentation()
    finally:
        segmentation_node.EndModify(was_modifying)
    place_in_hierarchy(scene, segmentation_node,
                       subject_hierarchy_parent_of if subject_hierarchy_parent_of is not None else reference_node)
    return segmentation_node


def labels_from_segmentation(scene, segmentations_logic, segmentation_node, reference_node) -> Volume:
    """The segmentation as one label map in ``reference_node``'s geometry, exported by Slicer's
    ``ExportSegmentsToLabelmapNode``: each segment's voxels get its :data:`LABEL_VALUE_TAG` value (segments
    without the tag: their index + 1). Returns a :class:`Volume` (z, y, x; LPS); the temporary nodes are removed."""
    segmentation = segmentation_node.GetSegmentation()
    ids = vtk.vtkStringArray()
    names, values = ["background"], [0]
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        segment = segmentation.GetSegment(segment_id)
        ids.InsertNextValue(segment_id)
        tag = vtk.reference("")
        names.append(segment.GetName())
        values.append(int(str(tag)) if segment.GetTag(LABEL_VALUE_TAG, tag) and str(tag) else i + 1)
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", scene.GenerateUniqueName("export colours"))
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", scene.GenerateUniqueName("export"))
        table.SetTypeToUser()
        table.SetNumberOfColors(max(values) + 1)
        for k in range(max(values) + 1):
            table.SetColor(k, "", 0.0, 0.0, 0.0, 0.0)
        for n, v in zip(names, values):
            table.SetColor(v, n, 1.0, 1.0, 1.0, 1.0)
        if not hasattr(table, "SetColorDefined"):
            table.SetNamesInitialised(True)  # Slicer < 5.7
        ok = segmentations_logic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, reference_node,
            slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, table)
        if not ok:
            raise RuntimeError(f"Slicer could not export segmentation '{segmentation_node.GetName()}'")
        exported = volume_from_node(labelmap)
        return exported.with_array(exported.array.astype(_smallest_int_type(values), copy=False))
    finally:
        # the export nodes and whatever the export made for them (display node, colour table)
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in reversed(added):
            if node.GetID() not in before:
                scene.RemoveNode(node)


# ----------------------------------------------------------------------------------------------------------------------
# overlays
# ----------------------------------------------------------------------------------------------------------------------

def overlay_window(volume: Volume, kind: str) -> Tuple[float, float]:
    """``(low, high)`` of the display window of an overlay: SDM symmetric around 0 (``±max|sdm|``), entropy
    ``[0, max]``, probability ``[0, 1]`` (degenerate maps get a unit range)."""
    if kind == "probability":
        return 0.0, 1.0
    finite = volume.array[np.isfinite(volume.array)] if not np.all(np.isfinite(volume.array)) else volume.array
    if kind == "sdm":
        m = float(np.abs(finite).max()) if finite.size else 0.0
        m = m if m > 0 else 1.0
        return -m, m
    if kind == "entropy":
        m = float(finite.max()) if finite.size else 0.0
        return 0.0, (m if m > 0 else 1.0)
    raise ValueError(f"no window for overlay kind {kind!r}")


def show_overlay(scene, volume: Volume, kind: str, name: str, node=None, reference_node=None,
                 value_range: Optional[Tuple[float, float]] = None):
    """Create or update (``node``) an overlay volume node showing ``volume`` (``(Z, Y, X)``, its exact geometry).

    ``kind``: ``"sdm"`` (diverging blue-white-red, window centred on 0 with a symmetric range, so 0 — the
    predicted boundary — is white, inside blue, outside red; drawn everywhere), ``"entropy"`` (heat, ``[0, max]``)
    and ``"probability"`` (one class's map, ``[0, 1]``), both see-through below 5 % of their window
    (:data:`SEE_THROUGH_BELOW`), ``"regions"`` (SGRS region codes as a labelmap with their legend, region 0
    see-through). ``value_range`` (low, high) replaces the default window of the continuous kinds.
    ``reference_node``: the input volume node; the overlay goes beside it (subject hierarchy, parent transform).
    Returns a ``vtkMRMLScalarVolumeNode`` (``vtkMRMLLabelMapVolumeNode`` for regions).
    """
    if kind not in OVERLAY_KINDS:
        raise ValueError(f"overlay kind must be one of {OVERLAY_KINDS}, got {kind!r}")
    if volume.array.ndim != 3:
        raise InputError(f"overlay '{name}': a (C, Z, Y, X) volume with {volume.array.shape[0]} channels cannot be "
                         "one volume node; show one channel per node (e.g. one probability node per class)")
    labelmap = kind == "regions"
    if labelmap:
        data = volume.with_array(np.asarray(volume.array).astype(np.uint8))
    else:
        data = volume.with_array(np.asarray(volume.array, dtype=np.float32))
    node = update_volume_node(scene, data, node=node, name=name, labelmap=labelmap)
    display = node.GetDisplayNode()
    was_modifying = display.StartModify()
    try:
        display.SetAndObserveColorNodeID(colors_module.color_node(scene, kind).GetID())
        if not labelmap:
            low, high = value_range if value_range is not None else overlay_window(data, kind)
            if not high > low:
                raise ValueError(f"value_range must have high > low, got {value_range}")
            display.AutoWindowLevelOff()
            display.SetWindowLevelMinMax(float(low), float(high))
            if kind in SEE_THROUGH_BELOW:
                display.SetApplyThreshold(1)
                display.SetLowerThreshold(float(low) + SEE_THROUGH_BELOW[kind] * (float(high) - float(low)))
                display.SetUpperThreshold(float(np.finfo(np.float32).max))
            else:
                display.SetApplyThreshold(0)
    finally:
        display.EndModify(was_modifying)
    node.SetAttribute(OVERLAY_KIND_ATTRIBUTE, kind)
    place_beside(scene, node, reference_node)
    return node


def set_foreground(scene, overlay_node, opacity: float) -> int:
    """Show ``overlay_node`` in the foreground of every slice view (all slice composite nodes of the scene) with
    ``opacity`` in [0, 1]. ``None`` takes our overlays away: a view whose foreground is one of our overlay nodes
    (made by :func:`show_overlay`) gets none; a volume the user put in the foreground, and its opacity, stay.
    Returns the number of slice views set."""
    opacity = float(opacity)
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    node_id = overlay_node.GetID() if overlay_node is not None else None
    count = 0
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        if node_id is None:
            shown = scene.GetNodeByID(composite.GetForegroundVolumeID() or "")
            if shown is None or not shown.GetAttribute(OVERLAY_KIND_ATTRIBUTE):
                continue
        composite.SetForegroundVolumeID(node_id)
        composite.SetForegroundOpacity(opacity)
        count += 1
    return count
