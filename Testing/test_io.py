"""semisupseg.io: readers keep geometry, writers are exact/atomic/no-overwrite, bad input gives named errors."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from semisupseg import io
from semisupseg.errors import InputError, OutputExistsError
from semisupseg.io import (
    Volume,
    read_image,
    read_image_or_h5,
    read_la_h5,
    read_label,
    read_label_or_h5,
    read_volume,
    write_segmentation,
    write_volume,
)

TEST_DATA = Path(__file__).resolve().parent / "data"
H003_IMG = TEST_DATA / "hippocampus_003_image.nii.gz"
H003_LAB = TEST_DATA / "hippocampus_003_label.nii.gz"
H033_IMG = TEST_DATA / "hippocampus_033_image.nrrd"
H033_LAB = TEST_DATA / "hippocampus_033_label.nrrd"
DICOM = TEST_DATA / "dicom_hippocampus_033"
DICOM_REF = TEST_DATA / "hippocampus_033_z13-24.nii.gz"
LA_H5 = TEST_DATA / "la_crop" / "mri_norm2.h5"


def _sitk(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


# --------------------------------------------------------------------------------------------------------------
# reading real files
# --------------------------------------------------------------------------------------------------------------
def test_read_nifti_keeps_geometry_and_zyx_order():
    ref = _sitk(H003_IMG)
    vol = read_volume(H003_IMG)
    assert vol.array.dtype == np.float32
    assert vol.size_xyz == ref.GetSize() == (34, 52, 35)
    assert vol.shape_zyx == (35, 52, 34)
    assert vol.spacing == pytest.approx(ref.GetSpacing())
    assert vol.origin == pytest.approx(ref.GetOrigin())
    np.testing.assert_allclose(vol.direction, np.diag([-1.0, -1.0, 1.0]))
    # voxel (x=5, y=7, z=9) of the ITK image is array[9, 7, 5]
    assert vol.array[9, 7, 5] == pytest.approx(ref.GetPixel(5, 7, 9))
    assert vol.path == str(H003_IMG)


def test_float_label_file_becomes_integer_with_same_values():
    raw = sitk.GetArrayFromImage(_sitk(H003_LAB))
    assert raw.dtype == np.float32  # as released
    lab = read_label(H003_LAB, read_image(H003_IMG), num_classes=3)
    assert lab.array.dtype == np.uint8
    assert set(np.unique(lab.array)) == {0, 1, 2}
    np.testing.assert_array_equal(lab.array, raw.astype(np.uint8))


def test_uint8_nrrd_image_read_as_float32_for_the_network():
    raw = read_volume(H033_IMG)
    assert raw.array.dtype == np.uint8
    img = read_image(H033_IMG)
    assert img.array.dtype == np.float32
    np.testing.assert_array_equal(img.array, raw.array.astype(np.float32))
    lab = read_label(H033_LAB, img, label_values=[0, 1, 2])
    assert lab.same_geometry(img)


def test_dicom_series_folder_matches_reference_nifti():
    dcm = read_volume(DICOM)
    ref = read_volume(DICOM_REF)
    assert dcm.shape_zyx == (12, 48, 33)
    assert dcm.same_geometry(ref, tol=1e-5)
    np.testing.assert_array_equal(dcm.array, ref.array)
    np.testing.assert_allclose(dcm.direction, np.diag([-1.0, -1.0, 1.0]), atol=1e-6)


def test_dicom_folder_with_two_series(tmp_path):
    import locale

    encoding_before = locale.getpreferredencoding(False).upper().replace("-", "")
    folder = tmp_path / "two"
    shutil.copytree(DICOM, folder)
    with io._keep_locale():  # GDCM's writer switches the process to the C locale
        _rewrite_series_uid(folder, ("slice_009.dcm", "slice_010.dcm", "slice_011.dcm"))
    with pytest.raises(InputError, match="holds 2 DICOM series") as err:
        read_volume(folder)
    assert str(folder) in str(err.value)
    assert locale.getpreferredencoding(False).upper().replace("-", "") == encoding_before
    first = read_volume(folder, series_id="1.2.826.0.1.3680043.2.1125.1.20261122.1")
    second = read_volume(folder, series_id="1.2.826.0.1.3680043.2.1125.1.99")
    assert first.shape_zyx == (9, 48, 33) and second.shape_zyx == (3, 48, 33)
    np.testing.assert_array_equal(second.array, read_volume(DICOM_REF).array[9:])
    assert locale.getpreferredencoding(False).upper().replace("-", "") == encoding_before


def _rewrite_series_uid(folder, names):
    for name in names:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(folder / name))
        reader.LoadPrivateTagsOn()
        img = reader.Execute()
        for key in reader.GetMetaDataKeys():
            img.SetMetaData(key, reader.GetMetaData(key))
        img.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1.99")
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / name))
        writer.Execute(img)


def test_dicom_errors(tmp_path):
    with pytest.raises(InputError, match="no DICOM series") as err:
        read_volume(tmp_path)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(InputError, match="not found"):
        read_volume(DICOM, series_id="1.2.3.4")


def test_la_h5_transposed_to_zyx_with_spacing_parameter():
    with h5py.File(LA_H5, "r") as f:
        raw_img, raw_lab = f["image"][()], f["label"][()]
    assert raw_img.shape == (40, 36, 16)  # x, y, z as stored
    img, lab = read_la_h5(LA_H5)
    assert img.shape_zyx == (16, 36, 40)
    assert img.spacing == (0.625, 0.625, 0.625)
    assert img.origin == (0.0, 0.0, 0.0)
    assert img.array.dtype == np.float32 and lab.array.dtype == np.uint8
    np.testing.assert_array_equal(img.array, raw_img.transpose(2, 1, 0))
    assert img.array[3, 5, 7] == raw_img[7, 5, 3]
    np.testing.assert_array_equal(lab.array, raw_lab.transpose(2, 1, 0))
    assert set(np.unique(lab.array)) == {0, 1}
    img2, _ = read_la_h5(LA_H5, spacing=(1.0, 1.0, 2.5))
    assert img2.spacing == (1.0, 1.0, 2.5)
    assert read_image_or_h5(LA_H5, h5_spacing=(2, 2, 2)).spacing == (2.0, 2.0, 2.0)
    assert read_label_or_h5(LA_H5, img, num_classes=2).same_geometry(img)


def test_la_h5_without_label_never_reads_the_label(tmp_path):
    bad = tmp_path / "mri_norm2.h5"
    with h5py.File(LA_H5, "r") as src, h5py.File(bad, "w") as dst:
        dst["image"] = src["image"][()]
        dst["label"] = np.zeros((3, 3, 3), np.uint8)  # wrong shape: reading it would fail
    img, lab = read_la_h5(bad, with_label=False)
    assert lab is None and img.shape_zyx == (16, 36, 40)
    with pytest.raises(InputError, match="does not match 'image' shape") as err:
        read_la_h5(bad)
    assert str(bad) in str(err.value)


def test_la_h5_errors(tmp_path):
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(LA_H5.read_bytes()[:2000])
    with pytest.raises(InputError, match="HDF5") as err:
        read_la_h5(trunc)
    assert str(trunc) in str(err.value)
    nokey = tmp_path / "nokey.h5"
    with h5py.File(nokey, "w") as f:
        f["data"] = np.zeros((4, 4, 4), np.float32)
    with pytest.raises(InputError, match="no 'image' dataset"):
        read_la_h5(nokey)
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f["image"] = np.zeros((0, 4, 4), np.float32)
    with pytest.raises(InputError, match="empty"):
        read_la_h5(empty)
    with pytest.raises(InputError, match="read_la_h5"):
        read_volume(LA_H5)  # an .h5 is not a SimpleITK volume: the message says what to use
    flat = tmp_path / "flat.h5"
    with h5py.File(flat, "w") as f:
        f["image"] = np.zeros((4, 4), np.float32)
    with pytest.raises(InputError, match="3D"):
        read_la_h5(flat)
    nan = tmp_path / "nan.h5"
    with h5py.File(nan, "w") as f:
        a = np.zeros((4, 4, 4), np.float32)
        a[1, 2, 3] = np.nan
        f["image"] = a
    with pytest.raises(InputError, match="non-finite"):
        read_la_h5(nan)


def test_la_h5_full_resolution_matches_the_125mm_nifti(la_dir):
    """Orientation check on real data: 2x2x2 block means of the release h5 equal ../shared/data/LA/imagesTr."""
    cid = sorted(p.name for p in (la_dir / "h5").iterdir())[0]
    img, lab = read_la_h5(la_dir / "h5" / cid / "mri_norm2.h5")
    nii = read_image(la_dir / "imagesTr" / f"{cid}.nii.gz")
    z, y, x = (s // 2 * 2 for s in img.shape_zyx)
    blocks = img.array[:z, :y, :x].reshape(z // 2, 2, y // 2, 2, x // 2, 2).mean(axis=(1, 3, 5))
    assert blocks.shape == nii.shape_zyx
    np.testing.assert_allclose(blocks, nii.array, atol=1e-5)
    lab_blocks = lab.array[:z, :y, :x].reshape(z // 2, 2, y // 2, 2, x // 2, 2).mean(axis=(1, 3, 5)) >= 0.5
    nii_lab = read_label(la_dir / "labelsTr" / f"{cid}.nii.gz", nii, num_classes=2)
    np.testing.assert_array_equal(lab_blocks, nii_lab.array.astype(bool))


def test_hippocampus_release_mixed_types(hippocampus_dir):
    """Every 8th case plus the float-label cases: images float32 for the network, labels uint8 in {0,1,2}."""
    names = sorted(p.name for p in (hippocampus_dir / "labelsTr").glob("*.nii.gz"))
    pick = set(names[::8]) | {"hippocampus_003.nii.gz", "hippocampus_243.nii.gz", "hippocampus_033.nii.gz"}
    kinds = set()
    for name in sorted(pick):
        raw = read_volume(hippocampus_dir / "imagesTr" / name)
        kinds.add(str(raw.array.dtype))
        img = read_image(hippocampus_dir / "imagesTr" / name)
        lab = read_label(hippocampus_dir / "labelsTr" / name, img, label_values=[0, 1, 2])
        assert img.array.dtype == np.float32 and lab.array.dtype == np.uint8
        assert lab.array.max() == 2
    assert kinds == {"float32", "uint8"}


# --------------------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------------------
def _oblique_volume() -> Volume:
    arr = read_image(H003_IMG).array
    theta = 0.3
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1.0]])
    return Volume(arr, (0.7, 0.8, 1.9), (-12.5, 3.25, 40.0), rot @ np.diag([1.0, -1.0, 1.0]))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".seg.nrrd"])
def test_write_round_trip_exact_geometry(tmp_path, suffix):
    vol = _oblique_volume()
    out = write_volume(vol, tmp_path / f"out{suffix}")
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.spacing, vol.spacing, rtol=1e-6)
    np.testing.assert_allclose(back.origin, vol.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-5)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert out.stat().st_mode & 0o777 == io._FILE_MODE  # not mkstemp's 0600


def test_write_label_types_and_multichannel(tmp_path):
    ref = read_volume(H003_IMG)
    lab = ref.with_array(np.arange(ref.array.size).reshape(ref.shape_zyx) % 3)  # int64
    back = read_volume(write_volume(lab, tmp_path / "lab.nii.gz"))
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, lab.array)
    mask = read_volume(write_volume(ref.with_array(ref.array > 100), tmp_path / "mask.nrrd"))
    assert mask.array.dtype == np.uint8 and mask.array.max() == 1
    prob = ref.with_array(np.stack([ref.array, -ref.array, ref.array * 2]).astype(np.float32))
    out = write_volume(prob, tmp_path / "prob.nrrd")
    with pytest.raises(InputError, match="multi-component"):
        read_volume(out)
    back = read_volume(out, allow_channels=True)
    assert back.array.shape == (3,) + ref.shape_zyx
    np.testing.assert_array_equal(back.array, prob.array)
    assert back.same_geometry(ref)


def test_write_refuses_to_overwrite(tmp_path):
    vol = read_volume(H003_IMG)
    target = tmp_path / "seg.nii.gz"
    target.write_bytes(b"precious")
    with pytest.raises(OutputExistsError) as err:
        write_volume(vol, target)
    assert str(target) in str(err.value)
    assert "pass --overwrite to replace it" in str(err.value) and "overwrite=True" not in str(err.value)
    assert isinstance(err.value, FileExistsError) and isinstance(err.value, InputError)
    assert target.read_bytes() == b"precious"
    write_volume(vol, target, overwrite=True)
    np.testing.assert_array_equal(read_volume(target).array, vol.array)


def test_mhd_data_file_refusal_names_the_cli_option(tmp_path):
    """The .mhd header is new but its .zraw data file exists: the refusal speaks CLI, not Python."""
    vol = read_volume(H003_IMG)
    (tmp_path / "seg.zraw").write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="pass --overwrite to replace it") as err:
        write_volume(vol, tmp_path / "seg.mhd")
    assert "overwrite=True" not in str(err.value)
    assert (tmp_path / "seg.zraw").read_bytes() == b"precious"


def test_write_is_atomic_on_crash(tmp_path, monkeypatch):
    vol = read_volume(H003_IMG)
    target = tmp_path / "seg.nii.gz"
    write_volume(vol, target)
    before = target.read_bytes()

    def crash(src, dst):
        raise OSError("disk died")

    monkeypatch.setattr(io.os, "replace", crash)
    with pytest.raises(OSError, match="disk died"):
        write_volume(vol.with_array(vol.array * 0), target, overwrite=True)
    with pytest.raises(OSError):
        write_volume(vol, tmp_path / "new.nrrd")
    monkeypatch.undo()
    assert target.read_bytes() == before  # old output intact
    assert not (tmp_path / "new.nrrd").exists()  # no half-written new output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.nii.gz"]  # temp files cleaned


def test_write_unsupported_suffix(tmp_path):
    with pytest.raises(InputError, match="cannot write this format"):
        write_volume(read_volume(H003_IMG), tmp_path / "x.png")


def test_write_segmentation_slicer_metadata(tmp_path):
    lab = read_label(H003_LAB)
    out = write_segmentation(lab, tmp_path / "seg.seg.nrrd", ["background", "anterior", "posterior"])
    img = sitk.ReadImage(str(out))
    assert img.GetMetaData("Segment0_Name") == "anterior"
    assert img.GetMetaData("Segment0_LabelValue") == "1"
    assert img.GetMetaData("Segment1_Name") == "posterior"
    assert img.GetMetaData("Segment1_LabelValue") == "2"
    assert not img.HasMetaDataKey("Segment2_Name")
    np.testing.assert_array_equal(read_volume(out).array, lab.array)
    with pytest.raises(OutputExistsError, match="pass --overwrite to replace it") as err:
        write_segmentation(lab, out, ["background", "a", "p"])
    assert "overwrite=True" not in str(err.value)
    # a class absent from this case keeps its name/value pairing; values without a class are refused
    only2 = lab.with_array(np.where(lab.array == 1, 0, lab.array))
    img2 = sitk.ReadImage(str(write_segmentation(only2, tmp_path / "b.seg.nrrd", ["bg", "anterior", "posterior"])))
    assert img2.GetMetaData("Segment1_Name") == "posterior" and img2.GetMetaData("Segment1_LabelValue") == "2"
    mapped = write_segmentation(lab.with_array(np.where(lab.array == 2, 255, lab.array)), tmp_path / "c.seg.nrrd",
                                ["bg", "a", "p"], label_values=[0, 1, 255])
    assert sitk.ReadImage(str(mapped)).GetMetaData("Segment1_LabelValue") == "255"
    with pytest.raises(InputError, match="have no segment"):
        write_segmentation(lab, tmp_path / "d.seg.nrrd", ["bg", "a"])


# --------------------------------------------------------------------------------------------------------------
# bad input -> InputError naming the file
# --------------------------------------------------------------------------------------------------------------
def _expect(path, match, fn=read_volume, **kw):
    with pytest.raises(InputError, match=match) as err:
        fn(path, **kw)
    assert str(path) in str(err.value), str(err.value)
    return err.value


def test_missing_empty_truncated_and_garbage_files(tmp_path):
    _expect(tmp_path / "nope.nii.gz", "not found")
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    _expect(empty, "empty file")
    trunc = tmp_path / "trunc.nii.gz"
    trunc.write_bytes(H003_IMG.read_bytes()[: H003_IMG.stat().st_size // 2])
    _expect(trunc, "truncated")
    gz_garbage = tmp_path / "garbage.nii.gz"
    gz_garbage.write_bytes(os.urandom(3000))
    _expect(gz_garbage, "corrupt")
    nrrd_trunc = tmp_path / "trunc.nrrd"
    nrrd_trunc.write_bytes(H033_IMG.read_bytes()[:20000])
    _expect(nrrd_trunc, "cannot read")
    garbage = tmp_path / "garbage.nrrd"
    garbage.write_bytes(os.urandom(3000))
    _expect(garbage, "cannot read")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    _expect(text, "cannot read")


def test_not_3d_inputs(tmp_path):
    ref = _sitk(H003_IMG)
    two_d = tmp_path / "slice.nii.gz"
    sitk.WriteImage(ref[:, :, 10], str(two_d))
    _expect(two_d, "2D")
    one_slice = tmp_path / "one.nii.gz"
    sitk.WriteImage(ref[:, :, 10:11], str(one_slice))
    _expect(one_slice, "single slice")
    four_d = tmp_path / "four.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([ref, ref, ref]), str(four_d))
    _expect(four_d, "4D image with 3 components")
    rgb = tmp_path / "vec.nrrd"
    sitk.WriteImage(sitk.Compose([ref, ref]), str(rgb))
    _expect(rgb, "multi-component")


def test_4d_with_one_component_is_squeezed(tmp_path):
    ref = _sitk(H003_IMG)
    four_d = tmp_path / "four1.nrrd"  # (the NIfTI reader squeezes a trailing 1 itself)
    sitk.WriteImage(sitk.JoinSeries([ref]), str(four_d))
    assert sitk.ReadImage(str(four_d)).GetDimension() == 4
    vol = read_volume(four_d)
    base = read_volume(H003_IMG)
    assert vol.same_geometry(base)
    np.testing.assert_array_equal(vol.array, base.array)


def test_empty_image(tmp_path):
    empty = sitk.Image([0, 4, 4], sitk.sitkFloat32)
    with pytest.raises(InputError, match="empty image") as err:
        io.from_sitk(empty, tmp_path / "zero.nii.gz")
    assert "zero.nii.gz" in str(err.value)


def test_nonfinite_voxels(tmp_path):
    vol = read_volume(H003_IMG)
    arr = vol.array.copy()
    arr[1, 2, 3] = np.nan
    arr[4, 5, 6] = np.inf
    path = tmp_path / "nan.nrrd"
    write_volume(vol.with_array(arr), path)
    err = _expect(path, "2 non-finite voxels \\(1 NaN, 1 Inf\\)")
    assert "nonfinite='zero'" in str(err)
    # a CLI user has no nonfinite option: the message says to fix the file first, the Python way second
    assert "fix the file (replace NaN/inf), or read it in Python with nonfinite='zero'" in str(err)
    fixed = read_volume(path, nonfinite="zero")
    assert np.isfinite(fixed.array).all() and fixed.array[1, 2, 3] == 0 and fixed.array[4, 5, 6] == 0
    np.testing.assert_array_equal(np.delete(fixed.array.ravel(), [np.ravel_multi_index((1, 2, 3), arr.shape),
                                                                  np.ravel_multi_index((4, 5, 6), arr.shape)]),
                                  np.delete(vol.array.ravel(), [np.ravel_multi_index((1, 2, 3), arr.shape),
                                                                np.ravel_multi_index((4, 5, 6), arr.shape)]))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nonfinite_voxels_in_nifti_are_detected(tmp_path, suffix):
    """ITK's NIfTI reader turns NaN into 0 silently; the package scans the file itself."""
    vol = read_volume(H003_IMG)
    arr = vol.array.copy()
    arr[1, 2, 3] = np.nan
    arr[0, 0, 0] = -np.inf
    path = tmp_path / f"nan{suffix}"
    write_volume(vol.with_array(arr), path)
    err = _expect(path, "2 non-finite voxels \\(NaN or Inf\\)")
    assert "fix the file (replace NaN/inf), or read it in Python with nonfinite='zero'" in str(err)
    fixed = read_volume(path, nonfinite="zero")
    assert np.isfinite(fixed.array).all() and fixed.array[1, 2, 3] == 0 and fixed.array[0, 0, 0] == 0


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_nifti_is_rejected(tmp_path, suffix):
    """ITK reads a truncated NIfTI without complaint (missing voxels become garbage): we must not."""
    vol = read_volume(H003_IMG)
    full = write_volume(vol, tmp_path / f"full{suffix}")
    data = full.read_bytes()
    for cut in (200, len(data) // 2, len(data) - 40):
        bad = tmp_path / f"cut{cut}{suffix}"
        bad.write_bytes(data[:cut])
        _expect(bad, "truncated|corrupt")


def test_label_not_whole_numbers(tmp_path):
    lab = read_volume(H003_LAB)
    arr = lab.array.astype(np.float32)
    arr[arr == 2] = 1.5
    path = tmp_path / "soft.nii.gz"
    write_volume(lab.with_array(arr), path)
    _expect(path, "non-integer values", fn=read_label)


def test_label_values_outside_classes():
    img = read_image(H003_IMG)
    _expect(H003_LAB, r"label values \[2\] are outside the 2 declared classes", fn=read_label, image=img,
            num_classes=2)
    _expect(H003_LAB, r"outside the declared label values \[0, 1, 255\]", fn=read_label, image=img,
            label_values=[0, 1, 255])


@pytest.mark.parametrize("change,match", [
    ("shape", "label size"),
    ("spacing", "label spacing"),
    ("origin", "label origin"),
    ("direction", "label direction"),
])
def test_label_geometry_mismatch(tmp_path, change, match):
    img = read_image(H003_IMG)
    lab = read_volume(H003_LAB)
    if change == "shape":
        lab = Volume(lab.array[:, :, :-1], lab.spacing, lab.origin, lab.direction)
    elif change == "spacing":
        lab = Volume(lab.array, (1.0, 1.0, 1.1), lab.origin, lab.direction)
    elif change == "origin":
        lab = Volume(lab.array, lab.spacing, (lab.origin[0] + 0.5, lab.origin[1], lab.origin[2]), lab.direction)
    else:
        lab = Volume(lab.array, lab.spacing, lab.origin, np.eye(3))
    path = tmp_path / f"lab_{change}.nii.gz"
    write_volume(lab, path)
    err = _expect(path, match, fn=read_label, image=img)
    assert "hippocampus_003_image" in str(err)  # names the image it was compared with


def test_suffix_helpers():
    assert io.volume_suffix("a/b/Case_1.NII.GZ") == ".nii.gz"
    assert io.strip_suffix("seg.seg.nrrd") == "seg"
    assert io.strip_suffix("hippocampus_003_0000.nii.gz") == "hippocampus_003_0000"
    assert io.volume_suffix("x.png") == ""


def test_a_header_whose_data_file_is_missing_names_it(tmp_path):
    """A .mhd without its .raw said 'corrupt, truncated or not an image: Reason: No such file or directory'."""
    import numpy as np

    from semisupseg.errors import InputError
    from semisupseg.io import read_volume, write_volume
    from semisupseg.volume import Volume

    header = write_volume(Volume(np.zeros((3, 4, 5), np.float32)), tmp_path / "scan.mhd")
    data = next(p for p in tmp_path.iterdir() if p.suffix in (".raw", ".zraw"))
    data.unlink()
    with pytest.raises(InputError, match=rf"keeps its voxels in '{data.name}', which is not beside it"):
        read_volume(header)


def test_a_path_itk_cannot_open_on_windows_is_named_not_called_corrupt(tmp_path, monkeypatch):
    """Windows (simulated: its ANSI code page as cp1252): ITK opens files through the code page, so a file under a
    folder named in Chinese was 'corrupt, truncated or not an image'. Reading and writing now say what is wrong, naming
    the characters; paths the code page holds read as before."""
    import numpy as np

    from semisupseg import io as sio
    from semisupseg.errors import InputError
    from semisupseg.volume import Volume

    folder = tmp_path / "扫描"
    sio.write_volume(Volume(np.zeros((4, 5, 6), np.float32)), folder / "scan.nii.gz")  # fine on Linux
    sio.write_volume(Volume(np.zeros((4, 5, 6), np.float32)), tmp_path / "José" / "scan.nii.gz")
    monkeypatch.setattr(sio, "_WINDOWS", True)
    monkeypatch.setattr(sio, "_ANSI_CODEC", "cp1252")
    with pytest.raises(InputError, match=r"cannot read the file: its path has characters \(扫描\) that Windows' ANSI "
                                         r"code page lacks"):
        sio.read_image(folder / "scan.nii.gz")
    with pytest.raises(InputError, match="cannot write the file: its path has characters"):
        sio.write_volume(Volume(np.zeros((4, 5, 6), np.float32)), folder / "out.nii.gz")
    assert sio.read_image(tmp_path / "José" / "scan.nii.gz").shape_zyx == (4, 5, 6)  # é is in cp1252
