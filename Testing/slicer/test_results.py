"""Result nodes on a real MRML scene (slicer-core): the segmentation node from a label map (names, colours, label
values, reference geometry, Slicer's labelmap export equal to the labels, re-run, closed surfaces, subject
hierarchy, parent transform), overlay volume nodes with their colour nodes and windows, the slice views'
foreground."""
import os

import numpy as np
import pytest

if not os.environ.get("CI"):
    pytest.importorskip("slicer_core", reason="slicer-core not installed (pip install -e '.[test]')")

import slicer  # noqa: E402
import vtk  # noqa: E402

from semisupseg import io  # noqa: E402
from semisupseg.errors import InputError  # noqa: E402
from semisupseg.geometry import REGION_NAMES, entropy, signed_distance_map  # noqa: E402
from SemiSupSegLib import colors, results  # noqa: E402
from SemiSupSegLib import scene as sc  # noqa: E402

CLASSES = ["background", "anterior", "posterior"]


@pytest.fixture
def case(headless, test_data):
    """The real hippocampus scan as a node, its real label map as a Volume (values 0, 1, 2)."""
    image = headless.load_volume(test_data / "hippocampus_003_image.nii.gz")
    labels = io.read_label(test_data / "hippocampus_003_label.nii.gz")
    assert set(np.unique(labels.array)) == {0, 1, 2}
    return image, labels


def segments(node):
    s = node.GetSegmentation()
    return [s.GetSegment(s.GetNthSegmentID(i)) for i in range(s.GetNumberOfSegments())]


def slicer_export(headless, segmentation_node, reference_node) -> np.ndarray:
    """Slicer's own export (visible segments -> labelmap node, value = segment index + 1) as a z, y, x array."""
    labelmap = headless.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "exported")
    assert headless.logic("Segmentations").ExportVisibleSegmentsToLabelmapNode(segmentation_node, labelmap,
                                                                               reference_node)
    return sc.volume_from_node(labelmap)


# ----------------------------------------------------------------------------------------------------------------------
# segmentation node
# ----------------------------------------------------------------------------------------------------------------------

def test_segmentation_node_from_labels(headless, case):
    image, labels = case
    node = results.show_segmentation(headless.scene, headless.logic("Segmentations"), labels, CLASSES, [0, 1, 2],
                                     reference_node=image, name="hippocampus")
    assert node.IsA("vtkMRMLSegmentationNode") and node.GetName() == "hippocampus"
    segs = segments(node)
    assert [s.GetName() for s in segs] == ["anterior", "posterior"]
    assert [node.GetSegmentation().GetNthSegmentID(i) for i in range(2)] == ["anterior", "posterior"]
    assert [s.GetLabelValue() for s in segs] == [1, 2]
    assert [s.GetColor() for s in segs] == colors.class_colors(2)
    # Slicer's export of the segmentation in the input's geometry is the label map, voxel for voxel
    exported = slicer_export(headless, node, image)
    assert np.array_equal(exported.array, labels.array)
    assert exported.same_geometry(labels, 1e-6)
    ours = results.labels_from_segmentation(headless.scene, headless.logic("Segmentations"), node, image)
    assert ours.array.dtype == np.uint8 and np.array_equal(ours.array, labels.array)
    assert ours.same_geometry(sc.volume_from_node(image), 0)
    # reference geometry is the input's
    expected = slicer.vtkSegmentationConverter.SerializeImageGeometry(_oriented_geometry_of(image))
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    assert node.GetSegmentation().GetConversionParameter(name) == expected
    assert node.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()) == image.GetID()
    # shown in slice views
    display = node.GetDisplayNode()
    assert display is not None and display.GetVisibility() and display.GetVisibility2D()


def _oriented_geometry_of(volume_node):
    geometry = slicer.vtkOrientedImageData()
    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    geometry.SetImageToWorldMatrix(m)
    geometry.SetExtent(volume_node.GetImageData().GetExtent())
    return geometry


