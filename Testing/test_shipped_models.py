"""The models shipped in ``semisupseg/models``: listed by the catalogue, small, with complete cards, and segmenting
real scans they were never trained on (bundled test-split cases always; the shared held-out split when present)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from semisupseg.catalogue import ModelCatalogue
from semisupseg.checkpoint import read_card
from semisupseg.cli import main
from semisupseg.io import read_volume

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "src" / "semisupseg" / "models"
SAMPLE = REPO / "src" / "semisupseg" / "sample_data" / "hippocampus"
SPLIT = json.loads((REPO / "benchmarks" / "splits" / "hippocampus.json").read_text())
SHARED_HIPPO = REPO.parent / "shared" / "data" / "Task04_Hippocampus"


def _dice_rows(pred, ref, labels, tmp_path):
    out = tmp_path / "scores.csv"
    assert main(["evaluate", str(pred), str(ref), "--labels", *map(str, labels), "-o", str(out), "--quiet"]) == 0
    with open(out) as fh:
        return list(csv.DictReader(fh))


def test_shipped_models_are_listed_small_and_documented(tmp_path):
    entries = {e.name: e for e in ModelCatalogue(home=tmp_path).entries() if e.source == "shipped"}
    assert {"hippocampus", "left-atrium"} <= set(entries)
    models_md = (REPO / "MODELS.md").read_text()
    for name, entry in entries.items():
        assert entry.error is None
        assert entry.path.stat().st_size <= 10 * 1024 * 1024, f"{name} is over 10 MB"
        card = read_card(entry.path)
        assert card.training["augmentation"] == "none"
        assert card.training["test"]["cases"] >= 16 and card.training["data"]["licence"]
        assert all(n != f"class_{i}" for i, n in enumerate(card.class_names)), "classes must be named"
        assert f"`{name}`" in models_md


def test_hippocampus_model_on_bundled_scans_it_never_saw(tmp_path):
    cases = [c for c in ("hippocampus_011", "hippocampus_015") if c in SPLIT["test"]]
    assert cases, "the bundled test-split cases moved"
    images = [str(SAMPLE / "imagesTr" / f"{c}.nii.gz") for c in cases]
    pred = tmp_path / "pred"
    assert main(["segment", *images, "--model", "hippocampus", "-o", str(pred), "--sdm", "--entropy"]) == 0
    for c in cases:
        image = read_volume(SAMPLE / "imagesTr" / f"{c}.nii.gz")
        for suffix in ("label", "entropy"):
            assert read_volume(pred / f"{c}_{suffix}.nii.gz").same_geometry(image, tol=1e-5)
    rows = _dice_rows(pred, SAMPLE / "labelsTr", [1, 2], tmp_path)
    dice = [float(r["dice"]) for r in rows]
    # measured 2026-12-04 (the 5-member sgrs ensemble): 0.922 / 0.891 and 0.870 / 0.842 (the single sgrs model before
    # it: 0.909 / 0.878 and 0.869 / 0.852)
    assert len(dice) == 2 * len(cases) and min(dice) > 0.80 and np.mean(dice) > 0.84


@pytest.mark.parametrize("model, image", [
    ("hippocampus", SAMPLE / "imagesTr" / "hippocampus_011.nii.gz"),
    ("left-atrium", next((REPO / "src" / "semisupseg" / "sample_data" / "la" / "imagesTr").glob("*.nii.gz")))])
def test_shipped_models_segment_a_scan_stored_in_any_voxel_order_alike(tmp_path, model, image):
    """The same scan written in other voxel orders (only the header and the array's order change) gets the same
    labels, each in its own file's geometry: the card's training order is restored before the network sees it.
    Before, the hippocampus model scored 0.07 Dice on its own scan stored PIR."""
    import SimpleITK as sitk

    from semisupseg.io import from_sitk, to_sitk, write_volume
    from semisupseg.orientation import orientation_code, reorientation

    scan = read_volume(image)
    trained = read_card(MODELS / f"{model}.pt").inference["orientation"]
    assert orientation_code(scan.direction) == trained  # the sample is stored as the training scans were
    files = [image]
    for code in ("PIR", "LPS" if trained != "LPS" else "RAS"):
        files.append(write_volume(from_sitk(sitk.DICOMOrient(to_sitk(scan), code)), tmp_path / f"as_{code}.nii.gz"))
    pred = tmp_path / "pred"
    assert main(["segment", *map(str, files), "--model", model, "-o", str(pred)]) == 0
    first = read_volume(pred / f"{files[0].name[:-7]}_label.nii.gz")
    assert first.array.any()
    for f in files[1:]:
        other = read_volume(pred / f"{f.name[:-7]}_label.nii.gz")
        assert other.same_geometry(read_volume(f), tol=1e-6)
        np.testing.assert_array_equal(reorientation(scan.direction, orientation_code(other.direction)).array(
            first.array), other.array)


@pytest.mark.slow
def test_hippocampus_model_on_the_shared_held_out_split(tmp_path):
    if not (SHARED_HIPPO / "imagesTr").is_dir():
        pytest.skip("shared Task04_Hippocampus not available")
    cases = SPLIT["test"][:12]
    pred = tmp_path / "pred"
    assert main(["segment", *[str(SHARED_HIPPO / "imagesTr" / f"{c}.nii.gz") for c in cases], "--model",
                 "hippocampus", "-o", str(pred)]) == 0
    rows = _dice_rows(pred, SHARED_HIPPO / "labelsTr", [1, 2], tmp_path)
    assert {r["case"] for r in rows} == set(cases)
    # the card's figure over all 40 test cases is 0.888 / 0.869 (these 12: 0.888 mean); a floor below it
    assert np.mean([float(r["dice"]) for r in rows]) > 0.85


def test_half_precision_weights_keep_the_shipped_model_labels(tmp_path, capsys):
    """``ship_model.py --half`` stores float16 weights only if the labels hold: the check itself, on the shipped
    hippocampus model and the bundled scans (every case and class scored, not a vacuous 1.0)."""
    import sys

    from semisupseg.checkpoint import load_model

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import ship_model
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"test": ["hippocampus_011", "hippocampus_015"]}))
    model, card = load_model(MODELS / "hippocampus.pt")
    worst = ship_model.half_precision_agreement(model, card, SAMPLE, split)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if " label " in ln]
    assert len(lines) == 4  # 2 cases x 2 classes
    assert 0.999 <= worst <= 1.0
    # a split without test images (a model trained on every case) proves nothing: refused, not a vacuous 1.0
    split.write_text(json.dumps({"test": []}))
    with pytest.raises(ValueError, match="empty test list proves nothing"):
        ship_model.half_precision_agreement(model, card, SAMPLE, split)


# ------------------------------------------------------------------------------------------------ left atrium
LA_SAMPLE = REPO / "src" / "semisupseg" / "sample_data" / "la"
LA_SPLIT = json.loads((REPO / "benchmarks" / "splits" / "la.json").read_text())
SHARED_LA = REPO.parent / "shared" / "data" / "LA"
#: the release's full-resolution (0.625 mm) scans in shared/: all three are in the model's unlabeled pool (their
#: labels were never used in training)
LA_H5 = [SHARED_LA / "h5" / c / "mri_norm2.h5" for c in ("5FKQL4K14KCB72Y8YMC2", "8M99G0JLAXG9GLPV0O8G",
                                                            "FGM5NIWN3URY4HF4WNUW")]


def test_left_atrium_model_card_and_the_bundled_sample_scans(tmp_path):
    """Geometry and a sanity floor on the bundled 1.25 mm sample scans (in the model's labeled set: the held-out
    figures are the next tests'); the card recommends the largest-component post-processing and segment uses it."""
    card = read_card(MODELS / "left-atrium.pt")
    assert card.class_names == ["background", "left atrium"] and card.inference == {"keep_largest": True, "orientation": "LPS"}
    assert card.training["test"]["keep_largest"] is True and card.training["weights_stored_as"] == "float16"
    cases = sorted(p.name[: -len(".nii.gz")] for p in (LA_SAMPLE / "imagesTr").glob("*.nii.gz"))[:2]
    pred = tmp_path / "pred"
    assert main(["segment", *[str(LA_SAMPLE / "imagesTr" / f"{c}.nii.gz") for c in cases], "--model",
                 "left-atrium", "-o", str(pred), "--sdm", "--entropy"]) == 0
    for c in cases:
        image = read_volume(LA_SAMPLE / "imagesTr" / f"{c}.nii.gz")
        for suffix in ("label", "sdm", "entropy"):
            assert read_volume(pred / f"{c}_{suffix}.nii.gz").same_geometry(image, tol=1e-5)
    dice = [float(r["dice"]) for r in _dice_rows(pred, LA_SAMPLE / "labelsTr", [1], tmp_path)]
    # measured 2026-12-04 (sgrs with data.perturb=both): 0.952, 0.937; the unperturbed sgrs model before it 0.961,
    # 0.948 (training scans: a sanity floor only; the sassnet model before those fitted them closer, 0.979 / 0.976,
    # and did worse on the held-out scans)
    assert len(dice) == len(cases) and min(dice) > 0.92


@pytest.mark.slow
def test_left_atrium_model_on_full_resolution_h5_and_nrrd(tmp_path):
    """The release's full-resolution scans (0.625 mm; the model works at 1.25 mm and resamples inside), given as the
    release's h5 and as NRRD: output in the input's geometry, the same labels either way, Dice above a floor."""
    if not LA_H5[0].is_file():
        pytest.skip("shared LA h5 files not available")
    from semisupseg.io import read_la_h5, write_volume

    dices = []
    for h5 in LA_H5:
        case = h5.parent.name
        image, label = read_la_h5(h5)
        nrrd = tmp_path / f"{case}.nrrd"
        write_volume(image, nrrd)
        out_h5, out_nrrd = tmp_path / "h5", tmp_path / "nrrd"
        assert main(["segment", str(h5), "--model", "left-atrium", "-o", str(out_h5)]) == 0
        assert main(["segment", str(nrrd), "--model", "left-atrium", "-o", str(out_nrrd)]) == 0
        seg_h5 = read_volume(out_h5 / f"{case}_label.nii.gz")
        seg_nrrd = read_volume(out_nrrd / f"{case}_label.nii.gz")
        assert seg_h5.same_geometry(image, tol=1e-5) and seg_h5.spacing == pytest.approx((0.625,) * 3)
        assert np.array_equal(seg_h5.array, seg_nrrd.array)
        a, b = seg_h5.array == 1, label.array == 1
        dices.append(2.0 * float((a & b).sum()) / float(a.sum() + b.sum()))
    # measured 2026-12-04: 0.891, 0.775, 0.929 (the model before it: 0.876, 0.785, 0.933)
    assert min(dices) > 0.75 and np.mean(dices) > 0.84


@pytest.mark.slow
def test_left_atrium_model_on_the_shared_held_out_split(tmp_path):
    """The 16 LA scans no training run saw (``benchmarks/splits/la.json`` ``test``): the card's figures hold."""
    if not (SHARED_LA / "imagesTr").is_dir():
        pytest.skip("shared LA not available")
    cases = LA_SPLIT["test"]
    pred = tmp_path / "pred"
    assert main(["segment", *[str(SHARED_LA / "imagesTr" / f"{c}.nii.gz") for c in cases], "--model",
                 "left-atrium", "-o", str(pred)]) == 0
    rows = _dice_rows(pred, SHARED_LA / "labelsTr", [1], tmp_path)
    assert {r["case"] for r in rows} == set(cases)
    dice = [float(r["dice"]) for r in rows]
    # measured 2026-12-04 (sgrs retrained with data.perturb=both): mean 0.9067, median 0.907, min 0.873 (0.9057
    # without the largest-component step; the unperturbed model before it 0.9063); the target is 0.89
    assert np.mean(dice) > 0.89 and min(dice) > 0.85
    card = read_card(MODELS / "left-atrium.pt")
    assert np.mean(dice) == pytest.approx(card.training["test"]["per_class"]["left atrium"]["dice_mean"], abs=2e-3)
