"""Outputs that cannot or must not be written: outputs that exist (refused without ``--overwrite``, left byte for
byte), unwritable places (an output folder under a regular file; a read-only folder when not running as root) and
a full disk, simulated in a child process with a file size limit (``RLIMIT_FSIZE``, ``SIGXFSZ`` ignored, so that
writes fail with ``EFBIG`` as they would with ``ENOSPC``: ITK's writers ignore such a short write, which the
package must notice).

Each: exit 2, one ``error: <file>: ...`` line, no traceback, nothing left under the output name (no temporary file
either), inputs unchanged.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from corpus import SCAN, SCAN_LABEL

REPO = Path(__file__).resolve().parents[2]


def _sha(paths):
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


@pytest.fixture(scope="module")
def peer_file(tmp_path_factory) -> Path:
    """A raw V-Net state_dict as the public releases ship them (what import-checkpoint converts)."""
    from semisupseg.nets import VNet, VNetConfig

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("peer") / "best_model.pth"
    torch.save(VNet(VNetConfig(n_filters=2)).state_dict(), path)
    return path


def _one_error_line(code, err, path):
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), err
    return lines[0]


# ------------------------------------------------------------------------------------------------ outputs that exist
def test_existing_outputs_are_refused_and_kept(run_cli, tiny_model_file, peer_file, tmp_path):
    out = tmp_path / "seg"
    out.mkdir()
    label = out / "hippocampus_008_label.nii.gz"
    label.write_bytes(b"the user's own file")
    code, _, err = run_cli("segment", SCAN, "-m", tiny_model_file, "-o", out, "--prob")
    assert "--overwrite" in _one_error_line(code, err, label)
    assert label.read_bytes() == b"the user's own file" and sorted(p.name for p in out.iterdir()) == [label.name]

    csv = tmp_path / "metrics.csv"
    csv.write_text("mine\n")
    code, _, err = run_cli("evaluate", SCAN_LABEL, SCAN_LABEL, "-o", csv, "--quiet")
    assert "--overwrite" in _one_error_line(code, err, csv) and csv.read_text() == "mine\n"

    model = tmp_path / "model.pt"
    model.write_bytes(b"a model")
    code, _, err = run_cli("import-checkpoint", peer_file, "-o", model, "--layout", "uamt", "--spacing", "0.625")
    assert "overwrite" in _one_error_line(code, err, model) and model.read_bytes() == b"a model"

    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("the user's notes\n")
    before = _sha(p for p in run.iterdir())
    code, _, err = run_cli("train", "--method", "supervised", "--labeled", SCAN.parents[1], "--out", run,
                           "--iterations", "1", "--no-bar")
    assert code == 2 and "Traceback" not in err and f"error: {run}: " in err and "--overwrite" in err, err
    assert _sha(p for p in run.iterdir()) == before

    # --overwrite does replace (the refusal is about consent, not ability)
    code, _, err = run_cli("segment", SCAN, "-m", tiny_model_file, "-o", out, "--overwrite")
    assert code == 0, err
    from semisupseg.io import read_label

    assert read_label(label).shape_zyx == (40, 48, 36)


# ------------------------------------------------------------------------------------------------ unwritable places
def test_outputs_under_a_regular_file_are_refused(run_cli, tiny_model_file, peer_file, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    inputs = _sha([SCAN, SCAN_LABEL, peer_file])
    code, _, err = run_cli("segment", SCAN, "-m", tiny_model_file, "-o", blocker)
    _one_error_line(code, err, blocker)
    code, _, err = run_cli("segment", SCAN, "-m", tiny_model_file, "-o", blocker / "sub")
    assert code == 2 and "Traceback" not in err and str(blocker) in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli("evaluate", SCAN_LABEL, SCAN_LABEL, "-o", blocker / "m.csv", "--quiet")
    assert code == 2 and "Traceback" not in err and str(blocker) in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli("import-checkpoint", peer_file, "-o", blocker / "m.pt", "--layout", "uamt", "--spacing",
                           "1")
    assert code == 2 and "Traceback" not in err and str(blocker) in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli("train", "--method", "supervised", "--labeled", SCAN.parents[1], "--out",
                           blocker / "run", "--iterations", "1", "--no-bar")
    assert code == 2 and "Traceback" not in err and str(blocker) in err, err
    assert blocker.read_text() == "not a folder\n" and _sha([SCAN, SCAN_LABEL, peer_file]) == inputs


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_refused(run_cli, tiny_model_file, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, _, err = run_cli("segment", SCAN, "-m", tiny_model_file, "-o", out)
        assert code == 2 and "Traceback" not in err and str(out) in err and len(err.strip().splitlines()) == 1, err
        assert list(out.iterdir()) == []
    finally:
        out.chmod(0o755)


# ------------------------------------------------------------------------------------------------ full disk
def _limited(max_bytes: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return preexec


def _cli_child(args, cwd, max_bytes):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")  # no .pyc cut short by the limit
    return subprocess.run([sys.executable, "-m", "semisupseg", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, preexec_fn=_limited(max_bytes))


@contextlib.contextmanager
def _file_size_limit(max_bytes: int):
    """This process may not grow a file past ``max_bytes`` while the block runs (what a full disk does to a
    writer: the write fails, here with ``EFBIG``); the limit and the signal handler are restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".seg.nrrd"])
def test_full_disk_while_segmenting_leaves_no_output(run_cli, tiny_model_file, tmp_path, suffix):
    out = tmp_path / "out"
    with _file_size_limit(600):
        code, _, err = run_cli("segment", SCAN, "-m", tiny_model_file, "-o", out, "--output-suffix", suffix)
    assert "cannot write" in _one_error_line(code, err, out / f"hippocampus_008_label{suffix}")
    assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())


def test_full_disk_while_writing_csv_and_model_leaves_no_output(run_cli, peer_file, tmp_path):
    with _file_size_limit(100):
        code, _, err = run_cli("evaluate", SCAN_LABEL, SCAN_LABEL, "-o", tmp_path / "m.csv", "--quiet")
    line = _one_error_line(code, err, tmp_path / "m.csv")
    assert "too large" in line.lower() or "space" in line.lower()
    with _file_size_limit(600):
        code, _, err = run_cli("import-checkpoint", peer_file, "-o", tmp_path / "m.pt", "--layout", "uamt",
                               "--spacing", "1")
    line = _one_error_line(code, err, tmp_path / "m.pt")  # the OS's reason, as for the CSV (it was torch's
    assert "too large" in line.lower() or "space" in line.lower()  # "unexpected pos" wrapped as "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.iterdir())


@pytest.mark.slow
def test_full_disk_in_a_real_child_process(tiny_model_file, tmp_path):
    """The same as a user meets it: ``python -m semisupseg segment`` in a process with the limit, stderr one line."""
    out = tmp_path / "out"
    r = _cli_child(["segment", SCAN, "-m", tiny_model_file, "-o", out, "--prob"], tmp_path, 600)
    assert "cannot write" in _one_error_line(r.returncode, r.stderr, out / "hippocampus_008_label.nii.gz")
    assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())
