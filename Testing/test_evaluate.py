"""Tests of semisupseg.evaluation and the ``semisupseg evaluate`` command."""
from __future__ import annotations

import csv
import math
import shutil

import numpy as np
import pytest

from semisupseg import io as sio
from semisupseg.cli import main as cli_main
from semisupseg.errors import Cancelled, InputError, OutputExistsError
from semisupseg.evaluation import CSV_COLUMNS, evaluate, match_cases
from semisupseg.progress import CancelToken
from semisupseg.volume import Volume

medpy_binary = pytest.importorskip("medpy.metric.binary")

SPACING_XYZ = (0.8, 1.0, 2.5)


def _shift_x(array: np.ndarray, n: int = 1) -> np.ndarray:
    """Shift a (z, y, x) label map by ``n`` voxels along x (zero fill, no wrap)."""
    out = np.zeros_like(array)
    out[..., n:] = array[..., :-n]
    return out


def _labels(rng, shape=(9, 12, 14)):
    lab = np.zeros(shape, np.uint8)
    lab[2:6, 3:8, 3:9] = 1
    lab[5:8, 4:10, 6:12] = 2
    lab[rng.random(shape) > 0.97] = 0
    return lab


@pytest.fixture
def folders(tmp_path, rng):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    arrays = {}
    for i in range(3):
        lab = _labels(rng)
        pred = _shift_x(lab)
        if i == 2:
            pred[pred == 2] = 0  # class 2 missed entirely
        arrays[f"case_{i}"] = (pred, lab)
        sio.write_volume(Volume(lab, spacing=SPACING_XYZ, origin=(1, 2, 3)), ref_dir / f"case_{i}.nii.gz")
        sio.write_volume(Volume(pred, spacing=SPACING_XYZ, origin=(1, 2, 3)), pred_dir / f"case_{i}.nii.gz")
    sio.write_volume(Volume(_labels(rng), spacing=SPACING_XYZ, origin=(1, 2, 3)), ref_dir / "case_9.nii.gz")
    return pred_dir, ref_dir, arrays


def test_evaluate_folders_matches_medpy_and_reports_empty(folders):
    pred_dir, ref_dir, arrays = folders
    calls = []
    result = evaluate(pred_dir, ref_dir, [1, 2], progress=lambda f, m: calls.append(f))
    assert [c.case_id for c in result.cases] == ["case_0", "case_1", "case_2"]
    assert result.missing_predictions == ["case_9"]
    assert len(result.rows) == 6
    assert calls[-1] == pytest.approx(1.0) and len(calls) == 3
    sp_zyx = SPACING_XYZ[::-1]
    for row in result.rows:
        pred, ref = arrays[row.case_id]
        m = row.metrics
        p, r = pred == m.label, ref == m.label
        assert m.dice == pytest.approx(medpy_binary.dc(p, r), abs=1e-12)
        if row.case_id == "case_2" and m.label == 2:
            assert m.status == "empty_pred" and m.dice == 0.0 and math.isnan(m.hd95)
            continue
        assert m.status == "ok"
        assert m.hd95 == pytest.approx(medpy_binary.hd95(p, r, sp_zyx), abs=1e-6)
        assert m.asd == pytest.approx(medpy_binary.asd(p, r, sp_zyx), abs=1e-6)
        assert m.assd == pytest.approx(medpy_binary.assd(p, r, sp_zyx), abs=1e-6)
        assert m.hd95_vox == pytest.approx(medpy_binary.hd95(p, r), abs=1e-6)
    s1, s2 = result.summary
    assert s2.status_counts["empty_pred"] == 1 and s2.n_finite["hd95"] == 2 and s2.n_finite["dice"] == 3
    text = result.format_summary()
    assert "case_9" in text and "HD95 mm" in text and "2/3" in text


def test_labels_default_adds_both_empty_rows(tmp_path):
    a = np.zeros((5, 6, 7), np.uint8)
    a[1:3, 1:3, 1:3] = 1
    b = a.copy()
    b[3:5, 3:5, 3:5] = 3
    for name, arr in (("x", a), ("y", b)):
        for d in ("p", "r"):
            (tmp_path / d).mkdir(exist_ok=True)
            sio.write_volume(Volume(arr), tmp_path / d / f"{name}.nii.gz")
    result = evaluate(tmp_path / "p", tmp_path / "r")
    assert result.labels == [1, 3]
    rows = {(r.case_id, r.metrics.label): r.metrics for r in result.rows}
    assert rows[("x", 3)].status == "both_empty" and rows[("x", 3)].dice == 1.0
    assert rows[("y", 3)].status == "ok" and rows[("y", 3)].hd95 == 0.0


