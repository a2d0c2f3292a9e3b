"""Every bad input of the corpus (``corpus.py``) fed to every command that reads it, in-process.

For each (command, input): a non-zero exit, one ``error: <file>: <problem>`` line naming the bad file and saying
the corpus' expected problem, no traceback, no output left behind (the output folder or file absent), the input
files unchanged (SHA-256 before and after). Inputs that are odd but valid (``expect=None``) must succeed instead.

The counts per command are collected in ``TALLY`` and printed at the end of the session (``-s``), for the README's
reliability table.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from corpus import SCAN, SCAN_LABEL, Entry, dataset_with

#: command -> [inputs tried, refused cleanly (or handled when valid)]
TALLY = defaultdict(lambda: [0, 0])


def _entries(corpus, kind, where=None):
    return [e for e in corpus if e.kind == kind and (where is None or where(e))]


def _file_damage(e: Entry) -> bool:
    """Inputs any reader must refuse alike (damaged files and headers), whatever the file is for."""
    return e.path.parent.name in ("images", "headers") and not e.path.is_dir()


def _assert_refused(command, entry, code, out, err, bad_path=None, message_in="stderr", notes_before=False,
                    pair=None):
    """Exit 2, no traceback, the one ``error: <bad file>: ...`` line holding the expected problem (``notes_before``:
    ``train`` prints the settings it derived from the data first; ``pair``: a problem between two files, e.g. a
    prediction and its reference, may be reported on either as long as the line names both)."""
    bad = str(bad_path or entry.path)
    text = err if message_in == "stderr" else out
    assert code == 2, f"{command} {entry.name}: exit {code}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in err, f"{command} {entry.name}: traceback\n{err}"
    if message_in == "stderr":
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1 and lines[-1] == errors[0], f"{command} {entry.name}: not one error line:\n{err}"
        assert notes_before or len(lines) == 1, f"{command} {entry.name}: not one line:\n{err}"
        if pair is not None and not lines[-1].startswith(f"error: {bad}: "):
            assert lines[-1].startswith(f"error: {pair}: ") and Path(bad).name in lines[-1], err
        else:
            assert lines[-1].startswith(f"error: {bad}: "), f"{command} {entry.name}: does not name {bad}:\n{err}"
        text = lines[-1]
    else:
        assert bad in text, f"{command} {entry.name}: report does not name {bad}:\n{out}"
    assert entry.expect.lower() in text.lower(), f"{command} {entry.name}: expected {entry.expect!r} in:\n{text}"
    TALLY[command][1] += 1


@pytest.fixture(scope="module", autouse=True)
def _print_tally():
    yield
    if TALLY:
        print("\ncommand | bad inputs tried | refused cleanly (or handled)")
        for command, (tried, ok) in sorted(TALLY.items()):
            print(f"{command} | {tried} | {ok}")


def _ids(entries):
    return [e.name for e in entries]


# ------------------------------------------------------------------------------------------------ segment
#: a few images of each kind of damage for the quick runs (``-m "not slow"``); the slow variant takes every one
QUICK_IMAGES = ("nifti_gz_truncated", "mha_bitflip", "h5_truncated", "dicom_slice_truncated", "dicom_two_series",
                "mha_nan_origin", "nifti_zero_pixdim", "mha_huge_size", "mha_ndims_negative", "image_4d",
                "image_nan_mha", "image_constant", "image_smaller_than_patch")


@pytest.mark.parametrize("every", [pytest.param(False, id="quick"),
                                   pytest.param(True, id="all", marks=pytest.mark.slow)])
def test_segment_refuses_every_bad_image(corpus, tiny_model_file, run_cli, tmp_path, every):
    images = _entries(corpus, "image", None if every else lambda e: e.name in QUICK_IMAGES)
    assert len(images) >= (40 if every else len(QUICK_IMAGES))
    command = "segment" if every else "segment (quick)"
    for entry in images:
        before = entry.hashes()
        out = tmp_path / f"out_{entry.name}"
        TALLY[command][0] += 1
        code, stdout, err = run_cli("segment", entry.path, "-m", tiny_model_file, "-o", out)
        if entry.expect is None:  # odd but valid: segmented, in the input's geometry
            assert code == 0, f"{entry.name}: {err}"
            from semisupseg.io import read_label, read_volume

            label = read_label(out / f"{Path(entry.path).name.split('.')[0]}_label.nii.gz")
            assert label.same_geometry(read_volume(entry.path))
            TALLY[command][1] += 1
        else:
            _assert_refused(command, entry, code, stdout, err)
            assert not out.exists(), f"{entry.name}: output folder left behind: {list(out.rglob('*'))}"
        assert entry.hashes() == before, f"{entry.name}: input changed"


def test_segment_bad_input_among_good_ones_leaves_only_the_good_outputs(corpus, tiny_model_file, run_cli,
                                                                        tmp_path):
    """Outputs are written case by case: the good case is complete, nothing of the bad one; the batch goes on past
    the bad file, says so as it happens and ends with exit 2 and one error line naming it."""
    bad = next(e for e in corpus if e.name == "nifti_gz_truncated")
    out = tmp_path / "out"
    code, _, err = run_cli("segment", bad.path, SCAN, "-m", tiny_model_file, "-o", out)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1 and str(bad.path) in errors[0], err
    assert err.splitlines()[-1] == errors[0] and "truncated" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == ["hippocampus_008_label.nii.gz"]
    assert not list(out.glob(".*")), "a temporary file was left behind"


def test_segment_dicom_two_series_names_the_option_and_the_option_works(corpus, tiny_model_file, run_cli,
                                                                        tmp_path):
    entry = next(e for e in corpus if e.name == "dicom_two_series")
    code, _, err = run_cli("segment", entry.path, "-m", tiny_model_file, "-o", tmp_path / "a")
    assert code == 2 and "--series UID" in err and "series_id" not in err
    uid = err.split("(", 1)[1].split(" ", 1)[0]
    code, _, err = run_cli("segment", entry.path, "-m", tiny_model_file, "-o", tmp_path / "b", "--series", uid)
    assert code == 0, err
    assert (tmp_path / "b" / f"{entry.path.name}_label.nii.gz").is_file()


def test_segment_refuses_bad_model_files(corpus, run_cli, tmp_path):
    for entry in _entries(corpus, "model", lambda e: e.name not in KNOWN_UNDETECTED_MODEL_DAMAGE):
        before = entry.hashes()
        out = tmp_path / entry.name
        TALLY["segment --model"][0] += 1
        code, stdout, err = run_cli("segment", SCAN, "-m", entry.path, "-o", out)
        _assert_refused("segment --model", entry, code, stdout, err)
        assert not out.exists() and entry.hashes() == before


# ------------------------------------------------------------------------------------------------ check-data / train
def _dataset_entries(corpus):
    """(entry, dataset folder maker, bad file inside it): bad images and labels put into a small real dataset, and
    the dataset-level entries as they are."""
    out = []
    for e in corpus:
        if e.kind == "image" and not e.path.is_dir() and not e.path.name.endswith(".h5") and e.expect is not None:
            out.append(e)
        elif e.kind == "label" and e.name != "label_all_background":
            out.append(e)
        elif e.kind == "dataset":
            out.append(e)
    return out


def _materialise(entry: Entry, folder: Path) -> tuple:
    """The dataset folder for ``entry`` and the path of the bad file in it."""
    if entry.kind == "dataset":
        return entry.path, entry.path
    root = dataset_with(folder, entry)
    if entry.kind == "image":
        bad = next(p for p in (root / "imagesTr").iterdir() if p.name.startswith("badcase"))
    else:
        bad = next(p for p in (root / "labelsTr").iterdir() if p.name.startswith("hippocampus_008"))
    return root, bad


DATASET_PROBLEM_PATH = {  # dataset-level entries: the path their problem names
    "dataset_duplicate_case": "imagesTr/hippocampus_008.nrrd", "dataset_orphan_label": "labelsTr/hippocampus_011.nii.gz",
    "dataset_bad_json": "dataset.json", "dataset_empty": "imagesTr"}


def _named_path(entry, root, bad):
    if entry.kind == "dataset":
        return root / DATASET_PROBLEM_PATH[entry.name]
    return bad


#: a few inputs of each kind for the quick runs (``-m "not slow"``); the slow variants take every input
QUICK = ("nifti_gz_truncated", "mha_nan_direction", "nifti_huge_size", "image_nan_nifti", "image_constant",
         "label_other_spacing", "label_out_of_range", "dataset_duplicate_case", "dataset_bad_json")
SWEEP = [pytest.param(False, id="quick"), pytest.param(True, id="all", marks=pytest.mark.slow)]


def _chosen(corpus, every):
    return [e for e in _dataset_entries(corpus) if every or e.name in QUICK]


@pytest.mark.parametrize("every", SWEEP)
def test_check_data_reports_every_bad_case(corpus, run_cli, tmp_path, every):
    for entry in _chosen(corpus, every):
        root, bad = _materialise(entry, tmp_path / entry.name)
        before = {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        TALLY["check-data" if every else "check-data (quick)"][0] += 1
        code, out, err = run_cli("check-data", "--labeled", root, "--validation", "0")
        _assert_refused("check-data" if every else "check-data (quick)", entry, code, out, err,
                        _named_path(entry, root, bad), message_in="stdout")
        assert {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
        # --json: the same problem, machine-readable, naming the file
        code, out, _ = run_cli("check-data", "--labeled", root, "--validation", "0", "--json")
        report = json.loads(out)
        assert code == 2 and not report["usable"]
        assert any(entry.expect.lower() in p["message"].lower() for p in report["problems"]), report["problems"]


@pytest.mark.parametrize("every", SWEEP)
def test_train_refuses_every_bad_case_before_creating_the_run(corpus, run_cli, tmp_path, every):
    for entry in _chosen(corpus, every):
        root, bad = _materialise(entry, tmp_path / entry.name)
        before = {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        run = tmp_path / f"run_{entry.name}"
        TALLY["train" if every else "train (quick)"][0] += 1
        code, out, err = run_cli("train", "--method", "supervised", "--labeled", root, "--out", run,
                                 "--iterations", "2", "--no-bar", "--device", "cpu", "--validation", "0")
        _assert_refused("train" if every else "train (quick)", entry, code, out, err, _named_path(entry, root, bad),
                        notes_before=True)
        assert not run.exists(), f"{entry.name}: run folder created: {list(run.rglob('*'))}"
        assert {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


# ------------------------------------------------------------------------------------------------ evaluate
def test_evaluate_refuses_bad_reference_and_prediction_files(corpus, run_cli, tmp_path):
    entries = _entries(corpus, "label") + _entries(corpus, "image", _file_damage)
    for entry in entries:
        before = entry.hashes()
        csv = tmp_path / f"{entry.name}.csv"
        if entry.kind == "label" and entry.expect is None:
            continue
        # a bad file as the reference, with a good prediction; the label entries are checked against its geometry
        # only through the pair: the reference is the bad file, the prediction the scan's real label
        TALLY["evaluate"][0] += 1
        code, out, err = run_cli("evaluate", SCAN_LABEL, entry.path, "-o", csv, "--quiet")
        if entry.kind == "label" and entry.name.startswith(("label_other", "label_out_of_range",
                                                            "label_negative")):
            # evaluate compares two label maps: another grid is refused; any whole values are labels
            if entry.name.startswith("label_other"):
                _assert_refused("evaluate", entry, code, out, err, entry.path, pair=SCAN_LABEL)
            else:
                assert code == 0, err  # values 7 / -1 are evaluated as labels of their own (no class list)
                TALLY["evaluate"][1] += 1
        else:
            _assert_refused("evaluate", entry, code, out, err)
        assert not csv.exists() or code == 0
        assert entry.hashes() == before
    # all-background reference: valid, Dice 0 for the prediction's labels, distances undefined (nan)
    entry = next(e for e in corpus if e.name == "label_all_background")
    TALLY["evaluate"][0] += 1
    code, out, err = run_cli("evaluate", SCAN_LABEL, entry.path, "-o", tmp_path / "bg.csv", "--quiet")
    assert code == 0, err
    assert "nan" in (tmp_path / "bg.csv").read_text()
    TALLY["evaluate"][1] += 1


# ------------------------------------------------------------------------------------------------ info / import
#: damage that leaves the model intact: bytes of the zip's central directory that no reader uses (every record and
#: its CRC-32 unchanged) — the file loads with exactly the original weights (test_model_damage_inside_tensor_data…)
KNOWN_UNDETECTED_MODEL_DAMAGE = ("model_zip_dir_flip",)


def test_info_refuses_bad_model_files(corpus, run_cli):
    for entry in _entries(corpus, "model", lambda e: e.name not in KNOWN_UNDETECTED_MODEL_DAMAGE):
        before = entry.hashes()
        TALLY["info"][0] += 1
        code, out, err = run_cli("info", entry.path)
        _assert_refused("info", entry, code, out, err)
        assert entry.hashes() == before


def test_info_and_import_refuse_images_given_as_models(corpus, run_cli, tmp_path):
    for entry in _entries(corpus, "image", lambda e: e.path.is_file() and e.name in (
            "nifti_gz_truncated", "text_as_image", "h5_truncated", "empty_file", "image_nan_nifti")):
        for command in ("info", "import-checkpoint"):
            TALLY[command][0] += 1
            out_model = tmp_path / f"{entry.name}.pt"
            argv = ["info", entry.path] if command == "info" else \
                ["import-checkpoint", entry.path, "-o", out_model, "--layout", "uamt", "--spacing", "1"]
            code, out, err = run_cli(*argv)
            assert code == 2 and "Traceback" not in err and err.startswith(f"error: {entry.path}: "), err
            assert len(err.strip().splitlines()) == 1 and not out_model.exists()
            TALLY[command][1] += 1


def test_import_checkpoint_refuses_bad_peer_files(corpus, run_cli, tmp_path):
    for entry in _entries(corpus, "model", lambda e: e.name not in KNOWN_UNDETECTED_MODEL_DAMAGE):
        before = entry.hashes()
        out_model = tmp_path / f"{entry.name}.pt"
        TALLY["import-checkpoint"][0] += 1
        code, out, err = run_cli("import-checkpoint", entry.path, "-o", out_model, "--layout", "uamt",
                                 "--spacing", "0.625")
        _assert_refused("import-checkpoint", entry, code, out, err)
        assert not out_model.exists() and not list(tmp_path.glob(f".{entry.name}*"))
        assert entry.hashes() == before


def test_model_damage_inside_tensor_data_is_found(corpus, run_cli):
    """torch's zip reader does not verify CRC-32: the checkpoint reader does, or flipped bytes would load as weights."""
    entry = next(e for e in corpus if e.name == "model_bitflip")
    code, _, err = run_cli("info", entry.path)
    assert code == 2 and "fails its checksum" in err
    # the directory flip that goes through changes nothing that is read: the weights are the original's
    import torch

    from corpus import MODEL
    from semisupseg.checkpoint import safe_torch_load

    intact = next(e for e in corpus if e.name == "model_zip_dir_flip")
    original, flipped = safe_torch_load(MODEL), safe_torch_load(intact.path)
    assert original.keys() == flipped.keys()
    states = [(original[k], flipped[k]) for k in original if isinstance(original[k], dict)]
    assert states and all(a.keys() == b.keys() and all(torch.equal(a[t], b[t]) for t in a if torch.is_tensor(a[t]))
                          for a, b in states)
