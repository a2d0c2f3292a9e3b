"""What a new user meets in the first hour (issue: mistyped options, help texts, messages, progress in logs,
demo outputs): each fixed behaviour is pinned here, on the real command-line parsers and the bundled scans."""
from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest

from semisupseg.cli import build_parser, main
from semisupseg.io import read_volume


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _subparsers(sub))


# ------------------------------------------------------------------------------------------------ mistyped options
@pytest.mark.parametrize("argv, wrong, right", [
    (["segment", "scan.nii.gz", "--modle", "m.pt", "-o", "out"], "--modle", "--model"),
    (["train", "--iteratons", "5"], "--iteratons", "--iterations"),
    (["train", "--iteration", "5"], "--iteration", "--iterations"),  # no silent abbreviation
    (["evaluate", "pred", "ref", "--label", "1"], "--label", "--labels"),
])
def test_unknown_option_is_named_by_its_command_with_the_closest_name(argv, wrong, right, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"semisupseg {argv[0]}: error: unknown option {wrong} (did you mean {right}?)" in err
    assert "usage:" not in err and "required" not in err  # no usage block, no "--model is required" first
    assert len(err.strip().splitlines()) == 2


def test_no_parser_accepts_abbreviations_and_every_command_uses_the_same_parser_class():
    from semisupseg.cli.parser import Parser

    parser = build_parser()
    subs = dict(_subparsers(parser))
    assert {"train", "segment", "evaluate", "info", "demo", "preview"} <= set(subs)
    for name, sub in [("semisupseg", parser)] + list(subs.items()):
        assert isinstance(sub, Parser), name
        assert sub.allow_abbrev is False, name


def test_unknown_command_suggests_the_closest(capsys):
    with pytest.raises(SystemExit):
        main(["trian"])
    assert "unknown command 'trian' (did you mean train?)" in capsys.readouterr().err


def test_option_values_that_look_like_options_still_parse():
    args = build_parser().parse_args(["segment", "a.nii.gz", "-m", "m.pt", "-o", "out", "--roi", "-4", "20", "0",
                                      "9", "0", "9", "--overlap=0.25"])
    assert args.roi == [-4, 20, 0, 9, 0, 9] and args.overlap == 0.25
    args = build_parser().parse_args(["train", "--events", "-", "--out", "r", "--set", "optim.lr=0.1"])
    assert args.events == "-" and args.overrides == ["optim.lr=0.1"]
    assert build_parser().parse_args(["segment", "a.nii.gz", "-mm.pt", "-o", "o"]).model == "m.pt"


# ------------------------------------------------------------------------------------------------ help texts
def test_help_texts_are_plain(capsys):
    parser = build_parser()
    for name, sub in [("semisupseg", parser)] + list(_subparsers(parser)):
        text = sub.format_help()
        assert "``" not in text and not re.search(r":(class|func|mod|meth|attr):", text), name
        assert "(default: True)" not in text and "(default: False)" not in text, name
        assert "(default: None)" not in text, name
    seg = " ".join(dict(_subparsers(parser))["segment"].format_help().split())
    assert "(default: 0.5)" in seg  # real defaults are still shown


# ------------------------------------------------------------------------------------------------ --num-labeled
def test_num_labeled_count_or_fraction_and_the_error_that_sends_users_there(tmp_path, capsys):
    from semisupseg.data import sample_dataset

    hip = str(sample_dataset("hippocampus"))  # splits.json: train = 4 cases (all labeled), val = 2
    run = str(tmp_path / "run")
    # a semi-supervised method on a fully labeled folder: the error names --num-labeled
    assert main(["train", "--method", "mean-teacher", "--labeled", hip, "--out", run]) == 2
    err = capsys.readouterr().err
    assert "--num-labeled" in err and "unlabeled" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--method", "mean-teacher", "--labeled", hip, "--out", run, "--num-labeled", "1",
                 "--print-config"]) == 0
    assert "num_labeled: 1" in capsys.readouterr().out
    assert main(["train", "--method", "mean-teacher", "--labeled", hip, "--out", run, "--num-labeled", "0.5",
                 "--print-config"]) == 0
    captured = capsys.readouterr()
    assert "num_labeled: 2" in captured.out and "2 of the 4 labeled training cases" in captured.err
    for bad in ("0", "1.5", "many"):
        assert main(["train", "--method", "mean-teacher", "--labeled", hip, "--out", run, "--num-labeled", bad,
                     "--print-config"]) == 2
        assert "--num-labeled" in capsys.readouterr().err
    # the config alone needs no run folder, and it shows every method parameter the run would use
    assert main(["train", "--method", "mean-teacher", "--labeled", hip, "--num-labeled", "1", "--print-config"]) == 0
    shown = capsys.readouterr().out
    assert "out: null" in shown and "consistency: " in shown and "method_params: {}" not in shown
    help_text = dict(_subparsers(build_parser()))["train"].format_help()
    assert "--num-labeled N|FRACTION" in help_text
    # check-data takes the same option (the data options are shared)
    assert main(["check-data", "--labeled", hip, "--num-labeled", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["labeled"]) == 2 and len(report["unlabeled"]) == 2


# ------------------------------------------------------------------------------------------------ segment
@pytest.fixture(scope="module")
def hip_model(tmp_path_factory):
    """A tiny 3-class hippocampus-shaped model (random weights, no SDM head) whose card holds the training
    statistics of the bundled hippocampus scans, as `semisupseg train` records them."""
    import torch

    from semisupseg.checkpoint import make_card, save_model
    from semisupseg.data import DatasetSpec, build_dataset, sample_dataset
    from semisupseg.data.fingerprint import fingerprint_cases
    from semisupseg.nets import VNet, VNetConfig

    root = sample_dataset("hippocampus")
    ds = build_dataset(DatasetSpec(root=str(root)))
    stats = fingerprint_cases(ds.labeled + ds.val, dataset_json=root / "dataset.json").statistics()
    torch.manual_seed(0)
    model = VNet(VNetConfig(num_classes=3, n_filters=2, sdm_head=False)).eval()
    card = make_card(model, method="mean-teacher", spacing_xyz=(1.0, 1.0, 1.0), patch_size_xyz=(32, 48, 32),
                     class_names=["background", "Anterior", "Posterior"], label_values=[0, 1, 2],
                     training={"data_statistics": stats})
    return save_model(tmp_path_factory.mktemp("model") / "hip.pt", model, card)


def _sample_image(name: str, case: int = 0):
    from semisupseg.data import sample_dataset

    return sorted((sample_dataset(name) / "imagesTr").glob("*.nii.gz"))[case]


def test_sdm_on_a_model_without_the_head_is_the_segmentations(hip_model, tmp_path, capsys):
    img = _sample_image("hippocampus", 4)
    out = tmp_path / "seg"
    assert main(["segment", str(img), "--model", str(hip_model), "-o", str(out), "--sdm", "--entropy"]) == 0
    err = capsys.readouterr().err
    assert "no SDM head" in err and "signed distance map of its predicted segmentation" in err
    case = img.name[:-len(".nii.gz")]
    assert (out / f"{case}_label.nii.gz").exists() and (out / f"{case}_entropy.nii.gz").exists()
    label = np.asarray(read_volume(out / f"{case}_label.nii.gz").array)
    sdm = np.asarray(read_volume(out / f"{case}_sdm.nii.gz", allow_channels=True).array)
    assert sdm.shape == (2,) + label.shape  # one channel per foreground class, on the scan's grid
    for c in (1, 2):
        if (label == c).any():
            assert np.all(sdm[c - 1][label == c] <= 0) and np.all(sdm[c - 1][label != c] > 0)
        else:  # an absent class: +1 everywhere (outside, as far as can be)
            assert np.all(sdm[c - 1] == 1)
    assert not (out / f"{case}_warnings.txt").exists()  # a hippocampus scan is what the model knows
    assert "warning: " + case not in err


def test_out_of_domain_scan_is_warned_about_and_recorded_with_the_outputs(hip_model, tmp_path, capsys):
    img = _sample_image("la")  # a 1.25 mm left-atrium scan, ~119 x 88 x 55 mm, through a hippocampus model
    out = tmp_path / "seg"
    assert main(["segment", str(img), "--model", str(hip_model), "-o", str(out), "--json-progress"]) == 0
    captured = capsys.readouterr()
    case = img.name[:-len(".nii.gz")]
    warning_lines = [line for line in captured.err.splitlines() if line.startswith(f"warning: {case}: ")]
    assert len(warning_lines) == 1 and "never saw anything this large" in warning_lines[0]
    done = [r for r in map(json.loads, captured.out.splitlines()) if r["event"] == "done"][0]
    assert done["warnings"] and "x the training scans' median" in done["warnings"][0]
    text = (out / f"{case}_warnings.txt").read_text()
    assert text.splitlines() == done["warnings"] and done["outputs"]["warnings"].endswith("_warnings.txt")
    # a rerun without --overwrite refuses (the warnings file is an output too); with it, the file is rewritten
    assert main(["segment", str(img), "--model", str(hip_model), "-o", str(out)]) == 2
    capsys.readouterr()


def test_domain_warnings_on_spacing_and_intensity(hip_model):
    from semisupseg.checkpoint import read_card
    from semisupseg.data.fingerprint import domain_warnings
    from semisupseg.io import read_image

    card = read_card(hip_model)
    vol = read_image(_sample_image("hippocampus", 5))
    assert domain_warnings(vol, card) == []
    coarse = vol.with_array(vol.array)
    coarse.spacing = (1.0, 1.0, 4.0)  # 4 mm slices: physical extent and voxel size both far off
    found = domain_warnings(coarse, card)
    assert any("voxel size" in w and "along z" in w for w in found)
    ct_like = vol.with_array(vol.array.astype("float32") * 3.0 - 1024.0)  # Hounsfield-like: air at -1024
    assert any("look like CT" in w for w in domain_warnings(ct_like, card))
    flat_top = vol.with_array(vol.array.clip(max=float(vol.array.mean())))  # distribution unlike MRI's
    assert any("intensity distribution" in w for w in domain_warnings(flat_top, card))


def test_scan_many_times_smaller_than_the_training_scans_is_warned_about(tmp_path, capsys):
    """The mirror of the "this large" warning: a hippocampus crop (~35 mm) through the shipped left-atrium model
    (trained on ~120 x 89 x 55 mm scans) is named with both sizes in mm, on the command line and in
    <case>_warnings.txt; scans of the model's own kind and cards without training statistics keep their old
    behaviour (the training patch, mirrored factor)."""
    from semisupseg.catalogue import resolve_model
    from semisupseg.checkpoint import read_card
    from semisupseg.data.fingerprint import EXTENT_FACTOR, PATCH_EXTENT_FACTOR, domain_warnings
    from semisupseg.io import read_image
    from semisupseg.volume import Volume

    la_card = read_card(resolve_model("left-atrium"))
    hip = read_image(_sample_image("hippocampus", 0))  # 36 x 48 x 40 mm
    found = domain_warnings(hip, la_card)
    assert found == ["the scan is 36 x 48 x 40 mm, 0.30x the training scans' median (120 x 89 x 55 mm) along x: "
                     "the model never saw anything this small"]
    assert domain_warnings(read_image(_sample_image("la", 0)), la_card) == []
    assert domain_warnings(hip, read_card(resolve_model("hippocampus"))) == []
    # the thresholds mirror the "large" ones: just above 1/factor is quiet, just below warns
    median = np.asarray(la_card.training["data_statistics"]["median_extent_mm"], float)
    for scale, warned in ((1.05, False), (0.95, True)):  # x extent = scale x median / factor; y, z in range
        x_spacing = float(median[0] * scale / EXTENT_FACTOR / hip.size_xyz[0])
        vol = Volume(hip.array, (x_spacing, 1.25, 1.25), hip.origin, hip.direction)
        got = [w for w in domain_warnings(vol, la_card) if "this small" in w]
        assert bool(got) == warned, (scale, got)
    # small along every axis though along none below 1/3: every bundled hippocampus scan is warned about, the
    # 42 x 51 x 28 mm one (0.35x along x) by its volume (0.10x, below 1/3^2); 0.5x along every axis (0.125x) is not
    for i in range(6):
        assert any("this small" in w for w in domain_warnings(read_image(_sample_image("hippocampus", i)), la_card)), i
    wide = read_image(_sample_image("hippocampus", 2))
    assert any("0.10x the volume of the training scans' median" in w for w in domain_warnings(wide, la_card))
    half = Volume(np.zeros((20, 20, 20), np.float32), tuple(median / 2 / 20), hip.origin, hip.direction)
    assert not any("this small" in w for w in domain_warnings(half, la_card))
    # a card without training statistics: the training patch, by the mirrored patch factor
    bare = read_card(resolve_model("left-atrium"))
    bare.training = {}
    patch_mm = np.asarray(bare.patch_size_xyz, float) * np.asarray(bare.spacing_xyz, float)  # 80 x 80 x 60 mm
    small = Volume(hip.array[:, :, :8], hip.spacing, hip.origin, hip.direction)  # 8 x 48 x 40 mm: 8 < 80 / 5
    assert patch_mm[0] / PATCH_EXTENT_FACTOR > 8
    assert any("this small" in w and "the training patch (80 x 80 x 60 mm)" in w and "along x" in w
               for w in domain_warnings(small, bare))
    assert not any("this small" in w for w in domain_warnings(hip, bare))
    # on the command line and kept with the outputs, as the "large" warning is
    out = tmp_path / "seg"
    img = _sample_image("hippocampus", 0)
    case = img.name[:-len(".nii.gz")]
    assert main(["segment", str(img), "--model", "left-atrium", "-o", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    lines = [ln for ln in err if ln.startswith(f"warning: {case}: ")]
    assert len(lines) == 1 and found[0] in lines[0]
    # and what the model is for, from its card: the labels of another anatomy are likely meaningless
    assert any(ln.startswith(f"note: {case}: the model was trained on MRI scans of about 120 x 89 x 55 mm") and
               "left atrium" in ln and "likely meaningless" in ln for ln in err)
    assert (out / f"{case}_warnings.txt").read_text().splitlines() == found


def test_layout_whole_fallback_is_said_in_the_output_and_the_help(hip_model, tmp_path, capsys, monkeypatch):
    from semisupseg.inference import sliding_window

    help_text = " ".join(dict(_subparsers(build_parser()))["segment"].format_help().split())
    assert f"above {sliding_window.WHOLE_MAX_VOXELS:,} padded voxels" in help_text
    monkeypatch.setattr(sliding_window, "WHOLE_MAX_VOXELS", 1000)
    img = _sample_image("hippocampus", 5)
    out = tmp_path / "seg"
    assert main(["segment", str(img), "--model", str(hip_model), "-o", str(out), "--layout", "whole",
                 "--json-progress"]) == 0
    captured = capsys.readouterr()
    assert "above its cap of 1,000 voxels; segmented with the default windows" in captured.err
    done = [r for r in map(json.loads, captured.out.splitlines()) if r["event"] == "done"][0]
    assert done["layout"] == "default" and any("--layout whole" in w for w in done["warnings"])


# ------------------------------------------------------------------------------------------------ evaluate, info
def test_evaluate_names_the_classes_and_prints_no_stray_lines(hip_model, tmp_path, capsys):
    import shutil

    from semisupseg.data import sample_dataset

    ref = sample_dataset("hippocampus") / "labelsTr"
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in sorted(ref.glob("*.nii.gz"))[:2]:
        shutil.copy(f, pred / f.name)
    assert main(["evaluate", str(pred), str(ref), "--cases", "hippocampus_008", "hippocampus_011"]) == 0
    captured = capsys.readouterr()
    rows = captured.out.splitlines()
    assert rows[0].startswith("2 case(s) evaluated") and "" not in rows  # no blank line anywhere
    assert any(r.startswith("1 Anterior ") and "1.0000 ± 0.0000" in r for r in rows)  # dataset.json beside REF
    assert any(r.startswith("2 Posterior ") for r in rows)
    assert "\r" not in captured.err  # stderr is not a terminal here: no bar
    # class names from a model card (a folder without dataset.json)
    plain_ref = tmp_path / "ref"
    shutil.copytree(pred, plain_ref)
    assert main(["evaluate", str(pred), str(plain_ref), "--model", str(hip_model), "--quiet"]) == 0
    assert any(r.startswith("2 Posterior ") for r in capsys.readouterr().out.splitlines())
    assert main(["evaluate", str(pred), str(plain_ref), "--quiet"]) == 0
    assert any(r.startswith("2 ") and "Posterior" not in r for r in capsys.readouterr().out.splitlines())


def test_info_aligns_its_keys(hip_model, capsys):
    assert main(["info", str(hip_model)]) == 0
    lines = capsys.readouterr().out.splitlines()
    top = [l for l in lines if not l.startswith(" ") and ":" in l and l != "training:"]
    inner = [l for l in lines if l.startswith("  ")]
    for group in (top, inner):
        starts = {len(l) - len(l.split(":", 1)[1].lstrip()) for l in group}
        assert len(starts) == 1, group
    assert any(l.startswith("  training scans:") and "MRI" in l for l in inner)


# ------------------------------------------------------------------------------------------------ unreadable files
@pytest.mark.parametrize("name, content, says", [
    ("notes.nrrd", b"patient notes\nsecond line\n", "it is a text file (it starts with 'patient notes'), not a .nrrd image"),
    ("notes.txt", b"hello\n", "it is a text file (it starts with 'hello'), not an image"),
    ("scan.nii.gz", b"just text\n", "it is a text file (it starts with 'just text'), not a NIfTI image"),
    ("scan.mha", b"\x89PNG\r\n\x1a\n" + bytes(64), "it is a PNG picture, not a .mha image"),
    ("header.nrrd", b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n\n",
     "require endian info"),  # a damaged NRRD header: ITK's innermost reason, without its prefixes
    ("noise.nrrd", bytes(range(256)) * 2, "no image reader recognises its content"),
])
def test_unreadable_files_are_described_in_our_words(tmp_path, name, content, says):
    path = tmp_path / name
    path.write_bytes(content)
    from semisupseg.errors import InputError
    from semisupseg.io import read_image

    with pytest.raises(InputError) as err:
        read_image(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and says in text
    assert ".cxx" not in text and "sitk::" not in text and "itk::" not in text and "0x" not in text
    assert "\n" not in text and text.count(str(path)) == 1


# ------------------------------------------------------------------------------------------------ demo
@pytest.mark.slow
def test_demo_tests_apart_from_validation_draws_pictures_and_keeps_only_the_model(tmp_path, capsys):
    import SimpleITK as sitk
    import yaml

    out = tmp_path / "demo"
    assert main(["demo", "--iterations", "2", "--width", "4", "--compare-with", "none", "--no-shipped",
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    split = json.loads((sample_dataset_root() / "splits.json").read_text())
    test_ids = split["val"]
    run = out / "mean-teacher" / "run"  # the semi-supervised method's folder (Testing/test_demo.py: the rest)
    roles = json.loads((run / "data.json").read_text())
    used = set(roles["labeled"]) | set(roles["unlabeled"]) | set(roles["validation"])
    assert roles["validation"] and not used & set(test_ids)  # test cases: neither training nor model selection
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["data"]["split_val"] is None and cfg["data"]["validation"] == 1
    # the run folder keeps the model used (and the record), not the resume state or a second model file
    assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt"] and not (run / "last.json").exists()
    for case in test_ids:
        png = sitk.ReadImage(str(out / "mean-teacher" / "previews" / f"{case}.png"))
        assert png.GetNumberOfComponentsPerPixel() == 3 and png.GetSize()[0] > 500
    assert "1 Anterior" in captured.out  # evaluate's table names the classes (from the model card)
    # stderr is not a terminal here: plain progress lines, no carriage-return bars
    assert "\r" not in captured.err and "iteration 2/2" in captured.err


def sample_dataset_root():
    from semisupseg.data import sample_dataset

    return sample_dataset("hippocampus")


def test_gitignore_covers_the_default_outputs():
    from pathlib import Path

    ignored = (Path(__file__).resolve().parents[1] / ".gitignore").read_text().splitlines()
    assert "/semisupseg-demo/" in ignored and "/runs/" in ignored


# ------------------------------------------------------------------------------------------------ messages
def test_no_labeled_cases_names_the_folders_and_what_was_expected(tmp_path, capsys):
    import shutil

    from semisupseg.data import sample_dataset

    src = sample_dataset("hippocampus") / "imagesTr"
    only_images = tmp_path / "ds" / "imagesTr"
    only_images.mkdir(parents=True)
    for f in sorted(src.glob("*.nii.gz"))[:2]:
        shutil.copy(f, only_images / f.name)
    cases = [
        (["--labeled", str(tmp_path / "ds")], [str(tmp_path / "ds"), "labelsTr/", "named like the images"]),
        (["--labeled", str(only_images), "--labels", str(tmp_path / "empty")], [str(tmp_path / "empty")]),
        (["--labeled", str(only_images)], [str(only_images), "imagesTr/ + labelsTr/", "--labels DIR"]),
        (["--unlabeled", str(only_images)], ["no labeled data given", str(only_images), "--labeled DIR",
                                             "imagesTr/ + labelsTr/", "--labels DIR"]),
        ([], ["no labeled data given: --labeled DIR", "imagesTr/ + labelsTr/", "--labels DIR"]),
    ]
    (tmp_path / "empty").mkdir()
    for extra, needles in cases:
        code = main(["train", "--method", "supervised", "--out", str(tmp_path / "run"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        for needle in needles:
            assert needle in err, (needle, err)
        assert not (tmp_path / "run").exists()


def test_plain_progress_lines_have_no_carriage_returns():
    import io

    from semisupseg.cli.console import Progress

    stream = io.StringIO()
    progress = Progress("[1/2] case", stream=stream, interval_s=0.0)
    for i in range(1, 5):
        progress(i / 4, f"window {i}/4")
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 4
    assert lines[-1].startswith("[1/2] case: 100% window 4/4 (") and "elapsed" in lines[-1]
    quiet = io.StringIO()
    slow = Progress("x", stream=quiet)  # default interval: short work prints nothing
    slow(0.5)
    slow(1.0)
    assert quiet.getvalue() == ""