def test_matching_rules_and_errors(folders, tmp_path):
    pred_dir, ref_dir, _ = folders
    # single files pair whatever their names
    other = tmp_path / "renamed_seg.nii.gz"
    shutil.copy(pred_dir / "case_0.nii.gz", other)
    cases, missing = match_cases(other, ref_dir / "case_0.nii.gz")
    assert len(cases) == 1 and not missing
    # a suffix is dropped on request
    suffixed = tmp_path / "sfx"
    suffixed.mkdir()
    shutil.copy(pred_dir / "case_1.nii.gz", suffixed / "case_1_seg.nii.gz")
    with pytest.raises(InputError, match="no reference file named 'case_1_seg'"):
        match_cases(suffixed, ref_dir)
    cases, missing = match_cases(suffixed, ref_dir, pred_suffix="_seg")
    assert [c.case_id for c in cases] == ["case_1"] and "case_0" in missing
    # one of segment's <case>_label files against a folder of references: its case is the name without _label
    shutil.copy(pred_dir / "case_1.nii.gz", tmp_path / "case_1_label.nii.gz")
    cases, missing = match_cases(tmp_path / "case_1_label.nii.gz", ref_dir)
    assert [c.case_id for c in cases] == ["case_1"] and "case_0" in missing
    # file lists
    cases, _ = match_cases([pred_dir / "case_2.nii.gz", pred_dir / "case_0.nii.gz"], ref_dir)
    assert [c.case_id for c in cases] == ["case_0", "case_2"]
    with pytest.raises(InputError, match="no such file"):
        evaluate(tmp_path / "nope", ref_dir)
    with pytest.raises(InputError, match="background"):
        evaluate(pred_dir, ref_dir, [0, 1])


def test_segment_output_folder_and_la_h5_references(tmp_path, rng):
    """``semisupseg segment`` writes <case>_label beside <case>_prob/_sdm: those are matched by default; LA release
    references <ID>/mri_norm2.h5 are named by their folder."""
    h5py = pytest.importorskip("h5py")
    out_dir, ref_dir = tmp_path / "out", tmp_path / "la"
    out_dir.mkdir()
    for cid in ("AAA", "BBB"):
        lab = _labels(rng)
        lab[lab == 2] = 1
        (ref_dir / cid).mkdir(parents=True)
        with h5py.File(ref_dir / cid / "mri_norm2.h5", "w") as fh:
            fh["image"] = rng.random(lab.shape[::-1]).astype(np.float32)
            fh["label"] = lab.transpose(2, 1, 0)  # the release stores x, y, z
        sp = sio.LA_H5_SPACING
        sio.write_volume(Volume(_shift_x(lab), spacing=sp), out_dir / f"{cid}_label.nii.gz")
        sio.write_volume(Volume(rng.random(lab.shape).astype(np.float32), spacing=sp), out_dir / f"{cid}_sdm.nii.gz")
    result = evaluate(out_dir, ref_dir, [1])
    assert [c.case_id for c in result.cases] == ["AAA", "BBB"] and not result.missing_predictions
    for row in result.rows:
        ref = sio.read_label_or_h5(ref_dir / row.case_id / "mri_norm2.h5").array == 1
        pred = _shift_x(sio.read_label_or_h5(ref_dir / row.case_id / "mri_norm2.h5").array) == 1
        assert row.metrics.hd95 == pytest.approx(medpy_binary.hd95(pred, ref, (0.625,) * 3), abs=1e-6)
    # an explicit suffix that matches nothing is a clear error
    with pytest.raises(InputError, match="ends with '_seg'"):
        match_cases(out_dir, ref_dir, pred_suffix="_seg")


def test_geometry_mismatch_is_an_error(folders, tmp_path):
    pred_dir, ref_dir, arrays = folders
    bad = tmp_path / "bad"
    bad.mkdir()
    pred, _ = arrays["case_0"]
    sio.write_volume(Volume(pred, spacing=(1.0, 1.0, 1.0), origin=(1, 2, 3)), bad / "case_0.nii.gz")
    with pytest.raises(InputError, match="spacing") as exc:
        evaluate(bad, ref_dir)
    assert "case_0.nii.gz" in str(exc.value)
    assert evaluate(bad, ref_dir, [1], check_geometry=False).rows[0].metrics.status == "ok"
    sio.write_volume(Volume(pred[:-1], spacing=SPACING_XYZ, origin=(1, 2, 3)), bad / "case_0.nii.gz",
                     overwrite=True)
    with pytest.raises(InputError, match="size"):
        evaluate(bad, ref_dir, check_geometry=False)


