"""Volume node <-> semisupseg Volume on a real MRML scene (slicer-core): exact geometry both ways, oblique and
anisotropic volumes, RAS vs LPS, k,j,i = z,y,x — checked against SimpleITK's index -> physical point and against
Slicer's own file readers and writers on the bundled real scans."""
import os

import numpy as np
import pytest

if not os.environ.get("CI"):
    pytest.importorskip("slicer_core", reason="slicer-core not installed (pip install -e '.[test]')")

import slicer  # noqa: E402
import vtk  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from semisupseg import io  # noqa: E402
from semisupseg.errors import InputError  # noqa: E402
from semisupseg.volume import Volume  # noqa: E402
from SemiSupSegLib import scene as sc  # noqa: E402

F = np.diag([-1.0, -1.0, 1.0])


def rotation(angles) -> np.ndarray:
    """Proper rotation from three Euler angles (radians)."""
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique(volume: Volume, angles=(0.3, -0.5, 1.1), spacing=(0.7, 1.3, 2.9), origin=(-12.25, 40.5, 7.125),
            flip_axis: bool = False) -> Volume:
    """The real voxels of ``volume`` with an oblique direction and anisotropic spacing (a left-handed frame with
    ``flip_axis``)."""
    d = rotation(angles)
    if flip_axis:
        d = d @ np.diag([1.0, -1.0, 1.0])
    return Volume(volume.array, spacing, origin, d)


def matrix(m: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def node_ijk_to_ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return matrix(m)


@pytest.fixture(scope="module")
def hippo():
    return io.read_volume(os.path.join(os.path.dirname(__file__), "..", "data", "hippocampus_003_image.nii.gz"))


def assert_same_volume(a: Volume, b: Volume):
    """Bit-exact: voxels, dtype, spacing, origin, direction."""
    assert a.array.dtype == b.array.dtype
    assert np.array_equal(a.array, b.array)
    assert a.spacing == b.spacing
    assert a.origin == b.origin
    assert np.array_equal(a.direction, b.direction)


# ----------------------------------------------------------------------------------------------------------------------
# round trips
# ----------------------------------------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(angles=st.tuples(*[st.floats(-np.pi, np.pi)] * 3),
       spacing=st.tuples(*[st.floats(0.05, 20.0)] * 3),
       origin=st.tuples(*[st.floats(-500.0, 500.0)] * 3),
       flip=st.booleans())
def test_volume_node_volume_round_trip_is_bit_exact(headless, hippo, angles, spacing, origin, flip):
    v = oblique(hippo, angles, spacing, origin, flip)
    node = sc.update_volume_node(headless.scene, v, name="oblique")
    back = sc.volume_from_node(node)
    assert_same_volume(back, v)
    # the node's composed matrix is the package geometry in RAS: IJKToRAS = F [D diag(s) | o]
    expected = np.eye(4)
    expected[:3, :3] = F @ v.direction @ np.diag(v.spacing)
    expected[:3, 3] = F @ np.asarray(v.origin)
    assert np.allclose(node_ijk_to_ras(node), expected, rtol=0, atol=1e-9 * max(1.0, max(map(abs, origin))))
    assert np.array_equal(sc.ijk_to_ras_matrix(v), expected)


def test_update_stores_values_within_one_ulp_of_the_old_ones(headless, hippo):
    """vtkMRMLVolumeNode keeps its old origin/direction when the new one is within 2.2e-16: not here."""
    node = sc.update_volume_node(headless.scene, hippo)
    nearly = np.diag([-1.0, -1.0, 1.0])
    nearly[0, 0] = -(1.0 - 2.0 ** -53)
    nearly[2, 1] = 1e-17
    v = Volume(hippo.array, (1.0, 1.0, 1.0), (-1.0, -1.0, 1.0 + 2.0 ** -52), nearly)
    sc.update_volume_node(headless.scene, v, node=node)
    assert_same_volume(sc.volume_from_node(node), v)


