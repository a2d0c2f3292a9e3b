"""Atomic, non-clobbering outputs (semisupseg.fileio)."""
from __future__ import annotations

import os

import pytest

from semisupseg.errors import InputError, OutputExistsError
from semisupseg.fileio import FILE_MODE, atomic_open, atomic_path, write_text_atomic


def test_write_and_refuse_overwrite(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    write_text_atomic("one", target)
    assert target.read_text() == "one"
    assert (target.stat().st_mode & 0o777) == FILE_MODE
    with pytest.raises(OutputExistsError, match="a.txt") as err:
        write_text_atomic("two", target)
    assert "pass --overwrite to replace it" in str(err.value) and "overwrite=True" not in str(err.value)
    write_text_atomic("two", target, overwrite=True)
    assert target.read_text() == "two"
    with pytest.raises(InputError, match="folder"):
        write_text_atomic("x", tmp_path / "sub", overwrite=True)


def test_crash_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "wb", overwrite=True) as fh:
            fh.write(b"half")
            raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["model.bin"]


def test_atomic_path_keeps_the_suffix_writers_need(tmp_path):
    with atomic_path(tmp_path / "img.nii.gz", suffix=".nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"data")
    assert (tmp_path / "img.nii.gz").read_bytes() == b"data"


def test_a_place_that_cannot_be_written_is_named_as_the_user_gave_it(tmp_path, monkeypatch):
    """The temporary file is the first thing written: its failure named '.scan_label.nii.gz._x356tnz.tmp.nii.gz'
    (a read-only folder, a full disk). Every writer - text, volumes, PNG previews - names the output asked for; a
    folder where a preview should go is refused as such even with --overwrite."""
    import errno
    import tempfile

    import numpy as np

    from semisupseg.io import write_volume
    from semisupseg.preview import write_png
    from semisupseg.volume import Volume

    def refused(prefix="", suffix="", dir=None):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, f"{prefix}x1y2z3{suffix}"))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    for write, target in ((lambda p: write_text_atomic("x", p), tmp_path / "notes.txt"),
                          (lambda p: write_volume(Volume(np.zeros((2, 3, 4), np.float32)), p),
                           tmp_path / "scan_label.nii.gz"),
                          (lambda p: write_png(np.zeros((4, 5, 3), np.uint8), p), tmp_path / "scan.png")):
        with pytest.raises(OSError) as info:
            write(target)
        assert info.value.filename == str(target) and info.value.errno == errno.EACCES
    monkeypatch.undo()
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(InputError, match="output path is a folder"):
        write_png(np.zeros((4, 5, 3), np.uint8), tmp_path / "folder.png", overwrite=True)


def test_replace_waits_while_windows_refuses_a_file_open_elsewhere(tmp_path, monkeypatch):
    """Windows refuses to replace a file another process holds open (a reader polling a heartbeat, an antivirus):
    the atomic writers retry for a moment there instead of failing a checkpoint save; elsewhere a refusal is an
    error at once."""
    import os

    from semisupseg import fileio

    real = os.replace
    refusals = []

    def busy_twice(src, dst):
        if len(refusals) < 2:
            refusals.append(dst)
            raise PermissionError(13, "The process cannot access the file", str(dst))
        return real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", busy_twice)
    monkeypatch.setattr(fileio, "_WINDOWS", True)
    fileio.write_text_atomic("new\n", tmp_path / "heartbeat.json", overwrite=True)
    assert (tmp_path / "heartbeat.json").read_text() == "new\n" and len(refusals) == 2
    refusals.clear()
    monkeypatch.setattr(fileio, "_WINDOWS", False)
    with pytest.raises(PermissionError):
        fileio.write_text_atomic("newer\n", tmp_path / "heartbeat.json", overwrite=True)
    assert (tmp_path / "heartbeat.json").read_text() == "new\n" and len(refusals) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["heartbeat.json"]  # no temporary file left


def test_a_folder_is_probed_for_writing_before_long_work(tmp_path, monkeypatch, capsys):
    """``train --out`` on a read-only place read and fingerprinted all the data before failing; the probe (a file
    made and removed where the folder is or would be made) fails first, naming the folder, and leaves nothing."""
    from semisupseg import fileio
    from semisupseg.cli import main

    assert fileio.check_folder_writable(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []  # nothing made, nothing left

    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(fileio.tempfile, "mkstemp", refuse)
    with pytest.raises(OSError, match="Operation not permitted") as info:
        fileio.check_folder_writable(tmp_path / "run")
    assert info.value.filename == str(tmp_path / "run")
    reads = []
    monkeypatch.setattr("semisupseg.data.fingerprint.resolve_plan", lambda *a, **k: reads.append(1))
    from semisupseg.data import sample_dataset

    assert main(["train", "--method", "supervised", "--labeled", str(sample_dataset("hippocampus")),
                 "--out", str(tmp_path / "run")]) == 2
    assert reads == [] and not (tmp_path / "run").exists()
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'run'}: Operation not permitted"
