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
from scipy.stats import spearmanr

from semisupseg.checkpoint import load_model
from semisupseg.errors import InputError
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
    assert main(["rank", "--model", str(model_path), str(images), "-o", str(tmp_path / "y.csv"), "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err


def test_rank_cli_notes_labels_that_match_no_or_some_scans(model_path, tmp_path, capsys):
    """--labels DIR whose files are named unlike the scans is not ignored silently: one note naming DIR; when only
    some scans have a label, the note says how many."""
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("hippocampus_008", "hippocampus_015"):
        shutil.copy(HIPPO / "imagesTr" / f"{name}.nii.gz", images)
    wrong = tmp_path / "wrong_labels"
    wrong.mkdir()
    shutil.copy(HIPPO / "labelsTr" / "hippocampus_008.nii.gz", wrong / "seg_008.nii.gz")
    out = tmp_path / "none.csv"
    assert main(["rank", "--model", str(model_path), str(images), "-o", str(out), "--labels", str(wrong),
                 "--device", "cpu", "--no-fast"]) == 0
    notes = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("note:")]
    assert notes == [f"note: --labels {wrong}: no label file matches a ranked scan's name (scan 'hippocampus_008', "
                     "e.g. label 'seg_008'); no Dice column and no Spearman correlation"]
    assert "dice" not in next(csv.reader(out.open()))
    some = tmp_path / "some_labels"
    some.mkdir()
    shutil.copy(HIPPO / "labelsTr" / "hippocampus_015.nii.gz", some)
    assert main(["rank", "--model", str(model_path), str(images), "-o", str(tmp_path / "some.csv"), "--labels",
                 str(some), "--device", "cpu", "--no-fast"]) == 0
    notes = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("note:")]
    assert notes == [f"note: --labels {some}: label files match 1 of the 2 ranked scans; Dice only for those (the "
                     "Spearman correlation needs 3)"]


