"""Dataset fingerprint and the training defaults derived from it (semisupseg.data.fingerprint), on the bundled
sample scans and the shared datasets (skipped when absent)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from semisupseg.cli import main
from semisupseg.data import DatasetSpec, build_dataset, sample_dataset
from semisupseg.data.fingerprint import (DEFAULT_MEMORY_BUDGET_MB, describe_plan, estimate_memory_mb,
                                         fingerprint_cases, plan_defaults, plan_for, resolve_plan)
from semisupseg.training import TrainConfig


def _fingerprint(root: Path, **kw):
    ds = build_dataset(DatasetSpec(root=str(root)))
    return fingerprint_cases(ds.labeled + ds.val + ds.unlabeled, dataset_json=root / "dataset.json", **kw)


def test_memory_model_reproduces_its_measurements():
    # peak RSS of a mean-teacher V-Net n16 bf16 step, global batch 4 (see the module doc)
    for patch, measured in (([32, 48, 32], 756), ([64, 64, 48], 1093), ([96, 96, 64], 1956), ([112, 112, 80], 2899)):
        assert estimate_memory_mb(patch, 4) == pytest.approx(measured, rel=0.05), patch
    assert estimate_memory_mb([112, 112, 80], 4) < DEFAULT_MEMORY_BUDGET_MB  # the papers' LA setting fits


def test_sample_hippocampus_plan_is_its_own_not_the_la_preset():
    fp = _fingerprint(sample_dataset("hippocampus"))
    assert fp.modality == "MRI" and fp.modality_source == "dataset.json"
    assert fp.class_values == [0, 1, 2] and fp.median_spacing_xyz == [1.0, 1.0, 1.0]
    assert 30 <= fp.median_size_xyz[0] <= 45 and 40 <= fp.median_size_xyz[1] <= 60
    plan = plan_defaults(fp)
    assert plan.patch_size_xyz == [32, 48, 32] and plan.patch_size_xyz != [112, 112, 80]
    assert plan.spacing_xyz is None and plan.normalization == {"kind": "zscore"}
    assert (plan.batch_size, plan.labeled_batch_size) == (4, 2) and plan.memory_mb < 1000
    assert all(p % 16 == 0 for p in plan.patch_size_xyz)


def test_sample_la_plan_and_memory_budget():
    fp = _fingerprint(sample_dataset("la"))
    plan = plan_defaults(fp)
    assert fp.median_spacing_xyz == [1.25, 1.25, 1.25] and plan.patch_size_xyz == [96, 64, 48]
    small = plan_defaults(fp, memory_budget_mb=1000)  # a tight budget shrinks the patch, never below 16
    assert estimate_memory_mb(small.patch_size_xyz, small.batch_size) <= 1000
    assert np.prod(small.patch_size_xyz) < np.prod(plan.patch_size_xyz) and min(small.patch_size_xyz) >= 16
    assert "memory budget" in small.reasons["patch_size"]


def test_shared_hippocampus_and_la(hippocampus_dir, la_dir):
    hip = _fingerprint(hippocampus_dir)  # no dataset.json there: the modality is guessed
    assert len(hip.cases) == 200 and hip.modality == "MRI" and hip.modality_source == "intensities"
    assert hip.seconds < 30 and hip.arrays_read == 40
    assert plan_defaults(hip).patch_size_xyz == [32, 48, 32]
    la = _fingerprint(la_dir)
    assert len(la.cases) == 80 and la.class_values == [0, 1]
    plan = plan_defaults(la)
    assert plan.spacing_xyz is None and plan.target_spacing_xyz == [1.25, 1.25, 1.25]
    assert plan.patch_size_xyz == [96, 64, 48] and plan.normalization == {"kind": "zscore"}


def _copy_sample(tmp_path: Path, n: int = 4) -> Path:
    src = sample_dataset("hippocampus")
    root = tmp_path / "hip"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
        for f in sorted((src / sub).glob("*.nii.gz"))[:n]:
            shutil.copy(f, root / sub / f.name)
    return root


def test_ct_declared_in_dataset_json_gets_clipped_foreground_normalisation(tmp_path):
    root = _copy_sample(tmp_path)
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "CT"}, "labels": {"0": "background",
                                                                                       "1": "a", "2": "p"}}))
    fp = _fingerprint(root)
    plan = plan_defaults(fp)
    assert fp.modality == "CT" and plan.normalization["kind"] == "fixed"
    lo, hi = plan.normalization["clip"]
    f = fp.foreground_intensity
    assert (lo, hi) == (f["p0_5"], f["p99_5"]) and lo < plan.normalization["mean"] < hi
    assert "CT" in plan.reasons["normalization"]


def test_different_spacings_are_resampled_to_the_median(tmp_path):
    root = _copy_sample(tmp_path, 3)
    for i, f in enumerate(sorted((root / "imagesTr").glob("*.nii.gz"))):
        for path in (f, root / "labelsTr" / f.name):
            image = sitk.ReadImage(str(path))
            image.SetSpacing((1.0, 1.0, 1.0 + 0.5 * i))  # 1, 1.5, 2 mm slices
            sitk.WriteImage(image, str(path))
    fp = _fingerprint(root)
    assert fp.spacings_differ
    plan = plan_defaults(fp)
    assert plan.spacing_xyz == [1.0, 1.0, 1.5] and "differ" in plan.reasons["spacing"]


def test_resolve_plan_fills_only_unset_settings():
    cfg = TrainConfig()
    cfg.data.labeled = str(sample_dataset("hippocampus"))
    cfg.data.patch_size = [16, 16, 16]
    shown = plan_for(cfg)  # what check-data shows: the same record, the config untouched
    assert cfg.plan == {} and cfg.data.normalization == {} and shown["plan"]["patch_size_xyz"] == [32, 48, 32]
    record = resolve_plan(cfg)
    assert record == shown
    assert cfg.data.patch_size == [16, 16, 16] and "data.patch_size" not in record["from_data"]
    assert record["from_data"] == {"data.normalization": {"kind": "zscore"}} and cfg.data.spacing is None
    assert record["plan"]["patch_size_xyz"] == [32, 48, 32]
    assert record["statistics"]["median_extent_mm"] and record["statistics"]["intensity_z_cases"]["p50"]
    lines = describe_plan(record)
    assert any(line.startswith("data.patch_size:") and "your setting is kept" in line for line in lines)
    assert any("data.normalization" in line and "(from the data)" in line for line in lines)


def test_print_config_marks_settings_from_the_data(tmp_path, capsys):
    hip = sample_dataset("hippocampus")
    assert main(["train", "--method", "supervised", "--labeled", str(hip), "--out", str(tmp_path / "r"),
                 "--print-config"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.strip().startswith("patch_size:"))
    assert "[32, 48, 32]" in line and "(from the data)" in line
    assert main(["train", "--method", "supervised", "--labeled", str(hip), "--out", str(tmp_path / "r"),
                 "--patch-size", "16", "16", "16", "--print-config"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.strip().startswith("patch_size:"))
    assert "[16, 16, 16]" in line and "from the data" not in line
    assert not (tmp_path / "r").exists()


def test_trained_model_card_records_the_plan_and_the_data_statistics(tmp_path, capsys):
    from semisupseg.checkpoint import read_card

    hip = sample_dataset("hippocampus")
    run = tmp_path / "run"
    assert main(["train", "--method", "supervised", "--labeled", str(hip), "--out", str(run), "--iterations", "1",
                 "--validation", "0", "--set", "model.n_filters=2", "--set", "data.split_val=null",
                 "--no-bar"]) == 0
    err = capsys.readouterr().err
    assert "data.patch_size:" in err and "(from the data)" in err
    assert "never reaches a step" in err  # 1 iteration of the papers' step schedule: the learning rate is said
    card = read_card(run / "last.pt")
    assert card.patch_size_xyz == (32, 48, 32)
    assert card.training["plan"]["from_data"]["data.patch_size"] == [32, 48, 32]
    stats = card.training["data_statistics"]
    assert stats["modality"] == "MRI" and stats["cases"] == 4 and len(stats["median_extent_mm"]) == 3