def test_non_consecutive_label_values_and_given_colours(headless, case):
    image, labels = case
    values = [0, 7, 3]
    relabelled = labels.with_array(np.choose(labels.array, values).astype(np.uint8))
    rgb = [(0, 0, 0), (255, 0, 0), (0, 128, 255)]
    node = results.show_segmentation(headless.scene, headless.logic("Segmentations"), relabelled, CLASSES, values,
                                     colors=rgb, reference_node=image)
    segs = segments(node)
    assert [s.GetLabelValue() for s in segs] == [7, 3]
    assert np.allclose(segs[0].GetColor(), (1.0, 0.0, 0.0)) and np.allclose(segs[1].GetColor(), (0.0, 128 / 255, 1.0))
    ours = results.labels_from_segmentation(headless.scene, headless.logic("Segmentations"), node, image)
    assert np.array_equal(ours.array, relabelled.array)
    # the export leaves no node behind
    count = headless.scene.GetNumberOfNodes()
    results.labels_from_segmentation(headless.scene, headless.logic("Segmentations"), node, image)
    assert headless.scene.GetNumberOfNodes() == count


def test_rerun_updates_the_same_node(headless, case):
    image, labels = case
    logic = headless.logic("Segmentations")
    node = results.show_segmentation(headless.scene, logic, labels, CLASSES, [0, 1, 2], reference_node=image)
    count = headless.scene.GetNumberOfNodes()
    only_posterior = labels.with_array(np.where(labels.array == 2, 2, 0).astype(np.uint8))
    again = results.show_segmentation(headless.scene, logic, only_posterior, CLASSES, [0, 1, 2],
                                      reference_node=image, segmentation_node=node)
    assert again is node and headless.scene.GetNumberOfNodes() == count
    assert headless.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1
    assert [s.GetName() for s in segments(node)] == ["anterior", "posterior"]  # empty class keeps its segment
    assert np.array_equal(slicer_export(headless, node, image).array, only_posterior.array)


def test_closed_surfaces_for_3d(headless, case):
    image, labels = case
    node = results.show_segmentation(headless.scene, headless.logic("Segmentations"), labels, CLASSES, [0, 1, 2],
                                     reference_node=image, closed_surface=True)
    surface_name = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
    assert node.GetSegmentation().ContainsRepresentation(surface_name)
    for segment in segments(node):
        polydata = segment.GetRepresentation(surface_name)
        assert polydata is not None and polydata.GetNumberOfPoints() > 100
        # the surface lies where the segment is: its bounds are inside the image's RAS bounds
        bounds, image_bounds = polydata.GetBounds(), [0.0] * 6
        image.GetRASBounds(image_bounds)
        assert all(bounds[2 * a] >= image_bounds[2 * a] - 1 and bounds[2 * a + 1] <= image_bounds[2 * a + 1] + 1
                   for a in range(3))
    assert node.GetDisplayNode().GetVisibility3D()
    # a re-run without 3D drops the surfaces
    results.show_segmentation(headless.scene, headless.logic("Segmentations"), labels, CLASSES, [0, 1, 2],
                              reference_node=image, segmentation_node=node)
    assert not node.GetSegmentation().ContainsRepresentation(surface_name)


def test_results_go_under_the_inputs_parent_and_transform(headless, case):
    image, labels = case
    sh = headless.scene.GetSubjectHierarchyNode()
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "patient 003")
    study = sh.CreateStudyItem(patient, "MRI")
    sh.CreateItem(study, image)
    transform = headless.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    rotation = vtk.vtkTransform()  # not the identity: a transform applied twice shows
    rotation.Translate(12.0, -7.0, 20.0)
    rotation.RotateWXYZ(30.0, 0.3, 0.5, 1.0)
    transform.SetMatrixTransformToParent(rotation.GetMatrix())
    image.SetAndObserveTransformNodeID(transform.GetID())
    node = results.show_segmentation(headless.scene, headless.logic("Segmentations"), labels, CLASSES, [0, 1, 2],
                                     reference_node=image)
    assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study
    assert node.GetTransformNodeID() == transform.GetID()
    # the reference grid is the input's own (both under the same transform): not the transform applied once more
    grid = slicer.vtkOrientedImageData()
    assert slicer.vtkSegmentationConverter.DeserializeImageGeometry(node.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()), grid)
    grid_to_local, ijk_to_ras = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    grid.GetImageToWorldMatrix(grid_to_local)
    image.GetIJKToRASMatrix(ijk_to_ras)
    assert np.allclose([[grid_to_local.GetElement(r, c) for c in range(4)] for r in range(4)],
                       [[ijk_to_ras.GetElement(r, c) for c in range(4)] for r in range(4)], atol=1e-6)
    exported = headless.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "on its own grid")
    assert headless.logic("Segmentations").ExportVisibleSegmentsToLabelmapNode(node, exported)  # no reference
    assert np.array_equal(np.bincount(sc.volume_from_node(exported).array.ravel())[1:],  # nothing lost on the grid
                          np.bincount(labels.array.ravel())[1:])
    sdm = labels.with_array(signed_distance_map(labels.array > 0))
    overlay = results.show_overlay(headless.scene, sdm, "sdm", "SDM", reference_node=image)
    assert sh.GetItemParent(sh.GetItemByDataNode(overlay)) == study
    assert overlay.GetTransformNodeID() == transform.GetID()
    # headless, a node without an item gets one under the scene
    loose = headless.load_volume(os.path.join(os.path.dirname(__file__), "..", "data",
                                              "hippocampus_033_image.nrrd"))
    assert not sh.GetItemByDataNode(loose)
    other = results.show_segmentation(headless.scene, headless.logic("Segmentations"), labels, CLASSES, [0, 1, 2],
                                      reference_node=image, subject_hierarchy_parent_of=loose)
    assert sh.GetItemParent(sh.GetItemByDataNode(other)) == sh.GetSceneItemID()
    assert sh.GetItemByDataNode(loose)


