"""Import slicer-core's ``slicer`` for the tests, with the Slicer module folders on ``sys.path``; the ``headless``
scene fixture of ``Testing/slicer`` and ``Testing/reliability`` (``from slicer_guard import ...``: ``Testing/`` is on
``sys.path`` under pytest).

slicer-core's ``slicer/__init__`` extends its package path over every ``slicer`` folder on ``sys.path`` and imports
the modules it finds there: with ``Testing/`` on ``sys.path`` (pytest puts it there for ``helpers``) that would be
``Testing/slicer``'s test files, so ``Testing/`` is taken off the path while ``slicer`` is imported.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE_FOLDERS = (REPO / "SemiSupSeg", REPO / "SemiSupSegTraining")
#: small real scans bundled for the tests, and the package's sample data
TEST_DATA = REPO / "Testing" / "data"
SAMPLE_DATA = REPO / "src" / "semisupseg" / "sample_data"


def require_slicer():
    """``slicer`` (skipped without slicer-core, failing when ``CI`` is set, as ``Testing/slicer/conftest.py``)."""
    for folder in MODULE_FOLDERS:
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    if "slicer" in sys.modules and hasattr(sys.modules["slicer"], "vtkMRMLScene"):
        return sys.modules["slicer"]
    testing = str(REPO / "Testing")
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != testing]
    try:
        import slicer

        slicer.vtkMRMLScene  # noqa: B018  (the meta-package imports without slicer-core's modules)
        return slicer
    except (ImportError, AttributeError) as exc:
        message = f"slicer-core is not installed ({exc}); install the test extras: pip install -e '.[test]'"
        if os.environ.get("CI"):
            pytest.fail("CI must run the Slicer library tests: " + message, pytrace=False)
        pytest.skip(message)
    finally:
        sys.path[:] = saved


def headless_scene():
    """Generator behind the ``headless`` fixtures: a new headless Slicer (scene, application logic, module logics),
    cleared afterwards."""
    require_slicer()
    from SemiSupSegLib.headless import build_headless_slicer

    h = build_headless_slicer()
    yield h
    h.scene.Clear(1)