def test_node_volume_node_round_trip_is_bit_exact(headless, test_data):
    node = headless.load_volume(test_data / "hippocampus_003_image.nii.gz")
    v = sc.volume_from_node(node)
    copy = sc.update_volume_node(headless.scene, v, name="copy")
    assert np.array_equal(node_ijk_to_ras(copy), node_ijk_to_ras(node))
    assert copy.GetSpacing() == node.GetSpacing() and copy.GetOrigin() == node.GetOrigin()
    assert np.array_equal(slicer.util.arrayFromVolume(copy), slicer.util.arrayFromVolume(node))


def test_index_order_and_physical_points_match_simpleitk(headless, hippo):
    """Voxel [z, y, x] of the Volume is node voxel (i, j, k) = (x, y, z), at the physical point SimpleITK gives
    (LPS), which is the node's IJKToRAS point with x, y negated."""
    v = oblique(hippo, spacing=(0.5, 1.0, 3.0))
    node = sc.update_volume_node(headless.scene, v)
    image = node.GetImageData()
    itk = io.to_sitk(v)
    m = node_ijk_to_ras(node)
    rng = np.random.default_rng(0)
    z, y, x = v.shape_zyx
    for k, j, i in zip(rng.integers(0, z, 20), rng.integers(0, y, 20), rng.integers(0, x, 20)):
        assert image.GetScalarComponentAsDouble(int(i), int(j), int(k), 0) == v.array[k, j, i]
        assert itk.GetPixel(int(i), int(j), int(k)) == v.array[k, j, i]
        lps = np.array(itk.TransformIndexToPhysicalPoint((int(i), int(j), int(k))))
        ras = (m @ [i, j, k, 1.0])[:3]
        assert np.allclose(F @ lps, ras, atol=1e-9)
    assert image.GetDimensions() == v.size_xyz


def test_image_data_whose_extent_does_not_start_at_zero_keeps_its_voxels_in_place(headless, hippo):
    """VTK image data may start at index (5, 6, 7) (Slicer has ShiftImageDataExtentToZeroStart for such nodes): the
    Volume's first voxel is where Slicer shows it, and a ROI's voxel box indexes the Volume's array."""
    from SemiSupSegLib.roi import roi_box_zyx

    v = oblique(hippo, spacing=(0.5, 1.0, 3.0))
    node = sc.update_volume_node(headless.scene, v, name="shifted extent")
    start = (5, 6, 7)
    shifted = vtk.vtkImageData()
    shifted.DeepCopy(node.GetImageData())
    shifted.SetExtent(start[0], start[0] + v.size_xyz[0] - 1, start[1], start[1] + v.size_xyz[1] - 1,
                      start[2], start[2] + v.size_xyz[2] - 1)
    node.SetAndObserveImageData(shifted)
    back = sc.volume_from_node(node)
    assert np.array_equal(back.array, v.array)
    first_voxel_ras = (node_ijk_to_ras(node) @ [*start, 1.0])[:3]
    assert np.allclose((sc.ijk_to_ras_matrix(back) @ [0, 0, 0, 1.0])[:3], first_voxel_ras, atol=1e-9)
    # a 1-voxel ROI on the Volume's voxel (z, y, x) = (2, 3, 4) gives that voxel
    centre = (node_ijk_to_ras(node) @ [start[0] + 4, start[1] + 3, start[2] + 2, 1.0])[:3]
    roi = headless.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "one voxel")
    roi.SetXYZ(*centre)
    roi.SetRadiusXYZ(0.1, 0.1, 0.1)
    assert roi_box_zyx(roi, node) == (2, 3, 3, 4, 4, 5)


# ----------------------------------------------------------------------------------------------------------------------
# real files through Slicer's storage nodes vs the package's reader
# ----------------------------------------------------------------------------------------------------------------------