def test_labels_that_are_no_class_are_refused(headless, case):
    image, labels = case
    with pytest.raises(InputError, match=r"value\(s\) \[2\]"):
        results.show_segmentation(headless.scene, headless.logic("Segmentations"), labels, ["bg", "a"], [0, 1],
                                  reference_node=image)
    with pytest.raises(InputError, match="not whole numbers"):
        results.show_segmentation(headless.scene, headless.logic("Segmentations"),
                                  labels.with_array(labels.array + 0.5), CLASSES, [0, 1, 2])
    with pytest.raises(ValueError, match="one label value per class"):
        results.show_segmentation(headless.scene, headless.logic("Segmentations"), labels, CLASSES, [0, 1])


def test_segmentation_without_reference_node_uses_the_labels_geometry(headless, case):
    _, labels = case
    node = results.show_segmentation(headless.scene, headless.logic("Segmentations"), labels, CLASSES, [0, 1, 2])
    reference = sc.update_volume_node(headless.scene, labels.with_array(labels.array.astype(np.float32)))
    assert np.array_equal(slicer_export(headless, node, reference).array, labels.array)
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    assert node.GetSegmentation().GetConversionParameter(name) == \
        slicer.vtkSegmentationConverter.SerializeImageGeometry(_oriented_geometry_of(reference))


# ----------------------------------------------------------------------------------------------------------------------
# overlays
# ----------------------------------------------------------------------------------------------------------------------

def table_rgba(table, index):
    rgba = [0.0] * 4
    table.GetColor(index, rgba)
    return np.array(rgba)


def test_sdm_overlay_window_centred_on_zero_with_diverging_colours(headless, case):
    image, labels = case
    sdm = labels.with_array(signed_distance_map(labels.array > 0) * 0.8)  # not symmetric: max|sdm| = 0.8
    node = results.show_overlay(headless.scene, sdm, "sdm", "SDM", reference_node=image)
    assert node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode")
    assert sc.volume_from_node(node).same_geometry(sc.volume_from_node(image), 0)
    assert np.array_equal(sc.volume_from_node(node).array, sdm.array)
    display = node.GetDisplayNode()
    assert not display.GetAutoWindowLevel() and not display.GetApplyThreshold()  # drawn everywhere
    assert display.GetLevel() == 0.0
    assert display.GetWindowLevelMin() == pytest.approx(-0.8) and display.GetWindowLevelMax() == pytest.approx(0.8)
    table = display.GetColorNode()
    assert table.GetAttribute(colors.ATTRIBUTE) == "sdm" and table.GetNumberOfColors() == 256
    low, mid, high = table_rgba(table, 0), table_rgba(table, 128), table_rgba(table, 255)
    assert low[2] > low[0] + 0.3  # inside (negative): blue
    assert high[0] > high[2] + 0.3  # outside (positive): red
    assert np.all(mid[:3] > 0.95)  # boundary (0): white
    assert low[3] == mid[3] == high[3] == 1.0
    # one colour node per kind and scene, reused
    again = results.show_overlay(headless.scene, sdm, "sdm", "SDM 2")
    assert again.GetDisplayNode().GetColorNodeID() == table.GetID()


