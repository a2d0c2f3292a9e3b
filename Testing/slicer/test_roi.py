"""Markups ROI -> voxel box (z, y, x, half-open) on a real MRML scene, checked against an independent computation
through SimpleITK's physical point -> continuous index, on a real scan with plain and oblique geometry, rotated
ROIs, parent transforms, clipping and empty boxes; and against Slicer's Crop Volume extent."""
import os

import numpy as np
import pytest

if not os.environ.get("CI"):
    pytest.importorskip("slicer_core", reason="slicer-core not installed (pip install -e '.[test]')")

import slicer  # noqa: E402
import vtk  # noqa: E402

from semisupseg import io  # noqa: E402
from semisupseg.errors import InputError  # noqa: E402
from semisupseg.volume import Volume  # noqa: E402
from SemiSupSegLib import roi as roi_module  # noqa: E402
from SemiSupSegLib import scene as sc  # noqa: E402

F = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture
def scan(test_data):
    return io.read_volume(test_data / "hippocampus_003_image.nii.gz")


def oblique(v: Volume) -> Volume:
    a, b = 0.4, -0.7
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return Volume(v.array, (0.8, 1.1, 2.5), (10.0, -20.0, 5.0), rz @ rx)


def make_roi(headless, center, size, name="tumour ROI", rotation_deg=None):
    roi = headless.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    roi.SetCenter(*center)
    roi.SetSize(*size)
    if rotation_deg is not None:
        t = vtk.vtkTransform()
        t.RotateWXYZ(rotation_deg, 0.3, 0.5, 0.8)
        m = vtk.vtkMatrix4x4()
        m.DeepCopy(t.GetMatrix())
        for r in range(3):  # keep the centre: object-to-node rotation about the ROI centre
            m.SetElement(r, 3, 0.0)
        roi.GetObjectToNodeMatrix().DeepCopy(m)
        roi.SetCenter(*center)
    return roi


def expected_box(volume: Volume, corners_ras: np.ndarray):
    """Independent: RAS corners -> LPS -> SimpleITK continuous index -> voxel centres in the bounding box."""
    itk = io.to_sitk(volume)
    idx = np.array([itk.TransformPhysicalPointToContinuousIndex(tuple(F @ c)) for c in corners_ras])
    lo = np.clip(np.ceil(idx.min(0) - 1e-6), 0, volume.size_xyz).astype(int)
    hi = np.clip(np.floor(idx.max(0) + 1e-6) + 1, 0, volume.size_xyz).astype(int)
    return (lo[2], hi[2], lo[1], hi[1], lo[0], hi[0])


