"""Fixtures of the reliability tests (bad inputs, faults, untrusted files).

``corpus``: the bad-input corpus of :mod:`corpus` (Testing/reliability/corpus.py), written once per test session
from the real bundled scans. ``tiny_model_file``: a real, untrained, very small V-Net model file (fast inference).
``run_cli``: ``semisupseg.cli.main`` in-process, returning ``(exit code, stdout, stderr)``. ``headless``: a new
headless Slicer scene with its logics (slicer-core; skipped without it, failing when ``CI`` is set); the Slicer
module folders are put on ``sys.path``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from slicer_guard import MODULE_FOLDERS, headless_scene  # noqa: E402

for _folder in MODULE_FOLDERS:
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))


headless = pytest.fixture(name="headless")(headless_scene)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    from corpus import build_corpus

    return build_corpus(tmp_path_factory.mktemp("bad_inputs"))


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory) -> Path:
    from helpers import tiny_model

    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt", classes=("background", "anterior", "posterior"),
                      spacing=(1.0, 1.0, 1.0), patch=(32, 32, 32))


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*argv) -> (code, stdout, stderr)``: the CLI in this process (argparse exits give their code)."""
    from semisupseg.cli import main

    def run(*argv):
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
        out, err = capsys.readouterr()
        return code, out, err

    return run