def test_entropy_probability_and_regions_overlays(headless, case):
    image, labels = case
    sdm = signed_distance_map(labels.array > 0)
    p1 = 1.0 / (1.0 + np.exp(8.0 * sdm))  # a probability map from the real label: 0.5 on the boundary
    probs = np.stack([1.0 - p1, p1]).astype(np.float32)
    h = entropy(probs, axis=0)
    ent = results.show_overlay(headless.scene, labels.with_array(h), "entropy", "entropy", reference_node=image)
    d = ent.GetDisplayNode()
    assert d.GetWindowLevelMin() == pytest.approx(0.0) and d.GetWindowLevelMax() == pytest.approx(float(h.max()))
    heat = d.GetColorNode()
    assert heat.GetAttribute(colors.ATTRIBUTE) == "entropy"
    # near-certain voxels are see-through (display threshold at 5 % of the window)
    assert d.GetApplyThreshold() and d.GetLowerThreshold() == pytest.approx(0.05 * float(h.max()))
    assert table_rgba(heat, 0)[:3].sum() < 0.1 and table_rgba(heat, 255)[:3].sum() > 2.9  # black ... white
    prob = results.show_overlay(headless.scene, labels.with_array(probs[1]), "probability", "p(hippocampus)")
    d = prob.GetDisplayNode()
    assert (d.GetWindowLevelMin(), d.GetWindowLevelMax()) == pytest.approx((0.0, 1.0))
    assert d.GetApplyThreshold() and d.GetLowerThreshold() == pytest.approx(0.05)
    assert d.GetColorNode().GetAttribute(colors.ATTRIBUTE) == "probability"
    codes = np.where(h > 0.3, 1, np.where(labels.array > 0, 2, 0)).astype(np.uint8)
    regions = results.show_overlay(headless.scene, labels.with_array(codes), "regions", "SGRS regions")
    assert regions.IsA("vtkMRMLLabelMapVolumeNode")
    table = regions.GetDisplayNode().GetColorNode()
    assert [table.GetColorName(v) for v in sorted(REGION_NAMES)] == [REGION_NAMES[v] for v in sorted(REGION_NAMES)]
    assert table_rgba(table, 0)[3] == 0.0
    assert np.array_equal(sc.volume_from_node(regions).array, codes)
    # updating an overlay keeps the node
    same = results.show_overlay(headless.scene, labels.with_array(h * 0.5), "entropy", "entropy", node=ent)
    assert same is ent and ent.GetDisplayNode().GetWindowLevelMax() == pytest.approx(float(h.max()) * 0.5)
    with pytest.raises(InputError, match="one probability node per class"):
        results.show_overlay(headless.scene, labels.with_array(probs), "probability", "all classes")
    with pytest.raises(ValueError, match="overlay kind"):
        results.show_overlay(headless.scene, labels.with_array(h), "heat", "x")


def test_set_foreground_on_every_slice_view(headless, case):
    image, labels = case
    logics = []
    for name in ("Red", "Yellow", "Green"):
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(headless.app_logic)
        logic.SetMRMLScene(headless.scene)
        logic.AddSliceNode(name)
        logics.append(logic)
    overlay = results.show_overlay(headless.scene, labels.with_array(signed_distance_map(labels.array > 0)), "sdm",
                                   "SDM", reference_node=image)
    assert results.set_foreground(headless.scene, overlay, 0.4) == 3
    for logic in logics:
        composite = logic.GetSliceCompositeNode()
        assert composite.GetForegroundVolumeID() == overlay.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.4)
    # None takes our overlay away, and only where it is shown: a volume of the user's in the foreground stays
    mine = headless.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "user's own foreground")
    logics[1].GetSliceCompositeNode().SetForegroundVolumeID(mine.GetID())
    logics[1].GetSliceCompositeNode().SetForegroundOpacity(0.3)
    assert results.set_foreground(headless.scene, None, 0.0) == 2
    assert [logic.GetSliceCompositeNode().GetForegroundVolumeID() for logic in logics] == [None, mine.GetID(), None]
    assert logics[1].GetSliceCompositeNode().GetForegroundOpacity() == pytest.approx(0.3)
    assert results.set_foreground(headless.scene, None, 0.0) == 0  # nothing of ours left to take away
    with pytest.raises(ValueError, match="opacity"):
        results.set_foreground(headless.scene, overlay, 1.5)
    for logic in logics:
        logic.SetMRMLScene(None)
