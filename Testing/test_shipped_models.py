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
MODELS = REPO / "semisupseg" / "models"
SAMPLE = REPO / "semisupseg" / "sample_data" / "hippocampus"
SPLIT = json.loads((REPO / "benchmarks" / "splits" / "hippocampus.json").read_text())
SHARED_HIPPO = REPO.parent / "shared" / "data" / "Task04_Hippocampus"


def _dice_rows(pred, ref, labels, tmp_path):
    out = tmp_path / "scores.csv"
    assert main(["evaluate", str(pred), str(ref), "--labels", *map(str, labels), "-o", str(out), "--quiet"]) == 0
    with open(out) as fh:
        return list(csv.DictReader(fh))


def test_shipped_models_are_listed_small_and_documented(tmp_path):
    entries = {e.name: e for e in ModelCatalogue(home=tmp_path).entries() if e.source == "shipped"}
    assert "hippocampus" in entries
    models_md = (REPO / "MODELS.md").read_text()
    for name, entry in entries.items():
        assert entry.error is None
        assert entry.path.stat().st_size <= 10 * 1024 * 1024, f"{name} is over 10 MB"
        card = read_card(entry.path)
        assert card.training["augmentation"] == "none"
        assert card.training["test"]["cases"] >= 20 and card.training["data"]["licence"]
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
    # measured 2026-12-02: 0.886 / 0.901 and 0.836 / 0.807
    assert len(dice) == 2 * len(cases) and min(dice) > 0.75 and np.mean(dice) > 0.80


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
    # the card's figure over all 40 test cases is 0.864 / 0.846; a floor below it, for these 12
    assert np.mean([float(r["dice"]) for r in rows]) > 0.82


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