def assert_same_scan(node_volume: Volume, package_volume: Volume, atol=1e-5):
    assert node_volume.shape_zyx == package_volume.shape_zyx
    assert np.array_equal(node_volume.array, package_volume.array.astype(np.float32))
    assert np.allclose(node_volume.spacing, package_volume.spacing, atol=atol)
    assert np.allclose(node_volume.origin, package_volume.origin, atol=atol)
    assert np.allclose(node_volume.direction, package_volume.direction, atol=atol)
    # same physical point for every corner voxel
    a, b = io.to_sitk(node_volume), io.to_sitk(package_volume)
    for idx in np.ndindex(2, 2, 2):
        corner = tuple(int(c * (s - 1)) for c, s in zip(idx, package_volume.size_xyz))
        assert np.allclose(a.TransformIndexToPhysicalPoint(corner), b.TransformIndexToPhysicalPoint(corner),
                           atol=1e-4)


@pytest.mark.parametrize("name", ["hippocampus_003_image.nii.gz", "hippocampus_033_image.nrrd",
                                  "dicom_hippocampus_033"])
def test_real_scans_load_the_same_in_slicer_and_the_package(headless, test_data, name):
    node = headless.load_volume(test_data / name)
    from_slicer = sc.volume_from_node(node)
    assert from_slicer.array.dtype == np.float32
    assert_same_scan(from_slicer, io.read_volume(test_data / name))
    if name != "dicom_hippocampus_033":
        assert from_slicer.path and from_slicer.path.endswith(name)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_oblique_anisotropic_real_scan_written_by_package_read_by_slicer(headless, hippo, tmp_path, suffix):
    v = oblique(hippo)
    path = tmp_path / f"oblique{suffix}"
    io.write_volume(v, path)
    node = headless.load_volume(path)
    # NIfTI keeps the direction as a float32 quaternion: agreement to ~1e-6
    assert_same_scan(sc.volume_from_node(node), io.read_volume(path))
    assert_same_scan(sc.volume_from_node(node), v)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_node_written_by_slicer_reads_back_in_the_package(headless, hippo, tmp_path, suffix):
    v = oblique(hippo, flip_axis=True)
    node = sc.update_volume_node(headless.scene, v, name="to save")
    storage = node.CreateDefaultStorageNode()
    path = tmp_path / f"saved{suffix}"
    storage.SetFileName(str(path))
    assert storage.WriteData(node)
    assert_same_scan(io.read_volume(path), v)


# ----------------------------------------------------------------------------------------------------------------------
# labelmaps, updates, refusals
# ----------------------------------------------------------------------------------------------------------------------

def test_labelmap_node_keeps_its_voxel_type(headless, test_data):
    node = headless.load_volume(test_data / "hippocampus_033_label.nrrd", labelmap=True)
    assert node.IsA("vtkMRMLLabelMapVolumeNode")
    labels = sc.volume_from_node(node)
    expected = io.read_label(test_data / "hippocampus_033_label.nrrd")
    assert labels.array.dtype == np.uint8
    assert np.array_equal(labels.array, expected.array)
    assert labels.same_geometry(expected, 1e-6)


def test_labelmap_node_from_volume_with_class_names(headless, test_data):
    labels = io.read_label(test_data / "hippocampus_033_label.nrrd")
    node = sc.update_volume_node(headless.scene, labels, name="labels", labelmap=True,
                                 class_names=["background", "anterior", "posterior"])
    assert node.IsA("vtkMRMLLabelMapVolumeNode")
    assert_same_volume(sc.volume_from_node(node), labels.with_array(labels.array))
    table = node.GetDisplayNode().GetColorNode()
    assert [table.GetColorName(v) for v in (1, 2)] == ["anterior", "posterior"]
    rgba = [0.0] * 4
    table.GetColor(0, rgba)
    assert rgba[3] == 0.0  # background transparent
    table.GetColor(1, rgba)
    assert rgba[3] == 1.0
    # the same classes reuse the same table
    again = sc.update_volume_node(headless.scene, labels, labelmap=True,
                                  class_names=["background", "anterior", "posterior"])
    assert again.GetDisplayNode().GetColorNodeID() == table.GetID()