def test_cancel_between_cases(folders):
    pred_dir, ref_dir, _ = folders
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        evaluate(pred_dir, ref_dir, cancel=token)


def test_cli_writes_csv_atomically_and_refuses_overwrite(folders, tmp_path, capsys):
    pred_dir, ref_dir, _ = folders
    out = tmp_path / "metrics.csv"
    summ = tmp_path / "summary.csv"
    rc = cli_main(["evaluate", str(pred_dir), str(ref_dir), "--labels", "1", "2", "-o", str(out),
                   "--summary-csv", str(summ), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "3 case(s) evaluated" in printed and "Dice" in printed and "empty pred" in printed
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0].keys()) == CSV_COLUMNS and len(rows) == 6
    missed = [r for r in rows if r["status"] == "empty_pred"]
    assert len(missed) == 1 and missed[0]["hd95_mm"] == "nan" and missed[0]["dice"] == "0.0"
    with summ.open() as fh:
        srows = list(csv.DictReader(fh))
    assert [(r["label"], r["statistic"]) for r in srows][:3] == [("1", "mean"), ("1", "std"), ("1", "n")]
    before = out.read_bytes()
    rc = cli_main(["evaluate", str(pred_dir), str(ref_dir), "-o", str(out), "--quiet"])
    assert rc == 2 and "exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert cli_main(["evaluate", str(pred_dir), str(ref_dir), "--labels", "1", "-o", str(out), "--overwrite",
                     "--quiet"]) == 0
    assert len(out.read_text().strip().splitlines()) == 1 + 3
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(OutputExistsError, match="pass --overwrite to replace it") as exc:
        evaluate(pred_dir, ref_dir, [1]).write_csv(out)
    assert "overwrite=True" not in str(exc.value)


