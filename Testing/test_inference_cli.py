"""``semisupseg segment`` end to end on real files: outputs exist, have the input's geometry, are not overwritten."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from semisupseg.checkpoint import make_card, save_model
from semisupseg.cli import main
from semisupseg.io import read_image_or_h5, read_volume, write_volume
from semisupseg.nets import VNet, VNetConfig
from semisupseg.volume import Volume


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model_file(tmp_path, num_classes, spacing, patch_xyz, sdm=True, label_values=None, name="model.pt",
                training=None, inference=None):
    torch.manual_seed(0)
    model = VNet(VNetConfig(num_classes=num_classes, n_filters=2, sdm_head=sdm)).eval()
    card = make_card(model, method="supervised", spacing_xyz=spacing, patch_size_xyz=patch_xyz,
                     class_names=["background"] + [f"structure{i}" for i in range(1, num_classes)],
                     label_values=label_values, training=training, inference=inference)
    return save_model(tmp_path / name, model, card)


def _check_outputs(outdir, case, reference: Volume, num_classes, label_values):
    labels = read_volume(outdir / f"{case}_label.nii.gz")
    assert labels.same_geometry(reference, tol=1e-5)
    assert set(np.unique(labels.array).tolist()) <= set(label_values)
    prob = read_volume(outdir / f"{case}_prob.nii.gz", allow_channels=True)
    sdm = read_volume(outdir / f"{case}_sdm.nii.gz", allow_channels=True)
    ent = read_volume(outdir / f"{case}_entropy.nii.gz")
    for v in (prob, sdm, ent):
        assert v.same_geometry(reference, tol=1e-5)
    fg = num_classes - 1
    if fg == 1:
        assert prob.array.shape == reference.shape_zyx and sdm.array.shape == reference.shape_zyx
    else:
        assert prob.array.shape == (fg,) + reference.shape_zyx and sdm.array.shape == (fg,) + reference.shape_zyx
    assert prob.array.min() >= 0 and prob.array.max() <= 1 + 1e-6
    assert sdm.array.min() >= -1 and sdm.array.max() <= 1
    assert ent.array.min() >= 0 and ent.array.max() <= np.log(num_classes) + 1e-5


def test_segment_cli_hippocampus_nifti(tmp_path, hippocampus_dir, capsys):
    image_path = hippocampus_dir / "imagesTr" / "hippocampus_003.nii.gz"
    if not image_path.exists():
        pytest.skip("hippocampus_003 not available")
    model = _model_file(tmp_path, 3, (1.0, 1.0, 1.0), (32, 32, 32), label_values=[0, 1, 2])
    out = tmp_path / "out"
    argv = ["segment", str(image_path), "--model", str(model), "-o", str(out), "--prob", "--sdm", "--entropy",
            "--keep-largest"]
    assert main(argv) == 0
    _check_outputs(out, "hippocampus_003", read_image_or_h5(image_path), 3, [0, 1, 2])
    # never overwrite without --overwrite: error exit, file untouched
    before = (out / "hippocampus_003_label.nii.gz").stat().st_mtime_ns
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err
    assert (out / "hippocampus_003_label.nii.gz").stat().st_mtime_ns == before
    assert main(argv + ["--overwrite", "--layout", "papers", "--tta", "x", "--json-progress"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert lines[0]["event"] == "case" and lines[-1]["event"] == "done"
    fractions = [r["fraction"] for r in lines if r["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


@pytest.mark.parametrize("flag, card_says, used", [
    ([], None, False), ([], True, True), (["--no-keep-largest"], True, False), (["--keep-largest"], None, True)])
def test_segment_cli_keep_largest_defaults_to_the_card(tmp_path, capsys, flag, card_says, used):
    image_path = tmp_path / "scan.nii.gz"
    write_volume(Volume(np.random.default_rng(0).normal(size=(12, 14, 10)).astype(np.float32)), image_path)
    inference = None if card_says is None else {"keep_largest": card_says}
    model = _model_file(tmp_path, 2, (1.0, 1.0, 1.0), (16, 16, 16), sdm=False, inference=inference)
    assert main(["segment", str(image_path), "--model", str(model), "-o", str(tmp_path / "out"),
                 "--json-progress"] + flag) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r for r in records if r["event"] == "done"][0]["keep_largest"] is used


@pytest.mark.parametrize("augmentation, tta, used, note", [
    ("none", [], "", "flips of any axis"),        # trained on no flip: TTA off, said so
    ("dihedral", [], "yx", None),                 # all the flips it was trained on
    ("dihedral", ["x", "z"], "x", "flips of z"),  # z never flipped in training: left out, said so
    (None, [], "yx", None),                       # older cards / release weights: the papers' y/x flips
])
def test_segment_cli_flip_tta_only_over_trained_flips(tmp_path, capsys, augmentation, tta, used, note):
    image_path = tmp_path / "scan.nii.gz"
    write_volume(Volume(np.random.default_rng(0).normal(size=(12, 14, 10)).astype(np.float32)), image_path)
    training = {} if augmentation is None else {"augmentation": augmentation}
    model = _model_file(tmp_path, 2, (1.0, 1.0, 1.0), (16, 16, 16), sdm=False, training=training)
    argv = ["segment", str(image_path), "--model", str(model), "-o", str(tmp_path / "out"), "--json-progress",
            "--tta"] + tta
    assert main(argv) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    done = [r for r in records if r["event"] == "done"][0]
    assert done["tta_axes"] == used
    if note is None:
        assert "not trained on flips" not in captured.err
    else:
        assert f"not trained on {note}" in captured.err


@pytest.mark.slow
def test_segment_cli_full_resolution_la_h5(tmp_path, la_dir):
    """A full-resolution LA h5 (0.625 mm, origin 0, identity): the model works at 1.25 mm, outputs come back at
    0.625 mm in the h5's own grid."""
    h5 = sorted((la_dir / "h5").glob("*/mri_norm2.h5"))
    if not h5:
        pytest.skip("no LA h5 files")
    path = h5[0]
    model = _model_file(tmp_path, 2, (1.25, 1.25, 1.25), (64, 64, 48))
    out = tmp_path / "out"
    assert main(["segment", str(path), "--model", str(model), "-o", str(out), "--prob", "--sdm", "--entropy",
                 "--batch-size", "2"]) == 0
    case = path.parent.name
    reference = read_image_or_h5(path)
    assert reference.spacing == (0.625, 0.625, 0.625) and reference.origin == (0.0, 0.0, 0.0)
    _check_outputs(out, case, reference, 2, [0, 1])


