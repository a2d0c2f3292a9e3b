"""``semisupseg check-data``: the checks ``train`` runs, on the bundled real scans and on broken copies of them.

Each broken copy has one kind of problem (mismatched names, a label on another grid, label values outside the
classes, an unreadable file); the command must list every problem as one line naming the file, exit 2, and
``train`` must refuse the same data with the same lines."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from semisupseg.cli import main
from semisupseg.data import sample_dataset
from semisupseg.training import DataConfig
from semisupseg.training.datacheck import check_train_data

HIPPO = sample_dataset("hippocampus")
LA = sample_dataset("la")


def _copy(tmp_path: Path, name: str = "h") -> Path:
    root = tmp_path / name
    shutil.copytree(HIPPO, root)
    return root


def _rewrite_label(path: Path, change) -> None:
    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img)
    out = sitk.GetImageFromArray(change(arr.copy()))
    out.CopyInformation(img)
    sitk.WriteImage(out, str(path))


def _check(capsys, *args):
    code = main(["check-data", *args])
    return code, capsys.readouterr()


def test_bundled_data_is_usable_and_split_as_train_splits_it(capsys):
    code, out = _check(capsys, "--labeled", str(HIPPO), "--split-labeled", "labeled_2")
    assert code == 0, out.err
    lines = out.out.splitlines()
    assert lines[0] == "labeled (2): hippocampus_008, hippocampus_011"
    assert lines[1] == "unlabeled (2): hippocampus_015, hippocampus_017"
    assert lines[2] == "validation (2): hippocampus_023, hippocampus_025"
    assert "classes: 0 background, 1 Anterior, 2 Posterior" in out.out
    assert lines[-1] == "the data can be used for training"
    # --json: the same report for the Slicer panel, with sizes and spacings read from the files
    code, out = _check(capsys, "--labeled", str(HIPPO), "--split-labeled", "labeled_2", "--json")
    report = json.loads(out.out)
    assert code == 0 and report["usable"] is True and report["problems"] == []
    assert [c["case"] for c in report["validation"]] == ["hippocampus_023", "hippocampus_025"]
    case = report["labeled"][0]
    img = sitk.ReadImage(case["image"])
    assert case["size_xyz"] == list(img.GetSize())[:3] and case["spacing_xyz"] == pytest.approx(img.GetSpacing()[:3])
    assert case["label_values"] == [0, 1, 2] and case["label"].endswith("labelsTr/hippocampus_008.nii.gz")
    assert all(c["label"] is None and c["label_values"] is None for c in report["unlabeled"])
    # the settings training would take from this data, as train records them
    assert report["plan"]["plan"]["patch_size_xyz"] == [32, 48, 32]
    assert report["plan_lines"][0].startswith("data.patch_size:") and "(from the data)" in report["plan_lines"][0]
    code, out = _check(capsys, "--labeled", str(HIPPO), "--split-labeled", "labeled_2", "--set",
                       "data.patch_size=[16,16,16]")
    assert code == 0 and "training settings from the data:" in out.out
    line = [ln for ln in out.out.splitlines() if ln.strip().startswith("data.patch_size:")][0]
    assert "(suggested; your setting is kept)" in line
    # the LA sample (h5-free NIfTI copy, 2 classes) and the validation rule of DataConfig (a count)
    report = check_train_data(DataConfig(labeled=str(LA), split_labeled="labeled_1"))
    assert report.usable and report.ids("labeled") == ["06SR5RBREL16DQ6M8LWS"]
    assert report.ids("unlabeled") == ["0RZDK210BSMWAA6467LU", "1D7CUD1955YZPGK8XHJX"]
    assert report.ids("validation") == ["1GU15S0GJ6PFNARO469W"]
    assert report.classes["label_values"] == [0, 1]


def test_every_problem_is_one_line_naming_its_file(tmp_path, capsys):
    root = _copy(tmp_path)
    # 1. names that do not pair: a label renamed (its image loses its label, the label has no image)
    (root / "labelsTr" / "hippocampus_011.nii.gz").rename(root / "labelsTr" / "hippocampus_011_seg.nii.gz")
    # 2. a label on another grid (spacing)
    lab = root / "labelsTr" / "hippocampus_015.nii.gz"
    img = sitk.ReadImage(str(lab))
    img.SetSpacing((1.0, 1.0, 1.5))
    sitk.WriteImage(img, str(lab))
    # 3. label values outside the classes of dataset.json (0, 1, 2)
    _rewrite_label(root / "labelsTr" / "hippocampus_017.nii.gz", lambda a: np.where(a == 2, 5, a).astype(a.dtype))
    # 4. an unreadable image
    (root / "imagesTr" / "hippocampus_023.nii.gz").write_bytes(b"this is not an image")
    (root / "splits.json").unlink()  # no split: every case with a label is labeled
    code, out = _check(capsys, "--labeled", str(root), "--validation", "0")
    assert code == 2
    problems = [ln for ln in out.out.splitlines() if ln.startswith(("error: ", "warning: "))]
    errors = [ln for ln in problems if ln.startswith("error: ")]
    assert len(errors) == 4, out.out
    expect = {
        "labelsTr/hippocampus_011_seg.nii.gz": "label file without an image",
        "labelsTr/hippocampus_015.nii.gz": "label spacing (1.0, 1.0, 1.5) mm does not match image",
        "labelsTr/hippocampus_017.nii.gz": "label values [5] are outside the declared label values [0, 1, 2]",
        "imagesTr/hippocampus_023.nii.gz": "corrupt or truncated file",
    }
    for name, text in expect.items():
        hits = [ln for ln in errors if f"{root / name}: " in ln and text in ln]
        assert len(hits) == 1, (name, errors)
    warning = [ln for ln in problems if ln.startswith("warning: ")]
    assert len(warning) == 1 and str(root / "imagesTr" / "hippocampus_011.nii.gz") in warning[0]
    assert "used as an unlabeled case" in warning[0]
    assert out.out.splitlines()[-1] == "4 error(s): training would not start"
    # the JSON report: the same problems, the file of each apart
    code, out = _check(capsys, "--labeled", str(root), "--validation", "0", "--json")
    report = json.loads(out.out)
    assert code == 2 and report["usable"] is False and report["errors"] == 4 and report["warnings"] == 1
    assert report["plan"] is None and report["plan_lines"] == []  # no plan from unusable data
    paths = {Path(p["path"]).relative_to(root).as_posix() for p in report["problems"] if p["severity"] == "error"}
    assert paths == set(expect)
    assert all("\n" not in p["line"] for p in report["problems"])
    roles = {c["case"]: c["role"] for r in ("labeled", "unlabeled", "validation") for c in report[r]}
    assert roles["hippocampus_011"] == "unlabeled" and roles["hippocampus_008"] == "labeled"
    bad = {c["case"]: c["ok"] for c in report["labeled"]}
    assert bad == {"hippocampus_008": True, "hippocampus_015": False, "hippocampus_017": False,
                   "hippocampus_023": False, "hippocampus_025": True}
    # train refuses the same data with the same lines, and leaves no run state behind
    run = tmp_path / "run"
    assert main(["train", "--method", "supervised", "--labeled", str(root), "--validation", "0", "--out", str(run),
                 "--no-bar", "--iterations", "1", "--patch-size", "16", "16", "16"]) == 2
    err = capsys.readouterr().err
    assert "4 problems in the training data" in err
    for name, text in expect.items():
        assert f"{root / name}: " in err and text in err, name


def test_geometry_origin_and_direction_and_split_naming_absent_cases(tmp_path, capsys):
    root = _copy(tmp_path)
    lab = root / "labelsTr" / "hippocampus_008.nii.gz"
    img = sitk.ReadImage(str(lab))
    img.SetOrigin((5.0, 0.0, 0.0))
    sitk.WriteImage(img, str(lab))
    lab = root / "labelsTr" / "hippocampus_011.nii.gz"
    img = sitk.ReadImage(str(lab))
    img.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    sitk.WriteImage(img, str(lab))
    code, out = _check(capsys, "--labeled", str(root), "--split-labeled", "labeled_2")
    assert code == 2
    errors = [ln for ln in out.out.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 2
    assert f"{root / 'labelsTr' / 'hippocampus_008.nii.gz'}: label origin" in errors[0]
    assert f"{root / 'labelsTr' / 'hippocampus_011.nii.gz'}: label direction" in errors[1]
    # a split naming cases the folder lacks: the split file is named, and every file is still checked
    (root / "imagesTr" / "hippocampus_025.nii.gz").unlink()
    (root / "labelsTr" / "hippocampus_025.nii.gz").unlink()
    code, out = _check(capsys, "--labeled", str(root), "--split-labeled", "labeled_2")
    errors = [ln for ln in out.out.splitlines() if ln.startswith("error: ")]
    assert code == 2 and len(errors) == 3
    assert any(ln.startswith(f"error: {root / 'splits.json'}: ") and "hippocampus_025" in ln for ln in errors)


def test_unlabeled_folder_channels_spacing_and_option_errors(tmp_path, capsys):
    unl = tmp_path / "more"
    unl.mkdir()
    shutil.copyfile(HIPPO / "imagesTr" / "hippocampus_015.nii.gz", unl / "scan_a.nii.gz")
    img = sitk.ReadImage(str(HIPPO / "imagesTr" / "hippocampus_017.nii.gz"))
    img.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(img, str(unl / "scan_b.nii.gz"))
    (unl / "scan_c.nii.gz").write_bytes(b"\x1f\x8b broken gzip")
    code, out = _check(capsys, "--labeled", str(HIPPO), "--split-labeled", "labeled_2", "--unlabeled", str(unl))
    assert code == 2
    errors = [ln for ln in out.out.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 2, out.out
    assert errors[0].startswith(f"error: {unl / 'scan_c.nii.gz'}: ")
    assert "different voxel spacings" in errors[1] and "data.spacing" in errors[1]
    assert "unlabeled (4): hippocampus_015, hippocampus_017, scan_a, scan_c" not in out.out  # scan_b counted
    assert out.out.splitlines()[1].startswith("unlabeled (5): ")
    # data.spacing resamples every case to one grid: the spacing problem goes, the unreadable file stays
    code, out = _check(capsys, "--labeled", str(HIPPO), "--split-labeled", "labeled_2", "--unlabeled", str(unl),
                       "--set", "data.spacing=[1,1,1]")
    assert code == 2 and sum(ln.startswith("error: ") for ln in out.out.splitlines()) == 1
    # a supervised method leaves the unlabeled pool out, as train does: nothing wrong is read
    code, out = _check(capsys, "--labeled", str(HIPPO), "--split-labeled", "labeled_2", "--unlabeled", str(unl),
                       "--method", "supervised")
    assert code == 0 and "unlabeled (0): -" in out.out
    # two channels where the config says one
    code, out = _check(capsys, "--labeled", str(HIPPO), "--split-labeled", "labeled_2", "--set",
                       "data.in_channels=2", "--json")
    report = json.loads(out.out)
    assert code == 2 and report["errors"] == 6
    assert all("the config says data.in_channels=2" in p["message"] for p in report["problems"])
    # a folder that does not exist: one line, exit 2, also as JSON
    code, out = _check(capsys, "--labeled", str(tmp_path / "nope"))
    assert code == 2 and out.out.splitlines()[-2] == f"error: {tmp_path / 'nope'}: dataset folder not found"
    code, out = _check(capsys, "--labeled", str(tmp_path / "nope"), "--json")
    assert code == 2 and json.loads(out.out)["problems"][0]["path"] == str(tmp_path / "nope")
    code, out = _check(capsys, "--labeled", str(HIPPO), "--set", "data.nope=1")
    assert code == 2 and "unknown key data.nope" in out.err


def test_no_labeled_cases_names_the_folders_searched(tmp_path, capsys):
    images = tmp_path / "imgs"
    labels = tmp_path / "labs"
    images.mkdir()
    labels.mkdir()
    for i in ("008", "011"):
        shutil.copyfile(HIPPO / "imagesTr" / f"hippocampus_{i}.nii.gz", images / f"hippocampus_{i}.nii.gz")
    shutil.copyfile(HIPPO / "labelsTr" / "hippocampus_008.nii.gz", labels / "other_name.nii.gz")
    code, out = _check(capsys, "--labeled", str(images), "--labels", str(labels))
    errors = [ln for ln in out.out.splitlines() if ln.startswith("error: ")]
    assert code == 2 and len(errors) == 2
    assert f"{labels / 'other_name.nii.gz'}: label file without an image" in errors[0]
    assert errors[1] == (f"error: no labeled cases: none of the 2 images in {images} has a label map of the "
                         f"same name in {labels}")
    root = tmp_path / "msd"
    (root / "imagesTr").mkdir(parents=True)
    shutil.copyfile(HIPPO / "imagesTr" / "hippocampus_008.nii.gz", root / "imagesTr" / "a.nii.gz")
    code, out = _check(capsys, "--labeled", str(root))
    assert code == 2 and f"error: no labeled cases: {root} has imagesTr/ but no labelsTr/" in out.out
