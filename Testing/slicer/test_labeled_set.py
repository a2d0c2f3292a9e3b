"""Adding the current scan and its segmentation to a labeled training set (``SemiSupSegLib.labeled_set``), on a real
headless MRML scene with real hippocampus scans: label values by segment name, the image's geometry and voxel type,
new unique case names, nothing overwritten, the written case read back by training's own checks."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from slicer_guard import SAMPLE_DATA, TEST_DATA

HIPPO = SAMPLE_DATA / "hippocampus"


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A copy of the bundled hippocampus set (imagesTr/labelsTr/dataset.json: Anterior = 1, Posterior = 2)."""
    root = tmp_path / "hippocampus"
    shutil.copytree(HIPPO, root)
    return root


def _scan_and_segmentation(headless, case="hippocampus_015", class_names=("background", "Anterior", "Posterior"),
                           label_values=(0, 1, 2)):
    from semisupseg.io import read_label
    from SemiSupSegLib.results import show_segmentation

    volume_node = headless.load_volume(HIPPO / "imagesTr" / f"{case}.nii.gz")
    labels = read_label(HIPPO / "labelsTr" / f"{case}.nii.gz")
    seg = show_segmentation(headless.scene, headless.logic("Segmentations"), labels, list(class_names),
                            list(label_values), reference_node=volume_node)
    return volume_node, seg, labels


def test_adds_a_new_case_with_the_values_and_geometry_of_the_dataset(headless, dataset):
    from semisupseg.io import read_image, read_label
    from semisupseg.training.config import DataConfig
    from semisupseg.training.datacheck import check_train_data
    from SemiSupSegLib.labeled_set import add_to_labeled_set

    before = _digest(dataset)
    volume_node, seg, labels = _scan_and_segmentation(headless)
    added = add_to_labeled_set(headless.scene, headless.logic("Segmentations"), volume_node, seg, dataset)

    # the volume's name is taken in the set: a new name, the old files untouched
    assert added.case_id == "hippocampus_015_2"
    assert added.image == dataset / "imagesTr" / "hippocampus_015_2.nii.gz"
    assert added.label == dataset / "labelsTr" / "hippocampus_015_2.nii.gz"
    after = _digest(dataset)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {"imagesTr/hippocampus_015_2.nii.gz", "labelsTr/hippocampus_015_2.nii.gz"}

    # label values and geometry are the original label's, exactly; the image is the scan, voxel for voxel
    written = read_label(added.label)
    np.testing.assert_array_equal(written.array, labels.array)
    original = read_image(HIPPO / "imagesTr" / "hippocampus_015.nii.gz")
    for a, b in ((written, labels), (read_image(added.image), original)):
        assert a.array.shape == b.array.shape
        np.testing.assert_allclose(a.spacing, b.spacing, atol=1e-6)
        np.testing.assert_allclose(a.origin, b.origin, atol=1e-5)
        np.testing.assert_allclose(a.direction, b.direction, atol=1e-6)
    np.testing.assert_array_equal(read_image(added.image).array, original.array)
    assert added.segment_values == {"Anterior": 1, "Posterior": 2}
    assert added.voxels[1] == int((labels.array == 1).sum()) and added.voxels[2] == int((labels.array == 2).sum())

    # training's own data check takes the new case as a labeled case without a problem
    assert any("splits.json" in n for n in added.notes)  # the bundled set has a split: the user must add the id
    (dataset / "splits.json").unlink()
    report = check_train_data(DataConfig(labeled=str(dataset), validation=0), with_unlabeled=True)
    assert report.usable, report.text()
    assert "hippocampus_015_2" in [c.case_id for c in report.cases]

    # a second add gets yet another name; nothing is replaced
    again = add_to_labeled_set(headless.scene, headless.logic("Segmentations"), volume_node, seg, dataset)
    assert again.case_id == "hippocampus_015_3"
    assert _digest(dataset)["imagesTr/hippocampus_015_2.nii.gz"] == after["imagesTr/hippocampus_015_2.nii.gz"]
    # the export left no temporary node in the scene
    assert headless.scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0


def test_segment_names_decide_the_values_not_the_segment_order_or_tags(headless, dataset):
    from semisupseg.io import read_label
    from SemiSupSegLib.labeled_set import add_to_labeled_set

    # segments named the other way round: "Posterior" holds the voxels of value 1 (and carries the tag 1)
    volume_node, seg, labels = _scan_and_segmentation(headless, class_names=("background", "posterior", "ANTERIOR"))
    added = add_to_labeled_set(headless.scene, headless.logic("Segmentations"), volume_node, seg, dataset,
                               case_name="swapped")
    assert added.case_id == "swapped"
    written = read_label(added.label).array
    swapped = np.choose(labels.array.astype(np.int64), [0, 2, 1])
    np.testing.assert_array_equal(written, swapped)
    assert added.segment_values == {"posterior": 2, "ANTERIOR": 1}


