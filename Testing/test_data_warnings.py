"""Data that trains but not as the user may expect: ``check-data`` warns (one line naming the case and the fix) and
``train`` records the same warnings (``data.json`` notes, start-up lines on stderr); nothing of it is an error.

On copies of the bundled real scans (MSD Task04 hippocampus): a validation hold-out taking most of a tiny labeled
set, a stray label value that becomes a class without ``dataset.json``, and the same scan given as labeled and
unlabeled (or twice as unlabeled), which must not be trained on twice — nor a validation case trained on."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from semisupseg.cli import main
from semisupseg.data import sample_dataset
from semisupseg.errors import InputError
from semisupseg.training import DataConfig
from semisupseg.training.datacheck import check_train_data
from semisupseg.training.loading import load_train_data

HIPPO = sample_dataset("hippocampus")
IDS = ["hippocampus_008", "hippocampus_011", "hippocampus_015", "hippocampus_017", "hippocampus_023",
       "hippocampus_025"]


def _labeled(tmp_path: Path, ids, name: str = "lab", dataset_json: bool = True) -> Path:
    """A dataset folder with these cases of the sample (no splits.json: every case with a label is labeled)."""
    root = tmp_path / name
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
        for cid in ids:
            shutil.copyfile(HIPPO / sub / f"{cid}.nii.gz", root / sub / f"{cid}.nii.gz")
    if dataset_json:
        shutil.copyfile(HIPPO / "dataset.json", root / "dataset.json")
    return root


def _images(tmp_path: Path, name: str, ids) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for cid in ids:
        shutil.copyfile(HIPPO / "imagesTr" / f"{cid}.nii.gz", folder / f"{cid}.nii.gz")
    return folder


def _check(capsys, *args):
    code = main(["check-data", *args])
    out = capsys.readouterr().out
    return code, out, [ln for ln in out.splitlines() if ln.startswith("warning: ")]


# ------------------------------------------------------------------------------------------------ validation
def test_validation_taking_half_the_labeled_cases_warns_and_names_the_option(tmp_path, capsys):
    root = _labeled(tmp_path, IDS[:3])
    code, out, warnings = _check(capsys, "--labeled", str(root))  # the default data.validation=2
    assert code == 0 and "labeled (1): hippocampus_008" in out
    assert len(warnings) == 1, out
    assert "holds out 2 of the 3 labeled cases" in warnings[0] and "leaving 1 to train on" in warnings[0]
    assert "--validation 1" in warnings[0] and "--validation 0" in warnings[0]
    assert out.splitlines()[-1] == "the data can be used for training (1 warning(s) above)"
    # train records the same line (data.json notes) and prints it at start
    data = load_train_data(DataConfig(labeled=str(root), patch_size=[16, 16, 16]), with_unlabeled=False)
    assert [c.case_id for c in data.validation] == IDS[1:3]
    assert any(n.startswith("warning: data.validation=2 holds out 2 of the 3") for n in data.notes)
    assert "warning: data.validation=2 holds out 2 of the 3" in capsys.readouterr().err
    # fewer held out, or more labeled cases: no warning
    assert _check(capsys, "--labeled", str(root), "--validation", "1")[2] == []
    assert _check(capsys, "--labeled", str(_labeled(tmp_path, IDS[:5], "five")))[2] == []
    # two labeled cases: the error names the options that work
    two = _labeled(tmp_path, IDS[:2], "two")
    code, out, _ = _check(capsys, "--labeled", str(two))
    errors = [ln for ln in out.splitlines() if ln.startswith("error: ")]
    assert code == 2 and len(errors) == 1
    assert "data.validation=2 would leave no labeled training case (2 labeled)" in errors[0]
    assert "--validation 1" in errors[0] and "--validation 0" in errors[0]
    with pytest.raises(InputError, match=r"--validation 1 .*--validation 0"):
        load_train_data(DataConfig(labeled=str(two)))


# ------------------------------------------------------------------------------------------------ stray label value
def _paint(path: Path, value: int, voxels: int) -> None:
    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img)
    zs, ys, xs = np.nonzero(arr == 0)
    arr[zs[:voxels], ys[:voxels], xs[:voxels]] = value
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(path))


def test_stray_label_value_without_dataset_json_warns(tmp_path, capsys):
    root = _labeled(tmp_path, IDS[:3], dataset_json=False)
    _paint(root / "labelsTr" / "hippocampus_011.nii.gz", 7, 5)
    code, out, warnings = _check(capsys, "--labeled", str(root), "--validation", "0")
    assert code == 0 and "classes: 0 background, 1 class_1, 2 class_2, 7 class_7" in out  # still a class
    assert len(warnings) == 1, out
    line = warnings[0]
    assert line.startswith(f"warning: {root / 'labelsTr' / 'hippocampus_011.nii.gz'}: label value 7 ")
    assert "1 of the 3 labeled cases (hippocampus_011: 5 voxels)" in line and "dataset.json" in line
    assert "data.label_values=[0,1,2]" in line
    report = check_train_data(DataConfig(labeled=str(root), validation=0))
    assert report.usable and [p.case_id for p in report.warnings] == ["hippocampus_011"]
    # train: the same warning among the notes, training data unchanged (7 is class 3)
    data = load_train_data(DataConfig(labeled=str(root), validation=0, patch_size=[16, 16, 16]))
    assert data.label_values == [0, 1, 2, 7]
    assert any(n.startswith("warning: ") and "label value 7 is in only 1 of the 3" in n for n in data.notes)
    # the real classes (in every case) are not flagged; nor is the value when dataset.json declares the classes
    assert "label value 1 " not in out and "label value 2 " not in out
    shutil.copyfile(HIPPO / "dataset.json", root / "dataset.json")
    code, out, warnings = _check(capsys, "--labeled", str(root), "--validation", "0")
    assert code == 2 and warnings == [] and "label values [7] are outside" in out
    # a value in most cases is a class, however small
    root2 = _labeled(tmp_path, IDS[:3], "most", dataset_json=False)
    for cid in IDS[:2]:
        _paint(root2 / "labelsTr" / f"{cid}.nii.gz", 7, 5)
    assert _check(capsys, "--labeled", str(root2), "--validation", "0")[2] == []


def test_a_structure_labeled_with_another_value_in_some_files_warns(tmp_path, capsys):
    """One of four label files has the posterior class as 5 instead of 2 (no dataset.json): both become classes
    (4 classes) and check-data said nothing, since 5 is large where present. It now names the file and value 2,
    which that file lacks and every other has; a class absent from a few cases alone is not flagged."""
    import SimpleITK as sitk

    root = _labeled(tmp_path, IDS[:4], dataset_json=False)
    path = root / "labelsTr" / "hippocampus_008.nii.gz"
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    array[array == 2] = 5
    relabeled = sitk.GetImageFromArray(array)
    relabeled.CopyInformation(image)
    sitk.WriteImage(relabeled, str(path))
    code, out, warnings = _check(capsys, "--labeled", str(root), "--validation", "0")
    assert code == 0 and "classes: 0 background, 1 class_1, 2 class_2, 5 class_5" in out
    assert len(warnings) == 1, out
    assert warnings[0].startswith(f"warning: {path}: label value 5 is in only 1 of the 4 labeled cases "
                                  "(hippocampus_008), which have no value 2 where every other case has one")
    # value 2 simply missing from one case (nothing in its place): no warning
    root2 = _labeled(tmp_path, IDS[:4], "absent", dataset_json=False)
    path2 = root2 / "labelsTr" / "hippocampus_008.nii.gz"
    array[array == 5] = 0
    cleared = sitk.GetImageFromArray(array)
    cleared.CopyInformation(image)
    sitk.WriteImage(cleared, str(path2))
    assert _check(capsys, "--labeled", str(root2), "--validation", "0")[2] == []


# ------------------------------------------------------------------------------------------------ the same scan twice
def test_scan_both_labeled_and_unlabeled_is_dropped_from_the_pool(tmp_path, capsys):
    root = _labeled(tmp_path, IDS[:3])
    first = _images(tmp_path, "more", ["hippocampus_015", "hippocampus_017"])  # 015 is labeled (validation)
    second = _images(tmp_path, "extra", ["hippocampus_017", "hippocampus_023"])  # 017 again
    args = ["--labeled", str(root), "--unlabeled", str(first), "--unlabeled", str(second), "--validation", "1"]
    code, out, warnings = _check(capsys, *args)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "labeled (2): hippocampus_008, hippocampus_011"
    assert lines[1] == "unlabeled (2): hippocampus_017, hippocampus_023"
    assert lines[2] == "validation (1): hippocampus_015"
    assert len(warnings) == 1, out
    assert warnings[0].startswith(f"warning: {first / 'hippocampus_015.nii.gz'}: case 'hippocampus_015' is also a "
                                  "labeled case")
    assert "dropped from the unlabeled pool" in warnings[0]
    notes = [ln for ln in lines if "already in the unlabeled pool" in ln]
    assert len(notes) == 1 and str(second) in notes[0] and "hippocampus_017" in notes[0]
    assert "first copy is kept" in notes[0]
    report = json.loads((main(["check-data", *args, "--json"]), capsys.readouterr().out)[1])
    assert [c["image"] for c in report["unlabeled"]] == [[str(first / "hippocampus_017.nii.gz")],
                                                         [str(second / "hippocampus_023.nii.gz")]]
    # the data training uses: the validation scan is not in the unlabeled pool
    cfg = DataConfig(labeled=str(root), unlabeled=[str(first), str(second)], validation=1, patch_size=[16, 16, 16])
    data = load_train_data(cfg)
    assert [c.case_id for c in data.validation] == ["hippocampus_015"]
    assert [c.case_id for c in data.unlabeled] == ["hippocampus_017", "hippocampus_023"]
    assert any("'hippocampus_015' is also a labeled case" in n for n in data.notes)
    assert "dropped from the unlabeled pool" in capsys.readouterr().err