def test_segment_cli_errors(tmp_path, capsys):
    model = _model_file(tmp_path, 2, (1.0, 1.0, 1.0), (16, 16, 16), sdm=False)
    img = tmp_path / "a.nii.gz"
    write_volume(Volume(np.random.default_rng(0).normal(size=(12, 20, 18)).astype(np.float32),
                        spacing=(0.9, 1.1, 1.3), origin=(4, 5, 6)), img)
    out = tmp_path / "o"
    assert main(["segment", str(img), "--model", str(model), "-o", str(out), "--sdm"]) == 0  # the labels' SDM
    assert "no SDM head" in capsys.readouterr().err
    assert (out / "a_label.nii.gz").exists() and (out / "a_sdm.nii.gz").exists()
    (out / "a_label.nii.gz").unlink()
    (out / "a_sdm.nii.gz").unlink()
    assert main(["segment", str(tmp_path / "missing.nii.gz"), "--model", str(model), "-o", str(out)]) == 2
    assert main(["segment", str(img), str(img), "--model", str(model), "-o", str(out)]) == 2  # same case twice
    stop = tmp_path / "stop"
    stop.touch()
    assert main(["segment", str(img), "--model", str(model), "-o", str(out), "--stop-file", str(stop)]) == 130
    assert not (out / "a_label.nii.gz").exists()
    stop.unlink()
    assert main(["segment", str(img), "--model", str(model), "-o", str(out), "--output-suffix", ".seg.nrrd",
                 "--prob", "--roi", "2", "10", "0", "20", "0", "12"]) == 0
    seg = read_volume(out / "a_label.seg.nrrd")
    prob = read_volume(out / "a_prob.nrrd")
    # a wrong --roi is told in the order it was typed: x y z
    assert main(["segment", str(img), "--model", str(model), "-o", str(tmp_path / "roi"), "--roi", "10", "5", "0",
                 "10", "0", "10"]) == 2
    err = capsys.readouterr().err
    assert "--roi x 10..5 is empty (start must be below stop)" in err and "(z, y, x)" not in err
    assert seg.same_geometry(prob) and seg.spacing == pytest.approx((0.9, 1.1, 1.3))
    assert prob.array[:, :, :2].max() == 0 and prob.array[:, :, 10:].max() == 0  # outside the x range of the ROI


