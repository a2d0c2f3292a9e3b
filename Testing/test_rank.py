"""``semisupseg rank``: uncertainty ranking of unlabeled scans with a model trained here on the bundled scans.

The scores are checked against what they are defined from (``segment``'s entropy, the SGRS partition), the CSV's
order and columns, the Dice column against ``segment`` + the metrics on the same scans, and that noise added to a
scan makes the model less sure of it."""
from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.stats import spearmanr

from semisupseg.checkpoint import load_model
from semisupseg.cli import main
from semisupseg.data import sample_dataset
from semisupseg.geometry import REGION_AGREE, boundary_ring
from semisupseg.inference import SegmentOptions, segment
from semisupseg.io import read_image, read_label
from semisupseg.metrics import dice
from semisupseg.ranking import CaseScore, object_band, order, score_volume, spearman
from semisupseg.training import TrainConfig, Trainer

HIPPO = sample_dataset("hippocampus")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rank") / "run"
    cfg = TrainConfig(method="supervised", iterations=40, batch_size=2, labeled_batch_size=2, device="cpu",
                      amp="off", val_every=1000, num_threads=1, out=str(out), seed=3)
    cfg.data.labeled = str(HIPPO)
    cfg.data.split_labeled = "labeled_2"
    cfg.data.patch_size = [32, 32, 32]
    cfg.data.foreground_prob = 0.5
    cfg.model.n_filters = 4
    cfg.optim.lr = 0.05
    assert Trainer(cfg).run().status == "finished"
    return out / "last.pt"


def test_scores_are_the_entropy_and_regions_on_object_and_band(model_path):
    model, card = load_model(model_path)
    image = read_image(HIPPO / "imagesTr" / "hippocampus_015.nii.gz")
    out = score_volume(image, model, card, ("boundary_entropy", "region_fraction"), device="cpu", fast=False)
    # the same prediction, its entropy in nats, normalised here by log(3 classes)
    ref = segment(image, model, card, SegmentOptions(device="cpu", fast=False))
    assert np.array_equal(ref.labels.array, out["labels"].array)
    obj = ref.labels.array != 0
    assert obj.sum() == out["object_voxels"] > 0 and not out["empty"]
    patch_voxels = int(np.prod(card.patch_size_zyx))  # the sample's grid is the model's (1 mm)
    band = boundary_ring(obj, whole_voxels=patch_voxels).outer
    assert band.sum() == out["band_voxels"] > 0 and not (band & obj).any()
    region = obj | band
    assert out["scores"]["boundary_entropy"] == pytest.approx(float(ref.entropy.array[region].mean()) / math.log(3),
                                                              rel=1e-5)
    frac = out["scores"]["region_fraction"]
    assert 0.0 <= frac <= 1.0
    from semisupseg.data.preprocess import NormalizationConfig, PreprocessConfig, preprocess_image
    from semisupseg.methods.sgrs import partition

    grid = preprocess_image(image, PreprocessConfig(NormalizationConfig.from_dict(card.normalization),
                                                    tuple(card.spacing_xyz)))
    codes, source = partition(model, grid.array, card.patch_size_zyx, "cpu", "softmax", 3)
    assert "default parameters" in source and codes.shape == image.shape_zyx
    assert frac == pytest.approx(float(np.mean(codes[region] != REGION_AGREE)))
    # the object/band helper on a label map with nothing predicted
    empty_obj, empty_band = object_band(np.zeros((4, 5, 6), np.uint8), 0)
    assert not empty_obj.any() and not empty_band.any()


def test_noise_makes_the_model_less_sure(model_path, tmp_path):
    model, card = load_model(model_path)
    image = read_image(HIPPO / "imagesTr" / "hippocampus_017.nii.gz")
    rng = np.random.default_rng(0)
    noisy = image.with_array(image.array + rng.normal(0, 1.5 * image.array.std(), image.array.shape)
                             .astype(np.float32))
    clean = score_volume(image, model, card, device="cpu", fast=False)["scores"]["boundary_entropy"]
    worse = score_volume(noisy, model, card, device="cpu", fast=False)["scores"]["boundary_entropy"]
    assert worse > clean


def test_rank_cli_csv_order_dice_and_correlation(model_path, tmp_path, capsys):
    out = tmp_path / "ranking.csv"
    images = tmp_path / "imgs"
    shutil.copytree(HIPPO / "imagesTr", images)
    code = main(["rank", "--model", str(model_path), str(images), "-o", str(out), "--measure", "all",
                 "--labels", str(HIPPO / "labelsTr"), "--device", "cpu", "--no-fast"])
    assert code == 0
    err = capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert list(rows[0]) == ["rank", "case", "score", "boundary_entropy", "region_fraction", "empty",
                             "object_voxels", "band_voxels", "dice", "image"]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert all(r["score"] == r["boundary_entropy"] for r in rows) and all(r["empty"] == "0" for r in rows)
    # the Dice column is segment's labels scored by the metrics, case by case
    model, card = load_model(model_path)
    for r in rows[:2]:
        res = segment(read_image(r["image"]), model, card, SegmentOptions(device="cpu", fast=False))
        ref = read_label(HIPPO / "labelsTr" / f"{r['case']}.nii.gz")
        want = np.mean([dice(res.labels.array == v, ref.array == v) for v in (1, 2)])
        assert float(r["dice"]) == pytest.approx(want, abs=1e-6)
    for m in ("boundary_entropy", "region_fraction"):
        line = [ln for ln in err.splitlines() if ln.startswith(f"Spearman({m}, 1 - Dice) over 6 scans")]
        rho = spearman([float(r[m]) for r in rows], [1 - float(r["dice"]) for r in rows])
        assert len(line) == 1 and line[0].endswith(f"{rho:.3f}")
    # an existing CSV is not replaced without --overwrite
    before = out.read_text()
    assert main(["rank", "--model", str(model_path), str(images / "hippocampus_008.nii.gz"), "-o", str(out)]) == 2
    assert "output exists" in capsys.readouterr().err and out.read_text() == before
    # single files and a missing one
    assert main(["rank", "--model", str(model_path), str(tmp_path / "nope.nii.gz"), "-o", str(tmp_path / "x.csv")]) == 2
    assert "nope.nii.gz: file not found" in capsys.readouterr().err


def test_order_and_spearman():
    rows = [CaseScore("a", "a", {"boundary_entropy": 0.2}, 10, 5, False, 0.0),
            CaseScore("b", "b", {"boundary_entropy": 0.9}, 10, 5, False, 0.0),
            CaseScore("c", "c", {"boundary_entropy": 0.01}, 0, 0, True, 0.0),
            CaseScore("d", "d", {"boundary_entropy": 0.9}, 10, 5, False, 0.0)]
    assert [(r.rank, r.case_id) for r in order(rows)] == [(1, "c"), (2, "b"), (3, "d"), (4, "a")]
    x = [0.1, 0.5, 0.3, 0.3, 0.9]
    y = [1.0, 2.0, 0.5, 3.0, 4.0]
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert math.isnan(spearman([1, 2], [3, 4])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))