def test_rank_cli_goes_on_past_an_unreadable_scan(model_path, tmp_path, capsys):
    """A truncated or corrupt file among good ones (as ``segment`` does): one 'failed:' line for it, the readable
    scans ranked and the CSV written, then one error line and exit 2. Bad files only: no CSV. One bad input alone is
    still the command's error."""
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("hippocampus_008", "hippocampus_015"):
        shutil.copy(HIPPO / "imagesTr" / f"{name}.nii.gz", images)
    data = (HIPPO / "imagesTr" / "hippocampus_017.nii.gz").read_bytes()
    truncated = tmp_path / "bad.nii.gz"
    truncated.write_bytes(data[:len(data) // 3])
    text = tmp_path / "notes.nii.gz"
    text.write_text("not an image\n")
    out = tmp_path / "r.csv"
    code = main(["rank", "--model", str(model_path), str(images), str(truncated), str(text), "-o", str(out),
                 "--device", "cpu", "--no-fast"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    rows = list(csv.DictReader(out.open()))
    assert sorted(r["case"] for r in rows) == ["hippocampus_008", "hippocampus_015"]
    assert [r["rank"] for r in rows] == ["1", "2"]
    failed = [ln for ln in err if ln.startswith("failed: ")]
    assert len(failed) == 2 and all(ln.endswith("(going on with the other cases)") for ln in failed)
    assert failed[0].startswith(f"failed: bad: {truncated}: ") and "truncated" in failed[0]
    assert failed[1].startswith(f"failed: notes: {text}: ")
    assert any(ln.startswith("ranked 2 scans by boundary_entropy") for ln in err)
    assert err[-1].startswith(f"error: 2 of 4 cases failed (the others were ranked in {out}): {truncated}: ")
    assert str(text) in err[-1] and sum(ln.startswith("error:") for ln in err) == 1 and "Traceback" not in "".join(err)
    # the same in-process: rank_cases hands each bad case to on_error and ranks the rest; without it, it raises
    from semisupseg.cli.rank import _cases
    from semisupseg.ranking import rank_cases

    model, card = load_model(model_path)
    cases = _cases([str(images), str(truncated)])
    seen = []
    rows = rank_cases(cases, model, card, device="cpu", fast=False, on_error=lambda c, e: seen.append(c.case_id))
    assert seen == ["bad"] and sorted(r.case_id for r in rows) == ["hippocampus_008", "hippocampus_015"]
    with pytest.raises(InputError, match="truncated"):
        rank_cases(cases, model, card, device="cpu", fast=False)
    # only bad files: each reported, no CSV
    none = tmp_path / "none.csv"
    assert main(["rank", "--model", str(model_path), str(truncated), str(text), "-o", str(none)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: 2 of 2 cases failed (no CSV written)") and not none.exists()
    # one input: its error is the command's error, as in segment
    assert main(["rank", "--model", str(model_path), str(truncated), "-o", str(none)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[-1]] and err[-1].startswith(f"error: {truncated}: ") and "cases failed" not in err[-1]
    assert not none.exists()
    # a constant scan: there is nothing to rank (it said "nothing to learn from", training's words)
    import numpy as np

    from semisupseg.io import write_volume
    from semisupseg.volume import Volume

    flat = write_volume(Volume(np.full((8, 9, 10), 7.0, np.float32)), tmp_path / "flat.nii.gz")
    assert main(["rank", "--model", str(model_path), str(flat), "-o", str(none)]) == 2
    assert capsys.readouterr().err.strip().endswith("the image is constant (every voxel is 7): nothing to rank")


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


# ------------------------------------------------------------------------------------- ensembles: member disagreement
def test_mutual_information_is_the_entropy_the_members_disagreement_adds():
    from semisupseg.geometry import entropy, mutual_information

    a = np.array([[0.9, 0.5, 1.0], [0.1, 0.5, 0.0]], np.float32)  # (C=2, 3 voxels)
    assert np.allclose(mutual_information([a, a, a]), 0.0, atol=1e-7)  # members that agree: nothing to learn
    b = np.array([[0.1, 0.5, 0.0], [0.9, 0.5, 1.0]], np.float32)
    mi = mutual_information([a, b], base=2)
    # by hand: H(mean) - mean H, in bits; the mean is (0.5, 0.5) everywhere (1 bit)
    h = lambda p: -sum(x * math.log2(x) for x in p if x > 0)  # noqa: E731
    assert mi == pytest.approx([1 - h([0.9, 0.1]), 0.0, 1.0], abs=1e-6)
    assert np.allclose(mutual_information([a, b]), mi * math.log(2), atol=1e-6)  # nats
    assert np.all(mi <= entropy((a + b) / 2, axis=0, base=2) + 1e-7)
    with pytest.raises(ValueError, match="2 or more"):
        mutual_information([a])
    with pytest.raises(ValueError, match="differ in shape"):
        mutual_information([a, a[:, :2]])


@pytest.fixture(scope="module")
def ensemble_path(model_path) -> Path:
    """The ranking model and a copy with perturbed weights, joined as one ensemble file."""
    import torch

    from semisupseg.checkpoint import save_model
    from semisupseg.ensembles import combine_models

    model, card = load_model(model_path)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * p.std() * torch.randn_like(p))
    other = save_model(model_path.parent / "perturbed.pt", model, card)
    return save_model(model_path.parent / "ensemble.pt", *combine_models([model_path, other]))


def test_member_disagreement_is_the_members_mutual_information_on_object_and_band(model_path, ensemble_path):
    from semisupseg.geometry import mutual_information

    model, card = load_model(ensemble_path)
    image = read_image(HIPPO / "imagesTr" / "hippocampus_015.nii.gz")
    out = score_volume(image, model, card, ("boundary_entropy", "member_disagreement"), device="cpu", fast=False)
    options = SegmentOptions(device="cpu", fast=False)
    probs = [segment(image, m, card, options).probabilities.array for m in model.members]
    ens = segment(image, model, card, options)
    obj = ens.labels.array != 0
    region = obj | boundary_ring(obj, whole_voxels=int(np.prod(card.patch_size_zyx))).outer
    want = float(mutual_information(probs, base=3)[region].mean())
    assert out["scores"]["member_disagreement"] == pytest.approx(want, rel=1e-5) and want > 0
    assert out["scores"]["member_disagreement"] < out["scores"]["boundary_entropy"]  # a part of the entropy
    # two copies of one network never disagree
    from semisupseg.ensembles import combine_models

    same, same_card = combine_models([model_path, model_path])
    assert score_volume(image, same, same_card, ("member_disagreement",), device="cpu",
                        fast=False)["scores"]["member_disagreement"] == pytest.approx(0.0, abs=1e-6)
    # one network has no members to disagree
    single, single_card = load_model(model_path)
    with pytest.raises(InputError, match="needs an ensemble model file"):
        score_volume(image, single, single_card, ("member_disagreement",), device="cpu", fast=False)


def test_rank_cli_member_disagreement(model_path, ensemble_path, tmp_path, capsys):
    out = tmp_path / "ranking.csv"
    image = str(HIPPO / "imagesTr" / "hippocampus_015.nii.gz")
    assert main(["rank", "--model", str(ensemble_path), image, str(HIPPO / "imagesTr" / "hippocampus_017.nii.gz"),
                 "-o", str(out), "--measure", "all", "--device", "cpu", "--no-fast"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[:6] == ["rank", "case", "score", "boundary_entropy", "member_disagreement",
                                 "region_fraction"]
    assert all(0 < float(r["member_disagreement"]) < float(r["boundary_entropy"]) for r in rows)
    capsys.readouterr()
    code = main(["rank", "--model", str(model_path), image, "-o", str(tmp_path / "single.csv"),
                 "--measure", "member_disagreement"])
    err = capsys.readouterr().err
    assert code == 2 and "needs an ensemble model file" in err and str(model_path) in err
    assert not (tmp_path / "single.csv").exists()