def test_a_segment_of_no_class_is_refused_and_nothing_is_written(headless, dataset):
    from semisupseg.errors import InputError
    from SemiSupSegLib.labeled_set import add_to_labeled_set

    volume_node, seg, _ = _scan_and_segmentation(headless, class_names=("background", "Anterior", "tumour"))
    seg.GetSegmentation().GetNthSegment(1).RemoveTag("SemiSupSeg.LabelValue")  # no tag to fall back on
    before = _digest(dataset)
    with pytest.raises(InputError, match=r"'tumour' match no class of the labeled set \(Anterior, Posterior\)"):
        add_to_labeled_set(headless.scene, headless.logic("Segmentations"), volume_node, seg, dataset)
    assert _digest(dataset) == before
    assert not [p for p in dataset.rglob(".semisupseg-add-*")]


def test_new_images_and_labels_folders_take_an_oblique_uint8_scan(headless, tmp_path):
    """A new set (images + labels folders) on an oblique, anisotropic grid: the classes come from the segments, the
    image keeps its voxel type, the label lies on the image's grid; a new MSD set gets a dataset.json and maps the
    next case by name."""
    from semisupseg.io import read_image, read_label
    from semisupseg.volume import Volume
    from SemiSupSegLib.labeled_set import add_to_labeled_set
    from SemiSupSegLib.results import show_segmentation
    from SemiSupSegLib.scene import update_volume_node, volume_from_node

    node = headless.load_volume(TEST_DATA / "hippocampus_033_image.nrrd")
    label = read_label(TEST_DATA / "hippocampus_033_label.nrrd")
    angle = np.deg2rad(20.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    scan = volume_from_node(node)
    oblique = Volume(scan.array.astype(np.uint8), (0.7, 0.9, 1.6), (10.0, -20.0, 5.5), rotation @ scan.direction)
    from SemiSupSegLib.scene import vtk_image_from_array

    update_volume_node(headless.scene, oblique, node=node)
    node.SetAndObserveImageData(vtk_image_from_array(scan.array.astype(np.uint8)))  # the uint8 voxels of the file
    seg = show_segmentation(headless.scene, headless.logic("Segmentations"), oblique.with_array(label.array),
                            ["background", "Anterior", "Posterior"], [0, 1, 2], reference_node=node)
    images, labels = tmp_path / "images", tmp_path / "labels"
    added = add_to_labeled_set(headless.scene, headless.logic("Segmentations"), node, seg, images, labels,
                               case_name="scan 33")
    assert added.case_id == "scan_33" and added.image.parent == images and added.label.parent == labels
    image, written = read_image(added.image), read_label(added.label)
    import SimpleITK as sitk

    assert sitk.ReadImage(str(added.image)).GetPixelIDTypeAsString() == "8-bit unsigned integer"
    for v in (image, written):
        np.testing.assert_allclose(v.spacing, oblique.spacing, atol=1e-5)
        np.testing.assert_allclose(v.origin, oblique.origin, atol=1e-4)
        np.testing.assert_allclose(v.direction, oblique.direction, atol=1e-5)
    np.testing.assert_array_equal(written.array, label.array)  # same k,j,i grid: the voxels carry over unchanged
    assert added.classes == {"names": ["background", "Anterior", "Posterior"], "label_values": [0, 1, 2]}
    assert any("from the segments" in n for n in added.notes)

    # images + labels folders with labels but no classes: refused (values would be a guess)
    from semisupseg.errors import InputError

    with pytest.raises(InputError, match="classes are unknown"):
        add_to_labeled_set(headless.scene, headless.logic("Segmentations"), node, seg, images, labels)
    # ... unless the model's classes are given
    second = add_to_labeled_set(headless.scene, headless.logic("Segmentations"), node, seg, images, labels,
                                class_names=["background", "Anterior", "Posterior"], case_name="scan 33")
    assert second.case_id == "scan_33_2"

    # a new MSD set: dataset.json is written with the segments' classes
    msd = tmp_path / "new_set"
    first = add_to_labeled_set(headless.scene, headless.logic("Segmentations"), node, seg, msd)
    assert (msd / "imagesTr" / f"{first.case_id}.nii.gz").is_file()
    from semisupseg.data.cases import read_dataset_json

    assert read_dataset_json(msd / "dataset.json").names == ["background", "Anterior", "Posterior"]


def test_layouts_that_cannot_take_a_case(tmp_path, monkeypatch):
    from semisupseg.errors import InputError
    from SemiSupSegLib.labeled_set import labeled_set_layout, new_case_name

    la = tmp_path / "la"
    shutil.copytree(TEST_DATA / "la_crop", la / "case1")
    with pytest.raises(InputError, match="LA layout"):
        labeled_set_layout(la)
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(TEST_DATA / "hippocampus_003_image.nii.gz", loose / "a.nii.gz")
    with pytest.raises(InputError, match="no labels folder was given"):
        labeled_set_layout(loose)
    # nnU-Net channel suffix: the new image gets _0000, the name is free of it
    nn = tmp_path / "nn"
    (nn / "imagesTr").mkdir(parents=True)
    (nn / "labelsTr").mkdir()
    shutil.copy(TEST_DATA / "hippocampus_033_image.nrrd", nn / "imagesTr" / "h33_0000.nrrd")
    shutil.copy(TEST_DATA / "hippocampus_033_label.nrrd", nn / "labelsTr" / "h33.nrrd")
    layout = labeled_set_layout(nn)
    assert layout.channel_suffix and layout.suffix == ".nrrd"
    assert new_case_name(layout, "h33_0000") == "h33_2"
    assert new_case_name(layout, "") == "case"
    # names every system can take: long ones shortened, Windows' reserved ones changed
    from SemiSupSegLib.labeled_set import MAX_CASE_ID

    assert new_case_name(layout, "x" * 300) == "x" * MAX_CASE_ID
    assert new_case_name(layout, "CON") == "CON_case" and new_case_name(layout, "nul.scan") == "nul.scan_case"
    # a labels folder that is the images folder: the image and its label would be one file
    with pytest.raises(InputError, match="labels folder is the images folder"):
        labeled_set_layout(loose, loose)
    # the same folder named in another case: one folder on Windows' and macOS's disks (not yet made: by name)
    from SemiSupSegLib import labeled_set as ls

    monkeypatch.setattr(ls, "_CASE_INSENSITIVE", True)
    with pytest.raises(InputError, match="labels folder is the images folder"):
        labeled_set_layout(tmp_path / "new" / "Scans", tmp_path / "new" / "scans")
    monkeypatch.setattr(ls, "_CASE_INSENSITIVE", False)
    assert labeled_set_layout(tmp_path / "new" / "Scans", tmp_path / "new" / "scans").labels.name == "scans"


def test_a_segmentation_outside_the_scan_is_refused_or_noted(headless, dataset):
    """A segmentation drawn on another scan (here: the same labels 200 mm away) is refused; one partly outside the
    volume (12 mm away) is added with a note counting what was cut off, instead of a silently smaller label."""
    from semisupseg.errors import InputError
    from semisupseg.io import read_label
    from semisupseg.volume import Volume
    from SemiSupSegLib.labeled_set import add_to_labeled_set
    from SemiSupSegLib.results import show_segmentation

    volume_node = headless.load_volume(HIPPO / "imagesTr" / "hippocampus_015.nii.gz")
    labels = read_label(HIPPO / "labelsTr" / "hippocampus_015.nii.gz")
    before = _digest(dataset)
    for shift in (200.0, 12.0):
        moved = Volume(labels.array, labels.spacing, (labels.origin[0] + shift, *labels.origin[1:]), labels.direction)
        seg = show_segmentation(headless.scene, headless.logic("Segmentations"), moved,
                                ["background", "Anterior", "Posterior"], [0, 1, 2], name=f"{shift} mm away")
        if shift > 100:
            with pytest.raises(InputError, match="'Anterior' lies wholly outside volume 'hippocampus_015'"):
                add_to_labeled_set(headless.scene, headless.logic("Segmentations"), volume_node, seg, dataset)
            assert _digest(dataset) == before
            continue
        added = add_to_labeled_set(headless.scene, headless.logic("Segmentations"), volume_node, seg, dataset)
        cut = [n for n in added.notes if "lie outside volume 'hippocampus_015'" in n]
        assert len(cut) == 2 and cut[0].startswith("segment 'Anterior': ")
        outside = int(cut[0].split(": ")[1].split(" of")[0])
        assert added.voxels[1] == np.count_nonzero(labels.array == 1) - outside  # what is left is what was inside


def test_segments_named_alike_but_for_case_are_refused_in_a_new_set(headless, tmp_path):
    from semisupseg.errors import InputError
    from SemiSupSegLib.labeled_set import add_to_labeled_set

    volume_node, seg, _ = _scan_and_segmentation(headless, class_names=("background", "Tumor", "tumor"))
    with pytest.raises(InputError, match="'Tumor', 'tumor' of .* have the same name but for case"):
        add_to_labeled_set(headless.scene, headless.logic("Segmentations"), volume_node, seg, tmp_path / "new set")
    assert not (tmp_path / "new set" / "labelsTr").exists() or not any((tmp_path / "new set" / "labelsTr").iterdir())
