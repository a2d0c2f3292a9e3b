"""Training snapshots (``train --overlay-case ID --overlay-every N``) from short real runs on the bundled scans:
the files of a set exist and are announced by an event, every volume has exactly the geometry of the case's image
file (also when training resamples to another grid), the regions partition the volume, the ring lies on the
label's boundary, the SDMs have the signs of the masks they describe, and old sets are pruned."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from semisupseg.cli import main
from semisupseg.data import sample_dataset
from semisupseg.geometry import REGION_AGREE, REGION_DISAGREE, REGION_UNCERTAIN, inner_boundary
from semisupseg.training import TrainConfig, Trainer, read_events
from semisupseg.training.snapshots import list_sets, newest_set, read_manifest

HIPPO = sample_dataset("hippocampus")
LABELED, UNLABELED, VALIDATION = "hippocampus_008", "hippocampus_015", "hippocampus_023"


def _geometry(path) -> tuple:
    img = sitk.ReadImage(str(path))
    return (img.GetSize()[:3], np.round(img.GetSpacing()[:3], 6).tolist(), np.round(img.GetOrigin()[:3], 5).tolist(),
            np.round(np.reshape(img.GetDirection(), (img.GetDimension(),) * 2)[:3, :3], 6).tolist())


def _array(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _files(manifest) -> dict:
    return {(f["kind"], f.get("class")): Path(f["path"]) for f in manifest["files"]}


def test_sgrs_run_writes_overlays_of_a_labeled_and_an_unlabeled_case(tmp_path):
    run = tmp_path / "run"
    code = main(["train", "--no-bar", "--labeled", str(HIPPO), "--split-labeled", "labeled_2", "--method", "sgrs",
                 "--iterations", "4", "--patch-size", "16", "16", "16", "--amp", "off", "--out", str(run),
                 "--set", "model.n_filters=4", "--set", "num_threads=1", "--set", "val_every=100",
                 "--overlay-case", LABELED, "--overlay-case", UNLABELED, "--overlay-every", "2",
                 "--set", "overlays.keep=1"])
    assert code == 0
    events = [e for e in read_events(run / "events.jsonl") if e["event"] == "overlays"]
    assert [(e["case"], e["iteration"]) for e in events] == [(LABELED, 2), (UNLABELED, 2), (LABELED, 4),
                                                           (UNLABELED, 4)]
    assert all(e["model"] == "teacher" and "error" not in e for e in events)
    # keep=1: only the newest set of each case is left, and it is the one the last events name
    for case in (LABELED, UNLABELED):
        sets = list_sets(run / "overlays" / case)
        assert [s.name for s in sets] == ["it000004"] and newest_set(run, case) == sets[0]
    assert not [p for p in (run / "overlays" / LABELED).iterdir() if p.name.startswith(".")]  # no temporary left

    # labeled case: prediction, SDMs, entropy, ground-truth SDM and ring, per foreground class; no regions
    lab = read_manifest(newest_set(run, LABELED))
    assert lab["role"] == "labeled" and lab["iteration"] == 4 and lab["method"] == "sgrs"
    files = _files(lab)
    assert set(files) == {("segmentation", None), ("entropy", None), ("sdm", 1), ("sdm", 2), ("gt_sdm", 1),
                          ("gt_sdm", 2), ("ring", 1), ("ring", 2)}
    assert {str(p) for p in files.values()} == {f["path"] for f in events[2]["files"]}
    image = HIPPO / "imagesTr" / f"{LABELED}.nii.gz"
    for path in files.values():
        assert _geometry(path) == _geometry(image), path
    label = _array(HIPPO / "labelsTr" / f"{LABELED}.nii.gz")
    seg = _array(files[("segmentation", None)])
    assert set(np.unique(seg)) <= {0, 1, 2}
    entropy = _array(files[("entropy", None)])
    assert entropy.dtype == np.float32 and 0.0 <= entropy.min() and entropy.max() <= np.log(3) + 1e-5
    for c in (1, 2):
        gt_sdm = _array(files[("gt_sdm", c)])
        inside = label == c
        assert np.all(gt_sdm[inside & ~inner_boundary(inside)] < 0) and np.all(gt_sdm[~inside] > 0)
        assert np.all(gt_sdm[inner_boundary(inside)] == 0)
        # the ring: every voxel of the label's surface is in it, and nothing farther than its width from it
        ring = _array(files[("ring", c)]).astype(bool)
        meta = [f for f in lab["files"] if f["kind"] == "ring" and f["class"] == c][0]
        width = meta["width_voxels"]
        assert width >= 1 and meta["w_max"] == 20
        assert ring[inner_boundary(inside)].all()
        surface_dist = ndimage.distance_transform_cdt(~inner_boundary(inside), metric="taxicab")
        assert surface_dist[ring].max() <= width
        assert ring.sum() < inside.sum() + (~inside).sum() / 4  # a band, not the volume
        sdm = _array(files[("sdm", c)])
        pred = seg == c
        if pred.any() and (~pred).any():  # the SDM of the predicted segmentation (no SDM head in sgrs)
            assert np.all(sdm[pred & ~inner_boundary(pred)] < 0) and np.all(sdm[~pred] > 0)

    # unlabeled case: regions partition the whole volume into Δ, Ω, Θ; no ground-truth maps
    unl = read_manifest(newest_set(run, UNLABELED))
    files = _files(unl)
    assert unl["role"] == "unlabeled"
    assert set(files) == {("segmentation", None), ("entropy", None), ("sdm", 1), ("sdm", 2), ("regions", None)}
    image = HIPPO / "imagesTr" / f"{UNLABELED}.nii.gz"
    for path in files.values():
        assert _geometry(path) == _geometry(image), path
    regions = _array(files[("regions", None)])
    assert set(np.unique(regions)) <= {REGION_UNCERTAIN, REGION_AGREE, REGION_DISAGREE}
    assert regions.size == sum(int((regions == k).sum()) for k in (REGION_UNCERTAIN, REGION_AGREE, REGION_DISAGREE))
    meta = [f for f in unl["files"] if f["kind"] == "regions"][0]
    assert meta["source"].startswith("sgrs (the method's own") and meta["codes"]["1"] == "uncertain (Delta)"


def test_sdm_head_resampled_grid_and_bad_case_id(tmp_path):
    """DTC (SDM head) trained on a 1.5 mm grid: the head's SDM and every map come back to the file's 1 mm grid."""
    cfg = TrainConfig(method="dtc", iterations=2, batch_size=4, labeled_batch_size=2, device="cpu", amp="off",
                      val_every=100, num_threads=1, out=str(tmp_path / "run"))
    cfg.data.labeled = str(HIPPO)
    cfg.data.split_labeled = "labeled_2"
    cfg.data.patch_size = [16, 16, 16]
    cfg.data.spacing = [1.5, 1.5, 1.5]
    cfg.model.n_filters = 4
    cfg.overlays.cases = [VALIDATION, UNLABELED]
    cfg.overlays.every = 5  # not reached: the last iteration writes the set
    result = Trainer(cfg).run()
    assert result.status == "finished"
    events = [e for e in read_events(tmp_path / "run" / "events.jsonl") if e["event"] == "overlays"]
    assert [(e["case"], e["iteration"], e["model"]) for e in events] == [(VALIDATION, 2, "student"),
                                                                         (UNLABELED, 2, "student")]
    val = read_manifest(newest_set(tmp_path / "run", VALIDATION))
    assert val["role"] == "validation"
    files = _files(val)
    assert ("ring", 1) in files and ("regions", None) not in files
    sdm_meta = [f for f in val["files"] if f["kind"] == "sdm"]
    assert {f["source"] for f in sdm_meta} == {"SDM head"}
    image = HIPPO / "imagesTr" / f"{VALIDATION}.nii.gz"
    for path in files.values():
        assert _geometry(path) == _geometry(image), path
    sdm = _array(files[("sdm", 1)])
    assert sdm.dtype == np.float32 and -1.0 <= sdm.min() and sdm.max() <= 1.0
    ring = _array(files[("ring", 1)]).astype(bool)
    width = [f for f in val["files"] if f["kind"] == "ring" and f["class"] == 1][0]["width_voxels"]
    surface = inner_boundary(_array(HIPPO / "labelsTr" / f"{VALIDATION}.nii.gz") == 1)
    # the ring was drawn on the 1.5 mm grid (width voxels of 1.5 mm each side) and brought back to 1 mm: it
    # covers the label's surface and lies within its width of it (+ one coarse voxel for the two resamplings)
    mm_from_surface = ndimage.distance_transform_edt(~surface)  # 1 mm voxels
    assert ring[surface].mean() > 0.9
    assert mm_from_surface[ring].max() <= (width + 1) * 1.5
    unl = read_manifest(newest_set(tmp_path / "run", UNLABELED))
    meta = [f for f in unl["files"] if f["kind"] == "regions"][0]
    assert "default parameters" in meta["source"]  # dtc's prediction partitioned with SGRS-Net's rule
    assert _geometry(meta["path"]) == _geometry(HIPPO / "imagesTr" / f"{UNLABELED}.nii.gz")

    cfg.out = str(tmp_path / "run2")
    cfg.overlays.cases = ["hippocampus_999"]
    with pytest.raises(Exception, match="overlay case 'hippocampus_999' is not a case of this run"):
        Trainer(cfg).run()
    assert json.loads((tmp_path / "run2" / "events.jsonl").read_text().splitlines()[-1])["event"] == "failed"


def test_a_failed_snapshot_is_an_event_and_a_progress_line_and_training_goes_on(tmp_path, monkeypatch, capsys):
    from semisupseg.training import snapshots

    def broken(self, iteration, *args, **kwargs):
        raise OSError(f"disk full at iteration {iteration}")

    monkeypatch.setattr(snapshots.SnapshotWriter, "write", broken)
    run = tmp_path / "run"
    code = main(["train", "--no-bar", "--labeled", str(HIPPO), "--split-labeled", "labeled_2", "--method",
                 "supervised", "--iterations", "2", "--patch-size", "16", "16", "16", "--amp", "off", "--out",
                 str(run), "--set", "model.n_filters=4", "--set", "num_threads=1", "--set", "val_every=100",
                 "--overlay-case", LABELED, "--overlay-every", "1"])
    assert code == 0
    events = read_events(run / "events.jsonl")
    failed = [e for e in events if e["event"] == "overlays"]
    assert [(e["iteration"], e["error"]) for e in failed] == [(1, "OSError: disk full at iteration 1"),
                                                             (2, "OSError: disk full at iteration 2")]
    assert events[-1]["event"] == "finished"
    err = capsys.readouterr().err
    assert "overlays at iteration 1/2 failed: OSError: disk full at iteration 1\n" in err
    assert "overlays at iteration 2/2 failed: OSError: disk full at iteration 2\n" in err