def test_cli_notes_a_label_in_neither_file_and_one_in_no_reference(folders, tmp_path, capsys):
    """--labels 3 (in no file) keeps Dice 1.0 (empty-vs-empty) but says so on stderr, one line per label; a label
    only predicted (in no reference) gets its own note. Labels in the references get none."""
    pred_dir, ref_dir, _ = folders
    assert cli_main(["evaluate", str(pred_dir), str(ref_dir), "--labels", "1", "3", "--quiet"]) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("note:")]
    assert notes == ["note: label 3 occurs in neither the prediction nor the reference of any of the 3 case(s): "
                     "its Dice 1.0 only means both are empty (is the label value right?)"]
    assert "note" not in captured.out
    result = evaluate(pred_dir, ref_dir, [1, 3])
    assert all(r.metrics.dice == 1.0 for r in result.rows if r.metrics.label == 3)  # the score is kept
    # a value only in a prediction: no reference holds it
    only_pred = tmp_path / "only_pred"
    shutil.copytree(pred_dir, only_pred)
    arr = sio.read_label(only_pred / "case_0.nii.gz")
    arr.array[0, 0, 0] = 4
    sio.write_volume(arr, only_pred / "case_0.nii.gz", overwrite=True)
    assert cli_main(["evaluate", str(only_pred), str(ref_dir), "--labels", "1", "2", "4", "--quiet"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == ["note: label 4 occurs in no reference of the 3 case(s) (only in 1 prediction(s)): its Dice is 0 "
                     "where predicted, 1.0 where both are empty"]
    assert cli_main(["evaluate", str(pred_dir), str(ref_dir), "--quiet"]) == 0
    assert "note:" not in capsys.readouterr().err


def _hippocampus_cases(hippocampus_dir, n=3):
    files = sorted((hippocampus_dir / "labelsTr").glob("hippocampus_*.nii.gz"))
    assert files, "no labels in Task04_Hippocampus/labelsTr"
    return files[:n]


@pytest.mark.slow
def test_done_when_hippocampus_self_and_shifted(hippocampus_dir, tmp_path, capsys):
    """Issue 2 'done when': labels against themselves give Dice 1 / HD95 0; against a copy shifted one voxel along x
    they give non-trivial values that match medpy."""
    files = _hippocampus_cases(hippocampus_dir)
    ref_dir, shifted_dir = tmp_path / "ref", tmp_path / "shifted"
    ref_dir.mkdir()
    shifted_dir.mkdir()
    for f in files:
        shutil.copy(f, ref_dir / f.name)
        vol = sio.read_label(f)
        sio.write_volume(vol.with_array(_shift_x(vol.array)), shifted_dir / f.name)

    rc = cli_main(["evaluate", str(ref_dir), str(ref_dir), "--quiet", "-o", str(tmp_path / "self.csv")])
    assert rc == 0
    assert "1.0000 ± 0.0000" in capsys.readouterr().out
    self_rows = list(csv.DictReader((tmp_path / "self.csv").open()))
    assert len(self_rows) == 2 * len(files)
    assert all(float(r["dice"]) == 1.0 and float(r["hd95_mm"]) == 0.0 and float(r["assd_mm"]) == 0.0
               for r in self_rows)

    rc = cli_main(["evaluate", str(shifted_dir), str(ref_dir), "--labels", "1", "2", "--quiet",
                   "-o", str(tmp_path / "shift.csv")])
    assert rc == 0
    rows = list(csv.DictReader((tmp_path / "shift.csv").open()))
    for row in rows:
        ref = sio.read_label(ref_dir / f"{row['case']}.nii.gz")
        label = int(row["label"])
        r = ref.array == label
        p = _shift_x(ref.array) == label
        sp = ref.spacing_zyx
        assert 0.3 < float(row["dice"]) < 1.0
        assert float(row["dice"]) == pytest.approx(medpy_binary.dc(p, r), abs=1e-9)
        assert float(row["hd95_mm"]) == pytest.approx(medpy_binary.hd95(p, r, sp), abs=1e-6)
        assert float(row["asd_mm"]) == pytest.approx(medpy_binary.asd(p, r, sp), abs=1e-6)
        assert float(row["assd_mm"]) == pytest.approx(medpy_binary.assd(p, r, sp), abs=1e-6)
        assert float(row["hd95_mm"]) >= 1.0 and float(row["assd_mm"]) > 0.0


def test_cases_restricts_both_sides(folders):
    pred_dir, ref_dir, _ = folders
    cases, missing = match_cases(pred_dir, ref_dir, only=["case_0", "case_2"])
    assert [c.case_id for c in cases] == ["case_0", "case_2"] and missing == []
    result = evaluate(pred_dir, ref_dir, [1], cases=["case_1"])
    assert [r.case_id for r in result.rows] == ["case_1"]
    with pytest.raises(InputError, match="no reference file for case"):
        match_cases(pred_dir, ref_dir, only=["case_0", "case_404"])


def test_cli_scores_every_class_of_the_model_and_refuses_nothing_to_score(tmp_path, capsys):
    """A true negative (no structure in the reference, none predicted) was dropped without a word: with the classes
    known (--model, a dataset.json) each is scored (Dice 1, both empty, with the note); with nothing known and
    nothing found, one line and exit 2 instead of an empty table."""
    import json

    empty = Volume(np.zeros((6, 7, 8), np.uint8))
    pred, ref = tmp_path / "pred", tmp_path / "labelsTr"
    sio.write_volume(empty, pred / "case_0.nii.gz")
    sio.write_volume(empty, ref / "case_0.nii.gz")
    out = tmp_path / "scores.csv"
    assert cli_main(["evaluate", str(pred), str(ref), "--quiet", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nothing to score" in err and "--labels" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert cli_main(["evaluate", str(pred), str(ref), "--quiet", "--model", "hippocampus", "-o", str(out)]) == 0
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["label"], r["dice"], r["status"]) for r in rows] == [("1", "1.0", "both_empty"),
                                                                    ("2", "1.0", "both_empty")]
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "lesion"}}))
    capsys.readouterr()
    assert cli_main(["evaluate", str(pred), str(ref), "--quiet"]) == 0
    assert "lesion" in capsys.readouterr().out