def central_voxel(volume: Volume) -> int:
    """Flat index (into :func:`voxel_centres_ras`) of the voxel at the middle of the volume."""
    return int(np.ravel_multi_index(tuple(s // 2 for s in volume.shape_zyx), volume.shape_zyx))


def voxel_centres_ras(volume: Volume) -> np.ndarray:
    z, y, x = volume.shape_zyx
    k, j, i = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    return (sc.ijk_to_ras_matrix(volume) @ ijk)[:3].T


def test_axis_aligned_roi_is_the_voxels_whose_centres_are_inside(headless, scan):
    node = sc.update_volume_node(headless.scene, scan)
    roi = make_roi(headless, (10.3, 20.6, 15.2), (6.0, 9.0, 11.5))
    box = roi_module.roi_box_zyx(roi, node)
    # brute force over every voxel centre
    centres = voxel_centres_ras(scan)
    inside = np.all(np.abs(centres - [10.3, 20.6, 15.2]) <= np.array([3.0, 4.5, 5.75]) + 1e-9, axis=1)
    mask = inside.reshape(scan.shape_zyx)
    zz, yy, xx = np.nonzero(mask)
    assert box == (zz.min(), zz.max() + 1, yy.min(), yy.max() + 1, xx.min(), xx.max() + 1)
    z0, z1, y0, y1, x0, x1 = box
    assert mask[z0:z1, y0:y1, x0:x1].all() and mask.sum() == (z1 - z0) * (y1 - y0) * (x1 - x0)


@pytest.mark.parametrize("rotation_deg", [None, 35.0])
def test_oblique_volume_and_rotated_roi_match_simpleitk(headless, scan, rotation_deg):
    v = oblique(scan)
    node = sc.update_volume_node(headless.scene, v)
    centre = voxel_centres_ras(v)[central_voxel(v)]
    roi = make_roi(headless, centre, (12.0, 7.0, 9.0), rotation_deg=rotation_deg)
    corners = roi_module.roi_corners_ras(roi)
    box = roi_module.roi_box_zyx(roi, node)
    assert box == expected_box(v, corners)
    # every voxel whose centre is inside the (rotated) ROI is in the box
    to_object = np.linalg.inv(_matrix(roi.GetObjectToWorldMatrix()))
    centres = voxel_centres_ras(v)
    local = (to_object @ np.c_[centres, np.ones(len(centres))].T)[:3].T
    inside = np.all(np.abs(local) <= np.array([6.0, 3.5, 4.5]), axis=1).reshape(v.shape_zyx)
    assert inside.any()
    z0, z1, y0, y1, x0, x1 = box
    assert inside[z0:z1, y0:y1, x0:x1].sum() == inside.sum()


def _matrix(m):
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def test_parent_transforms_of_roi_and_volume_are_applied(headless, scan):
    v = oblique(scan)
    node = sc.update_volume_node(headless.scene, v)
    centre = voxel_centres_ras(v)[central_voxel(v) + 7]
    plain = roi_module.roi_box_zyx(make_roi(headless, centre, (8.0, 8.0, 8.0)), node)
    # the same shift on both: same box
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 25.0)
    shift.SetElement(2, 3, -4.0)
    transform = headless.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    transform.SetMatrixTransformToParent(shift)
    node.SetAndObserveTransformNodeID(transform.GetID())
    roi = make_roi(headless, centre, (8.0, 8.0, 8.0), name="moved too")
    roi.SetAndObserveTransformNodeID(transform.GetID())
    assert roi_module.roi_box_zyx(roi, node) == plain
    # only the volume moved: the ROI given in world coordinates at the shifted place finds the same voxels
    world_roi = make_roi(headless, np.asarray(centre) + [25.0, 0.0, -4.0], (8.0, 8.0, 8.0), name="world")
    assert roi_module.roi_box_zyx(world_roi, node) == plain


def node_ijk_to_ras_linear(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return _matrix(m)[:3, :3]


def test_roi_is_clipped_to_the_volume(headless, scan):
    node = sc.update_volume_node(headless.scene, scan)
    bounds = [0.0] * 6
    node.GetRASBounds(bounds)
    # the volume's RAS corner is voxel (-0.5, -0.5, -0.5) (its direction is RAS-aligned): 10 mm around it cover
    # voxel centres 0..4 on each axis
    assert np.allclose(node_ijk_to_ras_linear(node), np.eye(3))
    roi = make_roi(headless, (bounds[0], bounds[2], bounds[4]), (10.0, 10.0, 10.0))
    assert roi_module.roi_box_zyx(roi, node) == (0, 5, 0, 5, 0, 5)
    z, y, x = scan.shape_zyx
    far_corner = make_roi(headless, (bounds[1], bounds[3], bounds[5]), (4.0, 4.0, 4.0), name="far corner")
    assert roi_module.roi_box_zyx(far_corner, node) == (z - 2, z, y - 2, y, x - 2, x)
    big = make_roi(headless, ((bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2),
                   (1000.0, 1000.0, 1000.0), name="everything")
    assert roi_module.roi_box_zyx(big, node) == (0, z, 0, y, 0, x)


def test_empty_roi_names_the_roi(headless, scan):
    node = sc.update_volume_node(headless.scene, scan)
    far = make_roi(headless, (500.0, 0.0, 0.0), (10.0, 10.0, 10.0), name="far away ROI")
    with pytest.raises(InputError, match="ROI 'far away ROI' does not overlap"):
        roi_module.roi_box_zyx(far, node)
    flat = make_roi(headless, (10.0, 20.0, 15.0), (10.0, 0.0, 10.0), name="flat ROI")
    with pytest.raises(InputError, match="ROI 'flat ROI' has no volume"):
        roi_module.roi_box_zyx(flat, node)
    unplaced = headless.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "new ROI")
    with pytest.raises(InputError, match="ROI 'new ROI' is not placed"):
        roi_module.roi_box_zyx(unplaced, node)
    # between two voxel centres: no voxel centre is covered
    thin = make_roi(headless, (10.5, 20.0, 15.0), (0.5, 10.0, 10.0), name="thin ROI")
    with pytest.raises(InputError, match="ROI 'thin ROI' does not overlap"):
        roi_module.roi_box_zyx(thin, node)


def test_box_contains_crop_volumes_extent(headless, scan):
    """Slicer's Crop Volume keeps the voxels lying wholly inside the ROI; our box (voxel centres inside) contains
    that and is at most one voxel larger on each side."""
    v = oblique(scan)
    node = sc.update_volume_node(headless.scene, v)
    centre = voxel_centres_ras(v)[central_voxel(v)]
    roi = make_roi(headless, centre, (14.0, 11.0, 9.0))
    z0, z1, y0, y1, x0, x1 = roi_module.roi_box_zyx(roi, node)
    extent = [0] * 6
    assert slicer.vtkSlicerCropVolumeLogic.GetVoxelBasedCropOutputExtent(roi, node, extent, True)
    ours = [x0, x1 - 1, y0, y1 - 1, z0, z1 - 1]
    for axis in range(3):
        assert ours[2 * axis] <= extent[2 * axis] <= ours[2 * axis] + 1
        assert ours[2 * axis + 1] - 1 <= extent[2 * axis + 1] <= ours[2 * axis + 1]
