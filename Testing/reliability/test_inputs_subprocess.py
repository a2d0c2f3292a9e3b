"""Bad inputs as a user meets them: ``python -m semisupseg ...`` in a real child process. The exit code is 2 and
stderr is exactly one line ``error: <file>: <problem>``: no traceback, and none of ITK's own C-level messages (they
are printed on the process's file descriptor 2, which the in-process tests cannot see).

The address-space limit of the child (``RLIMIT_AS``, 3 GB) makes the huge-header case honest: a reader that
allocated what the header declares would die there; the package refuses first, with its estimate.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _child(args, cwd):
    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "semisupseg", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180, preexec_fn=limits)


def _entry(corpus, name):
    return next(e for e in corpus if e.name == name)


def _check(r, entry, also=()):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, f"{entry.name}: stderr is not one line:\n{r.stderr}"
    assert lines[0].startswith(f"error: {entry.path}: "), r.stderr
    assert entry.expect.lower() in lines[0].lower(), r.stderr
    for text in also:
        assert text in lines[0], r.stderr


def test_segment_child_two_series_names_the_option(corpus, tiny_model_file, tmp_path):
    entry = _entry(corpus, "dicom_two_series")
    before = entry.hashes()
    r = _child(["segment", entry.path, "-m", tiny_model_file, "-o", tmp_path / "out"], tmp_path)
    _check(r, entry, ("--series UID",))
    assert not (tmp_path / "out").exists() and entry.hashes() == before


@pytest.mark.slow
def test_segment_child_huge_header_is_refused_before_allocating(corpus, tiny_model_file, tmp_path):
    """10^15 voxels declared, a 3 GB address-space limit: refused with the estimate, not killed."""
    entry = _entry(corpus, "mha_huge_size")
    r = _child(["segment", entry.path, "-m", tiny_model_file, "-o", tmp_path / "out"], tmp_path)
    _check(r, entry, ("PB of memory", "refused before reading"))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["nifti_datatype_garbage", "mha_truncated", "mha_bitflip", "dicom_slice_truncated",
                                  "nifti_huge_size"])
def test_segment_child_refuses_with_one_line(corpus, tiny_model_file, tmp_path, name):
    entry = _entry(corpus, name)
    before = entry.hashes()
    r = _child(["segment", entry.path, "-m", tiny_model_file, "-o", tmp_path / "out"], tmp_path)
    _check(r, entry)
    assert not (tmp_path / "out").exists() and entry.hashes() == before


@pytest.mark.slow
def test_info_and_evaluate_children(corpus, tmp_path):
    entry = _entry(corpus, "model_truncated")
    _check(_child(["info", entry.path], tmp_path), entry)
    entry = _entry(corpus, "label_non_integer")
    r = _child(["evaluate", entry.image_path.parents[1] / "labelsTr" / entry.image_path.name, entry.path, "-o",
                tmp_path / "m.csv", "--quiet"], tmp_path)
    _check(r, entry)
    assert not (tmp_path / "m.csv").exists()