def test_a_prediction_stored_in_another_voxel_order_is_compared_where_it_is(tmp_path, capsys):
    """The same label written LPS by one tool and PIR by another: Dice 1, not an origin error (and not Dice 0 with
    --no-geometry-check, voxel index against voxel index). A grid that differs otherwise still says so, orders named."""
    import SimpleITK as sitk

    rng = np.random.default_rng(3)
    ref = Volume(_labels(rng), (0.8, 1.1, 2.0), (5.0, -3.0, 7.5))
    sio.write_volume(ref, tmp_path / "ref" / "case.nii.gz")
    turned = sio.from_sitk(sitk.DICOMOrient(sio.to_sitk(ref), "PIR"))
    sio.write_volume(turned, tmp_path / "pred" / "case.nii.gz")
    result = evaluate(tmp_path / "pred", tmp_path / "ref")
    assert result.rows and all(r.metrics.dice == 1.0 for r in result.rows)
    moved = Volume(turned.array, turned.spacing, (turned.origin[0] + 5.0, *turned.origin[1:]), turned.direction)
    sio.write_volume(moved, tmp_path / "pred" / "case.nii.gz", overwrite=True)
    with pytest.raises(InputError, match=r"prediction origin \(10\.0, .* differs from reference case.nii.gz origin"):
        evaluate(tmp_path / "pred", tmp_path / "ref")
    oblique = Volume(ref.array, ref.spacing, ref.origin, np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    sio.write_volume(oblique, tmp_path / "pred" / "case.nii.gz", overwrite=True)  # same array, turned 90 degrees
    with pytest.raises(InputError, match=r"direction differs from reference case.nii.gz \(voxel order "):
        evaluate(tmp_path / "pred", tmp_path / "ref")


def test_a_sheared_reference_grid_is_named_its_distances_approximate(tmp_path, capsys):
    """A grid whose axes are not perpendicular (NRRD ``space directions`` with a 30 degree tilt, as gantry-tilted CT):
    the distances take each axis's spacing as if they were (6.00 mm where the physical HD95 is 5.57), so the command
    says so, naming the case; perpendicular grids (oblique ones too) get no such note."""
    import SimpleITK as sitk

    ref = np.zeros((12, 20, 20), np.uint8)
    ref[3:9, 5:15, 5:15] = 1
    tilt = np.deg2rad(30)
    sheared = (1, 0, 0, 0, 1, np.sin(tilt), 0, 0, np.cos(tilt))
    for name, arr, direction in (("ref", ref, sheared), ("pred", np.roll(ref, 2, axis=0), sheared),
                                 ("ref_ok", ref, (1, 0, 0, 0, 0, -1, 0, 1, 0)),
                                 ("pred_ok", np.roll(ref, 2, axis=0), (1, 0, 0, 0, 0, -1, 0, 1, 0))):
        image = sitk.GetImageFromArray(arr)
        image.SetSpacing((1.0, 1.0, 3.0))
        image.SetDirection(direction)
        (tmp_path / name).mkdir()
        sitk.WriteImage(image, str(tmp_path / name / "c.nrrd"))
    result = evaluate(tmp_path / "pred", tmp_path / "ref", [1])
    assert result.sheared == ["c"] and "not perpendicular" in result.grid_notes()[0]
    assert evaluate(tmp_path / "pred_ok", tmp_path / "ref_ok", [1]).grid_notes() == []
    assert cli_main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "--labels", "1"]) == 0
    assert "note: the grid axes of c are not perpendicular" in capsys.readouterr().err


def test_a_reference_value_that_is_not_an_evaluated_label_is_named(tmp_path, capsys):
    """With the classes given (``--labels``, ``--model``), a reference holding another value (a structure numbered
    5 instead of 2) was ignored without a word: its class just looked empty. It is named with its cases."""
    ref = np.zeros((10, 12, 12), np.uint8)
    ref[2:6, 2:6, 2:6] = 1
    ref[6:8, 6:9, 6:9] = 5
    sio.write_volume(Volume(ref), tmp_path / "ref" / "c1.nii.gz")
    sio.write_volume(Volume((ref == 1).astype(np.uint8)), tmp_path / "pred" / "c1.nii.gz")
    result = evaluate(tmp_path / "pred", tmp_path / "ref", [1, 2])
    assert result.unscored == {5: ["c1"]}
    assert any(n.startswith("label value 5 is in the reference of c1 but is not one of the evaluated labels (1, 2)")
               for n in result.label_notes())
    assert cli_main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "--labels", "1", "2"]) == 0
    assert "label value 5" not in capsys.readouterr().err  # --labels: a subset chosen on purpose
    (tmp_path / "dataset.json").write_text('{"labels": {"0": "background", "1": "head", "2": "tail"}}')
    assert cli_main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref")]) == 0  # the classes of dataset.json
    assert "note: label value 5 is in the reference of c1" in capsys.readouterr().err
    assert evaluate(tmp_path / "pred", tmp_path / "ref").unscored == {}  # no classes given: every value is scored