def test_update_replaces_voxels_and_geometry_of_the_same_node(headless, hippo):
    node = sc.update_volume_node(headless.scene, hippo, name="first")
    count = headless.scene.GetNumberOfNodes()
    v2 = Volume(np.ascontiguousarray(hippo.array[:10]) * 2, (0.3, 0.4, 5.0), (1.0, 2.0, 3.0), rotation((0.1, 0.2, 0.3)))
    same = sc.update_volume_node(headless.scene, v2, node=node)
    assert same is node and headless.scene.GetNumberOfNodes() == count
    assert_same_volume(sc.volume_from_node(node), v2)
    assert node.GetName() == "first"
    with pytest.raises(ValueError, match="labelmap"):
        sc.update_volume_node(headless.scene, v2, node=node, labelmap=True)


def test_display_node_and_scalar_types(headless, hippo):
    node = sc.update_volume_node(headless.scene, hippo.with_array(hippo.array > 500))
    assert node.GetDisplayNode() is not None and node.GetDisplayNode().IsA("vtkMRMLScalarVolumeDisplayNode")
    assert node.GetImageData().GetScalarType() == vtk.VTK_UNSIGNED_CHAR
    node16 = sc.update_volume_node(headless.scene, hippo.with_array(hippo.array.astype(np.float16)))
    assert node16.GetImageData().GetScalarType() == vtk.VTK_FLOAT
    assert sc.volume_from_node(node16).array.dtype == np.float32


def test_multichannel_volume_is_refused_with_a_clear_message(headless, hippo):
    probs = hippo.with_array(np.stack([hippo.array, hippo.array]))
    with pytest.raises(InputError, match="2 channels.*one channel per node"):
        sc.update_volume_node(headless.scene, probs, name="probabilities")


def test_vector_and_empty_nodes_are_refused_naming_the_node(headless, hippo):
    vector = headless.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "colour scan")
    image = vtk.vtkImageData()
    image.SetDimensions(4, 5, 6)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    vector.SetAndObserveImageData(image)
    with pytest.raises(InputError, match="'colour scan' has 3 components"):
        sc.volume_from_node(vector)
    empty = headless.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "nothing yet")
    with pytest.raises(InputError, match="'nothing yet' has no image data"):
        sc.volume_from_node(empty)
    with pytest.raises(InputError, match="no input volume"):
        sc.volume_from_node(None)
    model = headless.scene.AddNewNodeByClass("vtkMRMLModelNode", "a model")
    with pytest.raises(InputError, match="not a scalar volume"):
        sc.volume_from_node(model)


def test_load_volume_names_the_file_it_cannot_read(headless, tmp_path):
    with pytest.raises(InputError, match="no such file"):
        headless.load_volume(tmp_path / "missing.nii.gz")
    bad = tmp_path / "notes.nrrd"
    bad.write_text("this is not an image\n")
    count = headless.scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="notes.nrrd: Slicer could not read this volume") as error:
        headless.load_volume(bad)
    assert "\n" not in str(error.value)  # one line, not every reader's complaint
    assert headless.scene.GetNumberOfNodes() == count


def test_headless_logics_are_registered_by_name(headless):
    for name in ("Colors", "Volumes", "Segmentations", "SubjectHierarchy", "Markups", "CropVolume", "Tables", "Plots"):
        assert headless.app_logic.GetModuleLogic(name) is headless.logic(name)
        if name != "Colors":
            assert headless.logic(name).GetMRMLScene() is headless.scene
    with pytest.raises(KeyError, match="registered: "):
        headless.logic("Nope")
    assert headless.scene.GetFirstNodeByClass("vtkMRMLColorTableNode") is not None  # default colour nodes