def test_segment_never_replaces_an_input_scan_even_with_overwrite(tmp_path, capsys):
    """``a`` and ``a_label`` segmented into their own folder: a's label map would replace the scan a_label."""
    scans = tmp_path / "scans"
    rng = np.random.default_rng(0)
    for name in ("a", "a_label"):
        write_volume(Volume(rng.normal(size=(12, 14, 10)).astype(np.float32)), scans / f"{name}.nii.gz")
    before = (scans / "a_label.nii.gz").read_bytes()
    model = _model_file(tmp_path, 2, (1.0, 1.0, 1.0), (16, 16, 16))
    for extra in ([], ["--overwrite"]):
        argv = ["segment", str(scans / "a.nii.gz"), str(scans / "a_label.nii.gz"), "--model", str(model),
                "-o", str(scans)] + extra
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "a_label.nii.gz: the output of case 'a' would replace this input scan" in err
        assert (scans / "a_label.nii.gz").read_bytes() == before
        assert sorted(p.name for p in scans.iterdir()) == ["a.nii.gz", "a_label.nii.gz"]


def test_segment_takes_folders_of_images_and_continues_an_interrupted_batch(tmp_path, capsys, monkeypatch):
    """A folder of images is segmented scan by scan (as rank takes one; before, a folder was read only as a DICOM
    series and refused); an earlier run's outputs beside its scans are not taken for scans. A batch cut off by
    Ctrl-C ends with one line and exit 130 (before: a traceback), and ``--skip-existing`` continues it where the
    plain rerun is refused with a line naming that option. ``--threads`` sets the CPU threads."""
    from semisupseg.cli import segment as segment_cli

    scans = tmp_path / "scans"
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        write_volume(Volume(rng.normal(size=(12, 14, 10)).astype(np.float32)), scans / f"{name}.nii.gz")
    (tmp_path / "ds" / "imagesTr").mkdir(parents=True)
    write_volume(Volume(rng.normal(size=(12, 14, 10)).astype(np.float32)), tmp_path / "ds" / "imagesTr" / "d.nii.gz")
    model = _model_file(tmp_path, 2, (1.0, 1.0, 1.0), (16, 16, 16))
    out = tmp_path / "out"

    real = segment_cli._segment_case
    def interrupted(args, index, *rest):  # Ctrl-C while the third case is segmented
        if index == 2:
            raise KeyboardInterrupt
        return real(args, index, *rest)

    monkeypatch.setattr(segment_cli, "_segment_case", interrupted)
    argv = ["segment", str(scans), str(tmp_path / "ds"), "--model", str(model), "-o", str(out), "--threads", "1"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("cancelled (interrupted)") and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["a_label.nii.gz", "b_label.nii.gz"]
    monkeypatch.setattr(segment_cli, "_segment_case", real)
    assert main(argv) == 2
    assert "pass --overwrite to replace it, or --skip-existing" in capsys.readouterr().err
    assert main(argv + ["--skip-existing"]) == 0
    assert "skipping 2 of 4 case(s) whose outputs exist" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a_label.nii.gz", "b_label.nii.gz", "c_label.nii.gz",
                                                     "d_label.nii.gz"]
    # outputs written into the scans' own folder are not scans on the next run
    assert main(["segment", str(scans), "--model", str(model), "-o", str(scans)]) == 0
    assert main(["segment", str(scans), "--model", str(model), "-o", str(scans), "--skip-existing"]) == 0
    assert "skipping 3 of 3 case(s)" in capsys.readouterr().err
    assert main(["segment", str(scans), "--model", str(model), "-o", str(out), "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["segment", str(empty), "--model", str(model), "-o", str(out)]) == 2
    assert "folder holds no DICOM series and no image files" in capsys.readouterr().err


def test_case_names_that_differ_only_in_case_are_refused(tmp_path, capsys):
    """``A/Case1`` and ``B/case1``: on the case-insensitive disks of Windows and macOS their outputs are one file
    (the second case replaced the first's, or deleted it while cleaning up its own failure)."""
    rng = np.random.default_rng(0)
    for folder, name in (("A", "Case1"), ("B", "case1")):
        write_volume(Volume(rng.normal(size=(12, 14, 10)).astype(np.float32)), tmp_path / folder / f"{name}.nii.gz")
    model = _model_file(tmp_path, 2, (1.0, 1.0, 1.0), (16, 16, 16))
    assert main(["segment", str(tmp_path / "A" / "Case1.nii.gz"), str(tmp_path / "B" / "case1.nii.gz"),
                 "--model", str(model), "-o", str(tmp_path / "out")]) == 2
    assert "case names that differ only in case ('Case1')" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
