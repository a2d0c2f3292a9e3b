"""Orientation codes and exact reorientation (``semisupseg.orientation``), checked against SimpleITK's
``DICOMOrient`` on every axis-aligned order and on oblique directions."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk

from semisupseg.errors import InputError
from semisupseg.io import from_sitk, to_sitk
from semisupseg.orientation import orientation_code, orientation_problem, reorientation
from semisupseg.volume import Volume

ALL_CODES = ["".join(c) for p in itertools.permutations(["LR", "PA", "SI"]) for c in itertools.product(*p)]


def _direction(code: str, tilt: float = 0.0) -> np.ndarray:
    """A direction matrix of order ``code`` (via SimpleITK), turned by ``tilt`` radians about a slanted axis."""
    image = sitk.DICOMOrient(sitk.Image(2, 3, 4, sitk.sitkUInt8), code)
    d = np.array(image.GetDirection()).reshape(3, 3)
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(tilt) * k + (1 - np.cos(tilt)) * k @ k
    return rotation @ d


def _scan(code: str, tilt: float = 0.0) -> Volume:
    rng = np.random.default_rng(len(code) + int(tilt * 100))
    return Volume(rng.normal(size=(5, 6, 7)).astype(np.float32), (0.7, 1.1, 2.5), (10.0, -20.0, 3.5),
                  _direction(code, tilt))


def test_there_are_48_codes_and_each_reads_back():
    assert len(ALL_CODES) == 48 and "RAS" in ALL_CODES and "LPS" in ALL_CODES
    for code in ALL_CODES:
        d = _direction(code)
        assert orientation_code(d) == code == sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
            d.ravel().tolist())
    assert orientation_code(np.eye(3)) == "LPS" and orientation_code(np.diag([-1.0, -1.0, 1.0])) == "RAS"


@pytest.mark.parametrize("source", ["RAS", "LPS", "PIR", "SAL", "IRP"])
@pytest.mark.parametrize("target", ["RAS", "LPS", "AIL"])
def test_reorienting_matches_simpleitk_and_undoes_exactly(source, target):
    scan = _scan(source)
    plan = reorientation(scan.direction, target)
    assert (plan.source_code, plan.target_code) == (source, target) and plan.identity == (source == target)
    moved = plan.volume(scan)
    reference = from_sitk(sitk.DICOMOrient(to_sitk(scan), target))
    assert orientation_code(moved.direction) == target
    np.testing.assert_array_equal(moved.array, reference.array)
    np.testing.assert_allclose(moved.spacing, reference.spacing)
    np.testing.assert_allclose(moved.origin, reference.origin, atol=1e-9)
    np.testing.assert_allclose(moved.direction, reference.direction, atol=1e-12)
    np.testing.assert_array_equal(plan.undo(moved.array), scan.array)
    # channels first are carried along; every voxel keeps its physical place
    stacked = np.stack([scan.array, -scan.array])
    np.testing.assert_array_equal(plan.array(stacked)[1], -moved.array)
    np.testing.assert_array_equal(plan.undo(plan.array(stacked)), stacked)
    for z, y, x in [(0, 0, 0), (4, 5, 6), (2, 3, 1)]:
        old_point = to_sitk(scan).TransformIndexToPhysicalPoint((x, y, z))
        index = to_sitk(moved).TransformPhysicalPointToIndex(old_point)
        assert moved.array[index[2], index[1], index[0]] == scan.array[z, y, x]


def test_an_oblique_scan_takes_the_nearest_order_and_a_box_follows_its_voxels():
    scan = _scan("PIR", tilt=0.4)  # about 23 degrees off the axes
    assert orientation_code(scan.direction) == "PIR"
    plan = reorientation(scan.direction, "RAS")
    moved = plan.volume(scan)
    assert orientation_code(moved.direction) == "RAS"
    np.testing.assert_allclose(np.abs(np.linalg.det(moved.direction)), 1.0)
    box = ((1, 4), (0, 2), (3, 7))
    marked = np.zeros(scan.shape_zyx, bool)
    marked[1:4, 0:2, 3:7] = True
    new_box = plan.box(box, scan.shape_zyx)
    expected = np.zeros(moved.shape_zyx, bool)
    expected[tuple(slice(a, b) for a, b in new_box)] = True
    np.testing.assert_array_equal(plan.array(marked), expected)


def test_bad_codes_are_named():
    assert orientation_problem("RAS") is None and orientation_problem("ras") is None
    for bad, words in (("RA", "no orientation code"), ("RAX", "no orientation code"), ("RLS", "one axis twice")):
        assert words in orientation_problem(bad)
        with pytest.raises(InputError, match=words):
            reorientation(np.eye(3), bad)


# ----------------------------------------------------------------------------------------------------------------------
# segment() and training: scans stored in another voxel order
# ----------------------------------------------------------------------------------------------------------------------

def _tiny_model(tmp_path, orientation):
    import torch

    from semisupseg.checkpoint import make_card, save_model
    from semisupseg.nets import VNet, VNetConfig

    torch.manual_seed(0)
    model = VNet(VNetConfig(num_classes=3, n_filters=2, sdm_head=True)).eval()
    card = make_card(model, method="supervised", spacing_xyz=(1.0, 1.0, 1.0), patch_size_xyz=(32, 32, 32),
                     label_values=[0, 1, 2], inference={"orientation": orientation} if orientation else None)
    return save_model(tmp_path / f"model_{orientation or 'none'}.pt", model, card)


def test_segment_sees_a_scan_in_its_training_order_whatever_the_file_says(tmp_path):
    """The same scan stored RAS (the model's order) and PIR: the same labels, probabilities, SDM and entropy voxel for
    voxel, each output in its input's own geometry. A card without an order uses the stored voxels (and differs)."""
    import torch

    from semisupseg.inference import SegmentOptions, segment
    from semisupseg.io import read_image

    torch.set_num_threads(1)
    scan = read_image(__import__("pathlib").Path(__file__).parent / "data" / "hippocampus_003_image.nii.gz")
    assert orientation_code(scan.direction) == "RAS"
    stored_pir = from_sitk(sitk.DICOMOrient(to_sitk(scan), "PIR"))
    turn = reorientation(scan.direction, "PIR")
    options = SegmentOptions(device="cpu", fast=False, compute_sdm=True, compute_entropy=True)
    for model, same in ((_tiny_model(tmp_path, "RAS"), True), (_tiny_model(tmp_path, None), False)):
        plain = segment(scan, model, options=options)
        turned = segment(stored_pir, model, options=options)
        for out in (turned.labels, turned.probabilities, turned.sdm, turned.entropy):
            assert out.same_geometry(stored_pir) and out.shape_zyx == stored_pir.shape_zyx
        if same:
            assert turned.info["reoriented"] == {"scan": "PIR", "model": "RAS"} and "reoriented" not in plain.info
            for a, b in ((plain.labels, turned.labels), (plain.probabilities, turned.probabilities),
                         (plain.sdm, turned.sdm), (plain.entropy, turned.entropy)):
                np.testing.assert_array_equal(turn.array(a.array), b.array)
        else:
            assert not np.array_equal(turn.array(plain.probabilities.array), turned.probabilities.array)


def test_training_brings_a_case_stored_in_another_order_into_the_others_and_the_card_records_it(tmp_path):
    import shutil

    from semisupseg.io import read_image, read_label, write_volume
    from semisupseg.training.config import DataConfig
    from semisupseg.training.loading import load_train_data

    sample = __import__("semisupseg").__path__[0] + "/sample_data/hippocampus"
    root = tmp_path / "set"
    shutil.copytree(sample, root)
    (root / "splits.json").unlink()
    odd = "hippocampus_015"
    image, label = read_image(root / "imagesTr" / f"{odd}.nii.gz"), read_label(root / "labelsTr" / f"{odd}.nii.gz")
    for v, folder in ((image, "imagesTr"), (label, "labelsTr")):
        (root / folder / f"{odd}.nii.gz").unlink()
        write_volume(from_sitk(sitk.DICOMOrient(to_sitk(v), "SLA")), root / folder / f"{odd}.nrrd")
    data = load_train_data(DataConfig(labeled=str(root), validation=0, patch_size=[16, 16, 16]))
    assert data.orientation == "RAS"
    note = next(n for n in data.notes if "another voxel order" in n)
    assert "1 of 6 scans" in note and "SLA: 1" in note and odd in note and "brought into RAS" in note
    from semisupseg.training.datacheck import check_train_data

    assert note in check_train_data(DataConfig(labeled=str(root), validation=0)).notes  # check-data says it too
    case = next(c for c in data.labeled if c.case_id == odd)
    reference = read_label(sample + f"/labelsTr/{odd}.nii.gz").array
    np.testing.assert_array_equal(np.isin(case.label, [1, 2]), np.isin(reference, [1, 2]))  # as the others are
    # all stored alike: nothing is moved, the order is still recorded
    clean = tmp_path / "clean"
    shutil.copytree(sample, clean)
    data = load_train_data(DataConfig(labeled=str(clean), patch_size=[16, 16, 16]))
    assert data.orientation == "RAS" and not any("voxel order" in n for n in data.notes)


def test_cards_and_ensembles_keep_the_order_honest(tmp_path):
    from semisupseg.checkpoint import CheckpointError, read_card
    from semisupseg.ensembles import combine_models

    a, b = _tiny_model(tmp_path, "RAS"), _tiny_model(tmp_path, "LPS")
    assert read_card(a).inference["orientation"] == "RAS"
    with pytest.raises(CheckpointError, match="different voxel orders"):
        combine_models([a, b])
    _, card = combine_models([a, a])
    assert card.inference["orientation"] == "RAS"
    card.inference["orientation"] = "RLS"
    with pytest.raises(ValueError, match="one axis twice"):
        card.validate()
