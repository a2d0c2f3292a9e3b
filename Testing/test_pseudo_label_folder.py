"""``benchmarks/pseudo_label_folder.py`` (the self-training check of RESULTS.md): the folder it builds keeps the
chosen and test cases' own labels, gives the other training cases the teacher's, and never overwrites a folder;
a split without the lists it needs is one line."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "src" / "semisupseg" / "sample_data" / "hippocampus"
CASES = sorted(p.name[: -len(".nii.gz")] for p in (SAMPLE / "imagesTr").glob("*.nii.gz"))


def _run(*args):
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "pseudo_label_folder.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=str(REPO))


def _array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_own_labels_kept_and_teacher_labels_written(tmp_path):
    train, test = CASES[:3], CASES[3:4]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": train, "test": test, "labeled_1": train[:1]}))
    out = tmp_path / "pseudo"
    res = _run("--dataset", "hippocampus", "--data", SAMPLE, "--split", split, "--teacher", "hippocampus",
               "--labeled-key", "labeled_1", "--out", out)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == sorted(f"{c}.nii.gz" for c in train + test)
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == sorted(f"{c}.nii.gz" for c in train + test)
    for case in train[:1] + test:  # their own label maps, untouched
        assert (out / "labelsTr" / f"{case}.nii.gz").resolve() == (SAMPLE / "labelsTr" / f"{case}.nii.gz").resolve()
    teacher_out = tmp_path / "teacher"
    subprocess.run([sys.executable, "-m", "semisupseg", "segment", "--model", "hippocampus", "--output",
                    str(teacher_out)] + [str(SAMPLE / "imagesTr" / f"{c}.nii.gz") for c in train[1:]],
                   check=True, capture_output=True, cwd=str(REPO))
    for case in train[1:]:  # the teacher's labels, on the image's grid
        assert not (out / "labelsTr" / f"{case}.nii.gz").is_symlink()
        mine = _array(out / "labelsTr" / f"{case}.nii.gz")
        np.testing.assert_array_equal(mine, _array(teacher_out / f"{case}_label.nii.gz"))
        assert mine.shape == _array(SAMPLE / "imagesTr" / f"{case}.nii.gz").shape
        assert set(np.unique(mine)) <= {0, 1, 2}
    record = json.loads((out / "pseudo_labels.json").read_text())
    assert record["teacher_labels"] == train[1:] and sorted(record["own_labels"]) == sorted(train[:1] + test)
    assert not [p for p in out.iterdir() if p.name.startswith("tmp")]  # the teacher's scratch folder is gone


def test_an_ensemble_of_teachers_labels_by_their_mean_probabilities(tmp_path):
    """``--teacher A B``: the argmax of the mean probabilities. The same model twice gives that model's own labels;
    two different models give, wherever both of their label maps agree, that label (the mean of two probability
    vectors whose largest entry is the same class has it largest too), and something in between elsewhere."""
    train, test = CASES[:3], CASES[3:4]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": train, "test": test, "labeled_1": train[:1]}))
    tiny = REPO / "SemiSupSeg" / "Resources" / "Testing" / "hippocampus_dtc_tiny.pt"
    own = {}
    for name, teacher in (("shipped", "hippocampus"), ("tiny", str(tiny))):
        subprocess.run([sys.executable, "-m", "semisupseg", "segment", "--model", teacher, "--no-keep-largest",
                        "--output", str(tmp_path / name)] + [str(SAMPLE / "imagesTr" / f"{c}.nii.gz")
                                                              for c in train[1:]],
                       check=True, capture_output=True, cwd=str(REPO))
        own[name] = {c: _array(tmp_path / name / f"{c}_label.nii.gz") for c in train[1:]}
    res = _run("--dataset", "hippocampus", "--data", SAMPLE, "--split", split, "--teacher", "hippocampus",
               "hippocampus", "--labeled-key", "labeled_1", "--out", tmp_path / "twice")
    assert res.returncode == 0, res.stderr
    single = _run("--dataset", "hippocampus", "--data", SAMPLE, "--split", split, "--teacher", "hippocampus",
                  "--labeled-key", "labeled_1", "--out", tmp_path / "once")
    assert single.returncode == 0, single.stderr
    for case in train[1:]:
        twice, once = (_array(tmp_path / d / "labelsTr" / f"{case}.nii.gz") for d in ("twice", "once"))
        assert (twice == once).mean() > 0.999 and (once > 0).sum() > 1000
    res = _run("--dataset", "hippocampus", "--data", SAMPLE, "--split", split, "--teacher", "hippocampus", tiny,
               "--labeled-key", "labeled_1", "--out", tmp_path / "pair")
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "pair" / "pseudo_labels.json").read_text())["teacher"] == ["hippocampus", str(tiny)]
    differ = 0
    for case in train[1:]:
        mine = _array(tmp_path / "pair" / "labelsTr" / f"{case}.nii.gz")
        a, b = own["shipped"][case], own["tiny"][case]
        assert mine.shape == a.shape and set(np.unique(mine)) <= {0, 1, 2}
        np.testing.assert_array_equal(mine[a == b], a[a == b])
        differ += int((a != b).sum())
    assert differ > 0  # the two teachers disagree somewhere, so the check above is not vacuous
    # --keep-largest: the step on the ensemble's labels although no card recommends it (the tiny model's labels
    # of these scans are in pieces)
    from scipy import ndimage

    res = _run("--dataset", "hippocampus", "--data", SAMPLE, "--split", split, "--teacher", tiny, tiny,
               "--keep-largest", "--labeled-key", "labeled_1", "--out", tmp_path / "tiny_largest")
    assert res.returncode == 0, res.stderr
    pieces, CUBE = [], np.ones((3, 3, 3))  # the step's 26-neighbourhood
    for case in train[1:]:
        mine = _array(tmp_path / "tiny_largest" / "labelsTr" / f"{case}.nii.gz")
        for value in (1, 2):
            if (own["tiny"][case] == value).any():
                assert ndimage.label(mine == value, structure=CUBE)[1] == 1
                assert (own["tiny"][case][mine == value] == value).mean() > 0.999
            pieces.append(ndimage.label(own["tiny"][case] == value, structure=CUBE)[1])
    assert max(pieces) > 1  # without the step some class was in pieces: the step did something


def test_refuses_an_existing_folder_and_an_unknown_list(tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": CASES[:2], "test": CASES[2:3], "labeled_1": CASES[:1]}))
    out = tmp_path / "pseudo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = _run("--dataset", "hippocampus", "--data", SAMPLE, "--split", split, "--teacher", "hippocampus",
               "--labeled-key", "labeled_1", "--out", out)
    assert res.returncode != 0 and "exists" in res.stderr and (out / "keep.txt").read_text() == "mine"
    res = _run("--dataset", "hippocampus", "--data", SAMPLE, "--split", split, "--teacher", "hippocampus",
               "--labeled-key", "labeled_9", "--out", tmp_path / "new")
    assert res.returncode != 0 and "labeled_9" in res.stderr and not (tmp_path / "new").exists()
    split.write_text(json.dumps({"train": CASES[:2], "labeled_1": CASES[:1]}))
    res = _run("--dataset", "hippocampus", "--data", SAMPLE, "--split", split, "--teacher", "hippocampus",
               "--labeled-key", "labeled_1", "--out", tmp_path / "new")
    assert res.returncode != 0 and "'test'" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "new").exists()
